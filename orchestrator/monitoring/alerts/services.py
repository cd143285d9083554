"""Alert evaluation and delivery: one alert per incident, retried until it is through.

A pass (check_alerts) evaluates every enabled rule, then sends what is due.

- A condition found for a (rule, key) with no open incident opens one and
  queues an "opened" notice per enabled channel of the rule.
- While the incident stays open nothing more is sent, unless it was snoozed
  (on the rule or the incident) and the snooze ran out with the condition
  still there: then it is announced again, once.
- When the condition is gone the incident resolves and, if the rule wants
  it and anyone was told it opened, a "resolved" notice is queued.
- A snooze suppresses notices (opened and resolved) while it lasts; the
  incidents themselves still open and resolve.

Sending: each due Delivery is claimed with a conditional UPDATE that moves
its next_attempt_at ahead (a lease), so two senders never send it at once
and a sender killed mid-send leaves it to be tried again (at least once: an
alert sent twice beats one never sent). Success marks it sent and writes
`alert_sent` in one transaction; a transient failure schedules the next
attempt with exponential backoff (or the receiver's Retry-After); a
permanent failure, or running out of attempts, marks it failed. Either way
the error is kept on the Delivery.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from audit.services import record_event
from core.retry import retry_delay as backoff
from orchestrator.monitoring.alerts import params as rule_params
from orchestrator.monitoring.alerts.channels import ChannelError, Notice
from orchestrator.monitoring.alerts.models import AlertRule, Delivery, Incident
from orchestrator.monitoring.alerts.registry import get_channel
from orchestrator.monitoring.alerts.rules import Finding
from orchestrator.monitoring.alerts.selectors import due_delivery_ids, enabled_rules, open_incidents

log = logging.getLogger(__name__)

# How long a claimed delivery is left alone before another sender may take it.
CLAIM_LEASE = timedelta(minutes=5)


@dataclass
class CheckSummary:
    counts: Counter[str] = field(default_factory=Counter)
    # Rule name -> why it could not be evaluated.
    invalid: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        keys = ["rules", "opened", "resolved", "queued", "sent", "retry", "failed"]
        text = ", ".join(f"{k} {self.counts[k]}" for k in keys)
        if self.invalid:
            text += "; invalid rules: " + "; ".join(f"{k}: {v}" for k, v in self.invalid.items())
        return text


# --- Settings ----------------------------------------------------------------------------


def base_url() -> str:
    # ALERTS_BASE_URL defaults to FOLLOWUPS_BASE_URL in settings; an empty one still falls back.
    return (settings.ALERTS_BASE_URL or settings.FOLLOWUPS_BASE_URL).rstrip("/")


def max_attempts() -> int:
    return settings.ALERTS_MAX_ATTEMPTS


def retry_delay(attempts: int, retry_after: float | None = None) -> timedelta:
    """Backoff between passes: base, 2 x base, 4 x base, ... up to the cap, or Retry-After."""
    return backoff(
        attempts,
        base=settings.ALERTS_RETRY_BASE_SECONDS,
        cap=settings.ALERTS_RETRY_MAX_SECONDS,
        retry_after=retry_after,
    )


# --- Evaluation --------------------------------------------------------------------------


def snoozed_until(incident: Incident, rule: AlertRule) -> datetime | None:
    times = [t for t in (rule.snooze_until, incident.snooze_until) if t is not None]
    return max(times) if times else None


def _should_announce(incident: Incident, rule: AlertRule, now: datetime) -> bool:
    until = snoozed_until(incident, rule)
    if until is not None and until > now:
        return False
    if incident.last_notified_at is None:
        return True
    # Told before a snooze that has now run out, and still firing: say so once more.
    return until is not None and incident.last_notified_at < until


def _queue(incident: Incident, rule: AlertRule, notice: str, now: datetime) -> int:
    channels = [c for c in rule.channels.all() if c.enabled]
    Delivery.objects.bulk_create(
        Delivery(incident=incident, channel=c, notice=notice, next_attempt_at=now, created_at=now)
        for c in channels
    )
    return len(channels)


def evaluate_rule(*, rule: AlertRule, now: datetime | None = None) -> Counter[str]:
    """Open, update and resolve the rule's incidents; queue their notices.

    Raises ValueError when the rule's parameters do not validate.
    """
    now = now or timezone.now()
    resolved_params = rule_params.resolve(rule.kind, rule.params)
    findings: dict[str, Finding] = rule_params.evaluator(rule.kind)(resolved_params, now)
    counts: Counter[str] = Counter()
    with transaction.atomic():
        current = open_incidents(rule=rule)
        for key, finding in findings.items():
            incident = current.get(key)
            if incident is None:
                try:
                    with transaction.atomic():
                        incident = Incident.objects.create(
                            rule=rule,
                            key=key[:200],
                            opened_at=now,
                            last_seen_at=now,
                            summary=finding.summary[:500],
                            details=finding.details,
                            path=finding.path[:500],
                        )
                except IntegrityError:
                    continue  # another evaluator opened it a moment ago
                counts["opened"] += 1
            else:
                incident.summary = finding.summary[:500]
                incident.details = finding.details
                incident.path = finding.path[:500] or incident.path
                incident.last_seen_at = now
            if _should_announce(incident, rule, now):
                counts["queued"] += _queue(incident, rule, Delivery.Notice.OPENED, now)
                incident.last_notified_at = now
            incident.save()
        for key, incident in current.items():
            if key in findings:
                continue
            incident.state = Incident.State.RESOLVED
            incident.resolved_at = now
            until = snoozed_until(incident, rule)
            if (
                rule.notify_resolved
                and incident.last_notified_at is not None
                and (until is None or until <= now)
            ):
                counts["queued"] += _queue(incident, rule, Delivery.Notice.RESOLVED, now)
                incident.last_notified_at = now
            incident.save(update_fields=["state", "resolved_at", "last_notified_at"])
            counts["resolved"] += 1
    return counts


def check_alerts(
    *, now: datetime | None = None, stop: threading.Event | None = None
) -> CheckSummary:
    """One pass: evaluate every enabled rule, then send every due notice."""
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError(
            "check_alerts commits each claim before sending; call it outside atomic()"
        )
    now = now or timezone.now()
    summary = CheckSummary()
    # A disabled rule's incidents close quietly: nobody is watching them any more.
    Incident.objects.filter(state=Incident.State.OPEN, rule__enabled=False).update(
        state=Incident.State.RESOLVED, resolved_at=now
    )
    for rule in enabled_rules():
        if stop is not None and stop.is_set():
            break
        summary.counts["rules"] += 1
        try:
            summary.counts.update(evaluate_rule(rule=rule, now=now))
        except ValueError as exc:
            # Bad parameters saved past the admin's validation (a shell, a fixture).
            log.error("alert rule %s cannot be evaluated: %s", rule.name, exc)
            summary.invalid[rule.name] = str(exc)
    summary.counts.update(deliver_due(stop=stop))
    return summary


# --- Delivery ----------------------------------------------------------------------------


def build_notice(delivery: Delivery) -> Notice:
    incident, rule = delivery.incident, delivery.incident.rule
    summary = incident.summary
    if delivery.notice == Delivery.Notice.RESOLVED and incident.resolved_at:
        minutes = int((incident.resolved_at - incident.opened_at).total_seconds() // 60)
        summary = f"Resolved after {minutes} min. It was: {incident.summary}"
    return Notice(
        notice=delivery.notice,
        delivery_id=str(delivery.uuid),
        rule_id=rule.pk,
        rule_name=rule.name,
        rule_kind=rule.kind,
        rule_label=rule.get_kind_display(),
        incident_id=incident.pk,
        key=incident.key,
        summary=summary,
        opened_at=incident.opened_at,
        resolved_at=incident.resolved_at if delivery.notice == Delivery.Notice.RESOLVED else None,
        url=base_url() + (incident.path or ""),
        details=incident.details or {},
    )


def claim(pk: int, *, now: datetime) -> Delivery | None:
    """Take a due delivery for this sender; None if it is not due or another has it."""
    taken = Delivery.objects.filter(
        pk=pk, status=Delivery.Status.PENDING, next_attempt_at__lte=now
    ).update(attempts=F("attempts") + 1, next_attempt_at=now + CLAIM_LEASE)
    if taken != 1:
        return None
    return Delivery.objects.select_related("incident__rule", "channel").get(pk=pk)


def deliver_due(*, stop: threading.Event | None = None, limit: int | None = None) -> Counter[str]:
    """Send due deliveries one at a time; returns counts of sent, retry and failed."""
    counts: Counter[str] = Counter()
    while limit is None or counts.total() < limit:
        now = timezone.now()
        ids = due_delivery_ids(now=now)
        if not ids:
            break
        for pk in ids:
            if stop is not None and stop.is_set():
                return counts
            delivery = claim(pk, now=now)
            if delivery is not None:
                counts[send_claimed(delivery)] += 1
    return counts


def send_claimed(delivery: Delivery) -> str:
    """Send one claimed delivery; returns sent, retry or failed."""
    channel = delivery.channel
    if not channel.enabled:
        _fail(delivery, ChannelError("the channel is disabled", permanent=True))
        return "failed"
    try:
        get_channel(channel).send(build_notice(delivery))
    except ChannelError as exc:
        if exc.permanent or delivery.attempts >= max_attempts():
            _fail(delivery, exc)
            return "failed"
        _retry(delivery, exc)
        return "retry"
    _mark_sent(delivery)
    return "sent"


def _mark_sent(delivery: Delivery) -> None:
    incident, rule, channel = delivery.incident, delivery.incident.rule, delivery.channel
    with transaction.atomic():
        Delivery.objects.filter(pk=delivery.pk).update(
            status=Delivery.Status.SENT, sent_at=timezone.now(), last_error="", next_attempt_at=None
        )
        record_event(
            event_type="alert_sent",
            actor="system",
            workflow=incident.key if rule.kind == "workflow_missed" else "",
            details={
                "rule": rule.name,
                "rule_id": rule.pk,
                "rule_kind": rule.kind,
                "incident_id": incident.pk,
                "incident_key": incident.key,
                "notice": delivery.notice,
                "summary": incident.summary,
                "channel": channel.name,
                "channel_kind": channel.kind,
                "delivery_id": str(delivery.uuid),
                "attempt": delivery.attempts,
            },
        )


def _error_text(exc: BaseException) -> str:
    return str(exc)[:2000]


def _retry(delivery: Delivery, exc: ChannelError) -> None:
    delay = retry_delay(delivery.attempts, exc.retry_after)
    log.warning(
        "alert delivery %s via %s failed (attempt %s), retrying in %s: %s",
        delivery.pk,
        delivery.channel.name,
        delivery.attempts,
        delay,
        exc,
    )
    Delivery.objects.filter(pk=delivery.pk).update(
        last_error=_error_text(exc), next_attempt_at=timezone.now() + delay
    )


def _fail(delivery: Delivery, exc: ChannelError) -> None:
    log.error(
        "alert delivery %s via %s failed for good after %s attempt(s): %s",
        delivery.pk,
        delivery.channel.name,
        delivery.attempts,
        exc,
    )
    Delivery.objects.filter(pk=delivery.pk).update(
        status=Delivery.Status.FAILED, last_error=_error_text(exc), next_attempt_at=None
    )


# --- Operator actions (admin) --------------------------------------------------------------


def snooze_rule(*, rule: AlertRule, until: datetime | None, actor: str) -> None:
    with transaction.atomic():
        AlertRule.objects.filter(pk=rule.pk).update(snooze_until=until)
        record_event(
            event_type="alert_snoozed",
            actor=actor,
            details={"rule": rule.name, "rule_id": rule.pk, "until": _iso(until)},
        )


def snooze_incident(*, incident: Incident, until: datetime | None, actor: str) -> None:
    with transaction.atomic():
        Incident.objects.filter(pk=incident.pk).update(snooze_until=until)
        record_event(
            event_type="alert_snoozed",
            actor=actor,
            details={
                "rule": incident.rule.name,
                "rule_id": incident.rule_id,
                "incident_id": incident.pk,
                "incident_key": incident.key,
                "until": _iso(until),
            },
        )


def retry_delivery(*, delivery: Delivery) -> bool:
    """Put a failed delivery back in the queue for the next pass; False if it was not failed."""
    return (
        Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.FAILED).update(
            status=Delivery.Status.PENDING, next_attempt_at=timezone.now(), attempts=0
        )
        == 1
    )


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None
