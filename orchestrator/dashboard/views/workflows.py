"""Workflow runs: what each pass did, with a link to its events."""

from datetime import timedelta
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from core.paging import COUNT_CAP
from leads.workflows.models import WorkflowRun
from orchestrator.dashboard.access import viewer_required
from orchestrator.dashboard.render import (
    UserInputError,
    get_period,
    render_page,
    requested_page,
)
from orchestrator.dashboard.selectors import workflows as workflow_selectors

PAGE_SIZE = 50
# The run's counters, in the order the table shows them.
COUNTERS = ("processed", "qualified", "nurture", "disqualified", "routed", "errors")


def _events_url(run: WorkflowRun, **params: str) -> str:
    """The event browser on the run's correlation id, from its start until today: the
    steps it enqueued (CRM sync, emails) carry the same id and may run later."""
    query = {
        "correlation": run.correlation_id,
        "range": "custom",
        "since": (run.started_at - timedelta(minutes=1)).isoformat(timespec="minutes"),
        "until": timezone.now().date().isoformat(),
        **params,
    }
    return f"{reverse('event-list')}?{urlencode(query)}"


def _choice(request: HttpRequest, name: str, allowed: list[str]) -> str | None:
    value = request.GET.get(name) or None
    if value is not None and value not in allowed:
        raise UserInputError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


@viewer_required
@require_GET
def workflow_runs(request: HttpRequest) -> HttpResponse:
    period = get_period(request)
    names = list(workflow_selectors.workflow_names())
    workflow = _choice(request, "workflow", names)
    status = _choice(request, "status", list(WorkflowRun.Status.values))
    page = requested_page(
        request,
        lambda cursor: workflow_selectors.run_page(
            since=period.start,
            until=period.end,
            workflow=workflow,
            status=status,
            cursor=cursor,
            size=PAGE_SIZE,
        ),
    )
    rows = [
        {
            "run": run,
            "counts": [run.counts.get(name, 0) for name in COUNTERS],
            "errors": run.counts.get("errors", 0),
            "events_url": _events_url(run),
            "errors_url": _events_url(run, type="error"),
        }
        for run in page.items
    ]
    return render_page(
        request,
        "dashboard/workflow_runs.html",
        {
            "rows": rows,
            "counters": COUNTERS,
            "workflows": names,
            "statuses": WorkflowRun.Status.choices,
            "selected_workflow": workflow or "",
            "selected_status": status or "",
            "page": page,
            "count_cap": COUNT_CAP,
            "total": workflow_selectors.run_count(
                since=period.start, until=period.end, workflow=workflow, status=status
            ),
        },
        nav="workflows",
        period=period,
        fragment="workflow-runs",
    )
