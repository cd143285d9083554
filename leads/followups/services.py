"""Follow-up sequences: enroll a lead, send what is due, stop, track engagement.

Sending is at most once. Each email is claimed with a conditional UPDATE
(pending -> sending) that commits before the SMTP conversation starts, so two
senders never both get it. What happens next:

- the server accepted it: sent, email_sent, the next step is scheduled;
- the server could not be reached, or refused it with a reply code (4xx, or
  5xx for the sender or the data): nothing was delivered, so it goes back to
  pending with a later due_at (until FOLLOWUPS_MAX_ATTEMPTS);
- the server refused the recipient for good (5xx on RCPT): failed, and the
  enrollment is cancelled ("rejected");
- the connection broke or timed out mid-conversation, or the sender crashed:
  the row stays in `sending`, because the message may have been delivered.
  Such rows are visible (admin, `send_followups --requeue-stale`) and are put
  back only by hand, accepting a possible duplicate; a follow-up sent twice
  is worse than one an operator has to look at.
"""

import logging
import os
import re
import smtplib
import socket
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import make_msgid, parseaddr
from html import escape, unescape
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, mailers
from django.db import IntegrityError, transaction
from django.db.models import F
from django.template import Context, Template, TemplateSyntaxError
from django.urls import reverse
from django.utils import timezone

from audit.services import record_event
from leads.followups import tokens
from leads.followups.models import Enrollment, OutboundEmail, Sequence, SequenceStep
from leads.models import Lead

log = logging.getLogger(__name__)

URLCONF = "leads.followups.urls"
MAILER = "default"
# Cancel reasons. "suppressed": the address unsubscribed, bounced or was
# rejected before, so a new enrollment is refused.
REPLIED = "replied"
UNSUBSCRIBED = "unsubscribed"
BOUNCED = "bounced"
REJECTED = "rejected"
DISQUALIFIED = "disqualified"
MANUAL = "manual"
SUPPRESSED = "suppressed"
SUPPRESSING_REASONS = (UNSUBSCRIBED, BOUNCED, REJECTED)

HREF_RE = re.compile(r"""(?i)(\bhref\s*=\s*)(["'])(https?://[^"'<>\s]+)\2""")
BODY_END_RE = re.compile(r"(?i)</body\s*>")


class SequenceError(ValueError):
    """A sequence that cannot be enrolled in (missing, inactive, no steps)."""


class NotTracked(ValueError):
    """A click on a URL the email did not contain, or tracking for an email not sent."""


# --- Settings --------------------------------------------------------------------------


def base_url() -> str:
    """Where leads.followups.urls is mounted, as recipients reach it (no trailing slash)."""
    return getattr(settings, "FOLLOWUPS_BASE_URL", "http://localhost:8000").rstrip("/")


def message_id_domain(sender: str = "") -> str:
    configured = getattr(settings, "FOLLOWUPS_MESSAGE_ID_DOMAIN", "")
    if configured:
        return configured
    address = parseaddr(sender or settings.DEFAULT_FROM_EMAIL)[1]
    return address.rpartition("@")[2] or "localhost"


def max_attempts() -> int:
    return getattr(settings, "FOLLOWUPS_MAX_ATTEMPTS", 10)


def retry_delay(attempts: int) -> timedelta:
    """Backoff after the nth failed attempt: 1, 2, 4, ... minutes, at most an hour."""
    base = getattr(settings, "FOLLOWUPS_RETRY_BASE_SECONDS", 60)
    return timedelta(seconds=min(base * 2 ** max(attempts - 1, 0), 3600))


def link(name: str, token: str) -> str:
    # Reversed in our own urlconf: the links work wherever FOLLOWUPS_BASE_URL mounts it.
    return base_url() + reverse(name, urlconf=URLCONF, args=[token])


# --- Enrollment -------------------------------------------------------------------------


def is_suppressed(address: str) -> bool:
    return Enrollment.objects.filter(
        lead__email__iexact=address, cancel_reason__in=SUPPRESSING_REASONS
    ).exists()


def _new_email(*, enrollment: Enrollment, step: SequenceStep, due_at) -> OutboundEmail:
    return OutboundEmail.objects.create(
        enrollment=enrollment,
        step=step,
        recipient=enrollment.lead.email,
        message_id=make_msgid(domain=message_id_domain(enrollment.sequence.sender)),
        due_at=due_at,
    )


