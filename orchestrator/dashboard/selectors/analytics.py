"""Reads for the analytics page: the lead funnel, sources, email steps, CRM performance.

Everything is read from the pipeline tables (leads, enrollments, emails, CRM
records and calls) over an indexed date column, never from the audit trail:
the tables say where each lead stands now, in a few rows per lead. Results
are cached for at most a minute (FIGURE_CACHE_SECONDS), keyed by the period rounded
to the minute, so a page and its fragments reloaded within a minute share
one computation.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Avg, Count, Exists, F, OuterRef, Q

from leads.crm.models import CrmCall, CrmConnection, CrmRecord
from leads.followups.models import Enrollment, OutboundEmail
from leads.models import Lead, LeadSource
from orchestrator.dashboard.render import cached_figure, minute

# Enrollment cancel reasons that end a sequence because of the recipient.
REPLIED, BOUNCED, UNSUBSCRIBED = "replied", "bounced", "unsubscribed"


def _cached[T](name: str, since: datetime, until: datetime, compute: Callable[[], T]) -> T:
    return cached_figure(f"analytics:{name}", minute(since), minute(until), compute=compute)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


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
        return _ratio(self.qualified, self.ingested)

    @property
    def reply_rate(self) -> float | None:
        return _ratio(self.replied, self.ingested)


@dataclass(frozen=True)
class FunnelStage:
    key: str
    label: str
    count: int
    from_previous: float | None  # share of the stage before
    from_top: float | None  # share of ingested leads

    @property
    def percent_of_top(self) -> int:
        """Whole percent of the top, for the CSS bar width class."""
        return round((self.from_top or 0) * 100)


FUNNEL_STAGES = (
    ("ingested", "Ingested"),
    ("qualified", "Qualified"),
    ("routed", "Routed"),
    ("crm_synced", "CRM synced"),
    ("emailed", "Emailed"),
    ("replied", "Replied"),
)


def _source_rows(since: datetime, until: datetime) -> list[SourceStats]:
    # One pass over the leads created in the period (index lead_created); each
    # later stage is an EXISTS probe on the child table's lead index.
    lead = OuterRef("pk")
    synced = CrmRecord.objects.filter(lead=lead, last_synced_at__isnull=False)
    emailed = OutboundEmail.objects.filter(enrollment__lead=lead, sent_at__isnull=False)
    replied = Enrollment.objects.filter(lead=lead, cancel_reason=REPLIED)
    rows = (
        Lead.objects.filter(created_at__gte=since, created_at__lt=until)
        .order_by()
        .values("source_id")
        .annotate(
            ingested=Count("id"),
            qualified=Count("id", filter=Q(status=Lead.Status.QUALIFIED)),
            routed=Count("id", filter=Q(owner__isnull=False)),
            crm_synced=Count("id", filter=Q(Exists(synced))),
            emailed=Count("id", filter=Q(Exists(emailed))),
            replied=Count("id", filter=Q(Exists(replied))),
            avg_score=Avg("score"),
        )
    )
    sources = {s.pk: s for s in LeadSource.objects.only("slug", "name", "kind")}
    out = []
    for row in rows:
        source = sources[row.pop("source_id")]
        out.append(SourceStats(slug=source.slug, name=source.name, kind=source.kind, **row))
    return sorted(out, key=lambda s: (-s.ingested, s.slug))


def source_stats(*, since: datetime, until: datetime) -> list[SourceStats]:
    """Per lead source, for the leads it created in [since, until): how far they got."""
    return _cached("sources", since, until, lambda: _source_rows(since, until))


def funnel(*, since: datetime, until: datetime) -> list[FunnelStage]:
    """How many leads created in [since, until) reached each stage (by where they stand now).

    Each stage counts on its own (a workflow without a CRM step still emails),
    so a stage can exceed the one before it; the rates say so rather than hide it.
    """
    sources = source_stats(since=since, until=until)
    totals = {key: sum(getattr(s, key) for s in sources) for key, _ in FUNNEL_STAGES}
    top = totals["ingested"]
    stages, previous = [], None
    for key, label in FUNNEL_STAGES:
        count = totals[key]
        stages.append(
            FunnelStage(
                key=key,
                label=label,
                count=count,
                from_previous=None if previous is None else _ratio(count, previous),
                from_top=_ratio(count, top),
            )
        )
        previous = count
    return stages


# --- Email engagement per sequence step ----------------------------------------------------


@dataclass(frozen=True)
class EmailStepStats:
    sequence: str
    position: int
    sent: int
    opened: int
    clicked: int
    replied: int
    bounced: int
    unsubscribed: int

    def rate(self, count: int) -> float | None:
        return _ratio(count, self.sent)

    @property
    def rates(self) -> dict[str, float | None]:
        return {
            name: self.rate(getattr(self, name))
            for name in ("opened", "clicked", "replied", "bounced", "unsubscribed")
        }


def _email_rows(since: datetime, until: datetime) -> list[EmailStepStats]:
    # A reply, bounce or unsubscribe ends the enrollment, so it is put down to
    # the last email the enrollment sent: the one the recipient answered.
    later = OutboundEmail.objects.filter(
        enrollment=OuterRef("enrollment"), sent_at__gt=OuterRef("sent_at")
    )
    last = ~Q(Exists(later))
    rows = (
        OutboundEmail.objects.filter(sent_at__gte=since, sent_at__lt=until)
        .order_by()
        .values(sequence=F("step__sequence__slug"), position=F("step__position"))
        .annotate(
            sent=Count("id"),
            opened=Count("id", filter=Q(opened_at__isnull=False)),
            clicked=Count("id", filter=Q(clicked_at__isnull=False)),
            replied=Count("id", filter=last & Q(enrollment__cancel_reason=REPLIED)),
            bounced=Count("id", filter=last & Q(enrollment__cancel_reason=BOUNCED)),
            unsubscribed=Count("id", filter=last & Q(enrollment__cancel_reason=UNSUBSCRIBED)),
        )
        .order_by("sequence", "position")
    )
    return [EmailStepStats(**row) for row in rows]


def email_step_stats(*, since: datetime, until: datetime) -> list[EmailStepStats]:
    """Per sequence step, for the emails sent in [since, until): what became of them."""
    return _cached("email-steps", since, until, lambda: _email_rows(since, until))


# --- CRM sync performance per connection ---------------------------------------------------


@dataclass(frozen=True)
class CrmPerformance:
    connection: str
    kind: str
    calls: int
    ok: int
    retried: int  # failed calls that were tried again
    failed: int  # failed calls that were given up on (transient or permanent)
    permanent: int
    p50_ms: int | None
    p95_ms: int | None
    records_failing: int  # records of the connection waiting for a retry or for a person

    @property
    def success_rate(self) -> float | None:
        return _ratio(self.ok, self.calls)

    @property
    def success_percent(self) -> float:
        # One decimal: 99.6% is not 100%.
        return (self.success_rate or 0.0) * 100


def _percentile(qs, n: int, q: float) -> int | None:  # type: ignore[no-untyped-def]
    """Nearest-rank percentile of latency_ms over `qs` (n rows): one ordered seek.

    Portable (SQLite has no percentile function) and exact.
    """
    if not n:
        return None
    rank = max(1, -(-int(q * 100) * n // 100))  # ceil(q * n), without float error
    return qs.order_by("latency_ms").values_list("latency_ms", flat=True)[rank - 1]


def _crm_rows(since: datetime, until: datetime) -> list[CrmPerformance]:
    Outcome = CrmCall.Outcome
    failing = dict(
        CrmRecord.objects.filter(
            status__in=[CrmRecord.Status.FAILED, CrmRecord.Status.NEEDS_ATTENTION]
        )
        .order_by()
        .values("connection_id")
        .annotate(n=Count("id"))
        .values_list("connection_id", "n")
    )
    out = []
    # One aggregate per connection (there are a handful): each is a range seek on
    # crm_call_conn_created, where a GROUP BY would walk the whole index.
    for connection in CrmConnection.objects.only("name", "kind").order_by("name"):
        calls = CrmCall.objects.filter(
            connection=connection, created_at__gte=since, created_at__lt=until
        ).order_by()
        row = calls.aggregate(
            calls=Count("id"),
            ok=Count("id", filter=Q(outcome=Outcome.OK)),
            retried=Count("id", filter=Q(outcome=Outcome.RETRY)),
            failed=Count("id", filter=Q(outcome__in=[Outcome.TRANSIENT, Outcome.PERMANENT])),
            permanent=Count("id", filter=Q(outcome=Outcome.PERMANENT)),
        )
        if not row["calls"]:
            continue
        out.append(
            CrmPerformance(
                connection=connection.name,
                kind=connection.kind,
                p50_ms=_percentile(calls, row["calls"], 0.50),
                p95_ms=_percentile(calls, row["calls"], 0.95),
                records_failing=failing.get(connection.pk, 0),
                **row,
            )
        )
    return out


def crm_performance(*, since: datetime, until: datetime) -> list[CrmPerformance]:
    """Per CRM connection with calls in [since, until): success, latency, retries, failures."""
    return _cached("crm", since, until, lambda: _crm_rows(since, until))
