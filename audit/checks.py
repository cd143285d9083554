from django.conf import settings
from django.core import checks


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
