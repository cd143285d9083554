from datetime import timedelta

from django.db import models
from django.db.models import Q
from django.utils import timezone


class Sequence(models.Model):
    """A series of follow-up emails; a workflow's email_sequence step names one by slug."""

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, unique=True)
    # "Name <address>"; empty means DEFAULT_FROM_EMAIL.
    sender = models.CharField(max_length=254, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.slug


class SequenceStep(models.Model):
    """One email of a sequence. Subject and bodies are Django templates.

    Context: lead, owner (the lead's owner or None), unsubscribe_url, sequence, step.
    """

    sequence = models.ForeignKey(Sequence, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    # Step 1: after enrollment; later steps: after the previous email was sent.
    delay = models.DurationField(default=timedelta(0))
    subject_template = models.CharField(max_length=500)
    text_template = models.TextField()
    html_template = models.TextField(blank=True)

    class Meta:
        ordering = ["sequence", "position"]
        constraints = [
            models.UniqueConstraint(fields=["sequence", "position"], name="sequence_step_unique")
        ]

    def __str__(self) -> str:
        return f"{self.sequence.slug} #{self.position}"


class Enrollment(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"

    lead = models.ForeignKey("leads.Lead", on_delete=models.CASCADE, related_name="enrollments")
    sequence = models.ForeignKey(Sequence, on_delete=models.PROTECT, related_name="enrollments")
    status = models.CharField(max_length=20, choices=Status, default=Status.ACTIVE)
    # replied, unsubscribed, bounced, disqualified, manual, suppressed, rejected.
    cancel_reason = models.CharField(max_length=50, blank=True)
    next_step = models.ForeignKey(
        SequenceStep, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    next_send_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # A lead may go through a sequence again later, but never twice at once.
            models.UniqueConstraint(
                fields=["lead", "sequence"],
                condition=Q(status="active"),
                name="enrollment_active_unique",
            )
        ]
        indexes = [models.Index(fields=["status", "next_send_at"], name="enrollment_status_next")]

    def __str__(self) -> str:
        return f"{self.lead_id} in {self.sequence_id} ({self.status})"


class OutboundEmail(models.Model):
    """One email of an enrollment.

    pending -> sending (claimed, committed before the SMTP call) -> sent; an
    SMTP refusal puts it back to pending with a later due_at. A row left in
    `sending` by a sender that died is requeued by the next send pass after
    FOLLOWUPS_STUCK_SENDING_SECONDS; one whose connection broke mid-conversation
    (outcome_unknown) may have gone out and is requeued only by hand.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending (claimed)"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    enrollment = models.ForeignKey(Enrollment, on_delete=models.CASCADE, related_name="emails")
    step = models.ForeignKey(SequenceStep, on_delete=models.PROTECT, related_name="emails")
    # Set when the row is created, so a retry goes out under the same Message-ID.
    message_id = models.CharField(max_length=255, unique=True)
    recipient = models.EmailField(max_length=254)
    subject = models.CharField(max_length=998, blank=True)
    status = models.CharField(max_length=20, choices=Status, default=Status.PENDING)
    due_at = models.DateTimeField()
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=100, blank=True)
    last_error = models.TextField(blank=True)
    # The connection broke mid-conversation, so the server may have accepted it:
    # the row stays in `sending` for a person (alert emails_stuck_sending).
    outcome_unknown = models.BooleanField(default=False)
    sent_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)
    # The URLs the email links to: the click redirect goes to these and no others.
    links = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["enrollment", "step"], name="outbound_email_step_unique"
            )
        ]
        indexes = [
            models.Index(fields=["status", "due_at"], name="outbound_status_due"),
            models.Index(fields=["recipient"], name="outbound_recipient"),
            # Analytics: emails sent in a period (dashboard email engagement per step).
            models.Index(fields=["sent_at"], name="outbound_sent"),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} to {self.recipient} ({self.status})"
