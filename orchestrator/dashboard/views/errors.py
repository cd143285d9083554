"""Error pages: errors grouped by fingerprint (like Sentry's issues), and one group."""

from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.http import require_GET

from audit import error_selectors
from audit.models import AuditEvent
from core.periods import Period
from orchestrator.dashboard.access import viewer_required
from orchestrator.dashboard.render import (
    UserInputError,
    cached_figure,
    get_period,
    minute,
    path_value,
    render_page,
    requested_page,
)

GROUP_LIMIT = 100
PAGE_SIZE = 50
SORT_OPTIONS = [("count", "Events"), ("last_seen", "Last seen")]


def mini_bars(values: list[int], *, title: str) -> SafeString:
    """A sparkline as plain SVG bars.

    orchestrator.dashboard.charts.sparkline (pygal) takes ~10-40 ms a chart, which is seconds
    for a table of a hundred groups; this takes microseconds. Colours come from
    dashboard.css (svg.spark rect), so the CSP needs nothing inline.
    """
    width, height, n = 120, 28, max(len(values), 1)
    top = max(values, default=0) or 1
    slot = width / n
    bars = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}"></rect>',
        (
            (
                f"{i * slot:.1f}",
                f"{height - max(1.0, v / top * height) if v else height:.1f}",
                f"{max(slot - 1, 0.5):.1f}",
                f"{max(1.0, v / top * height) if v else 0:.1f}",
            )
            for i, v in enumerate(values)
        ),
    )
    return format_html(
        '<svg class="spark" viewBox="0 0 {} {}" width="{}" height="{}" role="img" '
        'aria-label="{}">{}</svg>',
        width,
        height,
        width,
        height,
        title,
        bars,
    )


def _sort(request: HttpRequest) -> error_selectors.GroupSort:
    sort = request.GET.get("sort") or "count"
    if sort not in error_selectors.GROUP_SORTS:
        raise UserInputError(
            f"sort must be one of {', '.join(error_selectors.GROUP_SORTS)}, not {sort!r}"
        )
    return sort


def _events_url(period: Period, **params: str) -> str:
    """The event browser over this period with extra filters."""
    return f"{reverse('event-list')}?{urlencode({**period.query(), **params})}"


@viewer_required
@require_GET
def error_list(request: HttpRequest) -> HttpResponse:
    period = get_period(request)
    sort = _sort(request)
    buckets = period.buckets()
    # The groups of a long period aggregate tens of thousands of rows: a page and its
    # reloads within the same minute share one computation (at most a minute stale).
    groups = cached_figure(
        "errors:groups",
        sort,
        minute(period.start),
        minute(period.end),
        period.unit,
        compute=lambda: error_selectors.error_groups(
            since=period.start, until=period.end, buckets=buckets, sort=sort, limit=GROUP_LIMIT
        ),
    )
    rows = [
        {
            "group": group,
            "new": group.is_new(period.start),
            "spark": mini_bars(group.counts, title=f"{group.count} occurrences, per {period.unit}"),
        }
        for group in groups
    ]
    return render_page(
        request,
        "dashboard/error_list.html",
        {
            "rows": rows,
            "sort": sort,
            "sort_options": SORT_OPTIONS,
            "limit": GROUP_LIMIT,
            "unit": period.unit,
        },
        nav="errors",
        period=period,
        fragment="error-groups",
    )


def _url_pattern(name: str, kwarg: str, sample: str) -> str:
    # One reverse() for a whole table: the row's value goes where the sample was.
    return reverse(name, kwargs={kwarg: sample}).replace(f"/{sample}/", "/{}/")


def _stamp(moment: datetime) -> tuple[str, str]:
    """(ISO 8601, "Y-m-d H:i:s") in the current time zone, as the |date filter shows it."""
    local = timezone.localtime(moment)
    return local.isoformat(), f"{local:%Y-%m-%d %H:%M:%S}"


def _occurrence_rows(events: list[AuditEvent]) -> list[dict[str, Any]]:
    """What each occurrence row shows, prepared once: per-row url tags and date filters
    cost more than the query for a page of 50."""
    event_url = _url_pattern("event-detail", "pk", "1")
    lead_url = _url_pattern("lead-detail", "public_id", "LEAD-000001")
    rows = []
    for event in events:
        iso, text = _stamp(event.timestamp)
        message = event.error_message
        rows.append(
            {
                "pk": event.pk,
                "iso": iso,
                "when": text,
                "lead_public_id": event.lead_public_id,
                "lead_url": lead_url.format(quote(event.lead_public_id))
                if event.lead_public_id
                else "",
                "workflow": event.workflow,
                "message": message if len(message) <= 200 else message[:199] + "…",
                "url": event_url.format(event.pk),
            }
        )
    return rows


def _lead_rows(leads: list[dict]) -> list[dict[str, Any]]:
    lead_url = _url_pattern("lead-detail", "public_id", "LEAD-000001")
    for row in leads:
        iso, text = _stamp(row["last_seen"])
        row.update(iso=iso, when=text[:16], url=lead_url.format(quote(row["lead_public_id"])))
    return leads


@viewer_required
@require_GET
def error_detail(request: HttpRequest, fingerprint: str) -> HttpResponse:
    fingerprint = path_value(fingerprint, what="error group")
    period = get_period(request)
    group = error_selectors.error_group(
        fingerprint=fingerprint, since=period.start, until=period.end
    )
    if group is None:
        raise Http404("No error with this fingerprint was ever recorded.")
    page = requested_page(
        request,
        lambda cursor: error_selectors.group_occurrences(
            fingerprint=fingerprint,
            since=period.start,
            until=period.end,
            cursor=cursor,
            size=PAGE_SIZE,
        ),
    )
    leads = error_selectors.group_leads(
        fingerprint=fingerprint, since=period.start, until=period.end
    )
    context = {
        "group": group,
        "occurrences": _occurrence_rows(page.items),
        "page": page,
        "leads": _lead_rows(leads),
        "events_url": _events_url(period, type="error", fingerprint=fingerprint),
    }
    return render_page(
        request,
        "dashboard/error_detail.html",
        context,
        nav="errors",
        period=period,
        fragment="occurrences",
    )
