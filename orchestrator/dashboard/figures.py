"""The one definition of every figure the staff pages, the reports and the alerts show.

The overview cards, the analytics page, the daily/weekly reports and the alert
rules all read their numbers here, so a number shown twice is the same number.
docs/metrics.md explains each figure in words; the docstrings below are the
definitions.

Two kinds of figure, never mixed:

- Activity: what happened in [start, end) (emails sent, replies, CRM syncs,
  errors). An event counts in the period it happened in, whoever it was about.
- Cohort: the leads created in [start, end) and how far each has got so far
  (the funnel). A stage counts a lead only if it also reached every stage
  before it, so no stage exceeds the one above it.

Every function takes the period as keyword-only `start` (inclusive) and `end`
(exclusive), aware datetimes, and an optional `workflow` (its name, as on the
audit events). They compute and never cache: the pages wrap them in
render.cached_figure (a minute), while the reports of a running period and the
alert rules need them fresh.

Sized for millions of rows: counts of a common event type come from the
hourly and daily rollups (event_counts); rare event types (replies, bounces,
failed syncs) are read through the (event_type, timestamp) index; lead counts
are range counts on Lead.created_at; the funnel is one pass over the period's
leads with index probes per lead.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from django.db.models import (
    Avg,
    Case,
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.utils import timezone

from audit.models import AuditEvent, AuditRollup, AuditRollupDay
from audit.selectors import ceil_day, ceil_hour, floor_day, floor_hour, seal_head, unsealed_q
from audit.types import ERROR
from leads.crm.models import CrmCall, CrmConnection, CrmRecord
from leads.crm.services import STEP_KIND as CRM_STAGE
from leads.followups.models import OutboundEmail
from leads.followups.services import UNSUBSCRIBED
from leads.models import Lead

CRM_SYNCED = ("crm_create", "crm_update")
REPLIED = "email_replied"
BOUNCED = "email_bounced"
CANCELLED = "email_cancelled"  # with details.reason "unsubscribed": an unsubscribe


def ratio(part: int, whole: int) -> float | None:
    """part / whole, or None when there is nothing to divide by (shown as a dash)."""
    return part / whole if whole else None


# --- Event counts from the rollups ------------------------------------------------------


def event_counts(
    *,
    event_types: Iterable[str],
    since: datetime,
    until: datetime,
    by_day: bool = True,
    workflow: str | None = None,
) -> Counter[tuple[str, datetime]]:
    """Events of the given types in [since, until), keyed (type, start of hour or day).

    Every key is the start of a UTC hour, or of a UTC day where `by_day` allows
    the daily rollup (so bucket hours with by_day=False). A key only says where
    the events lie; the counts are exact for the range. Whole days come from
    the daily rollup, whole hours from the hourly one, the partial hours at the
    edges and the events no seal has counted yet from the rows.
    """
    types = sorted(set(event_types))
    out: Counter[tuple[str, datetime]] = Counter()
    if since >= until or not types:
        return out
    head = seal_head()

    def in_workflow(qs: QuerySet) -> QuerySet:
        return qs if workflow is None else qs.filter(workflow=workflow)

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
            in_workflow(AuditRollupDay.objects.all())
            .filter(event_type__in=types, day__gte=daily[0].date(), day__lt=daily[1].date())
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
            in_workflow(AuditRollup.objects.all())
            .filter(in_hours, event_type__in=types)
            .values_list("event_type", "hour")
            .annotate(n=Sum("count"))
        )
        for etype, hour, n in rows:
            out[(etype, hour.astimezone(UTC))] += n
    # The edges, sealed or not, straight from the rows (event_type, timestamp index).
    for lo, hi in raw:
        rows = (
            in_workflow(AuditEvent.objects.order_by())
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
        tail = AuditEvent.objects.filter(unsealed_q(head)).order_by()
        end = min(h1, until)
        for ts, etype, wf in tail.values_list("timestamp", "event_type", "workflow"):
            if etype in types and h0 <= ts < end and (workflow is None or wf == workflow):
                out[(etype, floor_hour(ts))] += 1
    return out


def _event_total(
    event_types: Iterable[str], start: datetime, end: datetime, workflow: str | None
) -> int:
    counts = event_counts(event_types=event_types, since=start, until=end, workflow=workflow)
    return sum(counts.values())


def _events(
    event_type: str | Iterable[str], start: datetime, end: datetime, workflow: str | None
) -> QuerySet[AuditEvent]:
    """The rows of rare event types in the period, through the (event_type, timestamp) index."""
    types = [event_type] if isinstance(event_type, str) else list(event_type)
    qs = AuditEvent.objects.filter(
        event_type__in=types, timestamp__gte=start, timestamp__lt=end
    ).order_by()
    return qs if workflow is None else qs.filter(workflow=workflow)


def _distinct_leads(events: QuerySet[AuditEvent]) -> int:
    return events.exclude(lead_public_id="").values("lead_public_id").distinct().count()


# --- Leads (cohort) -----------------------------------------------------------------------


def _cohort(start: datetime, end: datetime, workflow: str | None) -> QuerySet[Lead]:
    # Range scans: lead_created for all, lead_status_created for one status.
    leads = Lead.objects.filter(created_at__gte=start, created_at__lt=end).order_by()
    return leads if workflow is None else leads.filter(workflow__name=workflow)


# What a lead must have to be in each funnel stage beyond "ingested", each on
# top of the stages before it. Qualified and routed read the lead row itself.
QUALIFIED_Q = Q(status=Lead.Status.QUALIFIED)
ROUTED_Q = QUALIFIED_Q & Q(owner__isnull=False)


def leads_in(*, start: datetime, end: datetime, workflow: str | None = None) -> int:
    """Leads in: leads created (ingested, deduplicated) in the period.

    A lead counts once, in the period its row was created, whatever became of it.
    Funnel stage 1 ("Ingested").
    """
    return _cohort(start, end, workflow).count()


def qualified(*, start: datetime, end: datetime, workflow: str | None = None) -> int:
    """Qualified: leads created in the period whose status is "qualified" now.

    Nurture, disqualified, new and failed leads do not count. Funnel stage 2.
    """
    return _cohort(start, end, workflow).filter(QUALIFIED_Q).count()


def qualification_rate(
    *, start: datetime, end: datetime, workflow: str | None = None
) -> float | None:
    """Qualified / leads in, for the leads created in the period (None with no leads)."""
    return ratio(
        qualified(start=start, end=end, workflow=workflow),
        leads_in(start=start, end=end, workflow=workflow),
    )


def routed(*, start: datetime, end: datetime, workflow: str | None = None) -> int:
    """Routed: qualified leads created in the period that have an owner now.

    A nurture lead that a workflow routes anyway is not counted (the funnel is
    nested: routed is a subset of qualified). Funnel stage 3.
    """
    return _cohort(start, end, workflow).filter(ROUTED_Q).count()


def leads_by_status(
    *, start: datetime, end: datetime, workflow: str | None = None
) -> dict[str, int]:
    """Leads created in the period, by their status now ({status value: leads})."""
    rows = _cohort(start, end, workflow).values_list("status").annotate(n=Count("id"))
    return dict(rows)


# --- The funnel ---------------------------------------------------------------------------

FUNNEL_STAGES = (
    ("ingested", "Ingested"),
    ("qualified", "Qualified"),
    ("routed", "Routed"),
    ("crm_synced", "CRM synced"),
    ("emailed", "Emailed"),
    ("replied", "Replied"),
)
STAGE_KEYS = tuple(key for key, _label in FUNNEL_STAGES)


def _depth() -> Case:
    """How many funnel stages a lead has reached (1: ingested only, 6: replied).

    One CASE per lead, tried in stage order, so a lead that stops early costs
    no probes for the later stages; each probe is on its child table's lead index.
    """
    lead = OuterRef("pk")
    synced = CrmRecord.objects.filter(lead=lead, last_synced_at__isnull=False)
    emailed = OutboundEmail.objects.filter(enrollment__lead=lead, sent_at__isnull=False)
    # audit_lead_ts: the lead's few events, then the type.
    replied = AuditEvent.objects.filter(lead_public_id=OuterRef("public_id"), event_type=REPLIED)
    return Case(
        When(~QUALIFIED_Q, then=Value(1)),
        When(owner__isnull=True, then=Value(2)),
        When(~Exists(synced), then=Value(3)),
        When(~Exists(emailed), then=Value(4)),
        When(~Exists(replied), then=Value(5)),
        default=Value(6),
        output_field=IntegerField(),
    )


@dataclass
class FunnelCounts:
    """One group's funnel (all leads, or one source's, or one owner's)."""

    stages: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGE_KEYS, 0))
    disqualified: int = 0
    score_sum: int = 0
    scored: int = 0

    @property
    def avg_score(self) -> float | None:
        return self.score_sum / self.scored if self.scored else None

    def __getitem__(self, key: str) -> int:
        return self.stages[key]


