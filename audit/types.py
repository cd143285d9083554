"""The registry of event types.

The eleven legacy types keep their names; newer ones are added here, and a
deployment can add its own with AUDIT_EXTRA_EVENT_TYPES or register_event_type().
"""

import re

from django.conf import settings

LEGACY_EVENT_TYPES: dict[str, str] = {
    "lead_ingested": "New lead captured from source",
    "lead_qualified": "Lead qualification decision",
    "lead_routed": "Lead routing to destination",
    "crm_create": "CRM record created",
    "crm_update": "CRM record updated",
    "email_sent": "Follow-up email sent",
    "email_scheduled": "Email sequence scheduled",
    "email_cancelled": "Email sequence cancelled",
    "workflow_started": "Workflow processing started",
    "workflow_stopped": "Workflow processing stopped",
    "error": "Error occurred with traceback",
}

EVENT_TYPES: dict[str, str] = {
    **LEGACY_EVENT_TYPES,
    "lead_updated": "Lead fields changed (merge of a duplicate, manual edit)",
    "email_replied": "The lead replied to a follow-up email",
    "email_opened": "A follow-up email was opened",
    "email_clicked": "A link in a follow-up email was clicked",
    "email_bounced": "A follow-up email bounced",
    "alert_sent": "An alert notification was sent",
    "alert_snoozed": "An alert rule or incident was snoozed (or the snooze cleared)",
    "report_sent": "A scheduled report was sent",
    "audit_viewed": "Audit data was viewed",
    "audit_exported": "Audit data was exported",
    "audit_imported": "Events were imported from a legacy log",
    "audit_pruned": "Events past retention were archived and deleted",
    "api_key_created": "An API key was created for a lead source",
    "api_key_revoked": "An API key was revoked",
    "crm_sync_requested": "A CRM sync was requested by hand (dashboard)",
    "login_failed": "A login to the dashboard or admin failed",
}

ERROR = "error"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,63}$")


class UnknownEventType(ValueError):
    pass


def register_event_type(name: str, description: str) -> None:
    if not NAME_RE.match(name):
        raise ValueError(f"event type {name!r} must match {NAME_RE.pattern}")
    EVENT_TYPES.setdefault(name, description)


def known_event_types() -> dict[str, str]:
    extra = {name: "Custom event type" for name in settings.AUDIT_EXTRA_EVENT_TYPES}
    return {**extra, **EVENT_TYPES}


def validate_event_type(name: object) -> str:
    if not isinstance(name, str) or name not in known_event_types():
        known = ", ".join(sorted(known_event_types()))
        raise UnknownEventType(
            f"unknown audit event type {name!r}; known types: {known} "
            "(add more with AUDIT_EXTRA_EVENT_TYPES)"
        )
    return name
