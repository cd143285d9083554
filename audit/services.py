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

from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone

from audit.fingerprints import fingerprint
from audit.mirror import mirror_events
from audit.models import AuditEvent
from audit.signing import MAC_FIELDS, content_mac, fields_content, normalize_json
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
    # Validated before anything is set: a refused actor must not leave this
    # block's correlation id on every later event of the thread.
    valid_actor = _validate_actor(actor) if actor is not None else None
    cid_token = _correlation_id.set(cid)
    actor_token = _actor.set(valid_actor) if valid_actor is not None else None
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


def _clean_details(
    details: Mapping[str, Any] | None, *, normalized: bool = False
) -> dict[str, Any]:
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise AuditValidationError(
            f"details must be a JSON object (a dict), not {type(details).__name__}"
        )
    # Whether they serialize at all, and whether they hold a NUL, is found from
    # the MAC's canonical JSON (event_fields), not by another walk here.
    return dict(details) if normalized else normalize_json(dict(details))


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


def build_event(**kwargs: Any) -> AuditEvent:
    """Validate and sign an event without saving it (record_event and bulk import
    share this); arguments as for event_fields."""
    return AuditEvent(**event_fields(**kwargs))


def event_fields(
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
    normalized: bool = False,
) -> dict[str, Any]:
    """An event validated and signed, as its AuditEvent field values (the legacy
    import builds database rows from these without a model instance).

    allow_unknown_type: an imported legacy line keeps a type the vocabulary
    does not know (the caller has checked it is a usable name).

    normalized: details come from JSON decoded with normalize_json's folding
    already applied (audit.transfer), so no second walk is needed."""
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
    clean = _clean_details(details, normalized=normalized)
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
    fields = {
        "uuid": event_uuid or uuid.uuid4(),
        "timestamp": timestamp,
        "event_type": event_type,
        "actor": actor,
        "lead_public_id": lead_public_id,
        "workflow": workflow,
        "correlation_id": correlation_id,
        "details": clean,
        "error_type": error_type,
        "error_message": error_message,
        "traceback": traceback,
        "fingerprint": fingerprint(
            error_type=error_type, error_message=error_message, traceback=traceback
        ),
    }
    try:
        content = fields_content(fields, normalized=True)
    except (TypeError, ValueError) as exc:
        raise AuditValidationError(f"details are not JSON-serializable: {exc}") from None
    # JSON writes a NUL as \u0000; the walk only runs when that text appears.
    if "\\u0000" in content and _has_nul(clean):
        raise AuditValidationError("details contain a NUL character, which JSON columns refuse")
    fields["mac"] = content_mac(content)
    return fields


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
    elif connection.vendor == "postgresql":
        _insert_postgresql(event)
    else:
        event.save()
    transaction.on_commit(partial(mirror_events, [event]), robust=True)
    return event


def record_events(calls: list[Mapping[str, Any]]) -> list[AuditEvent]:
    """Record several events inside the caller's transaction, in order: one
    statement for all of them and one hand-off to the mirror.

    Each item holds record_event's keyword arguments. Nothing is written unless
    every one validates (AuditValidationError names the first that does not).
    A batch of leads writes its 500 lead_ingested events this way; one
    record_event each took a third of the batch's time.
    """
    events = [build_event(**kwargs) for kwargs in calls]
    if not events:
        return events
    rows = [storage_row(vars(e)) for e in events]
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        with connection.wrap_database_errors:
            ids = [connection.connection.execute(_SQLITE_INSERT, row).fetchone()[0] for row in rows]
    else:
        ids = _insert_returning_ids(rows)
    for event, pk in zip(events, ids, strict=True):
        event.id = pk
        event._state.adding = False
        event._state.db = connection.alias
    transaction.on_commit(partial(mirror_events, events), robust=True)
    return events


def _insert_returning_ids(rows: list[tuple[Any, ...]]) -> list[int]:
    """PostgreSQL: the rows in one INSERT, their ids in the order given."""
    casts = POSTGRESQL_CASTS
    group = "(" + ", ".join("%s" + casts.get(c, "") for c in STORAGE_COLUMNS) + ")"
    ids: list[int] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 1000):
            chunk = rows[start : start + 1000]
            cursor.execute(
                f"INSERT INTO audit_auditevent ({', '.join(STORAGE_COLUMNS)}) "
                f"VALUES {', '.join([group] * len(chunk))} RETURNING id",
                [value for row in chunk for value in row],
            )
            # PostgreSQL returns a multi-row VALUES insert's rows in order.
            ids.extend(pk for (pk,) in cursor.fetchall())
    return ids


# psycopg's default: a statement run this many times on a connection is prepared.
PSYCOPG_PREPARE_THRESHOLD = 5


