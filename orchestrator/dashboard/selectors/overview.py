"""Reads behind the dashboard overview: KPIs, lead volume, errors over time, recent items.

Sized for a million events and a hundred thousand leads. The KPI cards are
figures.summary() (the one definition of each figure, shared with analytics,
the reports and the alerts); the error chart buckets figures.event_counts (the
rollups, with raw rows only at the edges). Lead counts are index range counts
on Lead.created_at (and source). The aggregates are cached for up to a minute,
keyed by the period's bounds rounded down to the minute.
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection

from audit.models import AuditEvent
from audit.types import ERROR
from core.periods import Period
from leads.models import Lead, LeadSource
from leads.workflows.models import Workflow, WorkflowRun
from orchestrator.dashboard import figures
from orchestrator.dashboard.figures import event_counts
from orchestrator.dashboard.render import cached_figure
from orchestrator.monitoring.spikes import SpikeRule, spike_indexes

# The chart palette has nine colours; smaller sources share the last series.
MAX_SOURCE_SERIES = 8
NO_VALUE = "\u2013"  # an en dash: a rate of nothing, or a change from nothing known

# --- Event counts from the rollups ------------------------------------------------------


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
    same minutes, and computed once when many ask at once (render.cached_figure)."""
    return cached_figure(f"overview:{name}", compute=compute, window=(period.start, period.end))


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


def kpis(*, period: Period) -> list[Kpi]:
    """The overview's cards for the period, each with its value in the previous period.

    Every number is a figures.summary() figure, defined once for the pages and reports."""

    def compute() -> tuple[figures.Summary, figures.Summary]:
        before = period.previous()
        return (
            figures.summary(start=period.start, end=period.end),
            figures.summary(start=before.start, end=before.end),
        )

    now, before = cached("kpis", period, compute)
    return [
        Kpi("leads", "Leads", now.leads, before.leads, detail="new leads captured"),
        Kpi(
            "qualification_rate",
            "Qualification rate",
            now.qualification_rate,
            before.qualification_rate,
            is_rate=True,
            detail=f"{now.qualified} of {now.leads} new leads qualified",
        ),
        Kpi(
            "crm_success",
            "CRM sync success",
            now.crm.success_rate,
            before.crm.success_rate,
            is_rate=True,
            detail=f"{now.crm.ok} synced, {now.crm.failed} failed",
        ),
        Kpi("emails_sent", "Emails sent", now.emails_sent, before.emails_sent),
        Kpi("replies", "Replies", now.replies, before.replies, detail="leads that replied"),
        Kpi("errors", "Errors", now.errors, before.errors, bad_when_up=True),
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
