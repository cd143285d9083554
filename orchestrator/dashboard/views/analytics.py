"""The analytics page: funnel, lead sources, email steps and CRM performance."""

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from orchestrator.dashboard.access import viewer_required
from orchestrator.dashboard.charts import Series, bar_chart
from orchestrator.dashboard.render import (
    UserInputError,
    get_period,
    render_page,
    wanted_fragment,
)
from orchestrator.dashboard.selectors import analytics as selectors

# Each section is a partial named after its id; an htmx request for one (its id in
# HX-Target, or ?section=<id>) answers only that one.
SECTIONS = ("funnel", "sources", "email-steps", "crm-performance")


@viewer_required
@require_GET
def analytics(request: HttpRequest) -> HttpResponse:
    period = get_period(request)
    section = request.GET.get("section") or None
    if section is not None and section not in SECTIONS:
        raise UserInputError(f"section must be one of {', '.join(SECTIONS)}, not {section!r}")
    since, until = period.start, period.end
    context: dict = {"sections": SECTIONS}
    # A fragment request computes its own section only.
    fragment = wanted_fragment(request, fragments=SECTIONS, default=section)
    wanted = SECTIONS if fragment is None else (fragment,)
    if "funnel" in wanted:
        stages = selectors.funnel(since=since, until=until)
        context["funnel"] = stages
        context["funnel_chart"] = bar_chart(
            labels=[s.label for s in stages],
            series=[Series(name="Leads", values=[s.count for s in stages])],
            title="Leads reaching each stage",
            noun=("lead", "leads"),
            stacked=False,
        )
    if "sources" in wanted:
        context["sources"] = selectors.source_stats(since=since, until=until)
    if "email-steps" in wanted:
        context["email_steps"] = selectors.email_step_stats(since=since, until=until)
    if "crm-performance" in wanted:
        context["crm"] = selectors.crm_performance(since=since, until=until)
        context["crm_syncs"] = selectors.crm_syncs(since=since, until=until)
    return render_page(
        request,
        "dashboard/analytics.html",
        context,
        nav="analytics",
        period=period,
        fragments=SECTIONS,
        fragment=section,
    )
