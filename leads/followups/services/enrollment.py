"""Enrolling a lead in a sequence: its first email is scheduled, or it is suppressed."""

from email.utils import make_msgid

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import record_event
from leads.followups.models import Enrollment, OutboundEmail, Sequence, SequenceStep
from leads.followups.services.conf import SUPPRESSED, SUPPRESSING_REASONS, message_id_domain
from leads.models import Lead


class SequenceError(ValueError):
    """A sequence that cannot be enrolled in (missing, inactive, no steps)."""


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
