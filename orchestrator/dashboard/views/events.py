"""The event browser: filter, chart, page through, tail and export the audit trail."""

import json
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings
from django.db import transaction
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    QueryDict,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from audit import selectors
from audit.models import AuditEvent
from audit.services import record_event
from audit.types import known_event_types
from core.periods import EARLIEST, LATEST, Period
from orchestrator.dashboard.access import actor_for, viewer_required
from orchestrator.dashboard.charts import Series, bar_chart
from orchestrator.dashboard.exports import (
    exceeds,
    export_lines,
    export_path,
    job_filters,
    matching_events,
    merge_types,
    write_export_file,
)
from orchestrator.dashboard.filters.events import EventFilter
from orchestrator.dashboard.render import (
    UserInputError,
    cached_figure,
    get_period,
    render_page,
    requested_page,
    wanted_fragment,
)
from orchestrator.dashboard.selectors import suggestions
from orchestrator.models import ExportJob
from orchestrator.templatetags.display import stamp_text

PAGE_SIZE = 50
# A live-tail poll that fell behind catches up this many events at a time.
TAIL_LIMIT = 100
# Counting from the events (filters the rollups cannot answer) reads at most this
# many of them; beyond it the page says the counts cover only the newest ones.
SCAN_LIMIT = 2000
# The histogram and type counts of a filter are shared this long (_volume_and_histogram).
EXPORT_FORMATS = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "jsonl": ("application/x-ndjson; charset=utf-8", "jsonl"),
}
# The partials an htmx request may ask for by their id; any other gets the table.
FRAGMENTS = ("event-table", "event-histogram")
# Query parameters that place a request in the list rather than filter it.
POSITION_PARAMS = ("cursor", "after")
PERIOD_PARAMS = ("range", "since", "until")


def _filters(request: HttpRequest, period: Period) -> EventFilter:
    filterset = EventFilter(request.GET, period=period)
    message = filterset.error_message()
    if message:
        raise UserInputError(message)
    return filterset


def _cursor_time(cursor: str | None) -> datetime | None:
    """The timestamp of the position a page cursor names (CursorError if it names none)."""
    return selectors.EVENTS.decode(cursor)[0] if cursor else None


def _position(event_id: int, *, param: str) -> tuple[datetime, int]:
    """The keyset position of the live tail's `after` event id."""
    if event_id == 0:
        # "After nothing": a live tail started on an empty list.
        return (datetime(1970, 1, 1, tzinfo=UTC), 0)
    key = selectors.event_keys(event_ids=[event_id]).get(event_id)
    if key is None:
        raise UserInputError(
            f"{param}: there is no event #{event_id} (it may have been pruned); "
            "start again from the newest events"
        )
    return key


def _with_display(events: list[AuditEvent], params: QueryDict) -> list[AuditEvent]:
    """What a row shows, prepared here: per-row template tags (url, querystring,
    truncatechars) cost more than the queries on a page of 50 or a tail of 100."""
    detail_url = reverse("event-detail", kwargs={"pk": 1}).replace("/1/", "/{}/")
    filter_base = {}
    for name in ("lead", "correlation"):
        query = params.copy()
        for drop in (name, *POSITION_PARAMS):
            query.pop(drop, None)
        encoded = query.urlencode()
        filter_base[name] = f"{reverse('event-list')}?{encoded}{'&' if encoded else ''}{name}="
    for event in events:
        pretty = json.dumps(event.details, indent=2, ensure_ascii=False, sort_keys=True)
        if event.error_type or event.error_message:
            summary = f"{event.error_type}: {event.error_message}"
        else:
            summary = json.dumps(event.details, ensure_ascii=False, sort_keys=True)
        event.display = {
            "details": pretty,
            "summary": summary if len(summary) <= 80 else summary[:79] + "…",
            "url": detail_url.format(event.id),
            # As |stamp shows times everywhere (orchestrator.templatetags.display).
            "when": stamp_text(event.timestamp),
            "lead_url": filter_base["lead"] + quote(event.lead_public_id),
            "correlation_url": filter_base["correlation"] + quote(event.correlation_id),
        }
    return events


