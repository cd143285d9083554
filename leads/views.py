from orchestrator.access import operator_required, viewer_required
from orchestrator.dashboard import get_period, render_page


@viewer_required
def lead_list(request, **kwargs):
    return render_page(
        request,
        "dashboard/placeholder.html",
        {"title": "lead_list"},
        nav="",
        period=get_period(request),
    )


@viewer_required
def lead_detail(request, **kwargs):
    return render_page(
        request,
        "dashboard/placeholder.html",
        {"title": "lead_detail"},
        nav="",
        period=get_period(request),
    )


@operator_required
def lead_requalify(request, **kwargs):
    return render_page(
        request,
        "dashboard/placeholder.html",
        {"title": "lead_requalify"},
        nav="",
        period=get_period(request),
    )


@operator_required
def lead_retry_crm(request, **kwargs):
    return render_page(
        request,
        "dashboard/placeholder.html",
        {"title": "lead_retry_crm"},
        nav="",
        period=get_period(request),
    )


@operator_required
def lead_cancel_sequence(request, **kwargs):
    return render_page(
        request,
        "dashboard/placeholder.html",
        {"title": "lead_cancel_sequence"},
        nav="",
        period=get_period(request),
    )