def funnel_counts(
    *,
    start: datetime,
    end: datetime,
    workflow: str | None = None,
    group_by: Literal["source", "owner"] | None = None,
) -> dict[Any, FunnelCounts]:
    """Nested funnel stage counts of the leads created in the period, per group.

    Keys: None (every lead) without `group_by`, else the source's or owner's id
    (owner None for unrouted leads). Stages, each a subset of the one before:
    ingested (created in the period); qualified (status qualified now); routed
    (and has an owner); crm_synced (and at least one CRM record synced
    successfully, ever); emailed (and at least one follow-up email sent, ever);
    replied (and at least one email_replied event, ever).
    """
    column = {None: None, "source": "source_id", "owner": "owner_id"}[group_by]
    keys = [column] if column else []
    rows = (
        _cohort(start, end, workflow)
        .annotate(depth=_depth())
        .values(*keys, "depth")
        .annotate(
            n=Count("id"),
            disqualified=Count("id", filter=Q(status=Lead.Status.DISQUALIFIED)),
            score_sum=Sum("score"),
            scored=Count("score"),
        )
    )
    out: dict[Any, FunnelCounts] = defaultdict(FunnelCounts)
    for row in rows:
        group = out[row[column] if column else None]
        for key in STAGE_KEYS[: row["depth"]]:
            group.stages[key] += row["n"]
        group.disqualified += row["disqualified"]
        group.score_sum += row["score_sum"] or 0
        group.scored += row["scored"]
    if column is None:
        out[None]  # an empty period still has its (empty) funnel
    return dict(out)


