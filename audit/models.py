import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class AppendOnlyError(Exception):
    """Audit rows are never changed or deleted through the ORM (prune has its own path)."""


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):  # type: ignore[no-untyped-def]
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only: update refused")

    def delete(self):  # type: ignore[no-untyped-def]
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only: delete refused")

    def bulk_update(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only: update refused")

    def update_or_create(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only: update refused")


class AppendOnlyModel(models.Model):
    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} rows are append-only: update refused")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise AppendOnlyError(f"{type(self).__name__} rows are append-only: delete refused")


class AuditEvent(AppendOnlyModel):
    id = models.BigAutoField(primary_key=True)
    # Random, so a copied row cannot pass as a second genuine event, and stable
    # across export and import, so a second import of the same file adds nothing.
    uuid = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    timestamp = models.DateTimeField(default=timezone.now)
    event_type = models.CharField(max_length=64)
    actor = models.CharField(max_length=150, default="system")
    # The lead's public id, not a foreign key: the store knows no domain app, and a
    # deleted lead's history stays readable.
    lead_public_id = models.CharField(max_length=32, blank=True, default="")
    workflow = models.CharField(max_length=100, blank=True, default="")
    correlation_id = models.CharField(max_length=64, blank=True, default="")
    details = models.JSONField(default=dict, blank=True)
    error_type = models.CharField(max_length=200, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    # Groups equal errors (audit.fingerprints); derived from the error fields,
    # so outside the MAC. Empty for events without an error.
    fingerprint = models.CharField(max_length=16, blank=True, default="", db_default="")
    # HMAC-SHA256 of the event's content under AUDIT_SIGNING_KEY (see audit.signing).
    mac = models.CharField(max_length=64)

    class Meta:
        ordering = ["-timestamp", "-id"]
        # Newest first everywhere; id breaks ties between equal timestamps so
        # keyset pagination is stable.
        indexes = [
            models.Index(fields=["-timestamp", "-id"], name="audit_ts"),
            models.Index(fields=["lead_public_id", "-timestamp", "-id"], name="audit_lead_ts"),
            models.Index(fields=["event_type", "-timestamp", "-id"], name="audit_type_ts"),
            # No index by workflow: a workflow holds a large share of all events, so
            # its newest page is a short walk down audit_ts, and its statistics come
            # from the rollups (87 bytes an event, and a B-tree to update per write).
            # People and API keys write a small share; "system" writes the rest and
            # is found by walking audit_ts (event_list adds the condition so that
            # SQLite sees this index applies).
            models.Index(
                fields=["actor", "-timestamp", "-id"],
                name="audit_actor_ts_people",
                condition=~models.Q(actor="system"),
            ),
            models.Index(fields=["correlation_id", "-timestamp"], name="audit_correlation_ts"),
            # Errors are a small share of events: partial indexes keep the
            # error pages and alerts off the big indexes.
            models.Index(
                fields=["-timestamp", "fingerprint"],
                name="audit_error_ts",
                condition=~models.Q(fingerprint=""),
            ),
            models.Index(
                fields=["fingerprint", "-timestamp"],
                name="audit_fingerprint_ts",
                condition=~models.Q(fingerprint=""),
            ),
        ]

    def __str__(self) -> str:
        lead = f" {self.lead_public_id}" if self.lead_public_id else ""
        return f"#{self.pk} {self.event_type}{lead} at {self.timestamp:%Y-%m-%d %H:%M:%S}"


class AuditSeal(AppendOnlyModel):
    """A block of committed events, chained to the previous block.

    `ranges` lists the ids it covers; `open_gaps` lists ids below its high-water
    mark that were not committed yet when it was made (PostgreSQL hands out ids
    before commit), so that a late commit lands in the next seal instead of
    looking like an insertion out of band.
    """

    number = models.PositiveBigIntegerField(unique=True)
    created_at = models.DateTimeField()
    high_water = models.BigIntegerField()
    ranges = models.JSONField()
    open_gaps = models.JSONField(default=list)
    event_count = models.PositiveIntegerField()
    events_digest = models.CharField(max_length=64)
    prev_digest = models.CharField(max_length=64)
    digest = models.CharField(max_length=64)

    class Meta:
        ordering = ["number"]

    def __str__(self) -> str:
        return f"seal {self.number}: {self.event_count} events up to #{self.high_water}"


class AuditPrune(AppendOnlyModel):
    """What one retention run deleted from one seal, so that seal stays verifiable.

    When a run deletes every remaining event of a seal it says so (`emptied`);
    otherwise it keeps the id and MAC of each deleted event, which is all that
    verification needs to recompute the seal's digest.
    """

    run = models.UUIDField()
    created_at = models.DateTimeField()
    before = models.DateTimeField()
    actor = models.CharField(max_length=150)
    seal_number = models.PositiveBigIntegerField()
    emptied = models.BooleanField(default=False)
    pruned = models.JSONField(default=list)
    deleted_count = models.PositiveIntegerField()
    archive_path = models.CharField(max_length=500, blank=True)
    archive_sha256 = models.CharField(max_length=64, blank=True)
    digest = models.CharField(max_length=64)

    class Meta:
        indexes = [models.Index(fields=["seal_number"], name="audit_prune_seal")]

    def __str__(self) -> str:
        return f"prune of seal {self.seal_number}: {self.deleted_count} events"


class AuditRollup(models.Model):
    """Hourly counts of sealed events, kept by the sealer, for statistics and trends."""

    hour = models.DateTimeField()
    # The hour's UTC date, so per-day figures are a GROUP BY without date functions.
    day = models.DateField()
    event_type = models.CharField(max_length=64)
    workflow = models.CharField(max_length=100, blank=True, default="")
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["hour", "event_type", "workflow"], name="audit_rollup_key"
            )
        ]
        indexes = [models.Index(fields=["workflow", "hour"], name="audit_rollup_wf_hour")]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}:00 {self.event_type}/{self.workflow}: {self.count}"


