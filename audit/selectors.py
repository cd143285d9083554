"""Reads from the audit trail.

Point reads and pages use the composite indexes (newest first). Aggregates
never COUNT raw rows over a range: whole hours come from the rollups the
sealer keeps, and only the partial hours at the edges of the range and the
few events not sealed yet are read row by row.
"""

import heapq
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import TYPE_CHECKING, Any

from django.db import connection
from django.db.models import Count, Min, Q, QuerySet, Sum, TextField
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast
from django.db.models.lookups import IContains
from django.utils import timezone

from audit.models import AuditEvent, AuditLeadDay, AuditRollup, AuditRollupDay, AuditSeal
from audit.types import ERROR
from core.paging import Keyset, Page

if TYPE_CHECKING:
    from core.periods import Period

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# The order every audit index shares: pages, exports and the live tail walk it.
EVENT_KEYS = ("-timestamp", "-id")
EVENTS = Keyset(AuditEvent, EVENT_KEYS)
# The same order read forwards, for the live tail.
EVENTS_FORWARD = Keyset(AuditEvent, ("timestamp", "id"))


SYSTEM_ACTOR = "system"


def event_list(
    *,
    event_type: str | Iterable[str] | None = None,
    lead_id: str | None = None,
    workflow: str | None = None,
    actor: str | None = None,
    correlation_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: tuple[datetime, int] | None = None,
) -> QuerySet[AuditEvent]:
    """Events matching every given filter, newest first.

    `before` is the keyset position (timestamp, id) of the last row of the
    previous page: paging costs the same on page 1 and page 10,000.
    `until` is exclusive, `since` inclusive.
    """
    qs: QuerySet[AuditEvent] = AuditEvent.objects.all()
    if event_type:
        if isinstance(event_type, str):
            qs = qs.filter(event_type=event_type)
        else:
            qs = qs.filter(event_type__in=list(event_type))
    if lead_id:
        qs = qs.filter(lead_public_id=lead_id)
    if workflow:
        qs = qs.filter(workflow=workflow)
    if actor:
        qs = qs.filter(actor=actor)
        if actor != SYSTEM_ACTOR:
            # Spelled out, so SQLite uses the partial index audit_actor_ts_people.
            qs = qs.exclude(actor=SYSTEM_ACTOR)
    if correlation_id:
        qs = qs.filter(correlation_id=correlation_id)
    if since:
        qs = qs.filter(timestamp__gte=since)
    if until:
        qs = qs.filter(timestamp__lt=until)
    if before:
        qs = EVENTS.after(qs, before)
    return qs.order_by(*EVENT_KEYS)


def lead_history(*, lead_id: str) -> QuerySet[AuditEvent]:
    """Every event of one lead, oldest first (it survives deletion of the lead)."""
    return AuditEvent.objects.filter(lead_public_id=lead_id).order_by("timestamp", "id")


@dataclass
class Statistics:
    since: datetime | None
    until: datetime | None
    workflow: str | None
    total_events: int = 0
    by_type: Counter = field(default_factory=Counter)
    by_workflow: Counter = field(default_factory=Counter)
    by_day: Counter = field(default_factory=Counter)
    leads_processed: int | None = None

    @property
    def errors(self) -> int:
        return self.by_type.get(ERROR, 0)

    @property
    def error_rate(self) -> float:
        return self.errors / self.total_events if self.total_events else 0.0

    def add(self, etype: str, wf: str, day: date, n: int) -> None:
        self.total_events += n
        self.by_type[etype] += n
        self.by_workflow[wf] += n
        self.by_day[day.isoformat()] += n

    def as_dict(self) -> dict[str, Any]:
        return {
            "total_events": self.total_events,
            "event_types": dict(sorted(self.by_type.items())),
            "by_workflow": dict(sorted(self.by_workflow.items())),
            "by_day": dict(sorted(self.by_day.items())),
            "leads_processed": self.leads_processed,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "workflow": self.workflow,
        }