@dataclass(frozen=True)
class FunnelStage:
    key: str
    label: str
    count: int
    from_previous: float | None  # share of the stage before, at most 1
    from_top: float | None  # share of ingested leads

    @property
    def percent_of_top(self) -> int:
        """Whole percent of the top, for the bar."""
        return round((self.from_top or 0) * 100)


def funnel_stages(counts: FunnelCounts) -> list[FunnelStage]:
    """The stages of one group's counts with their shares of the stage before and the top."""
    top = counts["ingested"]
    stages, previous = [], None
    for key, label in FUNNEL_STAGES:
        n = counts[key]
        stages.append(
            FunnelStage(
                key=key,
                label=label,
                count=n,
                from_previous=None if previous is None else ratio(n, previous),
                from_top=ratio(n, top),
            )
        )
        previous = n
    return stages


def funnel(*, start: datetime, end: datetime, workflow: str | None = None) -> list[FunnelStage]:
    """The lead funnel of the leads created in the period (see funnel_counts): nested, so
    no stage exceeds 100% of the one before."""
    return funnel_stages(funnel_counts(start=start, end=end, workflow=workflow)[None])


# --- CRM sync -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrmSyncs:
    ok: int  # syncs that ended with the contact created or updated
    failed: int  # syncs that ended in an error

    @property
    def attempts(self) -> int:
        return self.ok + self.failed

    @property
    def success_rate(self) -> float | None:
        return ratio(self.ok, self.attempts)

    @property
    def success_shown(self) -> str:
        """As the overview card shows it: one decimal, or a dash without attempts."""
        rate = self.success_rate
        return "\u2013" if rate is None else f"{rate * 100:.1f}%"