class AuditRollupDay(models.Model):
    """Daily counts of sealed events: a month of statistics reads ~a thousand rows."""

    day = models.DateField()
    event_type = models.CharField(max_length=64)
    workflow = models.CharField(max_length=100, blank=True, default="")
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "event_type", "workflow"], name="audit_rollup_day_key"
            )
        ]
        indexes = [models.Index(fields=["workflow", "day"], name="audit_rollup_day_wf")]

    def __str__(self) -> str:
        return f"{self.day} {self.event_type}/{self.workflow}: {self.count}"


class AuditLeadDay(models.Model):
    """Which leads had events on which day: distinct-lead counts without scanning events."""

    day = models.DateField()
    workflow = models.CharField(max_length=100, blank=True, default="")
    lead_public_id = models.CharField(max_length=32)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "workflow", "lead_public_id"], name="audit_lead_day_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.workflow} {self.lead_public_id}"


class AuditErrorHour(models.Model):
    """Hourly occurrences of each error group (fingerprint), kept by the sealer with the
    other rollups: the error pages count and chart groups from here, flat in the number
    of events. `last_seen`/`last_id` are the hour's latest occurrence."""

    hour = models.DateTimeField()
    fingerprint = models.CharField(max_length=16)
    count = models.BigIntegerField(default=0)
    last_seen = models.DateTimeField()
    last_id = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hour", "fingerprint"], name="audit_error_hour_key")
        ]
        indexes = [models.Index(fields=["fingerprint", "hour"], name="audit_error_hour_fp")]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}:00 {self.fingerprint}: {self.count}"


class AuditErrorLead(models.Model):
    """Each lead an error group hit: how often and when last, kept by the sealer.

    The leads a group hit since a moment are those whose last occurrence is after it:
    one range of audit_error_lead_seen, where a count of distinct leads over the
    group's events grows with them."""

    fingerprint = models.CharField(max_length=16)
    lead_public_id = models.CharField(max_length=32)
    count = models.BigIntegerField(default=0)
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["fingerprint", "lead_public_id"], name="audit_error_lead_key"
            )
        ]
        indexes = [models.Index(fields=["fingerprint", "-last_seen"], name="audit_error_lead_seen")]

    def __str__(self) -> str:
        return f"{self.fingerprint} {self.lead_public_id}: {self.count}"


