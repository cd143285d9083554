from orchestrator.access import viewer_required
from orchestrator.dashboard import get_period, render_page


@viewer_required
def analytics(request, **kwargs):
    return render_page(
        request,
        "dashboard/placeholder.html",
        {"title": "analytics"},
        nav="",
        period=get_period(request),
    )
