"""Writes to the audit trail.

`record_event` joins the caller's transaction: the event commits with the
change it records and disappears with a rollback. The JSON Lines mirror is
written only after commit.
"""

import contextlib
import json
import re
import traceback as tb
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from datetime import datetime
from functools import partial
from typing import Any

from django.db import connection, models, transaction
from django.utils import timezone

from audit.fingerprints import fingerprint
from audit.mirror import mirror_events
from audit.models import AuditEvent
from audit.signing import mac_of, normalize_json
from audit.types import ERROR, validate_event_type
from core.http import client_ip

ACTOR_RE = re.compile(r"^(system|user:[^\s].{0,139}|api:[^\s].{0,139})$")

_actor: ContextVar[str] = ContextVar("audit_actor", default="system")
_correlation_id: ContextVar[str | None] = ContextVar("audit_correlation_id", default=None)


class AuditValidationError(ValueError):
    """An event that cannot be recorded as given; the message says which field and why."""


def new_correlation_id() -> str:
    return uuid.uuid4().hex


@contextlib.contextmanager
def audit_context(*, actor: str | None = None, correlation_id: str | None = None) -> Iterator[str]:
    """Default actor and correlation id for every event recorded inside the block.

    A request, a workflow run or a command opens one, so its events can be
    found together. Yields the correlation id in force.
    """
    cid = correlation_id or _correlation_id.get() or new_correlation_id()
    cid_token = _correlation_id.set(cid)
    actor_token = _actor.set(_validate_actor(actor)) if actor is not None else None
    try:
        yield cid
    finally:
        if actor_token is not None:
            _actor.reset(actor_token)
        _correlation_id.reset(cid_token)


def _validate_actor(actor: str) -> str:
    if not isinstance(actor, str) or not ACTOR_RE.match(actor):
        raise AuditValidationError(
            f"actor {actor!r} must be 'system', 'user:<username>' or 'api:<key name>' "
            "(at most 150 characters)"
        )
    return actor