def _floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _ceil_minute(moment: datetime) -> datetime:
    floor = _floor_minute(moment)
    return floor if floor == moment else floor + timedelta(minutes=1)


def _list_url(params: QueryDict, **changes: str | None) -> str:
    query = params.copy()
    for name, value in changes.items():
        query.pop(name, None)
        if value is not None:
            query[name] = value
    encoded = query.urlencode()
    return reverse("event-list") + (f"?{encoded}" if encoded else "")


def _export_url(params: QueryDict, fmt: str) -> str:
    query = params.copy()
    for name in (*POSITION_PARAMS, "live"):
        query.pop(name, None)
    query["format"] = fmt
    return f"{reverse('event-export')}?{query.urlencode()}"


def _histogram(
    request: HttpRequest, period: Period, volume: selectors.EventVolume, types: list[str]
) -> dict[str, Any]:
    """The volume chart; each bar opens the list narrowed to its bucket (minutes are
    the finest a link carries, so the edge buckets are widened to whole minutes)."""
    values = volume.series(types)
    base = request.GET.copy()
    for name in (*POSITION_PARAMS, *PERIOD_PARAMS):
        base.pop(name, None)
    start, end = _floor_minute(period.start), _ceil_minute(period.end)
    links = []
    for bucket in volume.buckets:
        narrowed = period.narrowed(max(bucket, start), min(bucket + period.step, end))
        links.append(_list_url(base, **narrowed))
    buckets = [(max(b, period.start), min(b + period.step, period.end)) for b in volume.buckets]
    title = f"Events per {period.unit}"
    chart = bar_chart(
        buckets=buckets,
        unit=period.unit,
        series=[Series("events", values, links=links)],
        title=title,
        noun=("event", "events"),
    )
    return {"chart": chart, "title": title, "total": sum(values)}


def _facets(filterset: EventFilter, volume: selectors.EventVolume) -> list[dict[str, Any]]:
    counts = volume.by_type()
    chosen = set(filterset.types)
    descriptions = known_event_types()
    return [
        {
            "name": name,
            "description": descriptions[name],
            "count": counts.get(name, 0),
            "checked": name in chosen,
        }
        for name in sorted(descriptions)
    ]


def _volume(filterset: EventFilter, period: Period) -> selectors.EventVolume:
    if filterset.rollups_answer:
        return selectors.event_volume_from_rollups(
            period=period, workflow=filterset.values.get("workflow") or None
        )
    return selectors.event_volume_from_events(
        events=filterset.events(without=("type",)), period=period, limit=SCAN_LIMIT
    )


def _volume_and_histogram(
    request: HttpRequest, filterset: EventFilter, period: Period
) -> tuple[selectors.EventVolume, dict[str, Any]]:
    """The counts (histogram and type facets) and the drawn chart, shared for a minute.

    Counting a long period and drawing the chart cost more than the rest of the page;
    a page, its fragments, its next pages and its reloads within the same minute ask
    for the same ones. The key holds every parameter but the list position (the
    chart's links carry them) and the period to the minute: at most a minute stale.
    """
    params = sorted(
        (name, value)
        for name, values in request.GET.lists()
        if name not in POSITION_PARAMS
        for value in values
    )
    return cached_figure(
        "events:chart",
        params,
        period.unit,
        compute=lambda: _chart(request, filterset, period),
        window=(period.start, period.end),
    )


def _chart(request: HttpRequest, filterset: EventFilter, period: Period) -> tuple:
    volume = _volume(filterset, period)
    return (volume, _histogram(request, period, volume, filterset.types))


