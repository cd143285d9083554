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

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
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
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from audit.fingerprints import group_title
from audit.models import AuditEvent, ErrorGroupState
from audit.selectors import EVENTS
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
    carries its count per bucket, the last bucket ending at `until`. The counts
    are conditional aggregates of the same pass over the partial error index,
    so a sparkline costs no extra query.

    `state` keeps the groups that count as unresolved, resolved or ignored now
    (see GroupState); `assignee_id` those assigned to that user. `states` are
    group_states() when the caller has read them already.
    """
    if sort not in GROUP_SORTS:
        raise ValueError(f"sort must be one of {', '.join(GROUP_SORTS)}, not {sort!r}")
    if states is None:
        states = group_states()
    in_period = _errors().filter(timestamp__gte=since, timestamp__lt=until)
    if workflow:
        in_period = in_period.filter(workflow=workflow)
    in_period = _filter_by_state(in_period, states, state=state, assignee_id=assignee_id)
    edges = [*buckets[1:], until] if buckets else []
    per_bucket = {
        f"b{i}": Count("id", filter=Q(timestamp__gte=lo, timestamp__lt=hi))
        for i, (lo, hi) in enumerate(zip(buckets, edges, strict=True))
    }
    # Correlated subqueries, evaluated once per group: each is one seek on
    # audit_fingerprint_ts rather than a scan of the group's history.
    latest = _errors().filter(
        fingerprint=OuterRef("fingerprint"), timestamp__gte=since, timestamp__lt=until
    )
    if workflow:
        latest = latest.filter(workflow=workflow)
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
    in_period = _errors().filter(timestamp__gte=since, timestamp__lt=until)
    in_period = _filter_by_state(
        in_period,
        group_states() if states is None else states,
        state=state,
        assignee_id=assignee_id,
    )
    return in_period.values("fingerprint").distinct().count()


def occurrence_counts(
    *, fingerprint: str, buckets: Sequence[datetime], until: datetime
) -> list[int]:
    """One group's occurrences per bucket (bucket starts, oldest first; the last ends at
    `until`), in one pass over its rows in the partial fingerprint index."""
    if not buckets:
        return []
    edges = [*buckets[1:], until]
    totals = (
        _errors()
        .filter(fingerprint=fingerprint, timestamp__gte=buckets[0], timestamp__lt=until)
        .aggregate(
            **{
                f"b{i}": Count("id", filter=Q(timestamp__gte=lo, timestamp__lt=hi))
                for i, (lo, hi) in enumerate(zip(buckets, edges, strict=True))
            }
        )
    )
    return [totals[f"b{i}"] for i in range(len(buckets))]


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
    in_period = group.filter(timestamp__gte=since, timestamp__lt=until)
    latest = in_period.order_by("-timestamp", "-id").first() or latest_ever
    totals = in_period.aggregate(
        count=Count("id"),
        leads=Count("lead_public_id", distinct=True, filter=~Q(lead_public_id="")),
    )
    return GroupSummary(
        fingerprint=fingerprint,
        first_seen=first_seen(fingerprint) or latest_ever.timestamp,
        last_seen=latest_ever.timestamp,
        count=totals["count"],
        leads=totals["leads"],
        latest=latest,
        total=group.count(),
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
    """The leads a group hit in the period, most occurrences first:
    [{"lead_public_id", "count", "last_seen"}]."""
    rows = (
        _errors()
        .filter(fingerprint=fingerprint, timestamp__gte=since, timestamp__lt=until)
        .exclude(lead_public_id="")
        .values("lead_public_id")
        .annotate(count=Count("id"), last_seen=Max("timestamp"))
        .order_by("-count", "-last_seen", "lead_public_id")[:limit]
    )
    return [dict(row) for row in rows]
