"""The reports in the dashboard: the same content as the emails, for any period."""

from datetime import date, timedelta

from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone

from audit.reports.builders import build_report, last_complete_day, report_period
from audit.reports.models import ReportKind, ReportSend
from audit.reports.render import report_zip
from orchestrator.access import viewer_required
from orchestrator.charts import Series, bar_chart
from orchestrator.dashboard import UserInputError, render_page


def _kind_and_day(kind: str, day: str) -> tuple[str, date]:
    if kind not in ReportKind.values:
        raise Http404("no such report")
    try:
        on = date.fromisoformat(day)
    except ValueError:
        raise UserInputError(f"the report date must be YYYY-MM-DD, not {day!r}") from None
    if on > timezone.now().date():
        raise UserInputError(f"{on} lies in the future: there is nothing to report yet")
    return kind, on


@viewer_required
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
        "reports/report_list.html",
        {"recent": [(k, k.label, recent[k]) for k in ReportKind], "sends": sends},
        nav="reports",
    )


@viewer_required
def report_detail(request: HttpRequest, kind: str, day: str) -> HttpResponse:
    kind, on = _kind_and_day(kind, day)
    report = build_report(kind, on)
    for chart in report.charts:
        chart.svg = bar_chart(  # type: ignore[attr-defined]
            labels=chart.labels,
            series=[Series(name, values) for name, values in chart.series.items()],
            title=chart.title,
            stacked=False,
        )
    start, end = report_period(kind, on)
    sends = ReportSend.objects.filter(kind=kind, period_start=start).order_by("number")
    return render_page(
        request,
        "reports/report_detail.html",
        {
            "report": report,
            "sends": sends,
            "previous_day": start - timedelta(days=1),
            "next_day": end if end <= timezone.now().date() else None,
        },
        nav="reports",
    )


@viewer_required
def report_download(request: HttpRequest, kind: str, day: str) -> HttpResponse:
    kind, on = _kind_and_day(kind, day)
    report = build_report(kind, on)
    response = HttpResponse(report_zip(report), content_type="application/zip")
    response["Content-Disposition"] = (
        f'attachment; filename="{kind}-report-{report.start:%Y-%m-%d}.zip"'
    )
    return response