@viewer_required
@require_GET
def event_list(request: HttpRequest) -> HttpResponse:
    period = get_period(request)
    filterset = _filters(request, period)
    values = filterset.values
    context: dict[str, Any] = {
        "filterset": filterset,
        "values": values,
        "live": bool(values.get("live")),
        "period_params": {k: request.GET[k] for k in PERIOD_PARAMS if request.GET.get(k)},
        "scan_limit": SCAN_LIMIT,
    }
    fragment = wanted_fragment(request, fragments=FRAGMENTS, default="event-table")
    if fragment is None:
        # Only the whole page has the form the suggestions belong to.
        context["workflow_names"] = suggestions.workflow_names()
        context["actor_names"] = suggestions.actor_names()

    if values.get("after") is not None:
        # A live-tail poll: only what came after the newest row shown.
        after = _position(values["after"], param="after")
        rows = selectors.events_after(
            events=filterset.events(from_ts=after[0]), after=after, limit=TAIL_LIMIT
        )
        if request.htmx and not rows:
            return HttpResponse(status=204)  # htmx swaps nothing and keeps polling
        newest = rows[0].id if rows else values["after"]
        context.update(rows=_with_display(rows, request.GET), tail=True, newest_id=newest)
        # Only ever polled, never a page of its own: always the rows alone.
        response = render(request, "dashboard/event_list.html#event-rows", context)
        response.headers["Vary"] = "HX-Request"
        return response

    volume, histogram = _volume_and_histogram(request, filterset, period)
    context.update(histogram=histogram, volume=volume)
    if fragment == "event-histogram":
        return render_page(
            request,
            "dashboard/event_list.html",
            context,
            nav="events",
            period=period,
            fragments=FRAGMENTS,
            fragment="event-table",
        )

    cursor = values.get("cursor") or None
    page = requested_page(
        request,
        lambda cursor: selectors.event_page(
            # The page's start bounds the period: one upper bound on the timestamp.
            events=filterset.events(to_ts=_cursor_time(cursor)),
            cursor=cursor,
            size=PAGE_SIZE,
            merge_types=merge_types(filterset),
        ),
    )
    rows = _with_display(page.items, request.GET)
    context.update(
        rows=rows,
        page=page,
        facets=_facets(filterset, volume),
        # The live tail starts after the newest event in the list; on an empty list,
        # after the newest event anywhere.
        newest_id=rows[0].id if rows else selectors.last_event_id(),
        # A page of a filter change also refreshes the histogram and the type counts;
        # a next-page click keeps them.
        oob=fragment == "event-table" and not cursor,
        export_urls={fmt: _export_url(request.GET, fmt) for fmt in EXPORT_FORMATS},
    )
    return render_page(
        request,
        "dashboard/event_list.html",
        context,
        nav="events",
        period=period,
        fragments=FRAGMENTS,
        fragment="event-table",
    )


