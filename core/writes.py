"""What this process last saw when it wrote to the database: for /healthz.

A full disk cannot be seen by reading. SQLite's free space can be measured
(see the health check), but a PostgreSQL server's disk is on another machine,
and an UPDATE that fits in its page still succeeds there while every INSERT
that must extend a table fails. The writes the application makes anyway are
the honest probe: the lead API notes each refusal and each success here, and
/healthz reports "unwritable" while the latest write this process attempted
was refused (within HEALTHZ_WRITE_REFUSAL_SECONDS), with the reason.

Per process on purpose: it costs nothing, needs no shared store (the shared
store is what failed), and a balancer probing a node asks one of its
processes, which share its database and disk.
"""

import threading
import time
from dataclasses import dataclass

from django.db import DatabaseError


@dataclass(frozen=True)
class Refusal:
    reason: str
    at: float  # time.monotonic()


_lock = threading.Lock()
_last_refusal: Refusal | None = None


def reason_for(exc: BaseException) -> str:
    """A short, public reason for a refused write (no host names, no SQL)."""
    cause = exc.__cause__ or exc
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    message = str(cause).lower()
    if sqlstate == "53100" or "disk is full" in message or "disk full" in message:
        return "disk full"
    if sqlstate == "25006" or "readonly" in message or "read-only" in message:
        return "read-only"
    if (sqlstate or "").startswith("08") or "connection" in message:
        return "connection lost"
    return type(cause).__name__


def note_refused(exc: DatabaseError) -> None:
    global _last_refusal
    with _lock:
        _last_refusal = Refusal(reason=reason_for(exc), at=time.monotonic())


def note_accepted() -> None:
    global _last_refusal
    with _lock:
        _last_refusal = None


def recent_refusal(window_seconds: float) -> tuple[str, float] | None:
    """(reason, seconds ago) if the latest write was refused within the window."""
    with _lock:
        refusal = _last_refusal
    if refusal is None:
        return None
    age = time.monotonic() - refusal.at
    return (refusal.reason, round(age, 1)) if age <= window_seconds else None
