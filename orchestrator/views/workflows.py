from orchestrator.access import viewer_required
from orchestrator.dashboard import get_period, render_page


@viewer_required
def workflow_runs(request, **kwargs):
    return render_page(
        request,
        "dashboard/placeholder.html",
        {"title": "workflow_runs"},
        nav="",
        period=get_period(request),
    )
