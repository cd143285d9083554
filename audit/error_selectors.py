"""Reads for the error pages and the error alerts: errors grouped by fingerprint.

Every query here filters on `fingerprint <> ''` explicitly, even beside an
equality on the fingerprint: that term is what lets the database pick the
partial indexes audit_error_ts and audit_fingerprint_ts (errors are a small
share of events), instead of the big timestamp index.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from django.db.models import Count, Max, OuterRef, Q, QuerySet, Subquery

from audit.fingerprints import normalize_message
from audit.models import AuditEvent
from audit.selectors import EVENTS
from core.paging import Page

FINGERPRINT_RE = re.compile(r"^[0-9a-f]{16}$")
GroupSort = Literal["count", "last_seen"]
GROUP_SORTS: dict[str, tuple[str, ...]] = {
    "count": ("-count", "-last_seen", "fingerprint"),
    "last_seen": ("-last_seen", "-count", "fingerprint"),
}


def _errors() -> QuerySet[AuditEvent]:
    return AuditEvent.objects.exclude(fingerprint="").order_by()


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

    @property
    def title(self) -> str:
        if self.error_type and self.message:
            return f"{self.error_type}: {self.message}"
        return self.error_type or self.message

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
) -> list[ErrorGroup]:
    """Error groups with occurrences in [since, until), by count or by last occurrence.

    `buckets` are bucket starts, oldest first (Period.buckets()); each group then
    carries its count per bucket, the last bucket ending at `until`. The counts
    are conditional aggregates of the same pass over the partial error index,
    so a sparkline costs no extra query.
    """
    if sort not in GROUP_SORTS:
        raise ValueError(f"sort must be one of {', '.join(GROUP_SORTS)}, not {sort!r}")
    in_period = _errors().filter(timestamp__gte=since, timestamp__lt=until)
    if workflow:
        in_period = in_period.filter(workflow=workflow)
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
            message=normalize_message(events[row["latest_id"]].error_message),
            latest_id=row["latest_id"],
            counts=[row[f"b{i}"] for i in range(len(buckets))],
        )
        for row in rows
    ]


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

    @property
    def title(self) -> str:
        message = normalize_message(self.latest.error_message)
        return f"{self.latest.error_type}: {message}" if message else self.latest.error_type


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
    )


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
