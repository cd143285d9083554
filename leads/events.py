"""The lead pipeline's audit vocabulary: labels, timeline category, summary line."""

from collections.abc import Mapping
from typing import Any

from audit.types import register_event_type, text


def _ingested(d: Mapping[str, Any], event: Any) -> str:
    line = f"from {text(d.get('source')) or 'unknown source'}"
    if d.get("duplicate"):
        merged = ", ".join(d.get("merged_fields") or []) or "nothing new"
        line += f" (duplicate; merged: {merged})"
    return line


def _qualified(d: Mapping[str, Any], event: Any) -> str:
    line = text(d.get("status")) or ("qualified" if d.get("qualified") else "")
    if d.get("score") is not None:
        line += f", score {d['score']}"
    return line + (f" ({d['reason']})" if d.get("reason") else "")


def _routed(d: Mapping[str, Any], event: Any) -> str:
    owner = d.get("owner") or d.get("destination") or "nobody"
    team = f" in {d['team']}" if d.get("team") else ""
    rule = f" by rule {d['rule']!s}" if d.get("rule") else ""
    return f"to {owner}{team}{rule}"


def register() -> None:
    lead = {"category": "lead"}
    register_event_type("lead_ingested", "New lead captured from source", summary=_ingested, **lead)
    register_event_type("lead_qualified", "Lead qualification decision", summary=_qualified, **lead)
    register_event_type("lead_routed", "Lead routing to destination", summary=_routed, **lead)
    register_event_type(
        "lead_updated", "Lead fields changed (merge of a duplicate, manual edit)", **lead
    )
    register_event_type("api_key_created", "An API key was created for a lead source")
    register_event_type("api_key_revoked", "An API key was revoked")