def seal_head() -> AuditSeal | None:
    """The newest seal: its high water and open gaps say which events the rollups
    have counted. Read it before the rollups, so that the tail is what it missed."""
    return AuditSeal.objects.order_by("-number").only("high_water", "open_gaps").first()


def unsealed_q(head: AuditSeal | None) -> Q:
    """The events `head` does not cover: past its high water, or late commits in its
    open gaps. By id alone: a time or type filter beside it tempts the planner onto
    an index that walks every event of the range to find the handful past the seal."""
    unsealed = Q(id__gt=head.high_water if head else 0)
    for lo, hi, _seen in head.open_gaps if head else []:
        unsealed |= Q(id__range=(lo, hi))
    return unsealed


def ceil_hour(ts: datetime) -> datetime:
    floor = floor_hour(ts)
    return floor if floor == ts else floor + HOUR


def floor_hour(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_day(ts: datetime) -> datetime:
    floor = floor_day(ts)
    return floor if floor == ts else floor + DAY


def floor_day(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def statistics(
    *,
    workflow: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    with_leads: bool = False,
) -> Statistics:
    """Totals by type, workflow and UTC day, and the error rate, for [since, until).

    The range is cut into whole days (daily rollup), whole hours at either
    end (hourly rollup) and partial hours at the very edges (read row by
    row); events not sealed yet are added from the tail of the id sequence.
    `with_leads` also counts distinct leads (whole days from the lead-day
    rollup, the partial days at the edges from the rows; it costs a scan of
    both, so only the legacy API asks for it).
    """
    stats = Statistics(since=since, until=until, workflow=workflow)
    # Read before the rollups: whatever it does not cover is the tail read below.
    head = seal_head()
    # Nothing is timestamped in the future, so a range that ends after now
    # needs no partial hour at its end.
    open_end = until is None or until > timezone.now()

    h0 = ceil_hour(since) if since else None
    h1 = None if open_end else floor_hour(until)  # type: ignore[arg-type]
    raw: list[tuple[datetime | None, datetime | None]] = []
    hourly: list[tuple[datetime | None, datetime | None]] = []
    daily: tuple[datetime | None, datetime | None] | None = None
    if h0 is not None and h1 is not None and h0 >= h1:
        # Within one hour, or across one hour boundary: each piece within an hour.
        raw.extend([(since, h0), (h0, until)] if h0 < until else [(since, until)])  # type: ignore[operator]
    else:
        if since is not None:
            raw.append((since, h0))
        if h1 is not None:
            raw.append((h1, until))
        d0 = ceil_day(h0) if h0 else None
        d1 = floor_day(h1) if h1 else None
        if d0 is not None and d1 is not None and d0 >= d1:
            hourly.append((h0, h1))
        else:
            daily = (d0, d1)
            if h0 is not None:
                hourly.append((h0, d0))
            if h1 is not None:
                hourly.append((d1, h1))

    def by_workflow(qs: QuerySet) -> QuerySet:
        return qs.filter(workflow=workflow) if workflow is not None else qs

    columns = ("event_type", "workflow", "day")
    if daily is not None:
        qs = by_workflow(AuditRollupDay.objects.all())
        if daily[0] is not None:
            qs = qs.filter(day__gte=daily[0].date())
        if daily[1] is not None:
            qs = qs.filter(day__lt=daily[1].date())
        for etype, wf, day, n in qs.values_list(*columns).annotate(n=Sum("count")):
            stats.add(etype, wf, day, n)
    for lo, hi in hourly:
        if lo is not None and hi is not None and lo >= hi:
            continue
        qs = by_workflow(AuditRollup.objects.all())
        if lo is not None:
            qs = qs.filter(hour__gte=lo)
        if hi is not None:
            qs = qs.filter(hour__lt=hi)
        for etype, wf, day, n in qs.values_list(*columns).annotate(n=Sum("count")):
            stats.add(etype, wf, day, n)

    row_columns = ("timestamp", "event_type", "workflow", "lead_public_id")
    # The edges: partial hours, counted from the rows whether sealed or not. An
    # edge lies within one hour, hence one UTC day, so SQL can do the grouping.
    for lo, hi in raw:
        if lo is not None and hi is not None and lo >= hi:
            continue
        qs = by_workflow(AuditEvent.objects.order_by())
        if lo is not None:
            qs = qs.filter(timestamp__gte=lo)
        if hi is not None:
            qs = qs.filter(timestamp__lt=hi)
        day = (lo or hi).astimezone(UTC).date()  # type: ignore[union-attr]
        for etype, wf, n in qs.values_list("event_type", "workflow").annotate(n=Count("id")):
            stats.add(etype, wf, day, n)
    # The tail: events no seal has counted yet, found by id alone (a time filter
    # here would tempt the planner into scanning the timestamp index), then kept
    # if they fall in the part of the range the rollups answered.
    unsealed = unsealed_q(head)
    tail_leads: set[str] = set()
    rolled_lo, rolled_hi = h0, h1
    if hourly or daily is not None:
        # order_by(): the model's default ordering would walk the timestamp index.
        # The workflow is filtered here too: as a condition it can lead the planner
        # to read every event of the workflow instead of the few past the seal.
        tail = AuditEvent.objects.filter(unsealed).order_by()
        for ts, etype, wf, lead in tail.values_list(*row_columns):
            if workflow is not None and wf != workflow:
                continue
            if (rolled_lo is None or ts >= rolled_lo) and (rolled_hi is None or ts < rolled_hi):
                stats.add(etype, wf, ts.astimezone(UTC).date(), 1)
                if lead:
                    tail_leads.add(lead)

    if with_leads:
        stats.leads_processed = _distinct_leads(workflow, since, until, tail_leads)
    return stats


def _distinct_leads(
    workflow: str | None, since: datetime | None, until: datetime | None, unsealed: set[str]
) -> int:
    """Leads with events in [since, until): whole UTC days from the lead-day rollup
    (sealed events), the partial days at the edges from the events themselves,
    and leads seen only in unsealed events (`unsealed`, found in the whole days)."""
    d0 = ceil_day(since) if since else None
    d1 = floor_day(until) if until else None
    lead_days = AuditLeadDay.objects.all()
    if workflow is not None:
        lead_days = lead_days.filter(workflow=workflow)
    edges: list[tuple[datetime | None, datetime | None]] = []
    if d0 is not None and d1 is not None and d0 >= d1:
        # Under two days: no whole day, the rows answer.
        lead_days = lead_days.none()
        edges.append((since, until))
    else:
        # A lead-day row says the lead had an event that day, not when: a day
        # the range only partly covers is read from the rows.
        if d0 is not None:
            lead_days = lead_days.filter(day__gte=d0.date())
            edges.append((since, d0))
        if d1 is not None:
            lead_days = lead_days.filter(day__lt=d1.date())
            edges.append((d1, until))
    extra = set(unsealed)
    for lo, hi in edges:
        if lo is not None and hi is not None and lo >= hi:
            continue
        rows = AuditEvent.objects.order_by().exclude(lead_public_id="")
        if workflow is not None:
            rows = rows.filter(workflow=workflow)
        if lo is not None:
            rows = rows.filter(timestamp__gte=lo)
        if hi is not None:
            rows = rows.filter(timestamp__lt=hi)
        extra.update(rows.values_list("lead_public_id", flat=True).distinct())
    count = lead_days.values("lead_public_id").distinct().count()
    if extra:
        known = set(
            lead_days.filter(lead_public_id__in=extra).values_list("lead_public_id", flat=True)
        )
        count += len(extra - known)
    return count


# --- the event browser ----------------------------------------------------------------------


# Text search goes through a trigram index (migration 0014) for this many
# characters or more; a shorter text has no trigram, and is a scan of the range.
INDEXED_SEARCH_MIN = 3
# On SQLite, text found in this many events or more is searched by walking the
# events instead of listing the index's matches (details_contains).
COMMON_MATCHES = 20_000


def details_contains(text: str) -> Q:
    """Events whose details JSON contains `text`, ignoring case.

    The JSON is searched as text: as stored on SQLite (ASCII, non-ASCII letters
    as \\u escapes) and as PostgreSQL renders jsonb. Both escape quotes and
    backslashes, so the escaped spellings of `text` are matched too. Case is
    ignored for ASCII letters on SQLite, for all letters on PostgreSQL.

    From INDEXED_SEARCH_MIN characters a trigram index answers it over any range:
    on SQLite the FTS5 table audit_search (a phrase of trigrams is a substring),
    on PostgreSQL a GIN index on the same UPPER(...) LIKE. Shorter text scans the range.
    """
    spellings = list(
        dict.fromkeys([text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]])
    )
    as_text = Cast("details", TextField())
    if len(text) >= INDEXED_SEARCH_MIN and connection.vendor == "sqlite":
        phrases = " OR ".join('"' + spelling.replace('"', '""') + '"' for spelling in spellings)
        # The index lists the matching ids, which the query then reads: cheap for
        # text in few events. Text in many (a common word) is cheaper the other
        # way, walking the newest events and testing each (a page fills at once);
        # SQLite cannot weigh the two, so a bounded probe of the index decides.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM (SELECT rowid FROM audit_search "
                "WHERE audit_search MATCH %s LIMIT %s)",
                [phrases, COMMON_MATCHES],
            )
            common = cursor.fetchone()[0] >= COMMON_MATCHES
        if not common:
            matching = RawSQL(
                "SELECT rowid FROM audit_search WHERE audit_search MATCH %s", [phrases]
            )
            return Q(id__in=matching)
    condition = Q()
    for spelling in spellings:
        condition |= Q(IContains(as_text, spelling))
    return condition


