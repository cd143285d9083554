"""Reads from the audit trail.

Point reads and pages use the composite indexes (newest first). Aggregates
never COUNT raw rows over a range: whole hours come from the rollups the
sealer keeps, and only the partial hours at the edges of the range and the
few events not sealed yet are read row by row.
"""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from audit.models import AuditEvent, AuditLeadDay, AuditRollup, AuditRollupDay, AuditSeal
from audit.types import ERROR

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


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

    `before` is a keyset cursor (timestamp, id) of the last row of the
    previous page: paging costs the same on page 1 and page 10,000.
    `until` is exclusive, `since` inclusive.
    """
    qs = AuditEvent.objects.all()
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
    if correlation_id:
        qs = qs.filter(correlation_id=correlation_id)
    if since:
        qs = qs.filter(timestamp__gte=since)
    if until:
        qs = qs.filter(timestamp__lt=until)
    if before:
        ts, event_id = before
        qs = qs.filter(Q(timestamp__lt=ts) | Q(timestamp=ts, id__lt=event_id))
    return qs.order_by("-timestamp", "-id")


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


def _ceil_hour(ts: datetime) -> datetime:
    floor = _floor_hour(ts)
    return floor if floor == ts else floor + HOUR


def _floor_hour(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _ceil_day(ts: datetime) -> datetime:
    floor = _floor_day(ts)
    return floor if floor == ts else floor + DAY


def _floor_day(ts: datetime) -> datetime:
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
    `with_leads` also counts distinct leads (by whole days; it costs a scan
    of the lead-day rollup, so only the legacy API asks for it).
    """
    stats = Statistics(since=since, until=until, workflow=workflow)
    head = AuditSeal.objects.order_by("-number").only("high_water", "open_gaps").first()
    high_water = head.high_water if head else 0
    gaps = head.open_gaps if head else []
    # Nothing is timestamped in the future, so a range that ends after now
    # needs no partial hour at its end.
    open_end = until is None or until > timezone.now()

    h0 = _ceil_hour(since) if since else None
    h1 = None if open_end else _floor_hour(until)  # type: ignore[arg-type]
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
        d0 = _ceil_day(h0) if h0 else None
        d1 = _floor_day(h1) if h1 else None
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
    unsealed = Q(id__gt=high_water)
    for lo, hi, _seen in gaps:
        unsealed |= Q(id__range=(lo, hi))
    tail_leads: set[str] = set()
    rolled_lo, rolled_hi = h0, h1
    if hourly or daily is not None:
        # order_by(): the model's default ordering would walk the timestamp index.
        tail = by_workflow(AuditEvent.objects.filter(unsealed)).order_by()
        for ts, etype, wf, lead in tail.values_list(*row_columns):
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
    """Leads with events in the range, by whole UTC days: sealed events are in the
    lead-day rollup, and leads seen only in unsealed events are added."""
    lead_days = AuditLeadDay.objects.all()
    if workflow is not None:
        lead_days = lead_days.filter(workflow=workflow)
    if since:
        lead_days = lead_days.filter(day__gte=since.astimezone(UTC).date())
    if until:
        lead_days = lead_days.filter(day__lte=until.astimezone(UTC).date())
    count = lead_days.values("lead_public_id").distinct().count()
    if unsealed:
        known = set(
            lead_days.filter(lead_public_id__in=unsealed).values_list("lead_public_id", flat=True)
        )
        count += len(unsealed - known)
    return count
