"""Reads behind the dashboard overview: KPIs, lead volume, errors over time, recent items.

Sized for a million events and a hundred thousand leads. Event counts never
touch raw rows beyond an hour at each edge of a range: whole days come from the
daily rollup, whole hours from the hourly one, and only the partial hours at
the edges and the events no seal has counted yet are read row by row (the
pattern of audit.selectors.statistics, here restricted to a few event types
and kept per hour or day so it can be bucketed). Lead counts are index range
counts on Lead.created_at (and source). The aggregates are cached for up to a minute,
keyed by the period's bounds rounded down to the minute.
"""

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Q, Sum
from django.utils import timezone

from audit.models import AuditEvent, AuditRollup, AuditRollupDay, AuditSeal
from audit.selectors import ceil_day, ceil_hour, floor_day, floor_hour
from audit.types import ERROR
from core.periods import Period
from leads.crm.services import STEP_KIND as CRM_STAGE
from leads.models import Lead, LeadSource
from leads.workflows.models import Workflow, WorkflowRun
from orchestrator.dashboard.render import cached_figure, minute
from orchestrator.monitoring.spikes import SpikeRule, spike_indexes

# The chart palette has nine colours; smaller sources share the last series.
MAX_SOURCE_SERIES = 8
CRM_SUCCESS = ("crm_create", "crm_update")
KPI_EVENT_TYPES = (*CRM_SUCCESS, "email_sent", "email_replied", ERROR)
NO_VALUE = "\u2013"  # an en dash: a rate of nothing, or a change from nothing known


# --- Event counts from the rollups ------------------------------------------------------


def event_counts(
    *, event_types: Iterable[str], since: datetime, until: datetime, by_day: bool = True
) -> Counter[tuple[str, datetime]]:
    """Events of the given types in [since, until), keyed (type, start of hour or day).

    Every key is the start of a UTC hour, or of a UTC day where `by_day` allows
    the daily rollup (so bucket hours with by_day=False). A key only says where
    the events lie; the counts are exact for the range.
    """
    types = sorted(set(event_types))
    out: Counter[tuple[str, datetime]] = Counter()
    if since >= until or not types:
        return out
    head = AuditSeal.objects.order_by("-number").only("high_water", "open_gaps").first()
    high_water = head.high_water if head else 0
    gaps = head.open_gaps if head else []

    # Nothing is timestamped in the future: a range ending after now needs no
    # partial hour at its end, the rollups (and the tail) cover it.
    h0 = ceil_hour(since)
    h1 = ceil_hour(until) if until > timezone.now() else floor_hour(until)
    raw: list[tuple[datetime, datetime]] = []
    hourly: list[tuple[datetime, datetime]] = []
    daily: tuple[datetime, datetime] | None = None
    if h0 >= h1:
        # Within one hour or across one boundary: each piece inside one hour.
        raw.extend([(since, h0), (h0, until)] if h0 < until else [(since, until)])
    else:
        raw.extend(piece for piece in [(since, h0), (h1, until)] if piece[0] < piece[1])
        d0, d1 = ceil_day(h0), floor_day(h1)
        if by_day and d0 < d1:
            daily = (d0, d1)
            hourly.extend(piece for piece in [(h0, d0), (d1, h1)] if piece[0] < piece[1])
        else:
            hourly.append((h0, h1))

    if daily is not None:
        rows = (
            AuditRollupDay.objects.filter(
                event_type__in=types, day__gte=daily[0].date(), day__lt=daily[1].date()
            )
            .values_list("event_type", "day")
            .annotate(n=Sum("count"))
        )
        for etype, day, n in rows:
            out[(etype, datetime(day.year, day.month, day.day, tzinfo=UTC))] += n
    if hourly:
        in_hours = Q()
        for lo, hi in hourly:
            in_hours |= Q(hour__gte=lo, hour__lt=hi)
        rows = (
            AuditRollup.objects.filter(in_hours, event_type__in=types)
            .values_list("event_type", "hour")
            .annotate(n=Sum("count"))
        )
        for etype, hour, n in rows:
            out[(etype, hour.astimezone(UTC))] += n
    # The edges, sealed or not, straight from the rows (event_type, timestamp index).
    for lo, hi in raw:
        rows = (
            AuditEvent.objects.order_by()
            .filter(event_type__in=types, timestamp__gte=lo, timestamp__lt=hi)
            .values_list("event_type")
            .annotate(n=Count("id"))
        )
        for etype, n in rows:
            out[(etype, floor_hour(lo))] += n
    if hourly or daily is not None:
        # Events no seal has counted yet, found by id alone and filtered here:
        # a type or time filter tempts the planner onto the (event_type,
        # timestamp) index, a walk through every event of those types
        # (200 ms at a million events) to find the handful past the seal.
        unsealed = Q(id__gt=high_water)
        for lo, hi, _seen in gaps:
            unsealed |= Q(id__range=(lo, hi))
        tail = AuditEvent.objects.filter(unsealed).order_by()
        for ts, etype in tail.values_list("timestamp", "event_type"):
            if etype in types and h0 <= ts < h1:
                out[(etype, floor_hour(ts))] += 1
    return out


