"""The legacy JSON Lines format, read and written.

A line holds the legacy keys (timestamp, event_type, actor, lead_id, workflow,
details) and, as additions that legacy readers ignore, event_id,
correlation_id and the error fields.
"""

import json
import uuid
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any

from audit.signing import canonical_json, format_timestamp

LINE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["timestamp", "event_type"],
    "properties": {
        "timestamp": {"type": "string", "minLength": 10, "maxLength": 40},
        "event_type": {"type": "string", "pattern": "^[a-z][a-z0-9_]{1,63}$"},
        "actor": {"type": ["string", "null"], "maxLength": 150},
        "lead_id": {"type": ["string", "null"], "maxLength": 32},
        "workflow": {"type": ["string", "null"], "maxLength": 100},
        "details": {"type": ["object", "null"]},
        "event_id": {"type": "string", "pattern": "^[0-9a-fA-F-]{32,36}$"},
        "correlation_id": {"type": ["string", "null"], "maxLength": 64},
        "error_type": {"type": ["string", "null"], "maxLength": 200},
        "error_message": {"type": ["string", "null"]},
        "traceback": {"type": ["string", "null"]},
    },
}

# Lines without an event_id (written by the legacy script) get one derived from
# their content, so importing the same file twice adds nothing the second time.
LEGACY_NAMESPACE = uuid.UUID("6f1c2a52-8d0e-4a57-9a51-3c7f2f6a9e10")


def event_to_legacy(event: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "timestamp": format_timestamp(event.timestamp),
        "event_type": event.event_type,
        "actor": event.actor,
        "lead_id": event.lead_public_id or None,
        "workflow": event.workflow or None,
        "details": event.details,
        "event_id": str(event.uuid),
        "correlation_id": event.correlation_id or None,
    }
    if event.error_type or event.error_message or event.traceback:
        line["error_type"] = event.error_type
        line["error_message"] = event.error_message
        line["traceback"] = event.traceback
    return line


# json.dumps(event_to_legacy(e), ensure_ascii=False), put together from its
# parts: the mirror, exports and the import write millions of these, and the
# dict plus a generic encoder took twice as long. test_line_text_matches_dumps
# holds the two to the same bytes.
_DETAILS = json.JSONEncoder(ensure_ascii=False)


def _text_or_null(value: str) -> str:
    return encode_basestring(value) if value else "null"


def legacy_line_text(event: Any) -> str:
    """An event (an AuditEvent, or its field values as a mapping) as one legacy JSON line."""
    fields = event if isinstance(event, dict) else vars(event)
    text = (
        f'{{"timestamp": "{format_timestamp(fields["timestamp"])}", '
        f'"event_type": {encode_basestring(fields["event_type"])}, '
        f'"actor": {encode_basestring(fields["actor"])}, '
        f'"lead_id": {_text_or_null(fields["lead_public_id"])}, '
        f'"workflow": {_text_or_null(fields["workflow"])}, '
        f'"details": {_DETAILS.encode(fields["details"])}, '
        f'"event_id": "{fields["uuid"]}", '
        f'"correlation_id": {_text_or_null(fields["correlation_id"])}'
    )
    if fields["error_type"] or fields["error_message"] or fields["traceback"]:
        text += (
            f', "error_type": {encode_basestring(fields["error_type"])}, '
            f'"error_message": {encode_basestring(fields["error_message"])}, '
            f'"traceback": {encode_basestring(fields["traceback"])}'
        )
    return text + "}"


def parse_timestamp(raw: str) -> datetime:
    """ISO 8601 with a zone ("Z" or an offset); naive times are refused, not guessed."""
    ts = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {raw!r} has no time zone")
    return ts.astimezone(UTC)


def legacy_event_uuid(line: dict[str, Any], *, normalized: bool = False) -> uuid.UUID:
    if line.get("event_id"):
        return uuid.UUID(line["event_id"])
    return uuid.uuid5(LEGACY_NAMESPACE, canonical_json(line, normalized=normalized))
