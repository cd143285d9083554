"""The dashboard overview: KPI cards, lead volume, errors over time, recent errors and runs.

One URL serves the page and each widget: an htmx request names the widget
it refreshes (HX-Target, the section's id) and only that widget is computed.
"""

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import conditional_escape
from django.utils.safestring import SafeData
from django.views.decorators.http import require_GET

from audit.types import ERROR
from core.periods import Period
from orchestrator.dashboard.access import viewer_required
from orchestrator.dashboard.charts import Series, bar_chart
from orchestrator.dashboard.render import get_period, render_page, wanted_fragment
from orchestrator.dashboard.selectors import overview as selectors

TEMPLATE = "dashboard/overview.html"


def _duration(span: timedelta) -> str:
    seconds = max(0, round(span.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


# The order a pass goes in; PostgreSQL's jsonb keeps keys in an order of its own.
COUNT_ORDER = ("polled", "processed", "qualified", "nurture", "disqualified", "routed", "errors")


def _ordered_counts(counts: dict[str, Any]) -> list[tuple[str, Any]]:
    rank = {key: i for i, key in enumerate(COUNT_ORDER)}
    return sorted(counts.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))


def _events_url(period: Period, start: datetime, end: datetime, **params: str) -> str:
    """The event browser over [start, end) widened to whole minutes: a clipped
    bucket ends at "now", and a link to the microsecond is noise."""
    since = start.replace(second=0, microsecond=0)
    until = end.replace(second=0, microsecond=0)
    if until < end or until <= since:
        # Rounded up, and never empty: a run that started and ended within
        # the same whole minute would otherwise link to a 400.
        until += timedelta(minutes=1)
    return f"{reverse('event-list')}?{urlencode({**params, **period.narrowed(since, until)})}"


def _kpis(request: HttpRequest, period: Period) -> dict[str, Any]:
    return {"kpis": selectors.kpis(period=period)}


# Rendering a chart costs more than the counts behind it, so the SVG is cached
# with them (keyed by the same minute).


def _cached_svg(svg: str) -> str:
    # Shown unescaped only when it comes back as bar_chart's safe output (the
    # cache signs safe text); any other string from the cache is escaped.
    return svg if isinstance(svg, SafeData) else conditional_escape(svg)


def _volume(request: HttpRequest, period: Period) -> dict[str, Any]:
    volume = selectors.lead_volume(period=period)

    def render() -> str:
        links = [_events_url(period, a, b, type="lead_ingested") for a, b in volume.buckets]
        return bar_chart(
            buckets=volume.buckets,
            unit=period.unit,
            series=[Series(s.name, s.values, links=links) for s in volume.series],
            title=f"New leads per {period.unit}, by source",
            noun=("new lead", "new leads"),
        )

    svg = selectors.cached("volume-svg", period, render)
    return {"volume": volume, "volume_chart": _cached_svg(svg)}


def _errors(request: HttpRequest, period: Period) -> dict[str, Any]:
    errors = selectors.error_series(period=period)
    links = [_events_url(period, a, b, type=ERROR) for a, b in errors.buckets]

    def render() -> str:
        return bar_chart(
            buckets=errors.buckets,
            unit=period.unit,
            series=[Series("Errors", errors.counts, links=links, marked=errors.spikes)],
            title=f"Errors per {period.unit}",
            noun=("error", "errors"),
        )

    rule = errors.rule
    svg = selectors.cached(f"errors-svg:{rule.k}:{rule.min_count}:{rule.window}", period, render)
    spikes = [
        {"start": errors.buckets[i][0], "count": errors.counts[i], "url": links[i]}
        for i in sorted(errors.spikes)
    ]
    return {"errors": errors, "error_chart": _cached_svg(svg), "spikes": spikes}


def _recent_errors(request: HttpRequest, period: Period) -> dict[str, Any]:
    return {"recent_errors": selectors.recent_errors(period=period)}


def _recent_runs(request: HttpRequest, period: Period) -> dict[str, Any]:
    now = timezone.now()
    rows = []
    for run in selectors.recent_runs(period=period):
        end = run.finished_at or now
        # The run's events, in a range that holds them whatever the page's range.
        events_url = (
            _events_url(period, run.started_at, end, correlation=run.correlation_id)
            if run.correlation_id
            else ""
        )
        rows.append(
            {
                "run": run,
                "duration": _duration(end - run.started_at),
                "running": run.finished_at is None,
                "counts": _ordered_counts(run.counts),
                "events_url": events_url,
            }
        )
    return {"runs": rows}


WIDGETS: dict[str, Callable[[HttpRequest, Period], dict[str, Any]]] = {
    "kpis": _kpis,
    "volume-chart": _volume,
    "error-chart": _errors,
    "recent-errors": _recent_errors,
    "recent-runs": _recent_runs,
}


@viewer_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    period = get_period(request)
    # Each widget polls for itself: only the one an htmx request names is computed.
    fragment = wanted_fragment(request, fragments=tuple(WIDGETS))
    context: dict[str, Any] = {}
    for name, build in WIDGETS.items():
        if fragment in (None, name):
            context.update(build(request, period))
    return render_page(
        request, TEMPLATE, context, nav="overview", period=period, fragments=tuple(WIDGETS)
    )
