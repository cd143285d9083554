from django.conf import settings
from django.core import checks

from audit.legacy import LEGACY_EVENT_TYPES
from audit.types import known_event_types


@checks.register(checks.Tags.security, deploy=True)
def audit_signing_key(app_configs, **kwargs):  # type: ignore[no-untyped-def]
    if settings.AUDIT_SIGNING_KEY and len(settings.AUDIT_SIGNING_KEY) >= 32:
        return []
    return [
        checks.Warning(
            "AUDIT_SIGNING_KEY is not set or shorter than 32 characters.",
            hint="Set a long random AUDIT_SIGNING_KEY, kept out of the database and "
            "apart from SECRET_KEY, so audit events cannot be forged.",
            id="audit.W001",
        )
    ]


@checks.register()
def legacy_event_types(app_configs, **kwargs):  # type: ignore[no-untyped-def]
    missing = [name for name in LEGACY_EVENT_TYPES if name not in known_event_types()]
    if not missing:
        return []
    return [
        checks.Error(
            f"legacy event types not registered: {', '.join(missing)}",
            hint="The legacy API (audit.get_audit_logger) writes them; install the apps "
            "that register them (leads, leads.crm, leads.followups, leads.workflows).",
            id="audit.E001",
        )
    ]
