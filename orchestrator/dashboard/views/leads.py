"""The dashboard's lead pages: the filtered list, one lead's page, and the operator actions."""

from collections.abc import Callable
from datetime import UTC
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from audit.services import audit_context
from core.paging import COUNT_CAP, capped_count
from leads import actions
from leads.crm.services import crm_connections_for
from leads.followups.models import Enrollment
from leads.models import Lead
from leads.services import NotApplicable, lead_viewed, requalify_blocker
from orchestrator.dashboard.access import actor_for, can_act, operator_required, viewer_required
from orchestrator.dashboard.filters.leads import LeadFilter
from orchestrator.dashboard.render import (
    UserInputError,
    get_period,
    path_value,
    render_page,
    requested_page,
    wanted_fragment,
)
from orchestrator.dashboard.selectors.leads import (
    PAGE_SIZE,
    Timeline,
    latest_lead_events,
    lead_by_public_id,
    lead_crm,
    lead_page,
    lead_sequences,
    lead_timeline,
    routing_event,
    score_view,
)
from orchestrator.templatetags.display import stamp_text

LIST_TEMPLATE = "dashboard/lead_list.html"
DETAIL_TEMPLATE = "dashboard/lead_detail.html"
DETAIL_FRAGMENT = "lead-page"


@viewer_required
@require_GET
def lead_list(request: HttpRequest) -> HttpResponse:
    period = get_period(request)
    filters = LeadFilter(request.GET, queryset=Lead.objects.all(), period=period)
    if not filters.is_valid():
        raise UserInputError(filters.error_message())
    page = requested_page(
        request, lambda cursor: lead_page(filters.qs, cursor=cursor, size=PAGE_SIZE)
    )
    context = {
        "filters": filters,
        "page": page,
        "page_size": PAGE_SIZE,
        "total": capped_count(filters.qs, cap=COUNT_CAP),
        "count_cap": COUNT_CAP,
    }
    return render_page(
        request, LIST_TEMPLATE, context, nav="leads", period=period, fragment="lead-table"
    )


def _lead_or_404(public_id: str) -> Lead:
    lead = lead_by_public_id(public_id=path_value(public_id, what="lead"))
    if lead is None:
        raise Http404(f"No lead {public_id}")
    return lead


def _timeline(lead: Lead) -> Timeline:
    """The lead's timeline with each entry's display strings and links (see TimelineEntry)."""
    timeline = lead_timeline(lead_id=lead.public_id)
    event_list_url = reverse("event-list")
    for entry in timeline.entries:
        event = entry.event
        utc = event.timestamp.astimezone(UTC)
        entry.iso = utc.isoformat()
        entry.utc_text = stamp_text(event.timestamp)
        entry.ago = naturaltime(event.timestamp)
        entry.detail_url = reverse("event-detail", kwargs={"pk": event.pk})
        if event.correlation_id:
            query = {
                "correlation": event.correlation_id,
                "range": "custom",
                "since": f"{entry.window_since.astimezone(UTC):%Y-%m-%d}",
                "until": f"{entry.window_until.astimezone(UTC):%Y-%m-%d}",
            }
            entry.correlation_url = f"{event_list_url}?{urlencode(query)}"
    return timeline


def _detail_context(request: HttpRequest, lead: Lead) -> dict[str, Any]:
    sequences = lead_sequences(lead=lead)
    crm = lead_crm(lead=lead)
    active = [v for v in sequences if v.enrollment.status == Enrollment.Status.ACTIVE]
    latest = latest_lead_events(lead_id=lead.public_id)
    return {
        "lead": lead,
        "score": score_view(lead=lead, latest=latest),
        "routed": routing_event(lead=lead, latest=latest),
        "crm": crm,
        "sequences": sequences,
        "timeline": _timeline(lead),
        "can_act": can_act(request.user),
        "requalify_blocker": requalify_blocker(lead),
        "has_active_sequence": bool(active),
        "crm_targets": crm_connections_for(lead=lead),
        # A list, not the dict: a key named "items" would shadow .items in a template.
        "extra_items": sorted((lead.extra or {}).items()),
    }


def _render_detail(request: HttpRequest, lead: Lead, *, status: int = 200) -> HttpResponse:
    return render_page(
        request,
        DETAIL_TEMPLATE,
        _detail_context(request, lead),
        nav="leads",
        fragment=DETAIL_FRAGMENT,
        status=status,
    )


@viewer_required
@require_GET
def lead_detail(request: HttpRequest, public_id: str) -> HttpResponse:
    lead = _lead_or_404(public_id)
    if not wanted_fragment(request, default=DETAIL_FRAGMENT):
        # Once per page view; the page's own htmx refreshes are not new views.
        lead_viewed(lead=lead, actor=actor_for(request))
    return _render_detail(request, lead)


def _act(request: HttpRequest, public_id: str, action: Callable[[Lead, str], str]) -> HttpResponse:
    """Run an operator action as the user; answer with the lead page (htmx: its body),
    or a redirect back to it, with a message. An action that does not apply is a 400."""
    lead = _lead_or_404(public_id)
    actor = actor_for(request)
    try:
        with audit_context(actor=actor):
            done = action(lead, actor)
    except NotApplicable as exc:
        messages.error(request, str(exc))
        return _render_detail(request, _lead_or_404(public_id), status=400)
    messages.success(request, done)
    if wanted_fragment(request, default=DETAIL_FRAGMENT):
        return _render_detail(request, _lead_or_404(public_id))
    return redirect("lead-detail", public_id=lead.public_id)


@operator_required
@require_POST
def lead_requalify(request: HttpRequest, public_id: str) -> HttpResponse:
    return _act(request, public_id, actions.requalify)


@operator_required
@require_POST
def lead_retry_crm(request: HttpRequest, public_id: str) -> HttpResponse:
    return _act(request, public_id, actions.retry_crm)


@operator_required
@require_POST
def lead_cancel_sequence(request: HttpRequest, public_id: str) -> HttpResponse:
    return _act(request, public_id, actions.cancel_sequences)