def _totals(counts: Counter[tuple[str, datetime]]) -> Counter[str]:
    totals: Counter[str] = Counter()
    for (etype, _at), n in counts.items():
        totals[etype] += n
    return totals


def _bucketed(
    counts: Counter[tuple[str, datetime]],
    event_type: str,
    bucket_of: Callable[[datetime], datetime],
) -> Counter[datetime]:
    out: Counter[datetime] = Counter()
    for (etype, at), n in counts.items():
        if etype == event_type:
            out[bucket_of(at)] += n
    return out


def cached(name: str, period: Period, compute: Callable[[], Any]) -> Any:
    """`compute()`, shared for a minute by requests whose period starts and ends in the
    same minutes (a preset moves with the clock, so its exact bounds never repeat)."""
    return cached_figure(
        f"overview:{name}", minute(period.start), minute(period.end), compute=compute
    )


def _buckets_clipped(period: Period) -> list[tuple[datetime, datetime]]:
    """Each bucket of the period as the part of it inside the period."""
    return [(max(b, period.start), min(b + period.step, period.end)) for b in period.buckets()]


# --- KPIs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kpi:
    key: str  # the card's data-kpi
    label: str
    value: float | None  # None: nothing to divide by
    previous: float | None
    is_rate: bool = False  # a share in [0, 1]; its change is in percentage points
    bad_when_up: bool = False
    detail: str = ""

    @property
    def change(self) -> float | None:
        """Relative change for counts, percentage points for rates; None if unknown."""
        if self.value is None or self.previous is None:
            return None
        if self.is_rate:
            return (self.value - self.previous) * 100
        if self.previous == 0:
            return None if self.value else 0.0
        return (self.value - self.previous) / self.previous * 100

    @property
    def direction(self) -> str:
        change = self.change
        if change is None:
            if self.value and self.previous == 0:
                return "up"  # something where there was nothing
            return "flat"
        if round(change, 1) == 0:
            return "flat"
        return "up" if change > 0 else "down"

    def _format(self, value: float | None) -> str:
        if value is None:
            return NO_VALUE
        if self.is_rate:
            return f"{value * 100:.1f}%"
        return f"{value:,.0f}"

    @property
    def shown(self) -> str:
        return self._format(self.value)

    @property
    def previous_shown(self) -> str:
        return self._format(self.previous)

    @property
    def change_shown(self) -> str:
        """'▲ +12%', '▼ -3.5 pp', '→ ±0%', '▲ new' (none before), NO_VALUE (unknown)."""
        change = self.change
        arrow = {"up": "▲", "down": "▼", "flat": "→"}[self.direction]
        if change is None:
            return f"{arrow} new" if self.direction == "up" else NO_VALUE
        if self.direction == "flat":
            return f"{arrow} ±0{' pp' if self.is_rate else '%'}"
        digits = 0 if abs(change) >= 10 and not self.is_rate else 1
        return f"{arrow} {change:+.{digits}f}{' pp' if self.is_rate else '%'}"


@dataclass(frozen=True)
class _PeriodFigures:
    leads: int
    qualified: int
    types: dict[str, int]
    crm_failures: int

    def rate(self, part: int, whole: int) -> float | None:
        return part / whole if whole else None


def _lead_count(since: datetime, until: datetime, **filters: Any) -> int:
    # Range scans: lead_created for all, lead_status_created for one status.
    return Lead.objects.filter(created_at__gte=since, created_at__lt=until, **filters).count()


