from orchestrator.access import viewer_required
from orchestrator.dashboard import get_period, render_page


@viewer_required
def error_list(request, **kwargs):
    return render_page(
        request,
        "dashboard/placeholder.html",
        {"title": "error_list"},
        nav="",
        period=get_period(request),
    )


@viewer_required
def error_detail(request, **kwargs):
    return render_page(
        request,
        "dashboard/placeholder.html",
        {"title": "error_detail"},
        nav="",
        period=get_period(request),
    )