def details_search_is_indexed(text: str) -> bool:
    """Whether details_contains(text) is answered by an index rather than a scan."""
    return len(text) >= INDEXED_SEARCH_MIN and connection.vendor in ("sqlite", "postgresql")


def event_page(
    *,
    events: QuerySet[AuditEvent],
    cursor: str | None = None,
    size: int = 50,
    merge_types: Sequence[str] = (),
) -> Page[AuditEvent]:
    """Up to `size` of `events`, newest first, after `cursor` (core.paging; a cursor
    this list did not write raises CursorError).

    With several `merge_types`, each type is read on its own (timestamp, id)
    index range and the pages are merged: `event_type IN (...)` ordered by time
    would make the database sort every event of those types in the range. Pass
    them only when no other filter narrows the events better than the type.
    """
    if len(merge_types) < 2:
        return EVENTS.page(events, size=size, cursor=cursor)
    if cursor:
        events = EVENTS.after(events, EVENTS.decode(cursor))
    ordered = EVENTS.order(events)
    pages = [list(ordered.filter(event_type=t)[: size + 1]) for t in merge_types]
    merged = heapq.merge(*pages, key=lambda e: (e.timestamp, e.id), reverse=True)
    return EVENTS.page_of(list(islice(merged, size + 1)), size=size, cursor=cursor or None)