@viewer_required
@require_GET
def event_export(request: HttpRequest) -> HttpResponse:
    period = get_period(request)
    filterset = _filters(request, period)
    fmt = request.GET.get("format") or "csv"
    if fmt not in EXPORT_FORMATS:
        raise UserInputError(f"format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
    content_type, extension = EXPORT_FORMATS[fmt]
    # The export holds the events as they were when it was asked for: not the
    # event recording it, nor anything written while it streams.
    up_to_id = selectors.last_event_id()
    filters = {
        name: value if isinstance(value, str) else list(value)
        for name, value in filterset.active.items()
    }
    details: dict[str, Any] = {
        "format": fmt,
        "filters": filters,
        "since": period.start.isoformat(),
        "until": period.end.isoformat(),
        "up_to_event_id": up_to_id,
    }
    # More than one request can stream before the server times out: a task writes
    # a file instead (a truncated 200 would look like a complete export).
    if exceeds(filterset, up_to_id=up_to_id, limit=settings.EXPORT_STREAM_MAX_EVENTS):
        query = request.GET.copy()
        for name in (*POSITION_PARAMS, "live"):
            query.pop(name, None)
        with transaction.atomic():
            job = ExportJob.objects.create(
                user=request.user,
                format=fmt,
                filters=job_filters(query=query, period=period, up_to_id=up_to_id),
            )
            record_event(
                event_type="audit_exported",
                actor=actor_for(request),
                details={**details, "job": job.pk},
            )
            transaction.on_commit(partial(write_export_file.enqueue, job.pk))
        url = reverse("event-exports")
        if request.htmx:
            # A whole page, not a swap into the table the export link sits in.
            return HttpResponse(status=204, headers={"HX-Redirect": url})
        return HttpResponseRedirect(url)
    with transaction.atomic():
        record_event(event_type="audit_exported", actor=actor_for(request), details=details)
    lines = export_lines(matching_events(filterset, up_to_id=up_to_id), fmt=fmt)
    response = StreamingHttpResponse(lines, content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="audit-events-{stamp}.{extension}"'
    return response


def _own_jobs(request: HttpRequest) -> Any:
    jobs = ExportJob.objects.select_related("user").order_by("-created_at", "-id")
    return jobs if request.user.is_superuser else jobs.filter(user=request.user)


@viewer_required
@require_GET
def event_exports(request: HttpRequest) -> HttpResponse:
    """The user's exports too large to stream (a superuser sees everyone's)."""
    jobs = list(_own_jobs(request)[:50])
    pending = any(job.status in (ExportJob.Status.QUEUED, ExportJob.Status.RUNNING) for job in jobs)
    kept = timedelta(days=settings.EXPORT_RETENTION_DAYS)
    for job in jobs:
        # When cleanup_exports deletes it (its file and its row).
        job.expires_at = job.finished_at + kept if job.finished_at else None
    return render_page(
        request,
        "dashboard/event_exports.html",
        {"jobs": jobs, "pending": pending, "retention_days": settings.EXPORT_RETENTION_DAYS},
        nav="events",
        fragments=("export-jobs",),
        fragment="export-jobs",
    )


@viewer_required
@require_GET
def event_export_download(request: HttpRequest, job_id: int) -> FileResponse:
    # Another user's export is a 404, not a 403: its existence is not theirs to know.
    job = _own_jobs(request).filter(pk=job_id, status=ExportJob.Status.DONE).first()
    try:
        path = export_path(job) if job is not None else None
    except KeyError:
        path = None  # a format this code never wrote: a tampered row
    if job is None or path is None or not path.is_file():
        raise Http404("No such export (it may not be ready, or have been removed).")
    content_type, extension = EXPORT_FORMATS[job.format]
    return FileResponse(
        open(path, "rb"),
        as_attachment=True,
        filename=f"audit-events-{job.pk}-{job.created_at:%Y%m%dT%H%M%SZ}.{extension}",
        content_type=content_type,
    )


@viewer_required
@require_GET
def event_detail(request: HttpRequest, pk: int) -> HttpResponse:
    event = selectors.event_by_id(event_id=pk)
    if event is None:
        raise Http404("No such event (it may have been pruned).")
    period = get_period(request)
    # Events of one correlation id or lead cluster in time; a month either side
    # finds them on the (indexed) filter without a long range.
    # Clamped to the ranges a period may span (an imported event may be older).
    moment = min(max(event.timestamp, EARLIEST + timedelta(days=30)), LATEST - timedelta(days=31))
    around = {
        "range": "custom",
        "since": (moment - timedelta(days=30)).date().isoformat(),
        "until": (moment + timedelta(days=30)).date().isoformat(),
    }
    list_url = reverse("event-list")
    links = {}
    if event.correlation_id:
        links["correlation"] = (
            f"{list_url}?{urlencode({**around, 'correlation': event.correlation_id})}"
        )
    if event.lead_public_id:
        links["lead_events"] = f"{list_url}?{urlencode({**around, 'lead': event.lead_public_id})}"
        links["lead"] = reverse("lead-detail", kwargs={"public_id": event.lead_public_id})
    return render_page(
        request,
        "dashboard/event_detail.html",
        {
            "event": _with_display([event], QueryDict())[0],
            "description": known_event_types().get(event.event_type, ""),
            "links": links,
        },
        nav="events",
        period=period,
        fragment="event-detail",
    )
