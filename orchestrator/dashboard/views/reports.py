"""The reports in the dashboard: the same content as the emails, for any period."""

from datetime import date, timedelta

from django.core.cache import cache
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from audit.verification import last_verification
from core.periods import EARLIEST
from orchestrator.dashboard.access import viewer_required
from orchestrator.dashboard.charts import Series, bar_chart
from orchestrator.dashboard.render import UserInputError, render_page
from orchestrator.monitoring.reports.builders import (
    Report,
    build_report,
    last_complete_day,
    report_period,
)
from orchestrator.monitoring.reports.kinds import REPORT_KINDS
from orchestrator.monitoring.reports.models import ReportKind, ReportSend
from orchestrator.monitoring.reports.render import report_zip

# A built report of a period that has ended is kept this long: building one reads a
# period's worth of rows (~30 queries), and the page and its download ask for the same
# one. Events recorded late (imports) show within a minute.
REPORT_CACHE_SECONDS = 60
EARLIEST_REPORT = EARLIEST.date()


def _kind_and_day(kind: str, day: str) -> tuple[str, date]:
    if kind not in REPORT_KINDS:
        raise Http404("no such report")
    try:
        on = date.fromisoformat(day)
    except ValueError:
        raise UserInputError(f"the report date must be YYYY-MM-DD, not {day!r}") from None
    if on > timezone.now().date():
        raise UserInputError(f"{on} lies in the future: there is nothing to report yet")
    if on < EARLIEST_REPORT:
        # The trail starts later; a period near year 1 would also overflow the arithmetic.
        raise UserInputError(f"reports start at {EARLIEST_REPORT}, not {on}")
    return kind, on


@viewer_required
@require_GET
def report_list(request: HttpRequest) -> HttpResponse:
    today = timezone.now().date()
    recent = {}
    for kind in ReportKind:
        day = last_complete_day(kind, today)
        periods = []
        for _ in range(6):
            start, end = report_period(kind, day)
            periods.append((start, end))
            day = start - timedelta(days=1)
        recent[kind] = periods
    sends = ReportSend.objects.order_by("-created_at")[:30]
    return render_page(
        request,
        "dashboard/report_list.html",
        {"recent": [(k, k.label, recent[k]) for k in ReportKind], "sends": sends},
        nav="reports",
    )


def _report(kind: str, on: date) -> Report:
    """The report with its charts drawn (`chart.svg`), from the cache when its period has
    ended. The monthly report shows the last recorded verification of the trail rather
    than verifying a million events per view (build_monthly)."""
    start, end = report_period(kind, on)
    complete = end <= timezone.now().date()
    key = f"reports:v1:{kind}:{start.isoformat()}"
    if kind == ReportKind.MONTHLY:
        # A new verification shows at once: it is part of the key.
        check = last_verification()
        key += f":check-{check.pk if check else 0}"
    if complete and (cached := cache.get(key)) is not None:
        return cached
    report = build_report(kind, on, recorded_integrity=True)
    for chart in report.charts:
        chart.svg = bar_chart(
            labels=chart.labels,
            series=[Series(name, values) for name, values in chart.series.items()],
            title=chart.title,
            stacked=False,
        )
    if complete:
        cache.set(key, report, REPORT_CACHE_SECONDS)
    return report


@viewer_required
@require_GET
def report_detail(request: HttpRequest, kind: str, day: str) -> HttpResponse:
    kind, on = _kind_and_day(kind, day)
    report = _report(kind, on)
    start, end = report_period(kind, on)
    sends = ReportSend.objects.filter(kind=kind, period_start=start).order_by("number")
    return render_page(
        request,
        "dashboard/report_detail.html",
        {
            "report": report,
            "sends": sends,
            "previous_day": start - timedelta(days=1),
            "next_day": end if end <= timezone.now().date() else None,
        },
        nav="reports",
    )


@viewer_required
@require_GET
def report_download(request: HttpRequest, kind: str, day: str) -> HttpResponse:
    kind, on = _kind_and_day(kind, day)
    report = _report(kind, on)
    response = HttpResponse(report_zip(report), content_type="application/zip")
    response["Content-Disposition"] = (
        f'attachment; filename="{kind}-report-{report.start:%Y-%m-%d}.zip"'
    )
    return response
