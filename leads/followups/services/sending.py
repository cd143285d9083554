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

from django.conf import settings
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

# The `stage` of the error event an SMTP outage records, once per pass; the
# smtp_unreachable alert rule reads it.
SMTP_CONNECT = "smtp_connect"
# The reason an email_requeued event gives for an email a dead sender left behind.
STUCK_SENDING = "stuck_sending"


@dataclass
class SendSummary:
    worker_id: str
    counts: Counter[str] = field(default_factory=Counter)
    # Why the pass ended early (the SMTP server could not be reached), or "".
    stopped: str = ""
    # Emails a dead sender had left in `sending`, put back by this pass.
    requeued: int = 0
    # Due emails left pending when the pass stopped early.
    left_pending: int = 0

    def __str__(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        text = counts or ("nothing sent" if self.stopped else "nothing due")
        if self.requeued:
            text += f"; requeued {self.requeued} stuck in sending"
        if self.stopped:
            text += f" (stopped: {self.stopped}; {self.left_pending} due left pending)"
        return text


class _Unreachable(Exception):
    """The SMTP server could not be reached or refused the session; nothing was sent."""

    def __init__(self, *, host: str, port: int | None, exc: BaseException) -> None:
        self.host = host
        self.port = port
        self.reason = _error_text(exc)
        super().__init__(f"{host}:{port} unreachable: {self.reason}")


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
    SMTP call. Emails a dead sender left in `sending` are put back first
    (requeue_stuck). An unreachable server ends the pass with one error event
    (stage smtp_connect), leaving every email pending and due as it was.
    """
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("send_due commits each claim before sending; call it outside atomic()")
    summary = SendSummary(worker_id=worker_id or default_worker_id())
    summary.requeued = requeue_stuck()
    while limit is None or summary.counts.total() < limit:
        if stop is not None and stop.is_set():
            break
        email = claim_next(worker_id=summary.worker_id)
        if email is None:
            break
        try:
            outcome = send_claimed(email)
        except _Unreachable as exc:
            summary.stopped = str(exc)
            summary.left_pending = _record_outage(exc, worker_id=summary.worker_id)
            break
        summary.counts[outcome] += 1
    return summary


def _record_outage(unreachable: _Unreachable, *, worker_id: str) -> int:
    """One error event for the pass, however many emails wait: the trail must not flood."""
    due = OutboundEmail.objects.filter(
        status=OutboundEmail.Status.PENDING, due_at__lte=timezone.now()
    ).count()
    record_event(
        event_type="error",
        exc=unreachable.__cause__ or unreachable,
        details={
            "stage": SMTP_CONNECT,
            "host": unreachable.host,
            "port": unreachable.port,
            "reason": unreachable.reason,
            "due": due,
            "worker": worker_id,
        },
    )
    log.error("follow-ups: %s; %d due email(s) left pending", unreachable, due)
    return due


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
        _release(email, exc)
        raise _Unreachable(
            host=getattr(mailer, "host", ""), port=getattr(mailer, "port", None), exc=exc
        ) from exc
    try:
        mailer.send_messages([message])
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _msg in exc.recipients.values()]
        if codes and all(code >= 500 for code in codes):
            _give_up(email, exc, stage="smtp", cancel_reason=REJECTED)
            return "failed"
        return _retry(email, exc)
    except smtplib.SMTPServerDisconnected as exc:
        return _ambiguous(email, exc)
    except (smtplib.SMTPResponseException, smtplib.SMTPNotSupportedError) as exc:
        # The server answered with a refusal: the message was not accepted.
        return _retry(email, exc)
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


def _retry(email: OutboundEmail, exc: BaseException) -> str:
    """Nothing was delivered: back to pending with a later due_at, or failed after the last try."""
    if email.attempts >= max_attempts():
        _give_up(email, exc, stage="smtp")
        return "failed"
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
    return "retry"


def _release(email: OutboundEmail, exc: BaseException) -> None:
    """The server could not be reached: the email goes back exactly as it was.

    Nothing was offered to the server, so the try does not count toward
    FOLLOWUPS_MAX_ATTEMPTS and due_at stays: an outage, however long, makes no
    email fail or wait longer than the outage. The outage itself is visible
    through the pass's error event.
    """
    OutboundEmail.objects.filter(pk=email.pk, status=OutboundEmail.Status.SENDING).update(
        status=OutboundEmail.Status.PENDING,
        claimed_by="",
        attempts=F("attempts") - 1,
        last_error=_error_text(exc),
    )


def _ambiguous(email: OutboundEmail, exc: BaseException) -> str:
    """The message may have gone out: leave it in `sending` for a person to decide."""
    lead = email.enrollment.lead
    with transaction.atomic():
        OutboundEmail.objects.filter(pk=email.pk).update(
            outcome_unknown=True,
            last_error=f"outcome unknown, not retried automatically: {_error_text(exc)}",
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
        status=OutboundEmail.Status.PENDING,
        claimed_by="",
        due_at=timezone.now(),
        outcome_unknown=False,
    )


def requeue_stuck() -> int:
    """Put back what dead senders left in `sending` for FOLLOWUPS_STUCK_SENDING_SECONDS.

    Why requeue rather than wait for a person: a sender killed mid-send (OOM,
    a deploy, SIGKILL) left no outcome, but the only stretch in which the
    server already held the message is between its reply to the final dot and
    our commit of `sent`: milliseconds out of a render, a connect and a
    conversation. The message most likely never left, and left alone it
    stalls its sequence for good (no later step is scheduled). The rare
    duplicate goes out under the same Message-ID, so mail clients recognise
    it as the same message. A connection that broke mid-conversation is the
    other case: the server may have been answering the final dot, so those
    rows (outcome_unknown) stay for a person, and alert emails_stuck_sending
    fires for them.

    The bound must exceed the longest a live sender holds a claim, or a slow
    send beside --parallel senders could go out twice. Each email is put back
    with a conditional UPDATE, so of two passes only one requeues and records it.
    """
    bound = settings.FOLLOWUPS_STUCK_SENDING_SECONDS
    if bound <= 0:
        return 0
    now = timezone.now()
    stuck = (
        OutboundEmail.objects.filter(
            status=OutboundEmail.Status.SENDING,
            outcome_unknown=False,
            claimed_at__lt=now - timedelta(seconds=bound),
        )
        .select_related("step", "enrollment__sequence", "enrollment__lead__workflow")
        .order_by("claimed_at", "pk")
    )
    requeued = 0
    for email in stuck:
        lead = email.enrollment.lead
        with transaction.atomic():
            done = OutboundEmail.objects.filter(
                pk=email.pk,
                status=OutboundEmail.Status.SENDING,
                outcome_unknown=False,
                claimed_at=email.claimed_at,
            ).update(
                status=OutboundEmail.Status.PENDING,
                claimed_by="",
                due_at=now,
                last_error=(
                    f"requeued: {email.claimed_by or 'a sender'} left it in sending "
                    f"at {email.claimed_at.isoformat()}"
                ),
            )
            if not done:
                continue
            Enrollment.objects.filter(pk=email.enrollment_id, next_step=email.step_id).update(
                next_send_at=now
            )
            record_event(
                event_type="email_requeued",
                lead=lead,
                workflow=lead.workflow_name,
                details={
                    "reason": STUCK_SENDING,
                    "recipient": email.recipient,
                    "message_id": email.message_id,
                    "sequence": email.enrollment.sequence.slug,
                    "sequence_step": email.step.position,
                    "claimed_by": email.claimed_by,
                    "claimed_at": email.claimed_at.isoformat(),
                    "stuck_seconds": int((now - email.claimed_at).total_seconds()),
                    "attempt": email.attempts,
                },
            )
        requeued += 1
        log.warning(
            "follow-up %s left in sending by %s since %s: requeued",
            email.message_id,
            email.claimed_by,
            email.claimed_at,
        )
    return requeued
