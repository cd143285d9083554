"""Engagement: opens (the pixel) and clicks (the rewritten links) of sent emails."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import record_event
from leads.followups.models import OutboundEmail


class NotTracked(ValueError):
    """A click on a URL the email did not contain, or tracking for an email not sent."""


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
    """Record a click and return where to send the browser. Raises NotTracked for other URLs.

    The link is public and replayable, so one email's link records at most one
    email_clicked per FOLLOWUPS_CLICK_DEDUPE_SECONDS: a script hammering it
    cannot flood the trail (the redirect still works every time).
    """
    email = _checked_link(email_pk, url)
    now = timezone.now()
    with transaction.atomic():
        # The row lock makes concurrent clicks on one email take turns, so two
        # of them cannot both find no recent event.
        OutboundEmail.objects.select_for_update().filter(pk=email.pk).first()
        OutboundEmail.objects.filter(pk=email.pk, clicked_at__isnull=True).update(clicked_at=now)
        # A click means the email was opened, pixel blocked or not.
        OutboundEmail.objects.filter(pk=email.pk, opened_at__isnull=True).update(opened_at=now)
        window = settings.FOLLOWUPS_CLICK_DEDUPE_SECONDS
        if window <= 0 or not _clicked_recently(email, url, since=now - timedelta(seconds=window)):
            _engagement_event(email, "email_clicked", url=url)
    return url


def click_target(*, email_pk: int, url: str) -> str:
    """Where a click goes, without recording it (over the rate). NotTracked as above."""
    _checked_link(email_pk, url)
    return url


def _checked_link(email_pk: int, url: str) -> OutboundEmail:
    email = _sent_email(email_pk)
    if url not in email.links:
        raise NotTracked("the URL is not a link of this email")
    return email


def _clicked_recently(email: OutboundEmail, url: str, *, since: datetime) -> bool:
    # Along the lead's (lead_public_id, timestamp) index: a lead has few events.
    return AuditEvent.objects.filter(
        lead_public_id=email.enrollment.lead.public_id,
        event_type="email_clicked",
        timestamp__gte=since,
        details__message_id=email.message_id,
        details__url=url,
    ).exists()


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
