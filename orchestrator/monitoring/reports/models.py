from django.db import models
from django.utils import timezone


class ReportKind(models.TextChoices):
    DAILY = "daily", "Daily summary"
    WEEKLY = "weekly", "Weekly performance"
    MONTHLY = "monthly", "Monthly compliance"


class ReportSend(models.Model):
    """One send of one report for one period; the unique key makes "one send per period" hold
    across machines: a second `send_report` for the same period finds the row and stops."""

    kind = models.CharField(max_length=10, choices=ReportKind)
    period_start = models.DateField()
    period_end = models.DateField(help_text="Exclusive")
    # A forced resend gets its own row; the first send of a period has number 1.
    number = models.PositiveSmallIntegerField(default=1)
    recipients = models.JSONField(default=list)
    actor = models.CharField(max_length=150, default="system")
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "period_start", "number"], name="report_send_once_per_period"
            )
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.period_start} (#{self.number})"