def events_after(
    *, events: QuerySet[AuditEvent], after: tuple[datetime, int], limit: int = 100
) -> list[AuditEvent]:
    """Events that come after `after` (timestamp, id), newest first; the oldest `limit`
    of them, so a live tail that fell behind catches up in order."""
    newer = EVENTS_FORWARD.after(events, after)
    rows = list(EVENTS_FORWARD.order(newer)[:limit])
    rows.reverse()
    return rows


@dataclass
class EventVolume:
    """Events per histogram bucket and type.

    `complete` is False when counting from the events stopped at the scan limit:
    the counts then cover only the newest `scanned` matching events.
    """

    buckets: list[datetime]
    counts: dict[datetime, Counter] = field(default_factory=dict)
    complete: bool = True
    scanned: int | None = None

    def add(self, bucket: datetime, etype: str, n: int) -> None:
        self.counts.setdefault(bucket, Counter())[etype] += n

    def by_type(self) -> Counter:
        total: Counter = Counter()
        for per_type in self.counts.values():
            total.update(per_type)
        return total

    def series(self, types: Iterable[str] = ()) -> list[int]:
        """Events per bucket, oldest first, of the given types (all when none given)."""
        wanted = set(types)
        return [
            sum(n for t, n in self.counts.get(b, {}).items() if not wanted or t in wanted)
            for b in self.buckets
        ]


