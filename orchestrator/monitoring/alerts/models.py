"""Alert rules, where they notify, the incidents they open and each notice sent.

An incident is one (rule, key) while its condition holds: the key says what
is wrong (a fingerprint, a workflow, an inbox source, "errors" for the whole
site). A partial unique constraint keeps one open incident per (rule, key),
which is what makes "one alert per incident" hold even if two evaluators ran.
"""

import uuid

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from core.credentials import credential_env_allowed
from orchestrator.monitoring.alerts import params
from orchestrator.monitoring.alerts.registry import channel_class, kind_choices


class AlertChannel(models.Model):
    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=kind_choices)
    # Comma-separated addresses for email; the URL for generic webhooks. Empty
    # for Slack: its webhook URL is the credential and lives in url_env.
    # (Slack rows from before 0002 may still hold their URL here; it is never
    # used nor shown, and checks.py warns until it is cleared.)
    target = models.CharField(
        max_length=1000,
        blank=True,
        help_text="Email: comma-separated addresses. Webhook: the URL to POST to. Slack: empty.",
    )
    # The NAME of the environment variable holding the HMAC secret: whoever can
    # read the database must not be able to forge our webhooks.
    secret_env = models.CharField(
        max_length=100,
        blank=True,
        help_text="Environment variable holding the signing secret (generic webhooks).",
    )
    # The NAME of the environment variable holding a Slack incoming-webhook URL:
    # anyone with the URL can post to the channel, so it is a secret too.
    url_env = models.CharField(
        max_length=100,
        blank=True,
        help_text=(
            "Environment variable holding the Slack incoming-webhook URL, e.g. SLACK_OPS_URL."
        ),
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    def clean(self) -> None:
        problems = {
            field: problem
            for field in ("secret_env", "url_env")
            if getattr(self, field)
            and (problem := credential_env_allowed(getattr(self, field))) is not None
        }
        if problems:
            raise ValidationError(problems)
        try:
            cls = channel_class(self.kind)
        except ValueError as exc:
            raise ValidationError({"kind": str(exc)}) from None
        problems = cls.validate(self)
        if problems:
            raise ValidationError(problems)


class AlertRule(models.Model):
    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=30, choices=params.kind_choices)
    params = models.JSONField(
        default=dict,
        blank=True,
        help_text="Parameters of the kind; left out ones take their defaults (see the docs).",
    )
    channels = models.ManyToManyField(AlertChannel, blank=True, related_name="rules")
    enabled = models.BooleanField(default=True)
    notify_resolved = models.BooleanField(
        default=True, help_text="Also send a notice when the condition clears."
    )
    # While set and in the future, incidents still open and close but nobody is told.
    snooze_until = models.DateTimeField(null=True, blank=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        problems = params.errors(self.kind, self.params)
        if problems:
            raise ValidationError({"params": problems})


class Incident(models.Model):
    class State(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved"

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="incidents")
    key = models.CharField(max_length=200)
    state = models.CharField(max_length=10, choices=State, default=State.OPEN)
    opened_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    # The last pass that still found the condition.
    last_seen_at = models.DateTimeField()
    last_notified_at = models.DateTimeField(null=True, blank=True)
    snooze_until = models.DateTimeField(null=True, blank=True)
    summary = models.CharField(max_length=500)
    details = models.JSONField(default=dict, blank=True)
    # The dashboard page that shows the problem (a path; ALERTS_BASE_URL goes in front).
    path = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "key"],
                condition=models.Q(state="open"),
                name="alert_incident_one_open",
            )
        ]
        indexes = [models.Index(fields=["state", "-opened_at"], name="alert_incident_state")]

    def __str__(self) -> str:
        return f"{self.rule} [{self.key}] {self.state}"


class Delivery(models.Model):
    class Notice(models.TextChoices):
        OPENED = "opened", "Opened"
        RESOLVED = "resolved", "Resolved"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    # Sent as Idempotency-Key: the same for every attempt of this notice.
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(AlertChannel, on_delete=models.CASCADE, related_name="deliveries")
    notice = models.CharField(max_length=10, choices=Notice)
    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="alert_delivery_due",
                condition=models.Q(status="pending"),
            )
        ]

    def __str__(self) -> str:
        return f"{self.notice} notice of {self.incident} via {self.channel.name}: {self.status}"
