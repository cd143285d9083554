"""Sending what is due, at most once (see leads.followups.services for the outcomes)."""

import logging
import os
import smtplib
import socket
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import make_msgid

from django.core.mail import mailers
from django.db import transaction
from django.db.models import F
from django.template import TemplateSyntaxError
from django.utils import timezone

from audit.services import record_event
from leads.followups.models import Enrollment, OutboundEmail, SequenceStep
from leads.followups.services.conf import (
    MAILER,
    REJECTED,
    max_attempts,
    message_id_domain,
    retry_delay,
)
from leads.followups.services.rendering import Rendered, build_message, render_email
from leads.followups.services.stopping import cancel

log = logging.getLogger(__name__)


@dataclass
class SendSummary:
    worker_id: str
    counts: Counter[str] = field(default_factory=Counter)
    # Why the pass ended early (the SMTP server could not be reached), or "".
    stopped: str = ""

    def __str__(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "nothing due"
        return f"{counts}{f' (stopped: {self.stopped})' if self.stopped else ''}"


class _Unreachable(Exception):
    """The SMTP server could not be reached or refused the session; nothing was sent."""


def default_worker_id() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim_next(*, worker_id: str, batch: int = 20) -> OutboundEmail | None:
    """Claim the oldest due email. The UPDATE commits on its own, before any SMTP call."""
    now = timezone.now()
    candidates = list(
        OutboundEmail.objects.filter(status=OutboundEmail.Status.PENDING, due_at__lte=now)
        .order_by("due_at", "pk")
        .values_list("pk", flat=True)[:batch]
    )
    for pk in candidates:
        claimed = OutboundEmail.objects.filter(pk=pk, status=OutboundEmail.Status.PENDING).update(
            status=OutboundEmail.Status.SENDING,
            claimed_at=now,
            claimed_by=worker_id,
            attempts=F("attempts") + 1,
        )
        if claimed == 1:
            return OutboundEmail.objects.select_related(
                "step",
                "enrollment__sequence",
                "enrollment__lead__owner",
                "enrollment__lead__workflow",
            ).get(pk=pk)
    return None


def send_due(
    *,
    limit: int | None = None,
    worker_id: str | None = None,
    stop: threading.Event | None = None,
) -> SendSummary:
    """Send due emails one at a time until none is left, `limit` are done, or stop is set.

    Must run outside a transaction: the claim has to be committed before the
    SMTP call. An unreachable server ends the pass, leaving the rest pending.
    """
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("send_due commits each claim before sending; call it outside atomic()")
    summary = SendSummary(worker_id=worker_id or default_worker_id())
    while limit is None or summary.counts.total() < limit:
        if stop is not None and stop.is_set():
            break
        email = claim_next(worker_id=summary.worker_id)
        if email is None:
            break
        try:
            outcome = send_claimed(email)
        except _Unreachable as exc:
            summary.counts["retry"] += 1
            summary.stopped = str(exc)
            break
        summary.counts[outcome] += 1
    return summary


def send_claimed(email: OutboundEmail) -> str:
    """Send one claimed email; returns sent, retry, failed, cancelled or unknown."""
    enrollment = email.enrollment
    if enrollment.status != Enrollment.Status.ACTIVE:
        # Cancelled between the claim and now.
        OutboundEmail.objects.filter(pk=email.pk, status=OutboundEmail.Status.SENDING).update(
            status=OutboundEmail.Status.CANCELLED
        )
        return "cancelled"
    try:
        rendered = render_email(email)
        message = build_message(email, rendered)
    except (TemplateSyntaxError, ValueError) as exc:
        _give_up(email, exc, stage="render")
        return "failed"
    OutboundEmail.objects.filter(pk=email.pk).update(
        subject=rendered.subject[:998], links=rendered.links
    )
    mailer = mailers[MAILER]
    try:
        mailer.open()
    except (OSError, smtplib.SMTPException) as exc:
        _retry(email, exc)
        raise _Unreachable(f"{type(exc).__name__}: {exc}") from exc
    try:
        mailer.send_messages([message])
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _msg in exc.recipients.values()]
        if codes and all(code >= 500 for code in codes):
            _give_up(email, exc, stage="smtp", cancel_reason=REJECTED)
            return "failed"
        _retry(email, exc)
        return "retry"
    except smtplib.SMTPServerDisconnected as exc:
        return _ambiguous(email, exc)
    except (smtplib.SMTPResponseException, smtplib.SMTPNotSupportedError) as exc:
        # The server answered with a refusal: the message was not accepted.
        _retry(email, exc)
        return "retry"
    except ValueError as exc:  # an address Django cannot put on the wire
        _give_up(email, exc, stage="address", cancel_reason=REJECTED)
        return "failed"
    except OSError as exc:  # timeout or reset mid-conversation
        return _ambiguous(email, exc)
    finally:
        try:
            mailer.close()
        except (OSError, smtplib.SMTPException):
            log.debug("closing the SMTP connection failed", exc_info=True)
    _mark_sent(email, rendered)
    return "sent"