def event_volume_from_rollups(*, period: "Period", workflow: str | None = None) -> EventVolume:
    """Events per period bucket and type from the rollups, as statistics() counts them.

    Whole days come from the daily rollup (when buckets are days or weeks), whole
    hours from the hourly one, the partial hours at the edges from the events
    (SQL-grouped, each edge lies within one hour and so one bucket), and the
    events not sealed yet from the tail of the id sequence.
    """
    since, until = period.start, period.end
    volume = EventVolume(buckets=period.buckets())
    # Read before the rollups: whatever it does not cover is the tail read below.
    head = seal_head()
    open_end = until > timezone.now()

    h0 = ceil_hour(since)
    h1 = None if open_end else floor_hour(until)
    raw: list[tuple[datetime, datetime]] = []
    hourly: list[tuple[datetime, datetime | None]] = []
    daily: tuple[datetime, datetime | None] | None = None
    if h1 is not None and h0 >= h1:
        raw.extend([(since, h0), (h0, until)] if h0 < until else [(since, until)])
    else:
        raw.append((since, h0))
        if h1 is not None:
            raw.append((h1, until))
        d0 = ceil_day(h0)
        d1 = floor_day(h1) if h1 is not None else None
        if period.unit == "hour" or (d1 is not None and d0 >= d1):
            hourly.append((h0, h1))
        else:
            daily = (d0, d1)
            hourly.append((h0, d0))
            if h1 is not None and d1 is not None:
                hourly.append((d1, h1))

    def by_workflow(qs: QuerySet) -> QuerySet:
        return qs.filter(workflow=workflow) if workflow is not None else qs

    if daily is not None:
        qs = by_workflow(AuditRollupDay.objects.filter(day__gte=daily[0].date()))
        if daily[1] is not None:
            qs = qs.filter(day__lt=daily[1].date())
        rows = qs.order_by().values_list("day", "event_type").annotate(n=Sum("count"))
        for day, etype, n in rows:
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            volume.add(period.bucket_of(start), etype, n)
    for lo, hi in hourly:
        if hi is not None and lo >= hi:
            continue
        qs = by_workflow(AuditRollup.objects.filter(hour__gte=lo))
        if hi is not None:
            qs = qs.filter(hour__lt=hi)
        rows = qs.order_by().values_list("hour", "event_type").annotate(n=Sum("count"))
        for hour, etype, n in rows:
            volume.add(period.bucket_of(hour), etype, n)
    for lo, hi in raw:
        if lo >= hi:
            continue
        qs = by_workflow(AuditEvent.objects.filter(timestamp__gte=lo, timestamp__lt=hi))
        bucket = period.bucket_of(lo)
        for etype, n in qs.order_by().values_list("event_type").annotate(n=Count("id")):
            volume.add(bucket, etype, n)
    if hourly or daily is not None:
        # As in statistics(): the unsealed tail found by id alone, kept when it falls
        # in the part of the range the rollups answered.
        unsealed = unsealed_q(head)
        tail = AuditEvent.objects.filter(unsealed).order_by()
        for ts, etype, wf in tail.values_list("timestamp", "event_type", "workflow"):
            if workflow is not None and wf != workflow:
                continue
            if ts >= h0 and (h1 is None or ts < h1):
                volume.add(period.bucket_of(ts), etype, 1)
    return volume


