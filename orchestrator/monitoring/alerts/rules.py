"""The evaluators: for one rule's parameters and a time, what is wrong right now.

Each returns {key: Finding} for the keys whose condition holds; a key that
was open before and is missing now has resolved (services.evaluate_rule).
They only read, and each reads through an index: error counts and failed CRM
syncs are the dashboard's figures (orchestrator.dashboard.figures: the rollups
and the (event_type, timestamp) index), error groups through the partial
indexes on AuditEvent.fingerprint, tasks through django_tasks_db's partial
index on READY tasks, runs through (workflow, -started_at), the unsealed tail
of the audit trail through the primary key (audit.selectors.unsealed_events),
SMTP outages and failing steps through (event_type, timestamp) then their
details' stage, emails stuck in sending through (status, due_at).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, Min, Q, QuerySet
from django.urls import NoReverseMatch, reverse
from django_tasks_db.models import DBTaskResult, get_date_max

from audit import error_selectors
from audit import selectors as audit_selectors
from audit.models import AuditEvent
from leads.crm.models import CrmConnection
from leads.followups.models import OutboundEmail
from leads.followups.services.sending import SMTP_CONNECT
from leads.models import LeadSource
from leads.workflows.models import Workflow, WorkflowRun
from orchestrator.dashboard import figures
from orchestrator.monitoring.spikes import BaselineRule, baseline_threshold, exceeds_baseline

SITE = "errors"  # the key of the one site-wide incident of an error-spike rule
TRAIL = "audit"  # the key of the one incident of an unsealed-events rule
STUCK = "sending"  # the key of the one incident of an emails-stuck-sending rule
TOP_GROUPS = 5


@dataclass(frozen=True)
class Finding:
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    # A dashboard path (no host); services prefixes ALERTS_BASE_URL.
    path: str = ""


Evaluator = Callable[[dict[str, Any], datetime], dict[str, Finding]]


def _path(name: str, *args: Any, query: str = "") -> str:
    try:
        url = reverse(name, args=args)
    except NoReverseMatch:  # a deployment without the dashboard
        return ""
    return f"{url}?{query}" if query else url


def errors() -> QuerySet[AuditEvent]:
    # Spelled exactly as the partial indexes' condition so the planner uses them.
    return AuditEvent.objects.exclude(fingerprint="")


def _count_between(start: datetime, end: datetime) -> int:
    # The dashboard's and the reports' "Errors" figure, over the alert's window.
    return figures.errors(start=start, end=end)


def _top_groups(start: datetime, end: datetime) -> list[dict[str, Any]]:
    rows = (
        errors()
        .filter(timestamp__gte=start, timestamp__lt=end)
        .values("fingerprint")
        .annotate(n=Count("id"), error_type=Max("error_type"))
        .order_by("-n", "fingerprint")[:TOP_GROUPS]
    )
    return [
        {"fingerprint": r["fingerprint"], "error_type": r["error_type"], "count": r["n"]}
        for r in rows
    ]


def error_spike(params: dict[str, Any], now: datetime) -> dict[str, Finding]:
    """Errors in the last window against the same window on each of the past N days."""
    window = timedelta(minutes=params["window_minutes"])
    rule = BaselineRule(multiplier=params["multiplier"], min_count=params["min_count"])
    count = _count_between(now - window, now)
    if count < rule.min_count:
        return {}  # the cheap test first: a quiet site never reads its history
    day = timedelta(days=1)
    baseline = [
        _count_between(now - d * day - window, now - d * day)
        for d in range(1, params["baseline_days"] + 1)
    ]
    if not exceeds_baseline(count, baseline, rule):
        return {}
    mean = sum(baseline) / len(baseline)
    minutes = params["window_minutes"]
    return {
        SITE: Finding(
            summary=(
                f"{count} errors in the last {minutes} min, against {mean:.1f} on average "
                f"in the same window over the past {len(baseline)} days"
            ),
            details={
                "count": count,
                "baseline": baseline,
                "baseline_mean": round(mean, 3),
                "threshold": round(baseline_threshold(baseline, rule), 3),
                "window_minutes": minutes,
                "top_groups": _top_groups(now - window, now),
            },
            path=_path("error-list"),
        )
    }


def new_error_group(params: dict[str, Any], now: datetime) -> dict[str, Finding]:
    """Fingerprints whose first event ever falls in the last window."""
    since = now - timedelta(minutes=params["window_minutes"])
    recent = list(
        errors()
        .filter(timestamp__gte=since, timestamp__lte=now)
        .values("fingerprint")
        .annotate(n=Count("id"), first=Min("timestamp"), error_type=Max("error_type"))
        .order_by("first", "fingerprint")[:1000]
    )
    if not recent:
        return {}
    seen_before = set(
        errors()
        .filter(fingerprint__in=[r["fingerprint"] for r in recent], timestamp__lt=since)
        .values_list("fingerprint", flat=True)
        .distinct()
    )
    found: dict[str, Finding] = {}
    for row in recent:
        fp = row["fingerprint"]
        if fp in seen_before:
            continue
        if len(found) >= params["max_groups"]:
            break
        sample = (
            errors()
            .filter(fingerprint=fp, timestamp__gte=since)
            .order_by("-timestamp")
            .values("error_message", "workflow")
            .first()
            or {}
        )
        found[fp] = Finding(
            summary=f"New error {row['error_type']}: {sample.get('error_message', '')[:200]}",
            details={
                "fingerprint": fp,
                "error_type": row["error_type"],
                "first_seen": row["first"].isoformat(),
                "count": row["n"],
                "workflow": sample.get("workflow", ""),
            },
            path=_path("error-detail", fp),
        )
    return found


def error_regressed(params: dict[str, Any], now: datetime) -> dict[str, Finding]:
    """Resolved error groups that occurred again (error_selectors.regressed_groups), one
    incident per fingerprint while it stays regressed; resolving it again, unresolving
    or ignoring it ends the incident."""
    found: dict[str, Finding] = {}
    for fp, state, again in error_selectors.regressed_groups(now=now):
        if len(found) >= params["max_groups"]:
            break
        occurrences = errors().filter(
            fingerprint=fp, timestamp__gt=state.resolved_at, timestamp__lte=now
        )
        latest = occurrences.order_by("-timestamp", "-id").only("pk", "timestamp").first()
        if latest is None or state.resolved_at is None:
            continue  # pruned since regressed_groups() read it
        title = error_selectors.latest_title(fp)
        count = occurrences.count()
        found[fp] = Finding(
            summary=(
                f"Resolved error came back: {title[:200]} ({count} occurrences since it was "
                f"resolved at {state.resolved_at:%Y-%m-%d %H:%M} UTC"
                + (f"; assigned to {state.assignee}" if state.assignee else "")
                + ")"
            ),
            details={
                "fingerprint": fp,
                "title": title,
                "resolved_at": state.resolved_at.isoformat(),
                "regressed_at": again.isoformat(),
                "occurrences_since": count,
                "last_seen": latest.timestamp.isoformat(),
                "assignee": state.assignee,
                "event_id": latest.pk,
            },
            path=_path("error-detail", fp),
        )
    return found


def crm_failures(params: dict[str, Any], now: datetime) -> dict[str, Finding]:
    """Per CRM connection: failed syncs (figures.crm_sync_failures, the failures behind
    the "CRM sync success" card) in the window."""
    since = now - timedelta(minutes=params["window_minutes"])
    connections = CrmConnection.objects.filter(active=True)
    if params.get("connection"):
        connections = connections.filter(name=params["connection"])
    found: dict[str, Finding] = {}
    for connection in connections.only("pk", "name"):
        window = {"start": since, "end": now, "connection": connection.name}
        failures = figures.crm_sync_failures(**window)
        if failures < params["threshold"]:
            continue
        last = (
            figures.failed_crm_syncs(**window)
            .order_by("-timestamp", "-id")
            .only("timestamp", "error_message")
            .first()
        )
        last_error = last.error_message if last else ""
        found[connection.name] = Finding(
            summary=(
                f"{failures} failed syncs to CRM {connection.name} in the last "
                f"{params['window_minutes']} min; last: {last_error[:200]}"
            ),
            details={
                "connection": connection.name,
                "failures": failures,
                "threshold": params["threshold"],
                "last_failure_at": last.timestamp.isoformat() if last else None,
                "last_error": last_error,
            },
            path=_path("analytics"),
        )
    return found


def inbox_failing(params: dict[str, Any], now: datetime) -> dict[str, Finding]:
    """Inbox sources whose polls failed in the window.

    leads.intake.inbox.poll_source records a failed poll as an error event whose
    details name the source and the IMAP host (a bad message names a
    message_id instead), and the time of the last good poll in the source's
    state: "failing" means at least min_failures failed polls within the
    window and no good poll since the last of them.
    """
    since = now - timedelta(minutes=params["window_minutes"])
    sources = LeadSource.objects.filter(kind=LeadSource.Kind.EMAIL_INBOX, active=True)
    if params.get("source"):
        sources = sources.filter(slug=params["source"])
    slugs = set(sources.values_list("slug", flat=True))
    if not slugs:
        return {}
    polls = (
        errors()
        .filter(timestamp__gte=since, timestamp__lte=now, event_type="error")
        .filter(details__has_key="host")
        .exclude(details__has_key="message_id")
    )
    failures: dict[str, list[AuditEvent]] = {}
    for event in polls.order_by("-timestamp").only("timestamp", "details", "error_message")[:5000]:
        slug = (event.details or {}).get("source")
        if slug in slugs:
            failures.setdefault(slug, []).append(event)
    found: dict[str, Finding] = {}
    recovered = {
        slug: datetime.fromisoformat(state["last_poll_ok_at"])
        for slug, state in sources.values_list("slug", "state")
        if (state or {}).get("last_poll_ok_at")
    }
    for slug, events in sorted(failures.items()):
        if len(events) < params["min_failures"]:
            continue
        last = events[0]
        if slug in recovered and recovered[slug] > last.timestamp:
            continue  # a later poll worked: the inbox is back
        reason = (last.details or {}).get("reason") or last.error_message
        found[slug] = Finding(
            summary=(
                f"Inbox {slug}: {len(events)} failed polls in the last "
                f"{params['window_minutes']} min; last: {reason[:200]}"
            ),
            details={
                "source": slug,
                "failures": len(events),
                "last_failure_at": last.timestamp.isoformat(),
                "reason": reason,
                "event_id": last.pk,
            },
            path=_path("event-detail", last.pk),
        )
    return found


def queue_stalled(params: dict[str, Any], now: datetime) -> dict[str, Finding]:
    """Queues whose oldest runnable task has waited longer than max_age."""
    cutoff = now - timedelta(minutes=params["max_age_minutes"])
    # Runnable since before the cutoff: enqueued then, and not held back by
    # run_after (date max means "no run_after") past it.
    waiting = DBTaskResult.objects.filter(status="READY", enqueued_at__lte=cutoff).filter(
        Q(run_after=get_date_max()) | Q(run_after__lte=cutoff)
    )
    if params.get("queue"):
        waiting = waiting.filter(queue_name=params["queue"])
    rows = waiting.values("queue_name").annotate(n=Count("id"), oldest=Min("enqueued_at"))
    found: dict[str, Finding] = {}
    for row in rows.order_by("queue_name"):
        age = now - row["oldest"]
        minutes = int(age.total_seconds() // 60)
        found[row["queue_name"]] = Finding(
            summary=(
                f"Task queue {row['queue_name']} is not draining: {row['n']} tasks waiting "
                f"over {params['max_age_minutes']} min, the oldest for {minutes} min "
                "(is db_worker running?)"
            ),
            details={
                "queue": row["queue_name"],
                "waiting": row["n"],
                "oldest_enqueued_at": row["oldest"].isoformat(),
                "max_age_minutes": params["max_age_minutes"],
            },
            path=_path("overview"),
        )
    return found


def workflow_missed(params: dict[str, Any], now: datetime) -> dict[str, Finding]:
    """Enabled workflows with no run started within max_age (healthchecks' "late")."""
    max_age = timedelta(minutes=params["max_age_minutes"])
    workflows = Workflow.objects.filter(enabled=True)
    if params.get("workflow"):
        workflows = workflows.filter(name=params["workflow"])
    found: dict[str, Finding] = {}
    for workflow in workflows.only("pk", "name", "updated_at"):
        last = (
            WorkflowRun.objects.filter(workflow=workflow, dry_run=False)
            .order_by("-started_at")
            .values("started_at", "status")
            .first()
        )
        # A workflow that never ran is measured from its last change, so loading
        # a new one does not alarm before it had a chance to run.
        since = last["started_at"] if last else workflow.updated_at
        if now - since <= max_age:
            continue
        minutes = int((now - since).total_seconds() // 60)
        what = f"last run started {minutes} min ago" if last else "it has never run"
        found[workflow.name] = Finding(
            summary=(
                f"Workflow {workflow.name} missed its schedule: {what} "
                f"(expected every {params['max_age_minutes']} min)"
            ),
            details={
                "workflow": workflow.name,
                "last_run_started_at": last["started_at"].isoformat() if last else None,
                "last_run_status": last["status"] if last else None,
                "max_age_minutes": params["max_age_minutes"],
            },
            path=_path("workflow-runs", query=f"workflow={workflow.name}"),
        )
    return found


def unsealed_events(params: dict[str, Any], now: datetime) -> dict[str, Finding]:
    """The audit trail's unsealed window: the oldest event no seal covers is older
    than max_age_seconds (AUDIT_SEAL_MAX_AGE_SECONDS unless set), the bound
    verify_audit holds the sealer to. One incident; sealing resolves it."""
    max_age = params["max_age_seconds"] or settings.AUDIT_SEAL_MAX_AGE_SECONDS
    tail = audit_selectors.unsealed_events()
    if tail.oldest is None:
        return {}
    age = (now - tail.oldest).total_seconds()
    if age <= max_age:
        return {}
    return {
        TRAIL: Finding(
            summary=(
                f"{tail.count} audit events are not sealed, the oldest for {int(age)} s "
                f"(bound {max_age} s): is seal_audit running?"
            ),
            details={
                "unsealed": tail.count,
                "first_id": tail.first_id,
                "oldest_at": tail.oldest.isoformat(),
                "age_seconds": round(age, 1),
                "max_age_seconds": max_age,
            },
            path=_path("event-detail", tail.first_id) if tail.first_id else "",
        )
    }


def smtp_unreachable(params: dict[str, Any], now: datetime) -> dict[str, Finding]:
    """Per SMTP server: send passes that could not reach it in the window.

    send_followups records one error event per pass that found the server down
    (details stage smtp_connect, host, port, reason, due); an email sent after
    the last of them means the server is back.
    """
    since = now - timedelta(minutes=params["window_minutes"])
    outages = (
        errors()
        .filter(timestamp__gte=since, timestamp__lte=now, event_type="error")
        .filter(details__stage=SMTP_CONNECT)
    )
    failures: dict[str, list[AuditEvent]] = {}
    for event in outages.order_by("-timestamp", "-id").only("timestamp", "details")[:5000]:
        d = event.details or {}
        failures.setdefault(f"{d.get('host', '')}:{d.get('port', '')}", []).append(event)
    found: dict[str, Finding] = {}
    for server, events in sorted(failures.items()):
        if len(events) < params["min_failures"]:
            continue
        last = events[0]
        sent_since = AuditEvent.objects.filter(
            event_type="email_sent", timestamp__gt=last.timestamp, timestamp__lte=now
        )
        if sent_since.exists():
            continue
        d = last.details or {}
        found[server] = Finding(
            summary=(
                f"SMTP server {server} unreachable: {len(events)} send passes failed in the "
                f"last {params['window_minutes']} min, {d.get('due', '?')} follow-up emails "
                f"waiting; last: {str(d.get('reason', ''))[:200]}"
            ),
            details={
                "server": server,
                "failures": len(events),
                "last_failure_at": last.timestamp.isoformat(),
                "reason": d.get("reason", ""),
                "due": d.get("due"),
                "event_id": last.pk,
            },
            path=_path("event-detail", last.pk),
        )
    return found


def emails_stuck_sending(params: dict[str, Any], now: datetime) -> dict[str, Finding]:
    """Follow-up emails claimed longer ago than max_age and still in `sending`.

    A send pass requeues what a dead sender left behind after
    FOLLOWUPS_STUCK_SENDING_SECONDS, so what is left is either an email whose
    connection broke mid-send (outcome_unknown: it may have been delivered, a
    person decides) or a sign that no send pass runs. One incident.
    """
    cutoff = now - timedelta(minutes=params["max_age_minutes"])
    stuck = OutboundEmail.objects.filter(status=OutboundEmail.Status.SENDING, claimed_at__lt=cutoff)
    totals = stuck.aggregate(
        n=Count("id"), unknown=Count("id", filter=Q(outcome_unknown=True)), oldest=Min("claimed_at")
    )
    if not totals["n"]:
        return {}
    minutes = int((now - totals["oldest"]).total_seconds() // 60)
    unknown = totals["unknown"]
    dead = totals["n"] - unknown
    what = []
    if unknown:
        what.append(
            f"{unknown} cut off mid-send (may have been delivered: look for the Message-ID in "
            "the mail log, then requeue or cancel)"
        )
    if dead:
        what.append(f"{dead} left by a sender that stopped (is send_followups running?)")
    return {
        STUCK: Finding(
            summary=(
                f"{totals['n']} follow-up emails stuck in sending over "
                f"{params['max_age_minutes']} min, the oldest for {minutes} min: " + "; ".join(what)
            ),
            details={
                "stuck": totals["n"],
                "outcome_unknown": unknown,
                "oldest_claimed_at": totals["oldest"].isoformat(),
                "message_ids": list(
                    stuck.order_by("claimed_at", "pk").values_list("message_id", flat=True)[:20]
                ),
                "max_age_minutes": params["max_age_minutes"],
            },
            path=_path("admin:followups_outboundemail_changelist", query="status__exact=sending"),
        )
    }


def _stage_of(stage: Any, stages: list[str]) -> str | None:
    if not isinstance(stage, str):
        return None
    for name in stages:
        if stage == name or stage.startswith(f"{name}:"):
            return name
    return None


def step_failures(params: dict[str, Any], now: datetime) -> dict[str, Finding]:
    """Per stage: error events whose details.stage is one of `stages` (or
    "<stage>:<detail>"), at least `threshold` of them in the window."""
    since = now - timedelta(minutes=params["window_minutes"])
    stages = params["stages"]
    match = Q(details__stage__in=stages)
    for name in stages:
        match |= Q(details__stage__startswith=f"{name}:")
    failing = (
        errors().filter(timestamp__gte=since, timestamp__lte=now, event_type="error").filter(match)
    )
    by_stage: dict[str, list[AuditEvent]] = {}
    for event in failing.order_by("-timestamp", "-id").only(
        "timestamp", "details", "error_message", "lead_public_id"
    )[:5000]:
        name = _stage_of((event.details or {}).get("stage"), stages)
        if name is not None:
            by_stage.setdefault(name, []).append(event)
    found: dict[str, Finding] = {}
    for name, events in sorted(by_stage.items()):
        if len(events) < params["threshold"]:
            continue
        last = events[0]
        leads = {e.lead_public_id for e in events if e.lead_public_id}
        found[name] = Finding(
            summary=(
                f"{len(events)} {name} failures in the last {params['window_minutes']} min "
                f"({len(leads)} leads); last: {last.error_message[:200]}"
            ),
            details={
                "stage": name,
                "failures": len(events),
                "leads": len(leads),
                "stages": dict(Counter(e.details.get("stage") for e in events)),
                "threshold": params["threshold"],
                "last_failure_at": last.timestamp.isoformat(),
                "last_error": last.error_message,
                "event_id": last.pk,
            },
            path=_path("event-detail", last.pk),
        )
    return found
