"""The registry of event types.

The store knows only its own vocabulary (errors, access to the trail,
imports, prunes, failed logins). Every other type is registered by the app
that writes it, from its AppConfig.ready(): leads registers lead_* and
api_key_*, leads.crm crm_*, leads.followups email_*, leads.workflows
workflow_*, the monitoring apps alert_* and report_*. Each type carries a
label, a category (the timeline's colour group) and a one-line summary of an
event's details, so a new type is added in one app and shows everywhere.
A deployment can add bare types with AUDIT_EXTRA_EVENT_TYPES.
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings

ERROR = "error"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
# The timeline's colour groups (type-<category> in dashboard.css).
CATEGORIES = ("lead", "crm", "email", "workflow", "error", "user")

# What an event is summarized from: its details, and the event for its other fields.
Summary = Callable[[Mapping[str, Any], Any], str]


def no_summary(details: Mapping[str, Any], event: Any) -> str:
    return ""


@dataclass(frozen=True)
class EventType:
    name: str
    label: str
    category: str = "user"
    summary: Summary = no_summary


class UnknownEventType(ValueError):
    pass


_TYPES: dict[str, EventType] = {}


def register_event_type(
    name: str, label: str, *, category: str = "user", summary: Summary = no_summary
) -> EventType:
    """Add a type to the vocabulary (idempotent for the same name: the first one stays)."""
    if not NAME_RE.match(name):
        raise ValueError(f"event type {name!r} must match {NAME_RE.pattern}")
    if category not in CATEGORIES:
        raise ValueError(f"event type {name!r}: category must be one of {', '.join(CATEGORIES)}")
    return _TYPES.setdefault(name, EventType(name, label, category, summary))


def event_type_info(name: str) -> EventType:
    """The registered type, or a bare one for AUDIT_EXTRA_EVENT_TYPES and old rows."""
    return _TYPES.get(name) or EventType(name, "Custom event type")


def known_event_types() -> dict[str, str]:
    """Every type a caller may record, name -> label."""
    extra = {name: "Custom event type" for name in settings.AUDIT_EXTRA_EVENT_TYPES}
    return {**extra, **{name: t.label for name, t in _TYPES.items()}}


def validate_event_type(name: object) -> str:
    if not isinstance(name, str) or (
        name not in _TYPES and name not in settings.AUDIT_EXTRA_EVENT_TYPES
    ):
        known = ", ".join(sorted(known_event_types()))
        raise UnknownEventType(
            f"unknown audit event type {name!r}; known types: {known} "
            "(add more with AUDIT_EXTRA_EVENT_TYPES)"
        )
    return name


# --- the store's own vocabulary -----------------------------------------------------------


def _error_summary(details: Mapping[str, Any], event: Any) -> str:
    stage = f" (in {details['stage']})" if details.get("stage") else ""
    return f"{event.error_type}: {event.error_message}"[:300] + stage


def _viewed_summary(details: Mapping[str, Any], event: Any) -> str:
    return f"viewed ({details['view']})" if details.get("view") else "viewed"


def _group_summary(action: str) -> Summary:
    def summary(details: Mapping[str, Any], event: Any) -> str:
        title = f" {details['title']}" if details.get("title") else ""
        extra = []
        if details.get("until"):
            extra.append(f"until {details['until']}")
        if details.get("count"):
            extra.append(f"for {details['count']} more occurrences")
        if details.get("assignee"):
            extra.append(f"to {details['assignee']}")
        if details.get("previous_assignee"):
            extra.append(f"from {details['previous_assignee']}")
        tail = f" ({', '.join(extra)})" if extra else ""
        return f"{action} error group {details.get('fingerprint', '')}{title}{tail}"[:300]

    return summary


# The error groups' states (audit.error_groups): who decided what about a group.
ERROR_GROUP_TYPES = {
    "error_group_resolved": ("An error group was resolved", "resolved"),
    "error_group_unresolved": ("An error group was marked unresolved", "unresolved"),
    "error_group_ignored": ("An error group was ignored", "ignored"),
    "error_group_unignored": ("An error group was no longer ignored", "unignored"),
    "error_group_assigned": ("An error group was assigned", "assigned"),
    "error_group_unassigned": ("An error group was unassigned", "unassigned"),
}


def register_audit_types() -> None:
    register_event_type(
        ERROR, "Error occurred with traceback", category="error", summary=_error_summary
    )
    register_event_type("audit_viewed", "Audit data was viewed", summary=_viewed_summary)
    register_event_type("audit_exported", "Audit data was exported")
    register_event_type("audit_imported", "Events were imported from a legacy log")
    register_event_type("audit_pruned", "Events past retention were archived and deleted")
    register_event_type("login_failed", "A login to the dashboard or admin failed")
    for name, (label, action) in ERROR_GROUP_TYPES.items():
        register_event_type(name, label, category="user", summary=_group_summary(action))


def text(value: Any) -> str:
    """A detail value for a summary line (None shows as nothing)."""
    return "" if value is None else str(value)