def failed_crm_syncs(
    *,
    start: datetime,
    end: datetime,
    workflow: str | None = None,
    connection: str | None = None,
) -> QuerySet[AuditEvent]:
    """The error events of failed CRM syncs in the period (details.stage "crm_sync").

    Error events are a small share of all, reached through (event_type, timestamp).
    """
    events = _events(ERROR, start, end, workflow).filter(details__stage=CRM_STAGE)
    return events if connection is None else events.filter(details__connection=connection)


def crm_sync_failures(
    *,
    start: datetime,
    end: datetime,
    workflow: str | None = None,
    connection: str | None = None,
) -> int:
    """Failed CRM syncs: sync attempts in the period that ended in an error event.

    One per attempt (a record retried three times and failing three times is
    three), whether it will be retried or needs a person. HTTP calls retried
    inside one attempt are not failures.
    """
    return failed_crm_syncs(start=start, end=end, workflow=workflow, connection=connection).count()


def crm_syncs(
    *,
    start: datetime,
    end: datetime,
    workflow: str | None = None,
    connection: str | None = None,
) -> CrmSyncs:
    """CRM sync attempts in the period: ok (a crm_create or crm_update event) and failed
    (crm_sync_failures). The unit is one attempt to push one lead to one CRM, not an
    HTTP call: a sync makes several calls (search, create) and retries inside itself."""
    if connection is None:
        ok = _event_total(CRM_SYNCED, start, end, workflow)
    else:
        # The rollups do not know the connection: read the rows.
        ok = _events(CRM_SYNCED, start, end, workflow).filter(details__connection=connection)
        ok = ok.count()
    failed = crm_sync_failures(start=start, end=end, workflow=workflow, connection=connection)
    return CrmSyncs(ok=ok, failed=failed)


@dataclass(frozen=True)
class CrmCallStats:
    """HTTP calls to one CRM connection: its health, not the sync success KPI."""

    connection: str
    kind: str
    calls: int
    ok: int
    retried: int  # failed calls that were tried again
    failed: int  # failed calls that were given up on (transient or permanent)
    permanent: int
    avg_ms: float | None
    p50_ms: int | None
    p95_ms: int | None
    records_failing: int  # records of the connection waiting for a retry or for a person

    @property
    def success_rate(self) -> float | None:
        return ratio(self.ok, self.calls)

    @property
    def success_percent(self) -> float:
        # One decimal: 99.6% is not 100%.
        return (self.success_rate or 0.0) * 100


