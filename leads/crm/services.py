"""Writes for CRM sync. Each sync's state change and audit event commit together.

The HTTP calls run outside any transaction (a slow CRM must not hold a
database lock); the CrmRecord row is claimed first with a conditional UPDATE
(a lease), so a task and a `sync_crm` run never push the same lead at once.

A CRM that answers 429 (or sends Retry-After) when the connector's own tries
are spent has not failed the sync: the record is postponed to after the wait
it asked for, with a crm_deferred event, and only `max_deferrals` of those in
a row count as a failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from threading import Event

from django.db import connections, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from audit.services import audit_context, record_event
from core.retry import retry_delay as backoff
from leads.crm.base import BaseConnector, CrmError, CrmNotFound, Upsert
from leads.crm.models import CrmConnection, CrmRecord
from leads.crm.registry import get_connector
from leads.crm.throttle import RateLimiter
from leads.errors import NotApplicable
from leads.models import Lead
from leads.workflows.models import Workflow
from leads.workflows.steps import run_step

log = logging.getLogger(__name__)

# Failed syncs (each already retried inside the connector) before a record
# stops being retried on its own and waits for `sync_crm --retry-failed`.
MAX_ATTEMPTS = 5
RETRY_BASE = timedelta(minutes=2)  # doubles per failed sync
RETRY_MAX = timedelta(hours=6)
# Longer than the slowest sync the retry policy allows (attempts x (timeout +
# wait)), so a lease never lapses while its holder is still talking to the CRM.
LEASE = timedelta(minutes=15)
# A postponed sync waits what Retry-After says, at least DEFER_MIN (a
# "Retry-After: 0" that kept failing must not spin); without the header it
# backs off from DEFER_BASE.
DEFER_MIN = timedelta(seconds=5)
DEFER_BASE = timedelta(seconds=30)
DEFER_MAX = timedelta(minutes=10)
STEP_KIND = "crm_sync"

Status = CrmRecord.Status


def _claim(record: CrmRecord) -> bool:
    now = timezone.now()
    claimed = (
        CrmRecord.objects.filter(pk=record.pk)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .update(locked_until=now + LEASE)
    )
    return claimed == 1


def _release(record: CrmRecord) -> None:
    CrmRecord.objects.filter(pk=record.pk).update(locked_until=None)


def retry_delay(attempts: int) -> timedelta:
    return backoff(attempts, base=RETRY_BASE.total_seconds(), cap=RETRY_MAX.total_seconds())


def crm_sync_lead(
    *,
    lead: Lead,
    connection: CrmConnection,
    connector: BaseConnector | None = None,
    force: bool = False,
) -> CrmRecord:
    """Create or update the lead's contact in one CRM; return its CrmRecord.

    A record already synced since the lead last changed is left alone unless
    `force`, and so is one the CRM asked to wait for until then. Success records
    crm_create (also when a create this system sent earlier, its answer lost, made
    the contact the connector finds now) or crm_update; a 429 / Retry-After
    postpones the record (crm_deferred); failure records an
    error event, counts an attempt and schedules the next one, or marks the
    record as needing attention when the error is permanent or the attempts
    are used up. Raises nothing for a CRM failure: read the record's status.
    """
    record, _ = CrmRecord.objects.get_or_create(lead=lead, connection=connection)
    if (
        not force
        and record.status == Status.SYNCED
        and record.last_synced_at
        and record.last_synced_at >= lead.updated_at
    ):
        return record
    if (
        not force
        and record.deferrals
        and record.next_attempt_at is not None
        and record.next_attempt_at > timezone.now()
    ):
        # Postponed again since this task was enqueued: the CRM's wait stands.
        return record
    if not _claim(record):
        log.info("CRM record %s is being synced by another worker; skipped", record.pk)
        return record
    started = time.perf_counter()
    try:
        if connector is None:
            connector = get_connector(connection)
        result = _push(connector, record, lead)
    except CrmError as exc:
        if exc.rate_limited and connector is not None:
            return _record_deferral(record, lead, connection, exc, connector)
        return _record_failure(record, lead, connection, exc, connector)
    except BaseException:
        # A bug, not a CRM answer: free the record for the next run and let
        # the task fail with the traceback.
        _release(record)
        raise
    latency_ms = round((time.perf_counter() - started) * 1000)
    return _record_success(record, lead, connection, result, latency_ms, connector)


def _push(connector: BaseConnector, record: CrmRecord, lead: Lead) -> Upsert:
    connector.create_attempted = record.create_attempted_at is not None
    connector.before_create = partial(_mark_create_attempted, record)
    try:
        if record.external_id:
            try:
                connector.update(record.external_id, lead)
                return Upsert(record.external_id, created=False)
            except CrmNotFound:
                # Deleted or merged away in the CRM: find or create it again.
                log.warning(
                    "CRM contact %s is gone; upserting lead %s", record.external_id, lead.pk
                )
        return connector.upsert(lead)
    finally:
        # The connector serves the next record of a pass.
        connector.before_create = None
        connector.create_attempted = False


def _mark_create_attempted(record: CrmRecord) -> None:
    # Committed before the request goes out (autocommit, outside any
    # transaction of ours), so a worker killed while waiting for the answer
    # still leaves the trace.
    if record.create_attempted_at is None:
        record.create_attempted_at = timezone.now()
        CrmRecord.objects.filter(pk=record.pk).update(
            create_attempted_at=record.create_attempted_at
        )


def _details(connection: CrmConnection, connector: BaseConnector | None) -> dict:
    return {
        "crm_type": connection.kind,
        "connection": connection.name,
        "http_attempts": connector.attempt if connector else 0,
        "http_calls": connector.calls if connector else 0,
    }


def _record_success(
    record: CrmRecord,
    lead: Lead,
    connection: CrmConnection,
    result: Upsert,
    latency_ms: int,
    connector: BaseConnector | None,
) -> CrmRecord:
    now = timezone.now()
    with transaction.atomic():
        record.external_id = result.external_id
        record.status = Status.SYNCED
        record.attempts = 0
        record.deferrals = 0
        record.create_attempted_at = None
        record.last_error = ""
        record.last_synced_at = now
        record.next_attempt_at = None
        record.locked_until = None
        record.save()
        record_event(
            event_type="crm_create" if result.created else "crm_update",
            lead=lead,
            workflow=lead.workflow_name,
            details={
                **_details(connection, connector),
                # "crm_record_id" is the key the legacy log used for the same id.
                "crm_record_id": result.external_id,
                "external_id": result.external_id,
                "latency_ms": latency_ms,
            },
        )
    return record


def _record_failure(
    record: CrmRecord,
    lead: Lead,
    connection: CrmConnection,
    exc: CrmError,
    connector: BaseConnector | None,
) -> CrmRecord:
    now = timezone.now()
    with transaction.atomic():
        record.refresh_from_db()
        record.attempts += 1
        record.deferrals = 0
        gave_up = exc.permanent or record.attempts >= MAX_ATTEMPTS
        record.status = Status.NEEDS_ATTENTION if gave_up else Status.FAILED
        record.next_attempt_at = None if gave_up else now + retry_delay(record.attempts)
        record.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        record.locked_until = None
        record.save()
        record_event(
            event_type="error",
            exc=exc,
            lead=lead,
            workflow=lead.workflow_name,
            details={
                **_details(connection, connector),
                "stage": STEP_KIND,
                "permanent": exc.permanent,
                "status_code": exc.status,
                "attempt": record.attempts,
                "gave_up": gave_up,
                "record_status": record.status,
            },
        )
    log.warning("CRM sync of lead %s to %s failed: %s", lead.pk, connection.name, exc)
    return record


def _record_deferral(
    record: CrmRecord,
    lead: Lead,
    connection: CrmConnection,
    exc: CrmError,
    connector: BaseConnector,
) -> CrmRecord:
    """The CRM asked us to wait: reschedule the record, no failure, no error event.

    Past `max_deferrals` in a row the CRM is not merely busy: the sync fails
    (an attempt, an error event) saying so.
    """
    deferrals = CrmRecord.objects.filter(pk=record.pk).values_list("deferrals", flat=True).get() + 1
    if deferrals > connector.max_deferrals:
        try:
            raise CrmError(
                f"rate-limited {deferrals} times in a row (max_deferrals "
                f"{connector.max_deferrals}); last answer: {exc}",
                status=exc.status,
                retry_after=exc.retry_after,
                body=exc.body,
            ) from exc
        except CrmError as failure:
            return _record_failure(record, lead, connection, failure, connector)
    if exc.retry_after is not None:
        wait = max(timedelta(seconds=exc.retry_after), DEFER_MIN)
    else:
        wait = backoff(deferrals, base=DEFER_BASE.total_seconds(), cap=DEFER_MAX.total_seconds())
    now = timezone.now()
    # The last 429 will be tried again: not a call that failed for good.
    connector.mark_last_call_retried()
    with transaction.atomic():
        record.refresh_from_db()
        record.deferrals = deferrals
        # A failed record stays failed (its attempts still count); any other
        # becomes pending, so the pass after the wait picks it up.
        if record.status != Status.FAILED:
            record.status = Status.PENDING
        record.next_attempt_at = now + wait
        record.last_error = f"deferred: {exc}"[:2000]
        record.locked_until = None
        record.save()
        record_event(
            event_type="crm_deferred",
            lead=lead,
            workflow=lead.workflow_name,
            details={
                **_details(connection, connector),
                "status_code": exc.status,
                "retry_after": exc.retry_after,
                "wait_seconds": wait.total_seconds(),
                "next_attempt_at": record.next_attempt_at.isoformat(),
                "deferrals": deferrals,
            },
        )
    log.info(
        "CRM sync of lead %s to %s postponed %ss: %s",
        lead.pk,
        connection.name,
        wait.total_seconds(),
        exc,
    )
    return record


# --- Batches (sync_crm) ---------------------------------------------------------------


def crm_queue_missing(*, connection: CrmConnection) -> int:
    """Pending records for routed leads whose workflow syncs to this connection but
    that have no record yet (their task never ran: no worker, or it was lost)."""
    workflows = [
        wf.pk
        for wf in Workflow.objects.all()
        if any(
            step.get("kind") == STEP_KIND and step.get("connection") == connection.name
            for step in (wf.config or {}).get("steps", [])
        )
    ]
    if not workflows:
        return 0
    leads = (
        Lead.objects.filter(workflow__in=workflows, owner__isnull=False)
        .exclude(crm_records__connection=connection)
        .values_list("pk", flat=True)
    )
    records = [CrmRecord(lead_id=pk, connection=connection) for pk in leads]
    CrmRecord.objects.bulk_create(records, ignore_conflicts=True)
    return len(records)


def due_records(*, connection: CrmConnection, retry_failed: bool = False) -> QuerySet[CrmRecord]:
    """Records to sync now: pending, failed and due, and with retry_failed also
    those needing attention (and failed ones not yet due)."""
    now = timezone.now()
    # A pending record with a next attempt time was postponed by the CRM.
    due = Q(status=Status.PENDING, next_attempt_at__isnull=True) | Q(
        status__in=[Status.PENDING, Status.FAILED], next_attempt_at__lte=now
    )
    if retry_failed:
        due |= Q(status__in=[Status.FAILED, Status.NEEDS_ATTENTION])
    return (
        CrmRecord.objects.filter(due, connection=connection)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .select_related("lead__workflow")
        .order_by("next_attempt_at", "pk")
    )


def crm_sync_due(
    *,
    connection: CrmConnection,
    retry_failed: bool = False,
    limit: int | None = None,
    stop: Event | None = None,
) -> Counter:
    """Sync the connection's due records inline; return counts by status.

    Up to the connection's `concurrency` records at once, each thread with its
    own connector (HTTP session) and database connection, all paced by one
    RateLimiter at `rate_limit` requests per second. Inside a transaction the
    records are synced one at a time in this thread: other threads could not
    see its uncommitted rows, or would wait on its locks.
    """
    counts: Counter = Counter()
    counts["queued"] = crm_queue_missing(connection=connection)
    records = list(due_records(connection=connection, retry_failed=retry_failed)[:limit])
    if not records:
        return counts
    try:
        connector = get_connector(connection)
    except CrmError as exc:
        for record in records:
            _record_failure(record, record.lead, connection, exc, None)
        counts[Status.NEEDS_ATTENTION] += len(records)
        return counts
    limiter = RateLimiter(connector.rate_limit)
    # Set by a thread that met a bug, so the others stop too; `stop` is the caller's.
    halt = Event()
    queue = _Queue(records, stops=[e for e in (stop, halt) if e is not None])
    workers = min(connector.concurrency, len(records))
    if workers == 1 or transaction.get_connection().in_atomic_block:
        connector.limiter = limiter
        counts.update(_sync_records(queue, connector, limiter))
        return counts
    with ThreadPoolExecutor(workers, thread_name_prefix=f"sync_crm-{connection.name}") as pool:
        futures = [
            pool.submit(_sync_thread, queue, connection, limiter, halt) for _ in range(workers)
        ]
        for future in futures:
            counts.update(future.result())
    return counts


class _Queue:
    """The records of a pass, handed out one at a time to whichever thread asks."""

    def __init__(self, records: list[CrmRecord], *, stops: list[Event]) -> None:
        self._records: Iterator[CrmRecord] = iter(records)
        self._lock = threading.Lock()
        self._stops = stops

    def next(self) -> CrmRecord | None:
        """The next record, or None when there is none or the pass must stop."""
        if any(e.is_set() for e in self._stops):
            return None
        with self._lock:
            return next(self._records, None)


def _sync_thread(
    queue: _Queue, connection: CrmConnection, limiter: RateLimiter, halt: Event
) -> Counter:
    try:
        # Its own session and per-call state (lead, attempt, last call row).
        connector = get_connector(connection)
        connector.limiter = limiter
        return _sync_records(queue, connector, limiter)
    except BaseException:
        # A bug: the other threads stop after their current record.
        halt.set()
        raise
    finally:
        # Django opened this thread's connection; nobody else will close it.
        connections.close_all()


def _sync_records(queue: _Queue, connector: BaseConnector, limiter: RateLimiter) -> Counter:
    counts: Counter = Counter()
    while True:
        if limiter.closed_for() > connector.max_retry_after:
            # The CRM wants a long rest: the rest of the pass waits for the next one.
            break
        record = queue.next()
        if record is None:
            break
        result = crm_sync_lead(
            lead=record.lead, connection=connector.connection, connector=connector, force=True
        )
        counts["deferred" if result.deferrals else result.status] += 1
    return counts


# --- By hand (dashboard) -----------------------------------------------------------------


def crm_connections_for(*, lead: Lead) -> list[CrmConnection]:
    """The active connections the lead is, or should be, synced to: those it has a record
    in, and, once it is routed, those its workflow's crm_sync steps name."""
    names = {r.connection.name for r in lead.crm_records.select_related("connection")}
    if lead.owner_id is not None and lead.workflow_id is not None:
        names |= {
            step.get("connection")
            for step in (lead.workflow.config or {}).get("steps", [])
            if step.get("kind") == STEP_KIND
        }
    return list(CrmConnection.objects.filter(name__in=names, active=True).order_by("name"))


