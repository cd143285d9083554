"""The audit trail: append-only, tamper-evident events.

`from audit import get_audit_logger` gives the legacy facade (also importable
as `automation_orchestrator.audit`, the legacy script's path); new code calls
`audit.services.record_event` directly.
"""

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from audit.legacy import AuditLogger

DEFAULT_SETTINGS_MODULE = "orchestrator.settings"

_setup_lock = threading.Lock()


def setup_django() -> None:
    """Set Django up for a plain script that uses the legacy API, unless something
    already has: DJANGO_SETTINGS_MODULE from the environment, else the project's.

    Scripts written against the legacy module never called django.setup().
    Inside the project (manage.py, the web app, tests) the registry is ready
    and nothing happens.
    """
    from django.apps import apps
    from django.conf import settings

    with _setup_lock:
        # populate() sets loading and never clears it: besides "done", it also
        # catches a call while the registry fills (imported by an app module),
        # where a second populate() would raise "populate() isn't reentrant".
        if apps.ready or apps.loading:
            return
        if not settings.configured:
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", DEFAULT_SETTINGS_MODULE)
        import django

        django.setup()


def get_audit_logger() -> "AuditLogger":
    setup_django()
    # Imported lazily: this package is imported before the app registry is ready.
    from audit.legacy import get_audit_logger as _get

    return _get()