def _insert_postgresql(event: AuditEvent) -> None:
    """The one write every pipeline step makes, as a prepared statement.

    Model.save() took 1.25 ms at p50 against 0.5 for a plain INSERT; Django's
    cursors bind values on the client, so PostgreSQL parsed and planned that
    INSERT again for every event. A server-binding psycopg cursor on Django's
    own connection (so in the caller's transaction) prepares it once per
    connection. settings.DB_PREPARED_STATEMENTS = False (env) turns that off
    for poolers that cannot keep prepared statements (PgBouncer in
    transaction mode before 1.21).
    """
    import psycopg  # the PostgreSQL driver; absent from SQLite-only installs

    connection.ensure_connection()
    raw = connection.connection
    prepare = settings.DB_PREPARED_STATEMENTS
    if prepare and raw.prepare_threshold is None:
        # Django turns psycopg's preparing off for every cursor (its own bind
        # on the client and cannot prepare anyway); only this one asks for it.
        raw.prepare_threshold = PSYCOPG_PREPARE_THRESHOLD
    row = storage_row(vars(event))
    with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        cursor.execute(_POSTGRESQL_INSERT, row, prepare=prepare)
        (event.id,) = cursor.fetchall()[0]
    event._state.adding = False
    event._state.db = connection.alias


# The types PostgreSQL is told the plain values (hex, JSON text) stand for.
POSTGRESQL_CASTS = {"uuid": "::uuid", "details": "::jsonb"}

# The MAC's fields first, then what is derived from them.
STORAGE_COLUMNS = (*MAC_FIELDS, "fingerprint", "mac")
_POSTGRESQL_INSERT = (
    f"INSERT INTO audit_auditevent ({', '.join(STORAGE_COLUMNS)}) VALUES ("
    + ", ".join("%s" + POSTGRESQL_CASTS.get(c, "") for c in STORAGE_COLUMNS)
    + ") RETURNING id"
)
_SQLITE_INSERT = (
    f"INSERT INTO audit_auditevent ({', '.join(STORAGE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(STORAGE_COLUMNS))}) RETURNING id"
)


# What JSONField stores on SQLite (json.dumps with no options), built once.
_STORED_JSON = json.JSONEncoder()


def storage_row(fields: Mapping[str, Any]) -> tuple[Any, ...]:
    """An event's field values (event_fields, or an instance's vars) as the
    STORAGE_COLUMNS values Django would store, in plain picklable types: the
    uuid as hex, details as JSON text, the time as SQLite's text or an aware
    datetime. test_fast_insert_matches_the_orm checks the SQLite side."""
    return (
        fields["uuid"].hex,
        connection.ops.adapt_datetimefield_value(fields["timestamp"]),
        fields["event_type"],
        fields["actor"],
        fields["lead_public_id"],
        fields["workflow"],
        fields["correlation_id"],
        _STORED_JSON.encode(fields["details"]),
        fields["error_type"],
        fields["error_message"],
        fields["traceback"],
        fields["fingerprint"],
        fields["mac"],
    )


def _insert_sqlite(event: AuditEvent) -> None:
    """The one write every pipeline step makes, on SQLite's own cursor.

    Model.save() spent half the time of a durable write (0.6 of 1.2 ms,
    measured) preparing a statement that never changes. Values are adapted
    the way Django stores them (test_fast_insert_matches_the_orm checks it);
    the statement runs in whatever transaction Django has open.
    """
    connection.ensure_connection()
    row = storage_row(vars(event))
    # Outside a transaction the INSERT is one of its own: it queues with the
    # other writers (core.db.sqlite3) rather than in SQLite's sleeping busy handler.
    queue = getattr(connection, "writer_queue", contextlib.nullcontext)
    with queue(), connection.wrap_database_errors:
        event.id = connection.connection.execute(_SQLITE_INSERT, row).fetchone()[0]
    event._state.adding = False
    event._state.db = connection.alias


def insert_rows(rows: list[tuple[Any, ...]]) -> int:
    """Insert storage_row tuples in the caller's transaction, skipping any whose
    uuid is stored already (a concurrent import of the same lines); how many
    were inserted."""
    if not rows:
        return 0
    # PostgreSQL is told the types the plain values stand for.
    casts = POSTGRESQL_CASTS if connection.vendor == "postgresql" else {}
    sql = (
        f"INSERT INTO audit_auditevent ({', '.join(STORAGE_COLUMNS)}) "
        f"VALUES ({', '.join('%s' + casts.get(c, '') for c in STORAGE_COLUMNS)}) "
        "ON CONFLICT (uuid) DO NOTHING"
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)
        inserted = cursor.rowcount
    return inserted if inserted >= 0 else len(rows)


def stored_uuids(hexes: list[str]) -> set[str]:
    """Which of these event uuids (hex) are stored."""
    found: set[str] = set()
    with connection.cursor() as cursor:
        for start in range(0, len(hexes), 900):
            chunk = hexes[start : start + 900]
            cast = "::uuid" if connection.vendor == "postgresql" else ""
            cursor.execute(
                f"SELECT uuid FROM audit_auditevent WHERE uuid IN "
                f"({', '.join(['%s' + cast] * len(chunk))})",
                chunk,
            )
            found.update(u.hex if isinstance(u, uuid.UUID) else u for (u,) in cursor.fetchall())
    return found


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