class IntegrityCheck(AppendOnlyModel):
    """The outcome of one full verification of the audit trail (verify_audit, or the
    monthly report when it is sent). Verifying reads every event, far too slow for a
    page view at scale: the dashboard's monthly report shows the last check instead.

    MAC'd like a seal (audit.verification.check_fields), so a row written by anyone
    without the key is not shown as a verification; append-only (ORM, and a
    PostgreSQL trigger)."""

    checked_at = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField()
    events_checked = models.PositiveBigIntegerField()
    seals_checked = models.PositiveIntegerField()
    unsealed = models.PositiveBigIntegerField(default=0)
    first_problem = models.TextField(blank=True)
    # Empty on checks recorded before MACs (migration 0009): shown as unverified.
    mac = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        # Kept under its first home's table name (state-only move from the reports app).
        db_table = "reports_integritycheck"
        ordering = ["-checked_at", "-id"]

    def __str__(self) -> str:
        return f"{'OK' if self.ok else 'FAILED'} at {self.checked_at:%Y-%m-%d %H:%M}"


class AuditAnchorMark(AppendOnlyModel):
    """Anchors have been written (audit.anchors): from now on a missing anchor log is
    an alarm, not an installation that has not anchored yet.

    One row per anchor log the sealer started. It lives in the database so that
    deleting the log file alone is caught. Append-only through the ORM; no
    PostgreSQL trigger: it matters only once the file is gone, and whoever can
    delete the file can as well rewrite it to match.
    """

    created_at = models.DateTimeField(default=timezone.now)
    path = models.CharField(max_length=500)

    def __str__(self) -> str:
        return f"anchor log {self.path} started {self.created_at:%Y-%m-%d %H:%M}"


class ImportPosition(models.Model):
    """How far `import_audit_log --follow` has read a legacy log, saved in the
    transaction that stores the lines before it: a follower killed at any
    moment resumes exactly where its last commit left it."""

    path = models.CharField(max_length=500, unique=True)
    # The file being read: its inode, and a digest of its first line, which
    # finds it again after logrotate renamed (and maybe compressed) it.
    inode = models.BigIntegerField(null=True)
    head = models.CharField(max_length=64, blank=True, default="")
    offset = models.BigIntegerField(default=0)
    imported = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.path} at byte {self.offset}"


class ErrorGroupState(models.Model):
    """What staff decided about one error group (a fingerprint): resolved, ignored, whom
    it is assigned to. No row means unresolved and unassigned.

    Stored as decided; what it means now is derived when read
    (audit.error_selectors.group_states): a resolved group with an occurrence after
    resolved_at has regressed, an ignored group whose condition ran out is unresolved.
    Changed only through audit.error_groups, which audits each change."""

    class Status(models.TextChoices):
        UNRESOLVED = "unresolved", "Unresolved"
        RESOLVED = "resolved", "Resolved"
        IGNORED = "ignored", "Ignored"

    fingerprint = models.CharField(max_length=16, unique=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.UNRESOLVED)
    resolved_at = models.DateTimeField(null=True, blank=True)
    ignored_at = models.DateTimeField(null=True, blank=True)
    # Ignored until this moment, or until this many more occurrences; neither: forever.
    ignore_until = models.DateTimeField(null=True, blank=True)
    ignore_count = models.PositiveIntegerField(null=True, blank=True)
    # A foreign key to the user, unlike events: this is working state, not history,
    # and a deleted account simply leaves the group unassigned.
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(status="resolved") | models.Q(resolved_at__isnull=False),
                name="audit_errorgroup_resolved_at",
            ),
            models.CheckConstraint(
                condition=~models.Q(status="ignored") | models.Q(ignored_at__isnull=False),
                name="audit_errorgroup_ignored_at",
            ),
            models.CheckConstraint(
                condition=models.Q(ignore_count__isnull=True) | models.Q(ignore_count__gte=1),
                name="audit_errorgroup_ignore_count",
            ),
        ]

    def __str__(self) -> str:
        return f"error group {self.fingerprint}: {self.status}"
