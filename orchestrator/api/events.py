"""The events API's audit vocabulary: every call a key makes leaves one of these."""

from collections.abc import Mapping
from typing import Any

from audit.types import register_event_type, text


def _written(d: Mapping[str, Any], event: Any) -> str:
    return (
        f"{len(d.get('accepted') or [])} accepted, {text(d.get('already_present'))} already "
        f"present, {text(d.get('rejected'))} rejected"
    )


def _read(d: Mapping[str, Any], event: Any) -> str:
    return f"{text(d.get('view'))}: {text(d.get('returned'))} events"


def _refused(d: Mapping[str, Any], event: Any) -> str:
    return f"{text(d.get('method'))} {text(d.get('path'))}: {text(d.get('status'))}"


def register() -> None:
    register_event_type(
        "api_events_written", "Events were written through the events API", summary=_written
    )
    register_event_type("api_events_read", "Events were read through the events API", summary=_read)
    register_event_type(
        "api_request_refused",
        "An events API request by a valid key was refused (bad body or query)",
        summary=_refused,
    )
