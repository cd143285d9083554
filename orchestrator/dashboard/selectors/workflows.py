"""Reads for the workflow runs page."""

from collections.abc import Sequence
from datetime import datetime

from django.db.models import QuerySet

from core.paging import Page, capped_count, paginate
from leads.workflows.models import Workflow, WorkflowRun

# The indexes run_started, run_status_started and run_workflow_started end in these.
RUN_KEYS = ("-started_at", "-id")


def run_page(
    *,
    since: datetime,
    until: datetime,
    workflow: str | None = None,
    status: str | None = None,
    cursor: str | None = None,
    size: int = 50,
) -> Page[WorkflowRun]:
    """A page of the runs started in [since, until), newest first, after `cursor`
    (core.paging; a cursor this list did not write raises CursorError).

    The indexes run_started, run_status_started and run_workflow_started serve
    each combination of filters.
    """
    qs = _runs(since=since, until=until, workflow=workflow, status=status)
    return paginate(qs.select_related("workflow"), keys=RUN_KEYS, size=size, cursor=cursor)


def run_count(
    *, since: datetime, until: datetime, workflow: str | None = None, status: str | None = None
) -> int:
    """How many runs run_page pages through (core.paging.capped_count: up to 10,000+)."""
    return capped_count(_runs(since=since, until=until, workflow=workflow, status=status))


def _runs(
    *, since: datetime, until: datetime, workflow: str | None, status: str | None
) -> QuerySet[WorkflowRun]:
    qs = WorkflowRun.objects.filter(started_at__gte=since, started_at__lt=until)
    if workflow:
        qs = qs.filter(workflow__name=workflow)
    if status:
        qs = qs.filter(status=status)
    return qs


def workflow_names() -> Sequence[str]:
    return list(Workflow.objects.order_by("name").values_list("name", flat=True))