def event_volume_from_events(
    *, events: QuerySet[AuditEvent], period: "Period", limit: int
) -> EventVolume:
    """Events per period bucket and type, counted from the newest `limit` of `events`.

    For filters the rollups cannot answer (lead, correlation, actor, text): those
    narrow the events enough to read them, and the limit bounds the work when
    they do not.
    """
    volume = EventVolume(buckets=period.buckets())
    rows = events.order_by("-timestamp", "-id").values_list("timestamp", "event_type")
    scanned = 0
    for ts, etype in rows[: limit + 1]:
        if scanned == limit:
            volume.complete = False
            break
        volume.add(period.bucket_of(ts), etype, 1)
        scanned += 1
    volume.scanned = scanned
    return volume


def event_by_id(*, event_id: int) -> AuditEvent | None:
    return AuditEvent.objects.filter(id=event_id).first()


def event_keys(*, event_ids: Iterable[int]) -> dict[int, tuple[datetime, int]]:
    """The (timestamp, id) keyset position of each existing event id."""
    rows = AuditEvent.objects.filter(id__in=list(event_ids)).values_list("id", "timestamp")
    return {event_id: (ts, event_id) for event_id, ts in rows}


def last_event_id() -> int:
    """The highest event id now (an export stops there, so it does not list itself)."""
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


@dataclass(frozen=True)
class UnsealedEvents:
    count: int
    first_id: int | None
    oldest: datetime | None  # the earliest timestamp among them, as verify_audit reports it


def unsealed_events() -> UnsealedEvents:
    """The events no seal covers yet: past the head seal's high water, or late
    commits inside its open gaps; the same tail statistics() reads.

    Found by id alone (the primary key), so the read is as small as the tail:
    a handful of rows while the sealer keeps up.
    """
    row = (
        AuditEvent.objects.filter(unsealed_q(seal_head()))
        .order_by()
        .aggregate(n=Count("id"), first_id=Min("id"), oldest=Min("timestamp"))
    )
    return UnsealedEvents(count=row["n"], first_id=row["first_id"], oldest=row["oldest"])


def iter_matching(
    *,
    events: QuerySet[AuditEvent],
    up_to_id: int,
    merge_types: Sequence[str] = (),
    chunk: int = 2000,
    first_chunk: int = 200,
) -> Iterator[AuditEvent]:
    """`events` up to id `up_to_id`, newest first (as the event browser lists them),
    read by keyset so memory stays flat.

    The keyset is the (timestamp, id) order every audit index shares, so each chunk
    is one index range whichever filter drives the query; an id order would have
    the database scan the table from the oldest id (or sort every match of a
    filtered range) before the first chunk. A small first chunk starts the stream
    early. `merge_types` as for event_page: each type read on its own index range,
    the streams merged.
    """
    events = events.filter(id__lte=up_to_id)
    if len(merge_types) < 2:
        yield from _iter_keyset(events, chunk=chunk, first_chunk=first_chunk)
        return
    streams = [
        _iter_keyset(events.filter(event_type=t), chunk=chunk, first_chunk=first_chunk)
        for t in merge_types
    ]
    yield from heapq.merge(*streams, key=lambda e: (e.timestamp, e.id), reverse=True)


def _iter_keyset(
    events: QuerySet[AuditEvent], *, chunk: int, first_chunk: int
) -> Iterator[AuditEvent]:
    before: tuple[datetime, int] | None = None
    size = min(first_chunk, chunk)
    while True:
        page = EVENTS.after(events, before) if before is not None else events
        rows = list(EVENTS.order(page)[:size])
        yield from rows
        if len(rows) < size:
            return
        before = EVENTS.position(rows[-1])
        size = chunk
