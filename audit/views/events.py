from orchestrator.access import viewer_required
from orchestrator.dashboard import get_period, render_page


@viewer_required
def event_list(request, **kwargs):
    return render_page(
        request,
        "dashboard/placeholder.html",
        {"title": "event_list"},
        nav="",
        period=get_period(request),
    )


@viewer_required
def event_export(request, **kwargs):
    return render_page(
        request,
        "dashboard/placeholder.html",
        {"title": "event_export"},
        nav="",
        period=get_period(request),
    )


@viewer_required
def event_detail(request, **kwargs):
    return render_page(
        request,
        "dashboard/placeholder.html",
        {"title": "event_detail"},
        nav="",
        period=get_period(request),
    )