def _mark_sent(email: OutboundEmail, rendered: Rendered) -> None:
    now = timezone.now()
    enrollment = email.enrollment
    lead = enrollment.lead
    with transaction.atomic():
        OutboundEmail.objects.filter(pk=email.pk).update(
            status=OutboundEmail.Status.SENT, sent_at=now, last_error=""
        )
        record_event(
            event_type="email_sent",
            lead=lead,
            workflow=lead.workflow_name,
            details={
                "recipient": email.recipient,
                "subject": rendered.subject,
                "sequence_step": email.step.position,
                "message_id": email.message_id,
                "sequence": enrollment.sequence.slug,
                "attempt": email.attempts,
            },
        )
        current = (
            Enrollment.objects.select_for_update(of=("self",))
            .filter(pk=enrollment.pk, status=Enrollment.Status.ACTIVE)
            .first()
        )
        if current is None:
            return
        following = (
            SequenceStep.objects.filter(
                sequence_id=enrollment.sequence_id, position__gt=email.step.position
            )
            .order_by("position")
            .first()
        )
        if following is None:
            Enrollment.objects.filter(pk=current.pk).update(
                status=Enrollment.Status.COMPLETED,
                next_step=None,
                next_send_at=None,
                finished_at=now,
            )
            return
        upcoming, _created = OutboundEmail.objects.get_or_create(
            enrollment=current,
            step=following,
            defaults={
                "recipient": email.recipient,
                "message_id": make_msgid(domain=message_id_domain(enrollment.sequence.sender)),
                "due_at": now + following.delay,
            },
        )
        Enrollment.objects.filter(pk=current.pk).update(
            next_step=following, next_send_at=upcoming.due_at
        )


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def _retry(email: OutboundEmail, exc: BaseException) -> None:
    """Nothing was delivered: back to pending with a later due_at, or failed after the last try."""
    if email.attempts >= max_attempts():
        _give_up(email, exc, stage="smtp")
        return
    due = timezone.now() + retry_delay(email.attempts)
    with transaction.atomic():
        OutboundEmail.objects.filter(pk=email.pk, status=OutboundEmail.Status.SENDING).update(
            status=OutboundEmail.Status.PENDING,
            due_at=due,
            claimed_by="",
            last_error=_error_text(exc),
        )
        Enrollment.objects.filter(pk=email.enrollment_id, next_step=email.step_id).update(
            next_send_at=due
        )
    log.warning("follow-up %s not sent, retrying at %s: %s", email.message_id, due, exc)


def _ambiguous(email: OutboundEmail, exc: BaseException) -> str:
    """The message may have gone out: leave it in `sending` for a person to decide."""
    lead = email.enrollment.lead
    with transaction.atomic():
        OutboundEmail.objects.filter(pk=email.pk).update(
            last_error=f"outcome unknown, not retried automatically: {_error_text(exc)}"
        )
        record_event(
            event_type="error",
            exc=exc,
            lead=lead,
            workflow=lead.workflow_name,
            details={
                "stage": "send_followup",
                "message_id": email.message_id,
                "recipient": email.recipient,
                "attempt": email.attempts,
                "outcome": "unknown",
            },
        )
    return "unknown"


def _give_up(
    email: OutboundEmail, exc: BaseException, *, stage: str, cancel_reason: str = ""
) -> None:
    lead = email.enrollment.lead
    with transaction.atomic():
        OutboundEmail.objects.filter(pk=email.pk).update(
            status=OutboundEmail.Status.FAILED, last_error=_error_text(exc)
        )
        record_event(
            event_type="error",
            exc=exc,
            lead=lead,
            workflow=lead.workflow_name,
            details={
                "stage": f"send_followup:{stage}",
                "message_id": email.message_id,
                "recipient": email.recipient,
                "attempt": email.attempts,
                "gave_up": True,
            },
        )
        if cancel_reason:
            cancel(enrollment=email.enrollment, reason=cancel_reason)
        else:
            # No later step can follow a step that never went out.
            Enrollment.objects.filter(
                pk=email.enrollment_id, status=Enrollment.Status.ACTIVE
            ).update(next_send_at=None)


def stale_sending(*, older_than: timedelta):
    return OutboundEmail.objects.filter(
        status=OutboundEmail.Status.SENDING, claimed_at__lt=timezone.now() - older_than
    )


def requeue(*, emails) -> int:
    """Put emails left in `sending` back to pending (after review: they may have gone out)."""
    return emails.filter(status=OutboundEmail.Status.SENDING).update(
        status=OutboundEmail.Status.PENDING, claimed_by="", due_at=timezone.now()
    )
