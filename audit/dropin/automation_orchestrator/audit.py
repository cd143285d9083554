"""The legacy audit script's module, backed by the project's audit trail.

    from automation_orchestrator.audit import get_audit_logger
    audit = get_audit_logger()
    audit.log_lead_ingested("LEAD-001", "web_form", lead_data, "sales")

Scripts that imported the legacy module never set Django up, so importing
this one does it for them (audit.setup_django): DJANGO_SETTINGS_MODULE from
the environment, else the project's settings, with the database from
DATABASE_URL as for manage.py. Imported by a process that has set Django up
already, it leaves Django alone.
"""

from audit import setup_django

setup_django()

# After setup: audit.legacy imports models, which need the app registry.
from audit.legacy import LEGACY_EVENT_TYPES, AuditLogger, get_audit_logger  # noqa: E402

__all__ = ["LEGACY_EVENT_TYPES", "AuditLogger", "get_audit_logger"]
