"""Stopping enrollments: by reply, bounce, unsubscribe, disqualification or by hand."""

from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.services import record_event
from leads.errors import NotApplicable
from leads.followups.models import Enrollment, OutboundEmail
from leads.followups.services.conf import DISQUALIFIED, MANUAL, SUPPRESSING_REASONS, UNSUBSCRIBED
from leads.models import Lead


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


def sequence_cancel_by_hand(*, lead: Lead, actor: str) -> int:
    """An operator stops the lead's follow-ups: every active enrollment, reason "manual".

    Raises NotApplicable when the lead has no active sequence.
    """
    cancelled = cancel_lead(lead=lead, reason=MANUAL, actor=actor)
    if not cancelled:
        raise NotApplicable(f"{lead.public_id} has no active email sequence to cancel.")
    return cancelled