def enroll(*, lead: Lead, sequence: Sequence, actor: str = "system") -> Enrollment:
    """Start the sequence for the lead: its first email is due after step 1's delay.

    Idempotent: an active enrollment in the sequence is returned as it is. An
    address that unsubscribed or bounced before gets a cancelled enrollment
    ("suppressed") and no email.
    """
    if not sequence.active:
        raise SequenceError(f"sequence {sequence.slug!r} is inactive")
    steps = list(sequence.steps.order_by("position"))
    if not steps:
        raise SequenceError(f"sequence {sequence.slug!r} has no steps")
    now = timezone.now()
    with transaction.atomic():
        existing = Enrollment.objects.filter(
            lead=lead, sequence=sequence, status=Enrollment.Status.ACTIVE
        ).first()
        if existing is not None:
            return existing
        if is_suppressed(lead.email):
            enrollment = Enrollment.objects.create(
                lead=lead,
                sequence=sequence,
                status=Enrollment.Status.CANCELLED,
                cancel_reason=SUPPRESSED,
                finished_at=now,
            )
            record_event(
                event_type="email_cancelled",
                actor=actor,
                lead=lead,
                workflow=lead.workflow_name,
                details={"recipient": lead.email, "reason": SUPPRESSED, "sequence": sequence.slug},
            )
            return enrollment
        try:
            with transaction.atomic():
                enrollment = Enrollment.objects.create(lead=lead, sequence=sequence, created_at=now)
        except IntegrityError:
            # Enrolled by a concurrent run of the step a moment ago.
            return Enrollment.objects.get(
                lead=lead, sequence=sequence, status=Enrollment.Status.ACTIVE
            )
        first = steps[0]
        email = _new_email(enrollment=enrollment, step=first, due_at=now + first.delay)
        enrollment.next_step = first
        enrollment.next_send_at = email.due_at
        enrollment.save(update_fields=["next_step", "next_send_at"])
        record_event(
            event_type="email_scheduled",
            actor=actor,
            lead=lead,
            workflow=lead.workflow_name,
            details={
                "recipient": lead.email,
                "sequence_length": len(steps),
                "sequence": sequence.slug,
                "first_send_at": email.due_at.isoformat(),
                "message_id": email.message_id,
            },
        )
    return enrollment


# --- Stopping ---------------------------------------------------------------------------


def cancel(
    *,
    enrollment: Enrollment,
    reason: str,
    actor: str = "system",
    details: dict[str, Any] | None = None,
) -> bool:
    """Stop an active enrollment and its pending emails. False if it was no longer active."""
    now = timezone.now()
    with transaction.atomic():
        current = (
            Enrollment.objects.select_for_update(of=("self",))
            .select_related("lead", "lead__workflow", "sequence")
            .filter(pk=enrollment.pk, status=Enrollment.Status.ACTIVE)
            .first()
        )
        if current is None:
            return False
        Enrollment.objects.filter(pk=current.pk).update(
            status=Enrollment.Status.CANCELLED,
            cancel_reason=reason,
            next_step=None,
            next_send_at=None,
            finished_at=now,
        )
        current.emails.filter(status=OutboundEmail.Status.PENDING).update(
            status=OutboundEmail.Status.CANCELLED
        )
        record_event(
            event_type="email_cancelled",
            actor=actor,
            lead=current.lead,
            workflow=current.lead.workflow_name,
            details={
                "recipient": current.lead.email,
                "reason": reason,
                "sequence": current.sequence.slug,
                **(details or {}),
            },
        )
    enrollment.status = Enrollment.Status.CANCELLED
    enrollment.cancel_reason = reason
    enrollment.next_step = None
    enrollment.next_send_at = None
    enrollment.finished_at = now
    return True


def cancel_lead(*, lead: Lead, reason: str, actor: str = "system") -> int:
    """Cancel every active enrollment of one lead; returns how many were cancelled."""
    active = Enrollment.objects.filter(lead=lead, status=Enrollment.Status.ACTIVE)
    return sum(cancel(enrollment=e, reason=reason, actor=actor) for e in active)


def lead_disqualified(*, lead: Lead, actor: str = "system") -> int:
    """Hook for lead_qualify and the runner: a disqualified lead gets no more follow-ups."""
    return cancel_lead(lead=lead, reason=DISQUALIFIED, actor=actor)


def unsubscribe(*, enrollment: Enrollment, actor: str = "system") -> int:
    """Opt the address out of every follow-up, not just this sequence."""
    address = enrollment.lead.email
    active = Enrollment.objects.filter(
        lead__email__iexact=address, status=Enrollment.Status.ACTIVE
    ).order_by("pk")
    cancelled = sum(
        cancel(enrollment=e, reason=UNSUBSCRIBED, actor=actor, details={"via": "list-unsubscribe"})
        for e in active
    )
    if not cancelled and enrollment.cancel_reason not in SUPPRESSING_REASONS:
        # Finished before the click: keep the opt-out on record for is_suppressed.
        with transaction.atomic():
            updated = Enrollment.objects.filter(pk=enrollment.pk).exclude(
                cancel_reason__in=SUPPRESSING_REASONS
            )
            if updated.update(cancel_reason=UNSUBSCRIBED):
                record_event(
                    event_type="email_cancelled",
                    actor=actor,
                    lead=enrollment.lead,
                    workflow=enrollment.lead.workflow_name,
                    details={
                        "recipient": address,
                        "reason": UNSUBSCRIBED,
                        "sequence": enrollment.sequence.slug,
                        "via": "list-unsubscribe",
                    },
                )
                enrollment.cancel_reason = UNSUBSCRIBED
    return cancelled


# --- Rendering --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    links: list[str]
    headers: dict[str, str]