def _crm_failures(since: datetime, until: datetime) -> int:
    # A failed sync is an error event of the CRM stage; error events are a
    # small share of all, reached through the (event_type, timestamp) index.
    return AuditEvent.objects.filter(
        event_type=ERROR, timestamp__gte=since, timestamp__lt=until, details__stage=CRM_STAGE
    ).count()


def _figures(since: datetime, until: datetime) -> _PeriodFigures:
    types = _totals(event_counts(event_types=KPI_EVENT_TYPES, since=since, until=until))
    return _PeriodFigures(
        leads=_lead_count(since, until),
        qualified=_lead_count(since, until, status=Lead.Status.QUALIFIED),
        types={t: types.get(t, 0) for t in KPI_EVENT_TYPES},
        crm_failures=_crm_failures(since, until),
    )


def kpis(*, period: Period) -> list[Kpi]:
    """The overview's cards for the period, each with its value in the previous period."""

    def compute() -> tuple[_PeriodFigures, _PeriodFigures]:
        before = period.previous()
        return _figures(period.start, period.end), _figures(before.start, before.end)

    now, before = cached("kpis", period, compute)

    def crm(f: _PeriodFigures) -> tuple[int, float | None]:
        ok = sum(f.types[t] for t in CRM_SUCCESS)
        return ok, f.rate(ok, ok + f.crm_failures)

    crm_ok, crm_rate = crm(now)
    return [
        Kpi("leads", "Leads", now.leads, before.leads, detail="new leads captured"),
        Kpi(
            "qualification_rate",
            "Qualification rate",
            now.rate(now.qualified, now.leads),
            before.rate(before.qualified, before.leads),
            is_rate=True,
            detail=f"{now.qualified} of {now.leads} new leads qualified",
        ),
        Kpi(
            "crm_success",
            "CRM sync success",
            crm_rate,
            crm(before)[1],
            is_rate=True,
            detail=f"{crm_ok} synced, {now.crm_failures} failed",
        ),
        Kpi("emails_sent", "Emails sent", now.types["email_sent"], before.types["email_sent"]),
        Kpi("replies", "Replies", now.types["email_replied"], before.types["email_replied"]),
        Kpi("errors", "Errors", now.types[ERROR], before.types[ERROR], bad_when_up=True),
    ]


# --- Lead volume by source ---------------------------------------------------------------


@dataclass(frozen=True)
class VolumeSeries:
    name: str
    values: list[int]


@dataclass(frozen=True)
class Volume:
    buckets: list[tuple[datetime, datetime]]  # each bucket clipped to the period
    series: list[VolumeSeries] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(sum(s.values) for s in self.series)


def lead_volume(*, period: Period) -> Volume:
    """New leads per bucket of the period, one series per source (largest first)."""
    return cached(f"volume:{period.unit}", period, lambda: _lead_volume(period))


def _lead_volume(period: Period) -> Volume:
    buckets = _buckets_clipped(period)
    sources = dict(LeadSource.objects.order_by("pk").values_list("pk", "name"))
    counts = _lead_counts(list(sources), buckets)
    series = [
        VolumeSeries(sources[pk], [counts.get((pk, i), 0) for i in range(len(buckets))])
        for pk in sources
    ]
    series = [s for s in series if any(s.values)]
    series.sort(key=lambda s: (-sum(s.values), s.name))
    if len(series) > MAX_SOURCE_SERIES:
        rest = series[MAX_SOURCE_SERIES - 1 :]
        other = [sum(column) for column in zip(*(s.values for s in rest), strict=True)]
        series = [*series[: MAX_SOURCE_SERIES - 1], VolumeSeries("Other sources", other)]
    return Volume(buckets=buckets, series=series)


# SQLite refuses compound statements of more than 500 SELECTs.
COUNTS_PER_STATEMENT = 400


