"""CRM sync's audit vocabulary."""

from collections.abc import Mapping
from typing import Any

from audit.types import register_event_type, text


def _synced(d: Mapping[str, Any], event: Any) -> str:
    latency = f", {d['latency_ms']} ms" if d.get("latency_ms") is not None else ""
    ident = text(d.get("external_id") or d.get("crm_record_id"))
    return f"{text(d.get('connection') or d.get('crm_type'))} {ident}{latency}".strip()


def _requested(d: Mapping[str, Any], event: Any) -> str:
    return "to " + ", ".join(d.get("connections") or [])


def _deferred(d: Mapping[str, Any], event: Any) -> str:
    status = f"{d['status_code']}, " if d.get("status_code") else ""
    return f"{text(d.get('connection'))}: {status}retry in {d.get('wait_seconds')} s"


def _skipped(d: Mapping[str, Any], event: Any) -> str:
    return f"{text(d.get('connection'))}: {text(d.get('reason'))}"


def register() -> None:
    register_event_type(
        "crm_sync_skipped",
        "A CRM sync step did nothing, and why (e.g. the connection is inactive)",
        category="crm",
        summary=_skipped,
    )
    register_event_type("crm_create", "CRM record created", category="crm", summary=_synced)
    register_event_type("crm_update", "CRM record updated", category="crm", summary=_synced)
    register_event_type(
        "crm_deferred",
        "A CRM sync was postponed: the CRM asked to wait (429 / Retry-After)",
        category="crm",
        summary=_deferred,
    )
    register_event_type(
        "crm_sync_requested",
        "A CRM sync was requested by hand (dashboard)",
        category="crm",
        summary=_requested,
    )