def _track_links(markup: str, *, click_url: str) -> tuple[str, list[str]]:
    links: list[str] = []
    own = base_url() + "/"

    def rewrite(match: re.Match[str]) -> str:
        url = unescape(match[3])
        if url.startswith(own):  # the unsubscribe link stays as it is
            return match[0]
        if url not in links:
            links.append(url)
        tracked = f"{click_url}?{urlencode({'u': url})}"
        return f"{match[1]}{match[2]}{escape(tracked)}{match[2]}"

    return HREF_RE.sub(rewrite, markup), links


def render_email(email: OutboundEmail) -> Rendered:
    """Subject, bodies and headers of one email. Raises TemplateSyntaxError."""
    enrollment = email.enrollment
    lead = enrollment.lead
    step = email.step
    unsubscribe_url = link("unsubscribe", tokens.make_token(tokens.UNSUBSCRIBE, enrollment.pk))
    values = {
        "lead": lead,
        "owner": lead.owner,
        "sequence": enrollment.sequence,
        "step": step,
        "unsubscribe_url": unsubscribe_url,
    }
    subject = Template(step.subject_template).render(Context(values, autoescape=False))
    subject = " ".join(subject.split())  # a header is one line
    text = Template(step.text_template).render(Context(values, autoescape=False))
    html, links = "", []
    if step.html_template.strip():
        html = Template(step.html_template).render(Context(values))
        html, links = _track_links(
            html, click_url=link("click", tokens.make_token(tokens.CLICK, email.pk))
        )
        pixel_url = link("open", tokens.make_token(tokens.OPEN, email.pk))
        pixel = f'<img src="{escape(pixel_url)}" width="1" height="1" alt="">'
        html, found = BODY_END_RE.subn(lambda m: pixel + m[0], html, count=1)
        if not found:
            html += pixel
    unsubscribe_targets = [f"<{unsubscribe_url}>"]
    mailto = getattr(settings, "FOLLOWUPS_UNSUBSCRIBE_MAILTO", "")
    if mailto:
        token = tokens.make_token(tokens.UNSUBSCRIBE, enrollment.pk)
        unsubscribe_targets.append(f"<mailto:{mailto}?subject={quote('unsubscribe ' + token)}>")
    headers = {
        "Message-ID": email.message_id,
        "List-Unsubscribe": ", ".join(unsubscribe_targets),
        # RFC 8058: the HTTPS URI above takes a POST with this body.
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Auto-Submitted": "auto-generated",
    }
    return Rendered(subject=subject, text=text, html=html, links=links, headers=headers)


def build_message(email: OutboundEmail, rendered: Rendered) -> EmailMultiAlternatives:
    message = EmailMultiAlternatives(
        subject=rendered.subject,
        body=rendered.text,
        from_email=email.enrollment.sequence.sender or None,
        to=[email.recipient],
        headers=rendered.headers,
    )
    if rendered.html:
        message.attach_alternative(rendered.html, "text/html")
    return message


# --- Sending ---------------------------------------------------------------------------


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


# --- Engagement ------------------------------------------------------------------------


def _sent_email(pk: int) -> OutboundEmail:
    email = (
        OutboundEmail.objects.select_related("step", "enrollment__lead__workflow")
        .filter(pk=pk, status=OutboundEmail.Status.SENT)
        .first()
    )
    if email is None:
        raise NotTracked(f"no sent email {pk}")
    return email


def record_open(*, email_pk: int) -> bool:
    """The first load of the pixel records email_opened; image proxies reload it freely."""
    email = _sent_email(email_pk)
    with transaction.atomic():
        first = OutboundEmail.objects.filter(pk=email.pk, opened_at__isnull=True).update(
            opened_at=timezone.now()
        )
        if first:
            _engagement_event(email, "email_opened")
    return bool(first)


def record_click(*, email_pk: int, url: str) -> str:
    """Record a click and return where to send the browser. Raises NotTracked for other URLs."""
    email = _sent_email(email_pk)
    if url not in email.links:
        raise NotTracked("the URL is not a link of this email")
    now = timezone.now()
    with transaction.atomic():
        OutboundEmail.objects.filter(pk=email.pk, clicked_at__isnull=True).update(clicked_at=now)
        # A click means the email was opened, pixel blocked or not.
        OutboundEmail.objects.filter(pk=email.pk, opened_at__isnull=True).update(opened_at=now)
        _engagement_event(email, "email_clicked", url=url)
    return url


def _engagement_event(email: OutboundEmail, event_type: str, **extra: str) -> None:
    record_event(
        event_type=event_type,
        lead=email.enrollment.lead,
        workflow=email.enrollment.lead.workflow_name,
        details={
            "recipient": email.recipient,
            "message_id": email.message_id,
            "sequence_step": email.step.position,
            **extra,
        },
    )


# --- Dashboard actions ------------------------------------------------------------------


def sequence_cancel_by_hand(*, lead: Lead, actor: str) -> int:
    """An operator stops the lead's follow-ups: every active enrollment, reason "manual".

    Raises NotApplicable when the lead has no active sequence.
    """
    from leads.services import NotApplicable

    cancelled = cancel_lead(lead=lead, reason=MANUAL, actor=actor)
    if not cancelled:
        raise NotApplicable(f"{lead.public_id} has no active email sequence to cancel.")
    return cancelled
