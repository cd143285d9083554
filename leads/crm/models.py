from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from core.credentials import credential_env_allowed
from leads.crm.registry import kind_choices
from leads.models import LEAD_FIELDS

# Lead attributes a field mapping may read, besides "extra.<key>".
MAPPABLE_FIELDS = (*LEAD_FIELDS, "public_id")


def validate_field_mapping(value: object) -> None:
    if not isinstance(value, dict):
        raise ValidationError("the field mapping must be a JSON object")
    for field, target in value.items():
        if field not in MAPPABLE_FIELDS and not field.startswith("extra."):
            known = ", ".join(MAPPABLE_FIELDS)
            raise ValidationError(
                f"{field!r} is not a lead field (use one of {known}, or extra.<key>)"
            )
        # A list of two properties splits the value at the first space
        # ("name" -> first and last name, which HubSpot and Salesforce keep apart).
        ok = (isinstance(target, str) and bool(target)) or (
            isinstance(target, list)
            and len(target) == 2
            and all(isinstance(t, str) for t in target)
        )
        if not ok:
            raise ValidationError(
                f"{field!r} must map to a CRM property name or a list of two (first, rest)"
            )


def validate_credentials(value: object) -> None:
    # The JSON holds names of environment variables, never secrets; and only
    # names the credential rule allows (core.credentials), so an admin cannot
    # point a token_env at SECRET_KEY and a base_url at their own host.
    if not isinstance(value, dict):
        raise ValidationError("credentials must be a JSON object of *_env keys")
    for key, name in value.items():
        if not key.endswith("_env"):
            raise ValidationError(f"credentials key {key!r} must end in _env")
        problem = credential_env_allowed(name)
        if problem is not None:
            raise ValidationError(f"credentials[{key!r}]: {problem}")


class CrmConnection(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=30, choices=kind_choices)
    # Blank means the vendor's public API host; tests point it at loopback.
    base_url = models.URLField(max_length=300, blank=True)
    # Lead field -> CRM property; empty means the connector's default mapping.
    field_mapping = models.JSONField(default=dict, blank=True, validators=[validate_field_mapping])
    # Names of environment variables, e.g. {"token_env": "HUBSPOT_TOKEN"}.
    credentials = models.JSONField(default=dict, blank=True, validators=[validate_credentials])
    # Timeouts, retry limits and connector specifics (see each connector's docstring).
    options = models.JSONField(default=dict, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class CrmRecord(models.Model):
    """Where one lead stands in one CRM."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SYNCED = "synced", "Synced"
        FAILED = "failed", "Failed (will retry)"
        NEEDS_ATTENTION = "needs_attention", "Needs attention"

    lead = models.ForeignKey("leads.Lead", on_delete=models.CASCADE, related_name="crm_records")
    # PROTECT: the rows are the only link from a lead to its CRM contact;
    # deactivate a connection rather than delete it.
    connection = models.ForeignKey(CrmConnection, on_delete=models.PROTECT, related_name="records")
    external_id = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=20, choices=Status, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Failed syncs since the last success."
    )
    last_error = models.TextField(blank=True)
    # Rate-limit answers (429 / Retry-After) in a row since the last success or
    # failure: they postpone the record without counting as failed attempts.
    deferrals = models.PositiveSmallIntegerField(
        default=0, help_text="Syncs postponed in a row because the CRM asked to wait."
    )
    # Set before a create is sent, cleared on success: a create whose answer
    # was lost may have made the contact, so finding it on a later try still
    # means this system created it (crm_create, not crm_update).
    create_attempted_at = models.DateTimeField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # A lease: the worker syncing the record holds it, so a task and a cron
    # run never push the same lead at once (and never create it twice).
    locked_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["lead", "connection"], name="crm_record_unique")
        ]
        indexes = [
            models.Index(fields=["connection", "status", "next_attempt_at"], name="crm_record_due")
        ]

    def __str__(self) -> str:
        return f"{self.lead_id} in {self.connection_id}: {self.status}"


class CrmCall(models.Model):
    """One HTTP call to a CRM, for the performance analytics."""

    class Outcome(models.TextChoices):
        OK = "ok", "OK"
        RETRY = "retry", "Failed, retried"
        TRANSIENT = "transient", "Failed (transient), gave up"
        PERMANENT = "permanent", "Failed (permanent)"

    connection = models.ForeignKey(CrmConnection, on_delete=models.CASCADE, related_name="calls")
    lead = models.ForeignKey(
        "leads.Lead", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    operation = models.CharField(max_length=30)  # search, create, update, upsert, token, ...
    method = models.CharField(max_length=10)
    # The path only: query strings can carry tokens.
    path = models.CharField(max_length=500)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome)
    latency_ms = models.PositiveIntegerField()
    attempt = models.PositiveSmallIntegerField(default=1)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["connection", "created_at"], name="crm_call_conn_created")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.status_code or self.outcome}"
