"""The audit trail: append-only, tamper-evident events.

`from audit import get_audit_logger` gives the legacy facade; new code calls
`audit.services.record_event` directly.
"""


def get_audit_logger():  # type: ignore[no-untyped-def]
    # Imported lazily: this package is imported before the app registry is ready.
    from audit.legacy import get_audit_logger as _get

    return _get()