def crm_retry_lead(*, lead: Lead, actor: str) -> list[CrmRecord]:
    """An operator asks for the lead to be synced again to each of its CRM connections.

    Each record becomes pending and due now (a synced one is pushed again), a
    crm_sync_requested event names them, and a crm_sync task per connection is
    enqueued when the transaction commits (`sync_crm` would find the pending
    records too). The HTTP calls never run inside the web request: a slow CRM
    must not hold it. Records being synced this moment are left to that sync.
    Raises NotApplicable when the lead has no active connection to sync to.
    """
    connections = crm_connections_for(lead=lead)
    if not connections:
        raise NotApplicable(f"{lead.public_id} has no active CRM connection to sync to.")
    now = timezone.now()
    queued: list[CrmRecord] = []
    previous: dict[str, str] = {}
    with transaction.atomic(), audit_context() as correlation_id:
        for connection in connections:
            record, _ = CrmRecord.objects.get_or_create(lead=lead, connection=connection)
            requeued = (
                CrmRecord.objects.filter(pk=record.pk)
                .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
                .update(status=Status.PENDING, next_attempt_at=now)
            )
            if not requeued:
                continue
            previous[connection.name] = record.status
            record.status, record.next_attempt_at = Status.PENDING, now
            queued.append(record)
        if not queued:
            raise NotApplicable(
                f"{lead.public_id} is being synced right now; look again in a minute."
            )
        record_event(
            event_type="crm_sync_requested",
            actor=actor,
            lead=lead,
            workflow=lead.workflow_name,
            details={
                "connections": [r.connection.name for r in queued],
                "previous_status": previous,
            },
        )
        for record in queued:
            transaction.on_commit(
                partial(
                    run_step.enqueue,
                    STEP_KIND,
                    lead.pk,
                    {"kind": STEP_KIND, "connection": record.connection.name},
                    correlation_id,
                )
            )
    return queued
