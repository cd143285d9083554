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

from django.db.models import Q, QuerySet, Sum

from audit.models import AuditEvent, AuditLeadDay, AuditRollup, AuditSeal
from audit.types import ERROR

HOUR = timedelta(hours=1)


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
    leads_processed: int = 0

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
    floor = ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return floor if floor == ts else floor + HOUR


def _floor_hour(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def statistics(
    *, workflow: str | None = None, since: datetime | None = None, until: datetime | None = None
) -> Statistics:
    """Totals by type, workflow and UTC day, and the error rate, for [since, until)."""
    stats = Statistics(since=since, until=until, workflow=workflow)
    head = AuditSeal.objects.order_by("-number").only("high_water", "open_gaps").first()
    high_water = head.high_water if head else 0
    gaps = head.open_gaps if head else []

    start = _ceil_hour(since) if since else None
    end = _floor_hour(until) if until else None
    whole_hours = start is None or end is None or start < end

    raw_ranges: list[tuple[datetime | None, datetime | None]] = []
    if whole_hours:
        rollups = AuditRollup.objects.all()
        if workflow is not None:
            rollups = rollups.filter(workflow=workflow)
        if start:
            rollups = rollups.filter(hour__gte=start)
            raw_ranges.append((since, start))
        if end:
            rollups = rollups.filter(hour__lt=end)
            raw_ranges.append((end, until))
        for etype, wf, day, n in rollups.values_list("event_type", "workflow", "day").annotate(
            n=Sum("count")
        ):
            stats.add(etype, wf, day, n)
    else:
        raw_ranges.append((since, until))

    base = AuditEvent.objects.all()
    if workflow is not None:
        base = base.filter(workflow=workflow)
    columns = ("timestamp", "event_type", "workflow", "lead_public_id")
    tail_leads: set[str] = set()
    rows: list[tuple] = []
    # The edges: partial hours, read row by row whether sealed or not.
    for lo, hi in raw_ranges:
        if lo is not None and hi is not None and lo >= hi:
            continue
        edge = base
        if lo is not None:
            edge = edge.filter(timestamp__gte=lo)
        if hi is not None:
            edge = edge.filter(timestamp__lt=hi)
        rows.extend(edge.values_list(*columns))
    # The tail: events in the whole hours that no seal has counted yet.
    if whole_hours:
        unsealed = Q(id__gt=high_water)
        for lo, hi, _seen in gaps:
            unsealed |= Q(id__range=(lo, hi))
        tail = base.filter(unsealed)
        if start:
            tail = tail.filter(timestamp__gte=start)
        if end:
            tail = tail.filter(timestamp__lt=end)
        tail_rows = list(tail.values_list(*columns))
        rows.extend(tail_rows)
        tail_leads = {lead for *_, lead in tail_rows if lead}
    edge_leads: set[str] = set()
    for ts, etype, wf, lead in rows:
        stats.add(etype, wf, ts.astimezone(UTC).date(), 1)
        if lead:
            edge_leads.add(lead)

    # Distinct leads: by whole days from the lead-day rollup, plus the unsealed tail.
    lead_days = AuditLeadDay.objects.all()
    if workflow is not None:
        lead_days = lead_days.filter(workflow=workflow)
    if since:
        lead_days = lead_days.filter(day__gte=since.astimezone(UTC).date())
    if until:
        lead_days = lead_days.filter(day__lte=until.astimezone(UTC).date())
    known = lead_days.values("lead_public_id").distinct()
    stats.leads_processed = known.count()
    extra = (tail_leads | edge_leads) - set(
        lead_days.filter(lead_public_id__in=tail_leads | edge_leads).values_list(
            "lead_public_id", flat=True
        )
    )
    stats.leads_processed += len(extra)
    return stats
