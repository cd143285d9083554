from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

PUBLIC_ID_PREFIX = "LEAD-"

# The fields a lead has; anything else a source sends is kept in Lead.extra.
LEAD_FIELDS = ("email", "name", "company", "phone", "title", "country")


class LeadSource(models.Model):
    class Kind(models.TextChoices):
        WEB_FORM = "web_form", "Web form"
        EMAIL_INBOX = "email_inbox", "Email inbox"
        CSV = "csv", "CSV file"

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind)
    workflow = models.ForeignKey(
        "workflows.Workflow",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sources",
    )
    # Payload key (or CSV column, or "Key:" line of an email) -> lead field.
    field_mapping = models.JSONField(default=dict, blank=True)
    # JSON Schema for the payload as the source sends it (before mapping).
    schema = models.JSONField(default=dict, blank=True)
    # A second lead with the same normalized email within this many hours is a duplicate.
    dedupe_window_hours = models.PositiveIntegerField(default=24 * 30)
    # Source-specific settings (inbox connection, form options); secrets by env var name.
    options = models.JSONField(default=dict, blank=True)
    # Where the inbox poll got to: {"uidvalidity": n, "last_uid": n}.
    state = models.JSONField(default=dict, blank=True)
    active = models.BooleanField(default=True)

    def __str__(self) -> str:
        return self.slug


class Team(models.Model):
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, unique=True)
    active = models.BooleanField(default=True)
    # Round-robin position; advanced under a row lock so two workers never
    # hand out the same turn.
    rr_counter = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return self.slug


class TeamMember(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="team_memberships"
    )
    weight = models.PositiveSmallIntegerField(default=1)
    active = models.BooleanField(default=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="team_member_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} (weight {self.weight})"


class Lead(models.Model):
    class Status(models.TextChoices):
        NEW = "new", "New"
        QUALIFIED = "qualified", "Qualified"
        NURTURE = "nurture", "Nurture"
        DISQUALIFIED = "disqualified", "Disqualified"
        FAILED = "failed", "Failed (needs attention)"

    # NULL rather than "" until the row has a primary key to derive it from.
    public_id = models.CharField(  # noqa: DJ001
        max_length=32, unique=True, null=True, editable=False
    )
    email = models.EmailField(max_length=254)
    name = models.CharField(max_length=200, blank=True)
    company = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=50, blank=True)
    title = models.CharField(max_length=200, blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2")
    extra = models.JSONField(default=dict, blank=True)
    source = models.ForeignKey(LeadSource, on_delete=models.PROTECT, related_name="leads")
    workflow = models.ForeignKey(
        "workflows.Workflow",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="leads",
    )
    status = models.CharField(max_length=20, choices=Status, default=Status.NEW)
    score = models.IntegerField(null=True, blank=True)
    # [{"rule": name, "points": n}, ...] and the decision, as the qualifier saw it.
    score_breakdown = models.JSONField(default=dict, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_leads",
    )
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="leads"
    )
    # Pipeline bookkeeping: failed attempts, so one bad lead cannot stall a workflow.
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["source", "email", "-created_at"], name="lead_dedupe"),
            models.Index(fields=["status", "created_at"], name="lead_status_created"),
            models.Index(fields=["-created_at"], name="lead_created"),
            models.Index(fields=["email"], name="lead_email"),
            # The dashboard's lead list: newest first within a source or an owner, and
            # case-insensitive prefix search on name and company (email is stored
            # lower-case, so lead_email serves its prefix search).
            models.Index(fields=["source", "-created_at"], name="lead_source_created"),
            models.Index(fields=["owner", "-created_at"], name="lead_owner_created"),
            models.Index(Lower("name"), name="lead_name_lower"),
            models.Index(Lower("company"), name="lead_company_lower"),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} <{self.email}>"

    @property
    def workflow_name(self) -> str:
        """The workflow's name as audit events carry it ("" for a lead without one)."""
        return self.workflow.name if self.workflow_id else ""

    @staticmethod
    def format_public_id(pk: int) -> str:
        return f"{PUBLIC_ID_PREFIX}{pk:06d}"


class ApiKey(models.Model):
    """A key for the lead and events APIs. Only a hash is stored; the key is shown once."""

    class Scope(models.TextChoices):
        LEADS_WRITE = "leads:write", "Send leads (POST /api/v1/leads)"
        EVENTS_READ = "events:read", "Read audit events and lead histories"
        EVENTS_WRITE = "events:write", "Write audit events (POST /api/v1/events)"

    # Only a leads:write key has one: it is where the key's leads come from.
    source = models.ForeignKey(
        LeadSource, on_delete=models.CASCADE, related_name="api_keys", null=True, blank=True
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    # Comma-separated Scope values, sorted. Not a JSON list: the constraint below
    # has to test membership, and SQLite cannot check `contains` on a JSON column.
    # No scope is a substring of another, so `contains` is exact.
    scopes = models.CharField(max_length=100, default=Scope.LEADS_WRITE)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(source__isnull=False)
                | ~models.Q(scopes__contains="leads:write"),
                name="apikey_leads_write_has_source",
                violation_error_message="A key with the leads:write scope needs a source.",
            ),
            models.CheckConstraint(condition=~models.Q(scopes=""), name="apikey_has_a_scope"),
        ]

    def __str__(self) -> str:
        state = "revoked" if self.revoked_at else "active"
        return f"{self.name} ({self.prefix}…, {state})"

    @property
    def scope_list(self) -> list[str]:
        return [s for s in self.scopes.split(",") if s]

    def has_scope(self, scope: str) -> bool:
        return scope in self.scope_list


class IdempotencyRecord(models.Model):
    """The first response to a request with an Idempotency-Key, replayed for repeats."""

    source = models.ForeignKey(LeadSource, on_delete=models.CASCADE)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    response = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "key"], name="idempotency_unique")]

    def __str__(self) -> str:
        return f"{self.source}:{self.key}"


class InboxMessage(models.Model):
    """A message the inbox poll has handled, by Message-ID, so it is never handled twice."""

    source = models.ForeignKey(LeadSource, on_delete=models.CASCADE)
    message_id = models.CharField(max_length=998)
    uid = models.PositiveBigIntegerField(null=True)
    outcome = models.CharField(max_length=20)  # lead, duplicate, reply, bounce, error, skipped
    lead = models.ForeignKey(Lead, null=True, blank=True, on_delete=models.SET_NULL)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "message_id"], name="inbox_message_unique")
        ]

    def __str__(self) -> str:
        return f"{self.source}: {self.message_id} ({self.outcome})"