def _percentile(qs: QuerySet[CrmCall], n: int, q: float) -> int | None:
    """Nearest-rank percentile of latency_ms over `qs` (n rows): one ordered seek.

    Portable (SQLite has no percentile function) and exact.
    """
    if not n:
        return None
    rank = max(1, -(-int(q * 100) * n // 100))  # ceil(q * n), without float error
    return qs.order_by("latency_ms").values_list("latency_ms", flat=True)[rank - 1]


def crm_calls(*, start: datetime, end: datetime) -> list[CrmCallStats]:
    """Per CRM connection with calls in the period: HTTP calls made, answered OK, retried,
    given up on, latency. A call-level health figure; the KPI is crm_syncs().success_rate."""
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
            connection=connection, created_at__gte=start, created_at__lt=end
        ).order_by()
        row = calls.aggregate(
            calls=Count("id"),
            ok=Count("id", filter=Q(outcome=Outcome.OK)),
            retried=Count("id", filter=Q(outcome=Outcome.RETRY)),
            failed=Count("id", filter=Q(outcome__in=[Outcome.TRANSIENT, Outcome.PERMANENT])),
            permanent=Count("id", filter=Q(outcome=Outcome.PERMANENT)),
            avg_ms=Avg("latency_ms"),
        )
        if not row["calls"]:
            continue
        out.append(
            CrmCallStats(
                connection=connection.name,
                kind=connection.kind,
                p50_ms=_percentile(calls, row["calls"], 0.50),
                p95_ms=_percentile(calls, row["calls"], 0.95),
                records_failing=failing.get(connection.pk, 0),
                **row,
            )
        )
    return out


# --- Email activity -------------------------------------------------------------------------


def _sent(start: datetime, end: datetime, workflow: str | None) -> QuerySet[OutboundEmail]:
    # outbound_sent: an index range over the period's emails.
    emails = OutboundEmail.objects.filter(sent_at__gte=start, sent_at__lt=end).order_by()
    return emails if workflow is None else emails.filter(enrollment__lead__workflow__name=workflow)


def emails_sent(*, start: datetime, end: datetime, workflow: str | None = None) -> int:
    """Emails sent: follow-up emails whose sending succeeded in the period (sent_at).

    Pending, failed, cancelled and still-claimed emails do not count; an email
    re-sent by hand counts once, in the period of its last send.
    """
    return _sent(start, end, workflow).count()


def opens(*, start: datetime, end: datetime, workflow: str | None = None) -> int:
    """Opens: emails sent in the period that have been opened, at any time since.

    One per email however often its pixel loads; a click counts as an open
    (pixel blocked or not). So opens never exceed emails sent.
    """
    return _sent(start, end, workflow).filter(opened_at__isnull=False).count()


def clicks(*, start: datetime, end: datetime, workflow: str | None = None) -> int:
    """Clicks: emails sent in the period with at least one tracked link clicked, ever.

    One per email however many clicks.
    """
    return _sent(start, end, workflow).filter(clicked_at__isnull=False).count()


def _replies(start: datetime, end: datetime, workflow: str | None) -> QuerySet[AuditEvent]:
    return _events(REPLIED, start, end, workflow)


def _bounces(start: datetime, end: datetime, workflow: str | None) -> QuerySet[AuditEvent]:
    return _events(BOUNCED, start, end, workflow)


def _unsubscribes(start: datetime, end: datetime, workflow: str | None) -> QuerySet[AuditEvent]:
    return _events(CANCELLED, start, end, workflow).filter(details__reason=UNSUBSCRIBED)


def replies(*, start: datetime, end: datetime, workflow: str | None = None) -> int:
    """Replies: leads that replied in the period, each lead once.

    A reply is an email_replied event (the inbox matched a human answer to one
    of our emails; out-of-office answers are not recorded). A lead writing
    twice counts once; a reply counts in the period it arrived, whenever the
    lead was created.
    """
    return _distinct_leads(_replies(start, end, workflow))


def bounces(*, start: datetime, end: datetime, workflow: str | None = None) -> int:
    """Bounces: leads with a hard bounce (an email_bounced event) in the period, each once.

    Delayed or relayed delivery reports are not bounces (no event is recorded).
    """
    return _distinct_leads(_bounces(start, end, workflow))


def unsubscribes(*, start: datetime, end: datetime, workflow: str | None = None) -> int:
    """Unsubscribes: leads that opted out in the period, each once (an email_cancelled
    event with reason "unsubscribed", by link, List-Unsubscribe or reply)."""
    return _distinct_leads(_unsubscribes(start, end, workflow))


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
        return ratio(count, self.sent)

    @property
    def rates(self) -> dict[str, float | None]:
        return {
            name: self.rate(getattr(self, name))
            for name in ("opened", "clicked", "replied", "bounced", "unsubscribed")
        }


def _per_step(events: QuerySet[AuditEvent]) -> Counter[tuple[str, int]]:
    """{(sequence, step): leads}, each lead once, on the step its first event names.

    Replies and bounces name the email's step; an unsubscribe names only the
    sequence, so it goes to the last email that sequence sent the lead.
    """
    first: dict[str, dict[str, Any]] = {}
    rows = events.exclude(lead_public_id="").order_by("timestamp", "id")
    for lead, details in rows.values_list("lead_public_id", "details"):
        first.setdefault(lead, details or {})
    out: Counter[tuple[str, int]] = Counter()
    for lead, details in first.items():
        sequence, step = details.get("sequence"), details.get("sequence_step")
        if sequence and step is None:
            step = (
                OutboundEmail.objects.filter(
                    enrollment__lead__public_id=lead,
                    enrollment__sequence__slug=sequence,
                    sent_at__isnull=False,
                )
                .order_by("-sent_at")
                .values_list("step__position", flat=True)
                .first()
            )
        if sequence and step is not None:
            out[(sequence, int(step))] += 1
    return out


def email_steps(
    *, start: datetime, end: datetime, workflow: str | None = None
) -> list[EmailStepStats]:
    """Per sequence step: emails_sent, opens and clicks of the emails it sent in the
    period, and the replies, bounces and unsubscribes of the period put down to the
    step they answered. The rows add up to the period's totals."""
    sent = {
        (row["sequence"], row["position"]): row
        for row in _sent(start, end, workflow)
        .values(sequence=F("step__sequence__slug"), position=F("step__position"))
        .annotate(
            sent=Count("id"),
            opened=Count("id", filter=Q(opened_at__isnull=False)),
            clicked=Count("id", filter=Q(clicked_at__isnull=False)),
        )
    }
    replied = _per_step(_replies(start, end, workflow))
    bounced = _per_step(_bounces(start, end, workflow))
    unsubscribed = _per_step(_unsubscribes(start, end, workflow))
    keys = sorted({*sent, *replied, *bounced, *unsubscribed})
    return [
        EmailStepStats(
            sequence=sequence,
            position=position,
            sent=sent.get((sequence, position), {}).get("sent", 0),
            opened=sent.get((sequence, position), {}).get("opened", 0),
            clicked=sent.get((sequence, position), {}).get("clicked", 0),
            replied=replied[(sequence, position)],
            bounced=bounced[(sequence, position)],
            unsubscribed=unsubscribed[(sequence, position)],
        )
        for sequence, position in keys
    ]


# --- Errors -----------------------------------------------------------------------------------


def errors(*, start: datetime, end: datetime, workflow: str | None = None) -> int:
    """Errors: audit events of type "error" in the period (every stage: qualify and
    route, CRM sync, email sending, inbox polls), each event once."""
    return _event_total([ERROR], start, end, workflow)


def errors_by_hour(
    *, start: datetime, end: datetime, workflow: str | None = None
) -> Counter[datetime]:
    """errors() per UTC hour of the period: {start of hour: errors}."""
    counts = event_counts(
        event_types=[ERROR], since=start, until=end, by_day=False, workflow=workflow
    )
    out: Counter[datetime] = Counter()
    for (_etype, hour), n in counts.items():
        out[hour] += n
    return out


# --- Everything a summary shows -----------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """The headline figures of one period, as the overview cards and the reports show them."""

    leads: int
    qualified: int
    routed: int
    crm: CrmSyncs
    emails_sent: int
    opens: int
    clicks: int
    replies: int
    bounces: int
    unsubscribes: int
    errors: int

    @property
    def qualification_rate(self) -> float | None:
        return ratio(self.qualified, self.leads)


def summary(*, start: datetime, end: datetime, workflow: str | None = None) -> Summary:
    """Every headline figure of the period, each by its function above."""
    period: dict[str, Any] = {"start": start, "end": end, "workflow": workflow}
    return Summary(
        leads=leads_in(**period),
        qualified=qualified(**period),
        routed=routed(**period),
        crm=crm_syncs(**period),
        emails_sent=emails_sent(**period),
        opens=opens(**period),
        clicks=clicks(**period),
        replies=replies(**period),
        bounces=bounces(**period),
        unsubscribes=unsubscribes(**period),
        errors=errors(**period),
    )