def _check_length(field: str, value: str, limit: int) -> str:
    if not isinstance(value, str):
        raise AuditValidationError(f"{field} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise AuditValidationError(f"{field} is {len(value)} characters; the limit is {limit}")
    return value


def _clean_details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise AuditValidationError(
            f"details must be a JSON object (a dict), not {type(details).__name__}"
        )
    # Whether they serialize at all is found by the MAC's canonical JSON
    # (build_event), not by a second serialization here.
    if _has_nul(details):
        raise AuditValidationError("details contain a NUL character, which JSON columns refuse")
    return normalize_json(dict(details))


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def _no_nul(text: str) -> str:
    # Tracebacks and messages are captured, not chosen: keep them, minus the
    # one character PostgreSQL text columns refuse.
    return text.replace("\x00", "\\x00")


def build_event(
    *,
    event_type: str,
    actor: str | None = None,
    # Anything with a public_id (a leads.Lead); the store keeps only that id.
    lead: Any = None,
    lead_id: str | None = None,
    workflow: str | None = "",
    correlation_id: str | None = None,
    details: Mapping[str, Any] | None = None,
    exc: BaseException | None = None,
    error_type: str = "",
    error_message: str = "",
    traceback: str = "",
    timestamp: datetime | None = None,
    event_uuid: uuid.UUID | None = None,
    allow_unknown_type: bool = False,
) -> AuditEvent:
    """Validate and sign an event without saving it (record_event and bulk import share this).

    allow_unknown_type: an imported legacy line keeps a type the vocabulary
    does not know (the caller has checked it is a usable name)."""
    if not allow_unknown_type:
        validate_event_type(event_type)
    actor = _validate_actor(actor if actor is not None else _actor.get())
    if lead is not None:
        lead_id = lead.public_id
    lead_public_id = _check_length("lead_id", lead_id or "", 32)
    workflow = _check_length("workflow", workflow or "", 100)
    correlation_id = _check_length(
        "correlation_id", correlation_id or _correlation_id.get() or new_correlation_id(), 64
    )
    clean = _clean_details(details)
    if exc is not None:
        error_type = error_type or type(exc).__qualname__
        error_message = error_message or str(exc)
        traceback = traceback or "".join(tb.format_exception(exc))
    if event_type == ERROR and not (error_type or error_message):
        raise AuditValidationError("an error event needs exc= or error_type/error_message")
    error_type = _check_length("error_type", _no_nul(error_type or ""), 200)
    error_message = _no_nul(error_message or "")
    traceback = _no_nul(traceback or "")
    if timestamp is None:
        timestamp = timezone.now()
    elif timezone.is_naive(timestamp):
        raise AuditValidationError("timestamp must be timezone-aware")
    event_uuid = event_uuid or uuid.uuid4()
    event = AuditEvent(
        uuid=event_uuid,
        timestamp=timestamp,
        event_type=event_type,
        actor=actor,
        lead_public_id=lead_public_id,
        workflow=workflow,
        correlation_id=correlation_id,
        details=clean,
        error_type=error_type,
        error_message=error_message,
        traceback=traceback,
        fingerprint=fingerprint(
            error_type=error_type, error_message=error_message, traceback=traceback
        ),
    )
    try:
        event.mac = mac_of(event)
    except (TypeError, ValueError) as exc:
        raise AuditValidationError(f"details are not JSON-serializable: {exc}") from None
    return event


def record_event(**kwargs: Any) -> AuditEvent:
    """Record one audit event inside the caller's transaction.

    Keyword arguments as for build_event: event_type (a registered type),
    actor ('system', 'user:<name>', 'api:<key>'; default from audit_context),
    lead (a Lead) or lead_id (its public id), workflow, correlation_id
    (default from audit_context), details (a JSON object), and for errors exc=
    (its type, message and traceback are captured) or the three fields.
    Raises AuditValidationError or UnknownEventType on bad input.
    """
    event = build_event(**kwargs)
    if connection.vendor == "sqlite":
        _insert_sqlite(event)
    else:
        event.save()
    transaction.on_commit(partial(mirror_events, [event]), robust=True)
    return event


_SQLITE_COLUMNS = (
    "uuid",
    "timestamp",
    "event_type",
    "actor",
    "lead_public_id",
    "workflow",
    "correlation_id",
    "details",
    "error_type",
    "error_message",
    "traceback",
    "fingerprint",
    "mac",
)
_SQLITE_INSERT = (
    f"INSERT INTO audit_auditevent ({', '.join(_SQLITE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_SQLITE_COLUMNS))}) RETURNING id"
)


def _insert_sqlite(event: AuditEvent) -> None:
    """The one write every pipeline step makes, on SQLite's own cursor.

    Model.save() spent half the time of a durable write (0.6 of 1.2 ms,
    measured) preparing a statement that never changes. Values are adapted
    the way Django stores them (test_fast_insert_matches_the_orm checks it);
    the statement runs in whatever transaction Django has open.
    """
    connection.ensure_connection()
    params = (
        event.uuid.hex,
        connection.ops.adapt_datetimefield_value(event.timestamp),
        event.event_type,
        event.actor,
        event.lead_public_id,
        event.workflow,
        event.correlation_id,
        json.dumps(event.details),
        event.error_type,
        event.error_message,
        event.traceback,
        event.fingerprint,
        event.mac,
    )
    with connection.wrap_database_errors:
        event.id = connection.connection.execute(_SQLITE_INSERT, params).fetchone()[0]
    event._state.adding = False
    event._state.db = connection.alias


def insert_events(
    events: Iterable[AuditEvent], *, batch_size: int = 2000, mirror: bool = True
) -> int:
    """Bulk insert events built with build_event (import, benchmark fill).

    Each batch commits on its own, so a long import keeps what it has done if
    it is interrupted, and a rerun skips it by uuid.
    """
    total = 0
    batch: list[AuditEvent] = []
    for event in events:
        batch.append(event)
        if len(batch) >= batch_size:
            total += _insert_batch(batch, mirror=mirror)
            batch = []
    if batch:
        total += _insert_batch(batch, mirror=mirror)
    return total


def _insert_rows(batch: list[AuditEvent]) -> None:
    """One INSERT run for every event: what bulk_create does, without building
    a statement with one placeholder group per row (that took 150 us a row, the
    largest share of a legacy import's time). Values go through each field's own
    conversion, so they are stored exactly as bulk_create would store them."""
    fields = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    sql = "INSERT INTO {} ({}) VALUES ({})".format(
        quote(AuditEvent._meta.db_table),
        ", ".join(quote(str(f.column)) for f in fields),
        ", ".join(["%s"] * len(fields)),
    )
    # Text columns need no conversion; the others (uuid, time, JSON) do.
    converted = [
        (f.attname, None if isinstance(f, models.CharField | models.TextField) else f)
        for f in fields
    ]
    rows = [
        [
            getattr(event, name)
            if field is None
            else field.get_db_prep_save(getattr(event, name), connection)
            for name, field in converted
        ]
        for event in batch
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _insert_batch(batch: list[AuditEvent], *, mirror: bool) -> int:
    with transaction.atomic():
        _insert_rows(batch)
        if mirror:
            transaction.on_commit(partial(mirror_events, list(batch)), robust=True)
    return len(batch)


def record_login_failed(
    sender: Any = None, *, credentials: Mapping[str, Any], request: Any = None, **kwargs: Any
) -> None:
    """Receiver of django.contrib.auth's user_login_failed: an audit event per failure.

    Django has already masked the password in `credentials`; only the username
    is kept. The IP is the client's (core.http.client_ip: behind the proxy, the
    header it sets). Attempts the login form refuses unchecked (too many
    failures, orchestrator.accounts) never get here: they would flood the trail.
    """
    username = str(credentials.get("username", ""))[:150]
    ip = client_ip(request) if request is not None else ""
    record_event(
        event_type="login_failed",
        actor="system",
        details={"username": username, "ip": ip, "path": getattr(request, "path", "")},
    )