def _lead_counts(
    source_ids: list[int], buckets: list[tuple[datetime, datetime]]
) -> dict[tuple[int, int], int]:
    """{(source id, bucket index): new leads}, each a COUNT over one range of the
    (source, created_at) index, many to a statement.

    One GROUP BY over the period's rows would sort every lead of the period
    in a temporary tree (a quarter of a second for 100,000 leads on SQLite);
    index range counts cost a tenth of that.
    """
    table = connection.ops.quote_name(Lead._meta.db_table)
    source = connection.ops.quote_name(Lead._meta.get_field("source").column)
    created = connection.ops.quote_name(Lead._meta.get_field("created_at").column)
    one = (
        f"SELECT %s, %s, COUNT(*) FROM {table} "
        f"WHERE {source} = %s AND {created} >= %s AND {created} < %s"
    )
    adapt = connection.ops.adapt_datetimefield_value
    bounds = [(adapt(a), adapt(b)) for a, b in buckets]
    parts = [(pk, i, pk, lo, hi) for pk in source_ids for i, (lo, hi) in enumerate(bounds)]
    out: dict[tuple[int, int], int] = {}
    with connection.cursor() as cursor:
        for chunk in range(0, len(parts), COUNTS_PER_STATEMENT):
            batch = parts[chunk : chunk + COUNTS_PER_STATEMENT]
            cursor.execute(
                " UNION ALL ".join([one] * len(batch)), [v for part in batch for v in part]
            )
            for pk, i, n in cursor.fetchall():
                if n:
                    out[(int(pk), int(i))] = n
    return out


# --- Errors over time ----------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorSeries:
    buckets: list[tuple[datetime, datetime]]  # each bucket clipped to the period
    counts: list[int]
    spikes: set[int]
    rule: SpikeRule

    @property
    def total(self) -> int:
        return sum(self.counts)


def spike_rule() -> SpikeRule:
    return SpikeRule(
        k=settings.DASHBOARD_SPIKE_K,
        min_count=settings.DASHBOARD_SPIKE_MIN_COUNT,
        window=settings.DASHBOARD_SPIKE_WINDOW,
    )


def error_series(*, period: Period) -> ErrorSeries:
    """Error events per bucket, with the spikes marked.

    The baseline of the first buckets is the `window` buckets before the
    period, so a spike in the first hour of "last 24h" is still found.
    """
    rule = spike_rule()
    return cached(
        f"errors:{period.unit}:{rule.k}:{rule.min_count}:{rule.window}",
        period,
        lambda: _error_series(period, rule),
    )


def _error_series(period: Period, rule: SpikeRule) -> ErrorSeries:
    buckets = period.buckets()
    by_day = period.unit != "hour"
    history_start = buckets[0] - rule.window * period.step
    history = _bucketed(
        event_counts(event_types=[ERROR], since=history_start, until=period.start, by_day=by_day),
        ERROR,
        period.bucket_of,
    )
    current = _bucketed(
        event_counts(event_types=[ERROR], since=period.start, until=period.end, by_day=by_day),
        ERROR,
        period.bucket_of,
    )
    # The part of the first bucket before the period belongs to neither side.
    before = [history.get(history_start + i * period.step, 0) for i in range(rule.window)]
    counts = [current.get(b, 0) for b in buckets]
    spikes = {i - len(before) for i in spike_indexes([*before, *counts], rule) if i >= len(before)}
    return ErrorSeries(buckets=_buckets_clipped(period), counts=counts, spikes=spikes, rule=rule)


# --- Recent errors and runs ------------------------------------------------------------------


def recent_errors(*, period: Period, limit: int = 10) -> list[AuditEvent]:
    """The newest error events of the period (the traceback is left in the database)."""
    return list(
        AuditEvent.objects.filter(
            event_type=ERROR, timestamp__gte=period.start, timestamp__lt=period.end
        )
        .only(
            "id",
            "timestamp",
            "event_type",
            "lead_public_id",
            "workflow",
            "error_type",
            "error_message",
            "fingerprint",
        )
        .order_by("-timestamp", "-id")[:limit]
    )


def recent_runs(*, period: Period, limit: int = 10) -> list[WorkflowRun]:
    """The newest workflow runs started in the period.

    Runs are only indexed per workflow (workflow, -started_at), so each
    workflow's newest are read through that index and merged: a handful of
    index probes instead of sorting every run ever made.
    """
    runs: list[WorkflowRun] = []
    for workflow_id in Workflow.objects.order_by().values_list("pk", flat=True):
        runs.extend(
            WorkflowRun.objects.filter(
                workflow_id=workflow_id,
                started_at__gte=period.start,
                started_at__lt=period.end,
            )
            .select_related("workflow")
            .order_by("-started_at")[:limit]
        )
    runs.sort(key=lambda run: (run.started_at, run.pk), reverse=True)
    return runs[:limit]
