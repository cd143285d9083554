"""The workflow runner: one pass polls a workflow's inboxes, then qualifies and routes
its new leads, one lead per transaction, and enqueues the downstream steps.

Two runners of the same workflow never handle the same lead: each lead is
claimed inside its own transaction with SELECT ... FOR UPDATE SKIP LOCKED on
PostgreSQL (a second runner skips it), and on SQLite the transaction holds
the database's write lock from BEGIN (transaction_mode IMMEDIATE), so the
check that the lead is still new and its update cannot interleave. A runner
killed mid-pass leaves each lead either fully processed or untouched.
"""

import logging
import threading
from collections import Counter
from datetime import timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.services import audit_context, new_correlation_id, record_event
from leads.intake.inbox import InboxError, poll_source
from leads.models import Lead, LeadSource
from leads.services import lead_qualify, lead_route
from leads.workflows.models import Workflow, WorkflowRun
from leads.workflows.steps import enqueue_steps, step_class

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
BATCH = 100
STALE_AFTER = timedelta(minutes=10)


class _DryRun(Exception):
    """Raised to roll back a lead's transaction in a dry run."""


def _process_lead(pk: int, workflow: Workflow, *, dry_run: bool, correlation_id: str) -> str:
    """Qualify and route one lead in one transaction; returns what happened to it."""
    config = workflow.config
    outcome = "skipped"
    try:
        with transaction.atomic():
            lead = (
                Lead.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(pk=pk, status=Lead.Status.NEW)
                .select_related("source", "workflow")
                .first()
            )
            if lead is None:
                return "skipped"  # another runner has it, or it is done
            result = lead_qualify(lead=lead, config=config.get("qualification", {}))
            outcome = str(result.status)
            routing = config.get("routing", {})
            if result.status in routing.get("route_statuses", [Lead.Status.QUALIFIED]):
                route = lead_route(lead=lead, config=routing)
                outcome += "+routed" if route.owner else "+unrouted"
                if route.owner is not None:
                    enqueue_steps(
                        lead_id=lead.pk,
                        steps=config.get("steps", []),
                        correlation_id=correlation_id,
                    )
            lead.processed_at = timezone.now()
            lead.save(update_fields=["processed_at"])
            if dry_run:
                raise _DryRun
    except _DryRun:
        return outcome
    return outcome


def _reconcile_steps(workflow: Workflow, correlation_id: str) -> int:
    """Enqueue again the steps routed leads should have had and have not (a
    step kind with a `missing` method says which); like sync_crm for the CRM."""
    requeued = 0
    for config in workflow.config.get("steps", []):
        step = step_class(config["kind"])()
        missing = getattr(step, "missing", None)
        if missing is None:
            continue
        for lead_id in missing(workflow=workflow, config=config):
            enqueue_steps(lead_id=lead_id, steps=[config], correlation_id=correlation_id)
            log.warning(
                "workflow %s: step %s enqueued again for lead %s",
                workflow.name,
                config["kind"],
                lead_id,
            )
            requeued += 1
    return requeued


def _record_failure(pk: int, workflow: Workflow, exc: Exception) -> None:
    with transaction.atomic():
        lead = Lead.objects.select_for_update().filter(pk=pk).first()
        if lead is None:
            return
        attempts = lead.attempts + 1
        Lead.objects.filter(pk=pk).update(
            attempts=F("attempts") + 1,
            last_error=f"{type(exc).__name__}: {exc}"[:2000],
            status=Lead.Status.FAILED if attempts >= MAX_ATTEMPTS else lead.status,
        )
        record_event(
            event_type="error",
            exc=exc,
            lead=lead,
            workflow=workflow.name,
            details={
                "stage": "qualify_route",
                "attempt": attempts,
                "gave_up": attempts >= MAX_ATTEMPTS,
            },
        )


