from django.db import models
from django.db.models.functions import Lower


class WorkerHeartbeat(models.Model):
    """Proof of life of one task worker (`manage.py run_worker`), read by /healthz.

    db_worker records nothing while idle, so without this a stopped worker
    looks the same as one with nothing to do.
    """

    worker_id = models.CharField(max_length=64, primary_key=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"worker {self.worker_id} on {self.hostname} seen {self.seen_at:%Y-%m-%d %H:%M:%S}"


class ExportJob(models.Model):
    """An event-browser export too large to stream within one request: a task
    writes it to a file in EXPORT_DIR, and the owner downloads it when done."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="export_jobs")
    # The query string, frozen period and last event id the export holds.
    filters = models.JSONField(default=dict)
    format = models.CharField(max_length=8)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    file_path = models.CharField(max_length=500, blank=True)
    row_count = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Each claim by a worker counts an attempt; the writer proves it is alive by
    # moving progress_at on, and a claim that is no longer the latest stops.
    attempts = models.PositiveSmallIntegerField(default=0)
    progress_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "-created_at"], name="exportjob_user_created")]

    def __str__(self) -> str:
        return f"export #{self.pk} ({self.format}, {self.status})"


class SavedView(models.Model):
    """A named set of event-browser filters (the query string of /events/), its
    owner's own, or listed for every dashboard user when shared."""

    owner = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="saved_views")
    name = models.CharField(max_length=80)
    # Already cleaned (orchestrator.dashboard.saved_views.clean_query): only the
    # browser's filter keys, in one canonical order, so equal filters compare equal.
    query = models.CharField(max_length=2000, blank=True)
    shared = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # "Errors" and "errors" side by side in one menu could not be told apart.
            models.UniqueConstraint("owner", Lower("name"), name="savedview_owner_name_ci"),
        ]
        indexes = [
            models.Index(
                fields=["name"], condition=models.Q(shared=True), name="savedview_shared_name"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.owner_id}{', shared' if self.shared else ''})"
