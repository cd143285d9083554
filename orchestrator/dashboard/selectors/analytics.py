"""Reads for the analytics page: the lead funnel, sources, email steps, CRM performance.

Every number is a figure of orchestrator.dashboard.figures, the one definition
the overview, the reports and the alerts share; this module only caches them
for at most a minute (FIGURE_CACHE_SECONDS), keyed by the period rounded to the
minute, so a page and its fragments reloaded within a minute share one
computation.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from leads.models import LeadSource
from orchestrator.dashboard import figures
from orchestrator.dashboard.figures import (
    FUNNEL_STAGES,
    CrmSyncs,
    EmailStepStats,
    FunnelStage,
    ratio,
)
from orchestrator.dashboard.figures import CrmCallStats as CrmPerformance
from orchestrator.dashboard.render import cached_figure

__all__ = [
    "FUNNEL_STAGES",
    "CrmPerformance",
    "CrmSyncs",
    "EmailStepStats",
    "FunnelStage",
    "SourceStats",
    "crm_performance",
    "crm_syncs",
    "email_step_stats",
    "funnel",
    "source_stats",
]


def _cached[T](name: str, since: datetime, until: datetime, compute: Callable[[], T]) -> T:
    return cached_figure(f"analytics:{name}", compute=compute, window=(since, until))


# --- Leads: funnel and sources ------------------------------------------------------------


@dataclass(frozen=True)
class SourceStats:
    slug: str
    name: str
    kind: str
    ingested: int
    qualified: int
    routed: int
    crm_synced: int
    emailed: int
    replied: int
    avg_score: float | None

    @property
    def qualified_rate(self) -> float | None:
        return ratio(self.qualified, self.ingested)

    @property
    def reply_rate(self) -> float | None:
        return ratio(self.replied, self.ingested)


def _source_rows(since: datetime, until: datetime) -> list[SourceStats]:
    counts = figures.funnel_counts(start=since, end=until, group_by="source")
    sources = {s.pk: s for s in LeadSource.objects.only("slug", "name", "kind")}
    out = [
        SourceStats(
            slug=sources[pk].slug,
            name=sources[pk].name,
            kind=sources[pk].kind,
            avg_score=row.avg_score,
            **row.stages,
        )
        for pk, row in counts.items()
    ]
    return sorted(out, key=lambda s: (-s.ingested, s.slug))


def source_stats(*, since: datetime, until: datetime) -> list[SourceStats]:
    """Per lead source, the funnel (figures.funnel_counts) of the leads it created."""
    return _cached("sources", since, until, lambda: _source_rows(since, until))


def funnel(*, since: datetime, until: datetime) -> list[FunnelStage]:
    """figures.funnel: the leads created in [since, until), each stage nested in the one
    before, so no stage exceeds 100% of the previous."""
    return _cached("funnel", since, until, lambda: figures.funnel(start=since, end=until))


# --- Email engagement per sequence step ----------------------------------------------------


def email_step_stats(*, since: datetime, until: datetime) -> list[EmailStepStats]:
    """figures.email_steps: per step, the period's sends, opens, clicks, replies, bounces
    and unsubscribes; the rows add up to the overview's and the reports' totals."""
    return _cached("email-steps", since, until, lambda: figures.email_steps(start=since, end=until))


# --- CRM sync performance per connection ---------------------------------------------------


def crm_syncs(*, since: datetime, until: datetime) -> CrmSyncs:
    """figures.crm_syncs: the CRM sync success KPI the overview card shows."""
    return _cached("crm-syncs", since, until, lambda: figures.crm_syncs(start=since, end=until))


def crm_performance(*, since: datetime, until: datetime) -> list[CrmPerformance]:
    """figures.crm_calls: per CRM connection, HTTP calls, latency, retries, failures."""
    return _cached("crm", since, until, lambda: figures.crm_calls(start=since, end=until))