def _poll_inboxes(workflow: Workflow, counts: Counter) -> None:
    for source in workflow.sources.filter(kind=LeadSource.Kind.EMAIL_INBOX, active=True):
        try:
            summary = poll_source(source=source)
        except InboxError:
            # poll_source has recorded the error event with its traceback; one
            # broken inbox must not stop the pass.
            counts["errors"] += 1
            continue
        counts["polled"] += summary.created


def mark_stale_runs(workflow: Workflow) -> int:
    """Runs still 'running' whose heartbeat stopped were killed (SIGKILL, power loss)."""
    cutoff = timezone.now() - STALE_AFTER
    return WorkflowRun.objects.filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff),
        workflow=workflow,
        status=WorkflowRun.Status.RUNNING,
    ).update(status=WorkflowRun.Status.INTERRUPTED, error="the runner stopped without finishing")


def run_pass(
    *,
    workflow: Workflow,
    dry_run: bool = False,
    limit: int | None = None,
    stop: threading.Event | None = None,
    poll: bool = True,
) -> WorkflowRun:
    """One pass over a workflow. SIGTERM (stop set) finishes the current lead and ends it."""
    stop = stop or threading.Event()
    correlation_id = new_correlation_id()
    started = timezone.now()
    mark_stale_runs(workflow)
    run = WorkflowRun.objects.create(
        workflow=workflow,
        started_at=started,
        heartbeat_at=started,
        dry_run=dry_run,
        correlation_id=correlation_id,
    )
    counts: Counter = Counter()
    with audit_context(correlation_id=correlation_id):
        record_event(
            event_type="workflow_started",
            workflow=workflow.name,
            details={"run_id": run.pk, "dry_run": dry_run, "limit": limit},
        )
        if poll and not dry_run:
            _poll_inboxes(workflow, counts)
        # Keyset over (created_at, id), oldest first: a lead that failed is not
        # retried within the same pass.
        last_created, last_id = None, 0
        while not stop.is_set() and (limit is None or counts["processed"] < limit):
            qs = Lead.objects.filter(
                workflow=workflow, status=Lead.Status.NEW, attempts__lt=MAX_ATTEMPTS
            )
            if last_created is not None:
                qs = qs.filter(
                    Q(created_at__gt=last_created) | Q(created_at=last_created, id__gt=last_id)
                )
            batch = list(qs.order_by("created_at", "id").values_list("pk", "created_at")[:BATCH])
            if not batch:
                break
            for pk, created in batch:
                if stop.is_set() or (limit is not None and counts["processed"] >= limit):
                    break
                last_created, last_id = created, pk
                try:
                    outcome = _process_lead(
                        pk, workflow, dry_run=dry_run, correlation_id=correlation_id
                    )
                except Exception as exc:
                    log.exception("lead %s failed in workflow %s", pk, workflow.name)
                    _record_failure(pk, workflow, exc)
                    counts["errors"] += 1
                    counts["processed"] += 1
                    continue
                if outcome == "skipped":
                    counts["skipped"] += 1
                    continue
                counts["processed"] += 1
                status, _, routed = outcome.partition("+")
                counts[status] += 1
                if routed:
                    counts[routed] += 1
            WorkflowRun.objects.filter(pk=run.pk).update(
                heartbeat_at=timezone.now(), counts=dict(counts)
            )
        if not dry_run and not stop.is_set():
            counts["steps_requeued"] += _reconcile_steps(workflow, correlation_id)
            if not counts["steps_requeued"]:
                del counts["steps_requeued"]
        finished = timezone.now()
        interrupted = stop.is_set()
        run.finished_at = finished
        run.heartbeat_at = finished
        run.counts = dict(counts)
        run.status = WorkflowRun.Status.INTERRUPTED if interrupted else WorkflowRun.Status.SUCCEEDED
        run.save(update_fields=["finished_at", "heartbeat_at", "counts", "status"])
        record_event(
            event_type="workflow_stopped",
            workflow=workflow.name,
            details={
                "run_id": run.pk,
                "reason": "signal" if interrupted else "completed",
                "counts": dict(counts),
                "duration_seconds": round((finished - started).total_seconds(), 3),
                "dry_run": dry_run,
            },
        )
    return run
