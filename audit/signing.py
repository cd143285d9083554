"""Keyed MACs for events and seals.

The key comes from settings (AUDIT_SIGNING_KEY), never from the database, so
someone who can write the database but cannot read the key can neither change
an event nor forge one without `verify_audit` noticing.
"""

import hashlib
import hmac
import json
from datetime import UTC, datetime
from functools import cache
from typing import Any

from django.conf import settings

GENESIS = "0" * 64


@cache
def _key(configured: str, secret_key: str) -> bytes:
    if configured:
        return configured.encode()
    # Derived, so a developer machine works with no setup; production sets its
    # own key (the deploy check warns when it is missing).
    return hmac.new(secret_key.encode(), b"audit-signing-key", hashlib.sha256).digest()


def signing_key() -> bytes:
    return _key(settings.AUDIT_SIGNING_KEY, settings.SECRET_KEY)


def normalize_json(value: Any) -> Any:
    """The form a JSON value has after a round trip through either database.

    PostgreSQL's jsonb keeps numbers as numeric, so 1e20 comes back as an int;
    integral floats are therefore folded to ints on both sides of the MAC.
    """
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {k: normalize_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize_json(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(
        normalize_json(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def format_timestamp(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_mac(
    *,
    uuid: str,
    timestamp: datetime,
    event_type: str,
    actor: str,
    lead_public_id: str,
    workflow: str,
    correlation_id: str,
    details: Any,
    error_type: str,
    error_message: str,
    traceback: str,
) -> str:
    content = canonical_json(
        [
            str(uuid),
            format_timestamp(timestamp),
            event_type,
            actor,
            lead_public_id,
            workflow,
            correlation_id,
            details,
            error_type,
            error_message,
            traceback,
        ]
    )
    return hmac.new(signing_key(), content.encode(), hashlib.sha256).hexdigest()


def mac_of(event: Any) -> str:
    """Recompute the MAC of a stored AuditEvent."""
    return event_mac(
        uuid=str(event.uuid),
        timestamp=event.timestamp,
        event_type=event.event_type,
        actor=event.actor,
        lead_public_id=event.lead_public_id,
        workflow=event.workflow,
        correlation_id=event.correlation_id,
        details=event.details,
        error_type=event.error_type,
        error_message=event.error_message,
        traceback=event.traceback,
    )


def record_mac(fields: dict[str, Any]) -> str:
    """MAC of a seal or prune record: its fields in canonical JSON."""
    return hmac.new(signing_key(), canonical_json(fields).encode(), hashlib.sha256).hexdigest()
