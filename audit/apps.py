from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_login_failed

        from audit import checks  # noqa: F401  (registers system checks)
        from audit.services import record_login_failed
        from audit.types import register_audit_types

        register_audit_types()

        # Failed logins go into the monthly compliance report.
        user_login_failed.connect(record_login_failed, dispatch_uid="audit_login_failed")
