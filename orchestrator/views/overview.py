from orchestrator.access import viewer_required
from orchestrator.dashboard import get_period, render_page


@viewer_required
def overview(request, **kwargs):
    return render_page(
        request,
        "dashboard/placeholder.html",
        {"title": "overview"},
        nav="",
        period=get_period(request),
    )
