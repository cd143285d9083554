"""Reads for the error pages and the error alerts: errors grouped by fingerprint,
and what staff decided about each group (ErrorGroupState) as it stands now.

Every query here filters on `fingerprint <> ''` explicitly, even beside an
equality on the fingerprint: that term is what lets the database pick the
partial indexes audit_error_ts and audit_fingerprint_ts (errors are a small
share of events), instead of the big timestamp index.

A group's state is derived when read, never written by a read: resolved with
an occurrence after resolved_at is "regressed" (unresolved again), ignored
past its date or its number of occurrences is unresolved again. States are
few (one row per group someone acted on), so they are read whole and the
group queries filter on their fingerprints.
"""

import bisect
import hashlib
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from django.db.models import (
    Count,
    Exists,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from audit.fingerprints import group_title
from audit.models import AuditErrorHour, AuditErrorLead, AuditEvent, ErrorGroupState
from audit.selectors import EVENTS, ceil_hour, floor_hour, seal_head, unsealed_q
from core.cache import register_cacheable
from core.paging import Page

FINGERPRINT_RE = re.compile(r"^[0-9a-f]{16}$")
GroupSort = Literal["count", "last_seen"]
GROUP_SORTS: dict[str, tuple[str, ...]] = {
    "count": ("-count", "-last_seen", "fingerprint"),
    "last_seen": ("-last_seen", "-count", "fingerprint"),
}


StateFilter = Literal["unresolved", "resolved", "ignored", "all"]
STATE_FILTERS: tuple[str, ...] = ("unresolved", "resolved", "ignored", "all")
Status = ErrorGroupState.Status


def _errors() -> QuerySet[AuditEvent]:
    return AuditEvent.objects.exclude(fingerprint="").order_by()


# Cached inside ErrorGroup by the error list (core.cache rebuilds registered classes only).
@register_cacheable
@dataclass(frozen=True)
class GroupState:
    """A group's state now. `status` is what it counts as (regressed and expired
    ignores are unresolved); `stored` what was last decided."""

    status: str = Status.UNRESOLVED
    stored: str = Status.UNRESOLVED
    regressed: bool = False  # resolved, then it occurred again
    ignore_expired: bool = False  # ignored, and its date or count ran out
    resolved_at: datetime | None = None
    ignored_at: datetime | None = None
    ignore_until: datetime | None = None
    ignore_count: int | None = None
    occurrences_since_ignored: int = 0
    assignee_id: int | None = None
    assignee: str = ""  # the username
    updated_at: datetime | None = None


UNRESOLVED = GroupState()


def _state(
    row: ErrorGroupState, now: datetime, *, recurred: bool, since_ignored: int
) -> GroupState:
    status = row.status
    regressed = status == Status.RESOLVED and recurred
    expired = status == Status.IGNORED and (
        (row.ignore_until is not None and row.ignore_until <= now)
        or (row.ignore_count is not None and since_ignored >= row.ignore_count)
    )
    return GroupState(
        status=Status.UNRESOLVED if regressed or expired else status,
        stored=status,
        regressed=regressed,
        ignore_expired=expired,
        resolved_at=row.resolved_at,
        ignored_at=row.ignored_at,
        ignore_until=row.ignore_until,
        ignore_count=row.ignore_count,
        occurrences_since_ignored=since_ignored,
        assignee_id=row.assignee_id,
        assignee=row.assignee.get_username() if row.assignee else "",
        updated_at=row.updated_at,
    )


def group_states(
    *, fingerprints: Sequence[str] | None = None, now: datetime | None = None
) -> dict[str, GroupState]:
    """fingerprint -> GroupState for every group with a state row (or those of
    `fingerprints`); a group missing from the answer is unresolved and unassigned.

    Regression and an ignore's count are one seek each on audit_fingerprint_ts."""
    now = now or timezone.now()
    rows = ErrorGroupState.objects.select_related("assignee")
    if fingerprints is not None:
        rows = rows.filter(fingerprint__in=list(fingerprints))
    recurred = _errors().filter(
        fingerprint=OuterRef("fingerprint"), timestamp__gt=OuterRef("resolved_at")
    )
    since_ignored = (
        _errors()
        .filter(fingerprint=OuterRef("fingerprint"), timestamp__gt=OuterRef("ignored_at"))
        .values("fingerprint")
        .annotate(n=Count("id"))
        .values("n")
    )
    rows = rows.annotate(
        recurred=Exists(recurred),
        since_ignored=Coalesce(Subquery(since_ignored, output_field=IntegerField()), Value(0)),
    )
    return {
        row.fingerprint: _state(
            row, now, recurred=row.recurred, since_ignored=row.since_ignored or 0
        )
        for row in rows
    }


def group_state(fingerprint: str, *, now: datetime | None = None) -> GroupState:
    return group_states(fingerprints=[fingerprint], now=now).get(fingerprint, UNRESOLVED)


def states_digest(states: dict[str, GroupState]) -> str:
    """Changes whenever a state is written or a group regresses: part of the cache key
    of cached group lists, so a group just resolved leaves the unresolved list at once."""
    return hashlib.sha256(repr(sorted(states.items())).encode()).hexdigest()[:32]


def _filter_by_state(
    qs: QuerySet[AuditEvent],
    states: dict[str, GroupState],
    *,
    state: str,
    assignee_id: int | None,
) -> QuerySet[AuditEvent]:
    if state not in STATE_FILTERS:
        raise ValueError(f"state must be one of {', '.join(STATE_FILTERS)}, not {state!r}")
    if state == "unresolved":
        qs = qs.exclude(
            fingerprint__in=[fp for fp, s in states.items() if s.status != Status.UNRESOLVED]
        )
    elif state != "all":
        qs = qs.filter(fingerprint__in=[fp for fp, s in states.items() if s.status == state])
    if assignee_id is not None:
        qs = qs.filter(
            fingerprint__in=[fp for fp, s in states.items() if s.assignee_id == assignee_id]
        )
    return qs


@dataclass(frozen=True)
class ErrorGroup:
    fingerprint: str
    count: int  # occurrences in the period
    last_seen: datetime  # latest occurrence in the period
    first_seen: datetime  # earliest occurrence ever (is the group new?)
    leads: int  # distinct leads affected in the period
    error_type: str  # of the latest occurrence
    message: str  # normalized message of the latest occurrence
    latest_id: int
    # Occurrences per bucket (see error_groups' `buckets`), oldest first.
    counts: list[int] = field(default_factory=list)
    state: GroupState = UNRESOLVED
    title: str = ""  # audit.fingerprints.group_title of the latest occurrence

    def is_new(self, since: datetime) -> bool:
        """First seen inside the period: what a "new error group" alert fires on."""
        return self.first_seen >= since


def is_fingerprint(value: str) -> bool:
    return bool(FINGERPRINT_RE.match(value))


def error_groups(
    *,
    since: datetime,
    until: datetime,
    buckets: Sequence[datetime] = (),
    sort: GroupSort = "count",
    limit: int = 100,
    workflow: str | None = None,
    state: StateFilter = "all",
    assignee_id: int | None = None,
    states: dict[str, GroupState] | None = None,
) -> list[ErrorGroup]:
    """Error groups with occurrences in [since, until), by count or by last occurrence.

    `buckets` are bucket starts, oldest first (Period.buckets()); each group then
    carries its count per bucket, the last bucket ending at `until`.

    `state` keeps the groups that count as unresolved, resolved or ignored now
    (see GroupState); `assignee_id` those assigned to that user. `states` are
    group_states() when the caller has read them already.

    Counted from the error rollups (see _occurrences), so the cost follows the
    number of groups and hours, not of errors; with a `workflow`, which the
    rollups do not know, from the rows.
    """
    if sort not in GROUP_SORTS:
        raise ValueError(f"sort must be one of {', '.join(GROUP_SORTS)}, not {sort!r}")
    if states is None:
        states = group_states()
    if workflow:
        return _error_groups_from_rows(
            since=since,
            until=until,
            buckets=buckets,
            sort=sort,
            limit=limit,
            workflow=workflow,
            state=state,
            assignee_id=assignee_id,
            states=states,
        )
    kept = _kept_by_state(states, state=state, assignee_id=assignee_id)
    tail = _unsealed_errors()
    found = _occurrences(since, until, buckets=buckets, tail=tail)
    tallies = {fp: tally for fp, tally in found.items() if kept(fp)}
    order = {
        "count": lambda item: (-item[1].count, _newest_first(item[1]), item[0]),
        "last_seen": lambda item: (_newest_first(item[1]), -item[1].count, item[0]),
    }[sort]
    listed = sorted(tallies.items(), key=order)[:limit]
    fingerprints = [fp for fp, _tally in listed]
    leads = leads_hit(fingerprints, since=since, until=until, tail=tail)
    events = AuditEvent.objects.only("error_type", "error_message").in_bulk(
        [tally.latest_id for _fp, tally in listed]
    )
    out = []
    for fp, tally in listed:
        latest = events[tally.latest_id]
        out.append(
            ErrorGroup(
                fingerprint=fp,
                count=tally.count,
                last_seen=tally.last_seen,
                first_seen=first_seen(fp) or tally.last_seen,
                leads=leads.get(fp, 0),
                error_type=latest.error_type,
                message=latest.error_message,
                latest_id=tally.latest_id,
                counts=tally.counts,
                state=states.get(fp, UNRESOLVED),
                title=group_title(latest.error_type, latest.error_message),
            )
        )
    return out


def _newest_first(tally: "_Tally") -> tuple[float, int]:
    return (-tally.last_seen.timestamp(), -tally.latest_id)


def _kept_by_state(
    states: dict[str, GroupState], *, state: str, assignee_id: int | None
) -> Callable[[str], bool]:
    """The test _filter_by_state applies in SQL, for groups counted from the rollups."""
    if state not in STATE_FILTERS:
        raise ValueError(f"state must be one of {', '.join(STATE_FILTERS)}, not {state!r}")

    def kept(fp: str) -> bool:
        found = states.get(fp, UNRESOLVED)
        if state != "all" and found.status != state:
            return False
        return assignee_id is None or found.assignee_id == assignee_id

    return kept


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class _Tally:
    """One group's occurrences in a period: how many, the latest, and per bucket."""

    count: int = 0
    last_seen: datetime = EPOCH
    latest_id: int = 0
    counts: list[int] = field(default_factory=list)

    def add(self, at: datetime, n: int, last_seen: datetime, last_id: int, bucket: int) -> None:
        self.count += n
        if (last_seen, last_id) > (self.last_seen, self.latest_id):
            self.last_seen, self.latest_id = last_seen, last_id
        if self.counts:
            self.counts[bucket] += n


def _occurrences(
    since: datetime,
    until: datetime,
    *,
    buckets: Sequence[datetime] = (),
    fingerprints: Sequence[str] | None = None,
    tail: list[tuple[datetime, str, int, str]] | None = None,
) -> dict[str, _Tally]:
    """Per group with occurrences in [since, until): a _Tally, with counts per bucket.

    Whole hours come from AuditErrorHour (sealed errors), the partial hours at the
    edges from the rows (partial index audit_error_ts), and errors no seal has
    counted yet from the tail of the id sequence, as audit.selectors.statistics does
    (`tail`: _unsealed_errors() when the caller has read it).
    """
    out: dict[str, _Tally] = {}
    if since >= until:
        return out
    # Before the rollups, as statistics() reads its seal head.
    tail = _unsealed_errors() if tail is None else tail

    def tally(fp: str) -> _Tally:
        if fp not in out:
            out[fp] = _Tally(counts=[0] * len(buckets))
        return out[fp]

    def bucket(at: datetime) -> int:
        return max(0, bisect.bisect_right(buckets, at) - 1) if buckets else 0

    h0 = ceil_hour(since)
    h1 = ceil_hour(until) if until > timezone.now() else floor_hour(until)
    raw = [(since, until)] if h0 >= h1 else [(since, h0), (h1, until)]
    if h0 < h1:
        hours = AuditErrorHour.objects.filter(hour__gte=h0, hour__lt=h1)
        if fingerprints is not None:
            hours = hours.filter(fingerprint__in=list(fingerprints))
        columns = ("hour", "fingerprint", "count", "last_seen", "last_id")
        for hour, fp, n, last_seen, last_id in hours.values_list(*columns):
            tally(fp).add(hour, n, last_seen, last_id, bucket(hour))
    for lo, hi in raw:
        if lo >= hi:
            continue
        rows = _errors().filter(timestamp__gte=lo, timestamp__lt=hi)
        if fingerprints is not None:
            rows = rows.filter(fingerprint__in=list(fingerprints))
        for ts, fp, event_id in rows.values_list("timestamp", "fingerprint", "id"):
            tally(fp).add(ts, 1, ts, event_id, bucket(ts))
    if h0 < h1:
        end = min(h1, until)
        wanted = None if fingerprints is None else set(fingerprints)
        for ts, fp, event_id, _lead in tail:
            if h0 <= ts < end and (wanted is None or fp in wanted):
                tally(fp).add(ts, 1, ts, event_id, bucket(ts))
    return out


def _unsealed_errors() -> list[tuple[datetime, str, int, str]]:
    """(timestamp, fingerprint, id, lead) of the errors no seal has counted yet: found
    by id alone (a handful past the seal), the error test done here."""
    rows = AuditEvent.objects.filter(unsealed_q(seal_head())).order_by()
    return [
        (ts, fp, event_id, lead)
        for ts, fp, event_id, lead in rows.values_list(
            "timestamp", "fingerprint", "id", "lead_public_id"
        )
        if fp
    ]


# Up to this long ago, a period's end is "now" for leads_hit: the errors after it are few.
RECENT_END = timedelta(hours=1)


def _ended_long_ago(until: datetime) -> bool:
    """Too long ago for the last-seen table: leads are counted from the group's rows."""
    return until < timezone.now() - RECENT_END


def leads_hit(
    fingerprints: Sequence[str],
    *,
    since: datetime,
    until: datetime,
    tail: list[tuple[datetime, str, int, str]] | None = None,
) -> dict[str, int]:
    """Per group, the distinct leads it hit in [since, until).

    For a period ending in the last hour (every preset): the leads whose last
    occurrence (AuditErrorLead) is at or after `since`, corrected for the few
    errors after `until` and those no seal has counted yet. For an older end, a
    count of distinct leads over the group's errors in the period. `tail`:
    _unsealed_errors() when the caller has read it.
    """
    fingerprints = list(fingerprints)
    if not fingerprints:
        return {}
    if _ended_long_ago(until):
        rows = (
            _errors()
            .filter(fingerprint__in=fingerprints, timestamp__gte=since, timestamp__lt=until)
            .exclude(lead_public_id="")
            .values("fingerprint")
            .annotate(n=Count("lead_public_id", distinct=True))
        )
        return {row["fingerprint"]: row["n"] for row in rows}
    stored = AuditErrorLead.objects.filter(fingerprint__in=fingerprints, last_seen__gte=since)
    counts: Counter[str] = Counter(
        dict(stored.values_list("fingerprint").annotate(n=Count("id")).order_by())
    )
    # Leads whose last stored occurrence is after the period: counted above only
    # if they also occurred inside it.
    for fp, lead in stored.filter(last_seen__gte=until).values_list(
        "fingerprint", "lead_public_id"
    ):
        if not _errors_of_lead(fp, lead, since, until):
            counts[fp] -= 1
    # Leads hit in the period by errors no seal has counted yet.
    unsealed: dict[str, set[str]] = {}
    wanted = set(fingerprints)
    for ts, fp, _id, lead in _unsealed_errors() if tail is None else tail:
        if lead and fp in wanted and since <= ts < until:
            unsealed.setdefault(fp, set()).add(lead)
    for fp, leads in unsealed.items():
        known = set(
            stored.filter(fingerprint=fp, lead_public_id__in=leads).values_list(
                "lead_public_id", flat=True
            )
        )
        counts[fp] += len(leads - known)
    return {fp: counts[fp] for fp in fingerprints}


def _errors_of_lead(fp: str, lead: str, since: datetime, until: datetime) -> int:
    # The lead's events through audit_lead_ts, the group tested on the few found.
    rows = AuditEvent.objects.filter(
        lead_public_id=lead, timestamp__gte=since, timestamp__lt=until
    ).values_list("fingerprint", flat=True)
    return sum(1 for found in rows if found == fp)


def _error_groups_from_rows(
    *,
    since: datetime,
    until: datetime,
    buckets: Sequence[datetime],
    sort: GroupSort,
    limit: int,
    workflow: str,
    state: StateFilter,
    assignee_id: int | None,
    states: dict[str, GroupState],
) -> list[ErrorGroup]:
    """error_groups() of one workflow, counted from its error rows."""
    in_period = _errors().filter(timestamp__gte=since, timestamp__lt=until, workflow=workflow)
    in_period = _filter_by_state(in_period, states, state=state, assignee_id=assignee_id)
    edges = [*buckets[1:], until] if buckets else []
    per_bucket = {
        f"b{i}": Count("id", filter=Q(timestamp__gte=lo, timestamp__lt=hi))
        for i, (lo, hi) in enumerate(zip(buckets, edges, strict=True))
    }
    # Correlated subqueries, evaluated once per group: each is one seek on
    # audit_fingerprint_ts rather than a scan of the group's history.
    latest = _errors().filter(
        fingerprint=OuterRef("fingerprint"),
        timestamp__gte=since,
        timestamp__lt=until,
        workflow=workflow,
    )
    earliest = _errors().filter(fingerprint=OuterRef("fingerprint")).order_by("timestamp")
    # Row keys include one count per bucket (b0, b1, ...), known only at run time.
    rows: list[Any] = list(
        in_period.values("fingerprint")
        .annotate(
            count=Count("id"),
            last_seen=Max("timestamp"),
            leads=Count("lead_public_id", distinct=True, filter=~Q(lead_public_id="")),
            first_seen=Subquery(earliest.values("timestamp")[:1]),
            latest_id=Subquery(latest.order_by("-timestamp", "-id").values("id")[:1]),
            **per_bucket,
        )
        .order_by(*GROUP_SORTS[sort])[:limit]
    )
    events = AuditEvent.objects.only("error_type", "error_message").in_bulk(
        [row["latest_id"] for row in rows]
    )
    return [
        ErrorGroup(
            fingerprint=row["fingerprint"],
            count=row["count"],
            last_seen=row["last_seen"],
            first_seen=row["first_seen"],
            leads=row["leads"],
            error_type=events[row["latest_id"]].error_type,
            message=events[row["latest_id"]].error_message,
            latest_id=row["latest_id"],
            counts=[row[f"b{i}"] for i in range(len(buckets))],
            state=states.get(row["fingerprint"], UNRESOLVED),
            title=group_title(
                events[row["latest_id"]].error_type, events[row["latest_id"]].error_message
            ),
        )
        for row in rows
    ]


def error_group_count(
    *,
    since: datetime,
    until: datetime,
    state: StateFilter = "all",
    assignee_id: int | None = None,
    states: dict[str, GroupState] | None = None,
) -> int:
    """How many groups error_groups() would list without its limit."""
    kept = _kept_by_state(
        group_states() if states is None else states, state=state, assignee_id=assignee_id
    )
    return sum(1 for fp in _occurrences(since, until) if kept(fp))


def occurrence_counts(
    *, fingerprint: str, buckets: Sequence[datetime], until: datetime
) -> list[int]:
    """One group's occurrences per bucket (bucket starts, oldest first; the last ends at
    `until`), from the error rollups."""
    if not buckets:
        return []
    found = _occurrences(buckets[0], until, buckets=buckets, fingerprints=[fingerprint])
    return found[fingerprint].counts if fingerprint in found else [0] * len(buckets)


def first_seen(fingerprint: str) -> datetime | None:
    """When this error group first occurred, or None for a fingerprint never recorded."""
    return (
        _errors()
        .filter(fingerprint=fingerprint)
        .order_by("timestamp")
        .values_list("timestamp", flat=True)
        .first()
    )


@dataclass(frozen=True)
class GroupSummary:
    fingerprint: str
    first_seen: datetime
    last_seen: datetime  # ever
    count: int  # in the period
    leads: int  # in the period
    latest: AuditEvent  # latest occurrence in the period, or ever when none is
    total: int = 0  # occurrences ever
    state: GroupState = UNRESOLVED

    @property
    def title(self) -> str:
        return group_title(self.latest.error_type, self.latest.error_message)


def error_group(*, fingerprint: str, since: datetime, until: datetime) -> GroupSummary | None:
    """One group seen over the period; None if the fingerprint was never recorded."""
    if not is_fingerprint(fingerprint):
        return None
    group = _errors().filter(fingerprint=fingerprint)
    latest_ever = group.order_by("-timestamp", "-id").first()
    if latest_ever is None:
        return None
    tail = _unsealed_errors()
    found = _occurrences(since, until, fingerprints=[fingerprint], tail=tail)
    tally = found.get(fingerprint, _Tally())
    latest = AuditEvent.objects.filter(pk=tally.latest_id).first() if tally.count else None
    sealed = AuditErrorHour.objects.filter(fingerprint=fingerprint).aggregate(n=Sum("count"))
    unsealed = sum(1 for _ts, fp, _id, _lead in tail if fp == fingerprint)
    return GroupSummary(
        fingerprint=fingerprint,
        first_seen=first_seen(fingerprint) or latest_ever.timestamp,
        last_seen=latest_ever.timestamp,
        count=tally.count,
        leads=leads_hit([fingerprint], since=since, until=until, tail=tail)[fingerprint],
        latest=latest or latest_ever,
        total=(sealed["n"] or 0) + unsealed,
        state=group_state(fingerprint),
    )


def latest_title(fingerprint: str) -> str:
    """The group's title from its latest occurrence ('' for an unknown fingerprint)."""
    latest = (
        _errors()
        .filter(fingerprint=fingerprint)
        .order_by("-timestamp", "-id")
        .values("error_type", "error_message")
        .first()
    )
    return group_title(latest["error_type"], latest["error_message"]) if latest else ""


def group_exists(fingerprint: str) -> bool:
    """Whether any error was ever recorded under this fingerprint."""
    return is_fingerprint(fingerprint) and _errors().filter(fingerprint=fingerprint).exists()


def regressed_groups(*, now: datetime | None = None) -> list[tuple[str, GroupState, datetime]]:
    """Resolved groups that occurred again: (fingerprint, state, first occurrence after
    resolved_at), oldest regression first (what the error_regressed alert fires on)."""
    now = now or timezone.now()
    rows = ErrorGroupState.objects.filter(status=Status.RESOLVED).select_related("assignee")
    first_again = (
        _errors()
        .filter(
            fingerprint=OuterRef("fingerprint"),
            timestamp__gt=OuterRef("resolved_at"),
            timestamp__lte=now,
        )
        .order_by("timestamp")
        .values("timestamp")[:1]
    )
    found = []
    for row in rows.annotate(again=Subquery(first_again)).filter(again__isnull=False):
        state = _state(row, now, recurred=True, since_ignored=0)
        found.append((row.fingerprint, state, row.again))
    return sorted(found, key=lambda item: (item[2], item[0]))


def group_occurrences(
    *, fingerprint: str, since: datetime, until: datetime, cursor: str | None = None, size: int = 50
) -> Page[AuditEvent]:
    """A page of the occurrences of one group in [since, until), newest first, after
    `cursor` (core.paging; a cursor this list did not write raises CursorError)."""
    qs = _errors().filter(fingerprint=fingerprint, timestamp__gte=since, timestamp__lt=until)
    return EVENTS.page(qs.defer("traceback", "details", "mac"), size=size, cursor=cursor)


def group_leads(
    *, fingerprint: str, since: datetime, until: datetime, limit: int = 50
) -> list[dict[str, Any]]:
    """The leads a group hit in the period, the most recently hit first:
    [{"lead_public_id", "count", "last_seen"}] (count and last_seen in the period).

    The candidates are the leads last hit after `since` (AuditErrorLead, newest
    first) and those of errors not sealed yet; each one's occurrences in the period
    are then read through its own events (audit_lead_ts), never the group's.
    """
    if _ended_long_ago(until):
        rows = (
            _errors()
            .filter(fingerprint=fingerprint, timestamp__gte=since, timestamp__lt=until)
            .exclude(lead_public_id="")
            .values("lead_public_id")
            .annotate(count=Count("id"), last_seen=Max("timestamp"))
            .order_by("-last_seen", "lead_public_id")[:limit]
        )
        return [dict(row) for row in rows]
    late = AuditErrorLead.objects.filter(fingerprint=fingerprint, last_seen__gte=until).count()
    candidates = list(
        AuditErrorLead.objects.filter(fingerprint=fingerprint, last_seen__gte=since)
        .order_by("-last_seen")
        .values_list("lead_public_id", flat=True)[: limit + late]
    )
    candidates += [
        lead
        for ts, fp, _id, lead in _unsealed_errors()
        if fp == fingerprint and lead and since <= ts < until
    ]
    found: dict[str, dict[str, Any]] = {}
    events = AuditEvent.objects.filter(
        lead_public_id__in=set(candidates), timestamp__gte=since, timestamp__lt=until
    ).values_list("lead_public_id", "fingerprint", "timestamp")
    for lead, fp, ts in events:
        if fp != fingerprint:
            continue
        row = found.setdefault(lead, {"lead_public_id": lead, "count": 0, "last_seen": ts})
        row["count"] += 1
        row["last_seen"] = max(row["last_seen"], ts)
    ordered = sorted(
        found.values(), key=lambda r: (-r["last_seen"].timestamp(), r["lead_public_id"])
    )
    return ordered[:limit]
