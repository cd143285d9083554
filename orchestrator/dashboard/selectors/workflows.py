"""Reads for the workflow runs page."""

from collections.abc import Sequence
from datetime import datetime

from django.db.models import Q, QuerySet

from leads.workflows.models import Workflow, WorkflowRun


def run_list(
    *,
    since: datetime,
    until: datetime,
    workflow: str | None = None,
    status: str | None = None,
    before: tuple[datetime, int] | None = None,
) -> QuerySet[WorkflowRun]:
    """Runs started in [since, until), newest first; slice it for a page.

    `before` is a keyset cursor (started_at, id) of the last run of the
    previous page. The indexes run_started, run_status_started and
    run_workflow_started serve each combination of filters.
    """
    qs = WorkflowRun.objects.filter(started_at__gte=since, started_at__lt=until)
    if workflow:
        qs = qs.filter(workflow__name=workflow)
    if status:
        qs = qs.filter(status=status)
    if before is not None:
        ts, pk = before
        qs = qs.filter(Q(started_at__lt=ts) | Q(started_at=ts, id__lt=pk))
    return qs.select_related("workflow").order_by("-started_at", "-id")


def workflow_names() -> Sequence[str]:
    return list(Workflow.objects.order_by("name").values_list("name", flat=True))


def run_cursor(*, run_id: int) -> tuple[datetime, int] | None:
    """The keyset position of a run, or None if there is no such run."""
    return WorkflowRun.objects.filter(pk=run_id).values_list("started_at", "id").first()
