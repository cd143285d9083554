from django.db import models


class Workflow(models.Model):
    """A pipeline: which sources feed it, how leads are scored and routed, what runs next.

    `config` follows config/workflow.schema.json; it names environment
    variables for secrets and never holds them.
    """

    name = models.SlugField(max_length=100, unique=True)
    config = models.JSONField(default=dict)
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # The tables keep the names they had in the project app (state-only move).
        db_table = "orchestrator_workflow"

    def __str__(self) -> str:
        return self.name


class WorkflowRun(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        INTERRUPTED = "interrupted", "Interrupted"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="runs")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    # Touched as the pass goes; a "running" run whose heartbeat stopped was killed.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status, default=Status.RUNNING)
    dry_run = models.BooleanField(default=False)
    # {"polled": n, "processed": n, "qualified": n, "nurture": n, "disqualified": n,
    #  "routed": n, "errors": n}
    counts = models.JSONField(default=dict)
    error = models.TextField(blank=True)
    correlation_id = models.CharField(max_length=64)

    class Meta:
        db_table = "orchestrator_workflowrun"
        indexes = [
            models.Index(fields=["workflow", "-started_at"], name="run_workflow_started"),
            # The runs page: all workflows newest first (keyset on started_at, id),
            # and filtered by status (failed runs are rare: no scan to find them).
            models.Index(fields=["-started_at", "-id"], name="run_started"),
            models.Index(fields=["status", "-started_at", "-id"], name="run_status_started"),
        ]

    def __str__(self) -> str:
        return f"{self.workflow} run {self.pk} ({self.status})"

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()
