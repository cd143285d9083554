"""Tamper evidence: seals over committed events, and their verification.

Design (docs/audit-integrity.md has the full argument):

* Each event carries a MAC of its content under a key that is not in the
  database, written with the insert itself: no lock, no chain head, so writers
  never wait for each other.
* A sealer (``seal_audit``, run every minute) later covers committed events in
  blocks. A seal lists the ids it covers and the digest of their MACs, and
  chains to the previous seal through a MAC. That catches deleted events,
  which a per-event MAC cannot see.
* PostgreSQL hands out ids before commit, so a seal may see id 101 committed
  while 100 is still in flight. Such ids are kept as open gaps; when they
  commit they go into the next seal. A gap older than
  AUDIT_SEAL_GRACE_SECONDS is closed (a rolled-back transaction); an event
  that turns up in it afterwards was inserted out of band.
"""

import bisect
import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from audit.anchors import after_seal, check_anchors
from audit.models import (
    AuditErrorHour,
    AuditErrorLead,
    AuditEvent,
    AuditLeadDay,
    AuditPrune,
    AuditRollup,
    AuditRollupDay,
    AuditSeal,
)
from audit.signing import GENESIS, format_timestamp, mac_of, record_mac

Range = list[int]  # [first_id, last_id], inclusive


def compress(ids: Sequence[int]) -> list[Range]:
    """Sorted ids to inclusive [first, last] runs."""
    ranges: list[Range] = []
    for i in ids:
        if ranges and i == ranges[-1][1] + 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return ranges


def ranges_q(ranges: Iterable[Sequence[int]]) -> Q:
    q = Q(pk__in=[])
    for lo, hi, *_ in ranges:
        q |= Q(id__range=(lo, hi)) if lo != hi else Q(id=lo)
    return q


def events_digest(pairs: Iterable[tuple[int, str]]) -> str:
    h = hashlib.sha256()
    for event_id, mac in pairs:
        h.update(f"{event_id}:{mac}\n".encode())
    return h.hexdigest()


def seal_fields(seal: AuditSeal) -> dict:
    return {
        "number": seal.number,
        "created_at": format_timestamp(seal.created_at),
        "high_water": seal.high_water,
        "ranges": seal.ranges,
        "open_gaps": seal.open_gaps,
        "event_count": seal.event_count,
        "events_digest": seal.events_digest,
        "prev_digest": seal.prev_digest,
    }


def prune_fields(prune: AuditPrune) -> dict:
    return {
        "run": str(prune.run),
        "created_at": format_timestamp(prune.created_at),
        "before": format_timestamp(prune.before),
        "actor": prune.actor,
        "seal_number": prune.seal_number,
        "emptied": prune.emptied,
        "pruned": prune.pruned,
        "deleted_count": prune.deleted_count,
        "archive_path": prune.archive_path,
        "archive_sha256": prune.archive_sha256,
    }


# --- sealing ------------------------------------------------------------------------------

# What the sealer and retention read of each event: the seal's digest (id, mac) and
# every rollup's key. audit.retention reads the same columns.
SEAL_COLUMNS = (
    "id",
    "mac",
    "timestamp",
    "event_type",
    "workflow",
    "lead_public_id",
    "fingerprint",
)


def seal_pending(*, now: datetime | None = None, batch: int | None = None) -> AuditSeal | None:
    """Seal the next block of committed, unsealed events; None when there is nothing to seal.

    Two sealers racing both build seal N+1; the unique seal number lets one
    commit and rolls the other back, so the chain never forks.
    """
    now = now or timezone.now()
    batch = batch or settings.AUDIT_SEAL_BATCH
    grace = timedelta(seconds=settings.AUDIT_SEAL_GRACE_SECONDS)
    head = AuditSeal.objects.order_by("-number").only("high_water", "open_gaps").first()
    # Look before taking the write lock: a sealer with nothing to do must not
    # queue behind (or hold up) the writers.
    high = head.high_water if head else 0
    if not (head and head.open_gaps) and not AuditEvent.objects.filter(id__gt=high).exists():
        return None
    try:
        with transaction.atomic():
            last = AuditSeal.objects.order_by("-number").first()
            high = last.high_water if last else 0
            old_gaps = last.open_gaps if last else []
            late: list[tuple] = []
            if old_gaps:
                late = list(
                    AuditEvent.objects.filter(ranges_q(old_gaps))
                    .order_by("id")
                    .values_list(*SEAL_COLUMNS)
                )
            new = list(
                AuditEvent.objects.filter(id__gt=high)
                .order_by("id")
                .values_list(*SEAL_COLUMNS)[:batch]
            )
            if not late and not new:
                return None
            now_text = format_timestamp(now)
            gaps: list[list] = []
            late_ids = [row[0] for row in late]
            for lo, hi, seen in old_gaps:
                if datetime.fromisoformat(seen.replace("Z", "+00:00")) < now - grace:
                    continue  # a rolled-back id; it will never commit
                start = lo
                for i in late_ids[
                    bisect.bisect_left(late_ids, lo) : bisect.bisect_right(late_ids, hi)
                ]:
                    if i > start:
                        gaps.append([start, i - 1, seen])
                    start = i + 1
                if start <= hi:
                    gaps.append([start, hi, seen])
            expected = high + 1
            for row in new:
                if row[0] > expected:
                    gaps.append([expected, row[0] - 1, now_text])
                expected = row[0] + 1
            rows = sorted(late + new)
            seal = AuditSeal(
                number=(last.number + 1) if last else 1,
                created_at=now,
                high_water=new[-1][0] if new else high,
                ranges=compress([row[0] for row in rows]),
                open_gaps=gaps,
                event_count=len(rows),
                events_digest=events_digest((row[0], row[1]) for row in rows),
                prev_digest=last.digest if last else GENESIS,
            )
            seal.digest = record_mac(seal_fields(seal))
            seal.save()
            _add_rollups(rows)
            # Out of the database only once the seal is in it for good.
            transaction.on_commit(after_seal)
    except IntegrityError:
        return None
    return seal


def seal_all(*, now: datetime | None = None) -> list[AuditSeal]:
    seals = []
    while (seal := seal_pending(now=now)) is not None:
        seals.append(seal)
    return seals


def _hour(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _add_rollups(rows: Sequence[tuple], sign: int = 1) -> None:
    """Add (or with sign=-1 remove) sealed events to the hourly and lead-day rollups.

    Only the sealer calls this, and the seal covers each event exactly once,
    so every event is counted once however late it commits.
    """
    counts = Counter((_hour(ts), etype, wf) for _id, _mac, ts, etype, wf, *_rest in rows)
    daily: Counter = Counter()
    for (h, etype, wf), n in counts.items():
        daily[(h.date(), etype, wf)] += n
    ops = connection.ops
    rollup = AuditRollup._meta.db_table
    rollup_day = AuditRollupDay._meta.db_table
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {rollup_day} (day, event_type, workflow, count) "
            "VALUES (%s, %s, %s, %s) "
            f"ON CONFLICT (day, event_type, workflow) "
            f"DO UPDATE SET count = {rollup_day}.count + excluded.count",
            [
                (ops.adapt_datefield_value(d), etype, wf, sign * n)
                for (d, etype, wf), n in daily.items()
            ],
        )
        cursor.executemany(
            f"INSERT INTO {rollup} (hour, day, event_type, workflow, count) "
            "VALUES (%s, %s, %s, %s, %s) "
            f"ON CONFLICT (hour, event_type, workflow) "
            f"DO UPDATE SET count = {rollup}.count + excluded.count",
            [
                (
                    ops.adapt_datetimefield_value(h),
                    ops.adapt_datefield_value(h.date()),
                    etype,
                    wf,
                    sign * n,
                )
                for (h, etype, wf), n in counts.items()
            ],
        )
        if sign > 0:
            lead_days = {
                (ts.astimezone(UTC).date(), wf, lead)
                for _id, _mac, ts, _etype, wf, lead, _fp in rows
                if lead
            }
            cursor.executemany(
                f"INSERT INTO {AuditLeadDay._meta.db_table} (day, workflow, lead_public_id) "
                "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                [(ops.adapt_datefield_value(d), wf, lead) for d, wf, lead in lead_days],
            )
        else:
            cursor.execute(f"DELETE FROM {rollup} WHERE count <= 0")
            cursor.execute(f"DELETE FROM {rollup_day} WHERE count <= 0")
    add_error_rollups(rows, sign=sign)


def add_error_rollups(rows: Iterable[Sequence[Any]], sign: int = 1) -> None:
    """Add (or remove) the error events among `rows` (SEAL_COLUMNS) to the error
    group rollups: occurrences per group and hour, and per group and lead.

    Adding keeps each hour's and each lead's latest occurrence. Removing is what
    retention does, oldest events first, so a latest occurrence never needs
    recomputing: a row whose events are all gone is deleted instead.
    """
    hours: dict[tuple[datetime, str], list] = {}
    leads: dict[tuple[str, str], list] = {}

    def add(table: dict[Any, list], key: Any, ts: datetime, event_id: int) -> None:
        seen = table.get(key)
        if seen is None:
            table[key] = [1, ts, event_id]
        else:
            seen[0] += 1
            if (ts, event_id) > (seen[1], seen[2]):
                seen[1], seen[2] = ts, event_id

    for event_id, _mac, ts, _etype, _wf, lead, fp in rows:
        if fp:
            add(hours, (_hour(ts), fp), ts, event_id)
            if lead:
                add(leads, (fp, lead), ts, event_id)
    if not hours:
        return
    ops = connection.ops
    hour_table = AuditErrorHour._meta.db_table
    lead_table = AuditErrorLead._meta.db_table

    # The stored latest occurrence, or the one just added when it is later.
    newer = (
        f"(excluded.last_seen > {hour_table}.last_seen OR (excluded.last_seen = "
        f"{hour_table}.last_seen AND excluded.last_id > {hour_table}.last_id))"
    )
    with connection.cursor() as cursor:
        if sign > 0:
            cursor.executemany(
                f"INSERT INTO {hour_table} (hour, fingerprint, count, last_seen, last_id) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (hour, fingerprint) DO UPDATE SET "
                f"count = {hour_table}.count + excluded.count, "
                f"last_seen = CASE WHEN {newer} THEN excluded.last_seen "
                f"ELSE {hour_table}.last_seen END, "
                f"last_id = CASE WHEN {newer} THEN excluded.last_id ELSE {hour_table}.last_id END",
                [
                    (ops.adapt_datetimefield_value(h), fp, n, ops.adapt_datetimefield_value(ts), i)
                    for (h, fp), (n, ts, i) in hours.items()
                ],
            )
            cursor.executemany(
                f"INSERT INTO {lead_table} (fingerprint, lead_public_id, count, last_seen) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (fingerprint, lead_public_id) DO UPDATE SET "
                f"count = {lead_table}.count + excluded.count, "
                f"last_seen = CASE WHEN excluded.last_seen > {lead_table}.last_seen "
                f"THEN excluded.last_seen ELSE {lead_table}.last_seen END",
                [
                    (fp, lead, n, ops.adapt_datetimefield_value(ts))
                    for (fp, lead), (n, ts, _i) in leads.items()
                ],
            )
        else:
            hour_keys = [(ops.adapt_datetimefield_value(h), fp) for h, fp in hours]
            cursor.executemany(
                f"UPDATE {hour_table} SET count = count - %s WHERE hour = %s AND fingerprint = %s",
                [(n, *key) for key, (n, *_) in zip(hour_keys, hours.values(), strict=True)],
            )
            cursor.executemany(
                f"DELETE FROM {hour_table} WHERE hour = %s AND fingerprint = %s AND count <= 0",
                hour_keys,
            )
            cursor.executemany(
                f"UPDATE {lead_table} SET count = count - %s "
                "WHERE fingerprint = %s AND lead_public_id = %s",
                [(n, fp, lead) for (fp, lead), (n, *_) in leads.items()],
            )
            cursor.executemany(
                f"DELETE FROM {lead_table} "
                "WHERE fingerprint = %s AND lead_public_id = %s AND count <= 0",
                list(leads),
            )


def rebuild_error_rollups(*, batch: int = 5000) -> int:
    """Recount the error group rollups from the sealed error events; the number read.

    For a change of fingerprints (a regrouping migration) or a first fill: the
    sealer keeps them from then on. Reads errors by id through the partial index.
    """
    AuditErrorHour.objects.all().delete()
    AuditErrorLead.objects.all().delete()
    head = AuditSeal.objects.order_by("-number").only("high_water", "open_gaps").first()
    if head is None:
        return 0
    sealed = AuditEvent.objects.exclude(fingerprint="").filter(id__lte=head.high_water)
    for lo, hi, _seen in head.open_gaps:
        sealed = sealed.exclude(id__range=(lo, hi))
    done, last = 0, 0
    while True:
        rows = list(sealed.filter(id__gt=last).order_by("id").values_list(*SEAL_COLUMNS)[:batch])
        if not rows:
            return done
        add_error_rollups(rows)
        done += len(rows)
        last = rows[-1][0]


def remove_from_rollups(rows: Sequence[tuple]) -> None:
    _add_rollups(rows, sign=-1)


# --- verification -------------------------------------------------------------------------


@dataclass(order=True)
class Problem:
    event_id: int
    message: str = field(compare=False)


@dataclass
class Report:
    events_checked: int = 0
    seals_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    unsealed: int = 0
    unsealed_first_id: int | None = None
    unsealed_oldest: datetime | None = None
    open_gaps: int = 0
    head_digest: str = GENESIS
    anchors_checked: int = 0
    # Worth a look, not a failure: unanchored seals, no anchor log yet.
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def first_problem(self) -> Problem | None:
        return min(self.problems) if self.problems else None


class _Intervals:
    """Sorted, non-overlapping id ranges with a membership test."""

    def __init__(self, ranges: Iterable[Sequence[int]]) -> None:
        merged: list[list[int]] = []
        for lo, hi, *_ in sorted(tuple(r) for r in ranges):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self._starts = [r[0] for r in merged]
        self._ranges = merged

    def __contains__(self, i: int) -> bool:
        k = bisect.bisect_right(self._starts, i) - 1
        return k >= 0 and self._ranges[k][1] >= i


def verify(
    *,
    chunk: int = 5000,
    progress: Callable[[int], None] | None = None,
    anchors: bool = True,
) -> Report:
    """Check every event's MAC, every seal, the chain between seals, and (unless
    anchors=False) the seals against the anchor log kept outside the database."""
    report = Report()
    digests: dict[int, str] = {}
    pruned: dict[int, dict[int, str]] = {}
    emptied: set[int] = set()
    for prune in AuditPrune.objects.order_by("id").iterator():
        if record_mac(prune_fields(prune)) != prune.digest:
            report.problems.append(
                Problem(0, f"prune record {prune.pk} (seal {prune.seal_number}) was modified")
            )
            continue
        if prune.emptied:
            emptied.add(prune.seal_number)
        pruned.setdefault(prune.seal_number, {}).update({int(i): mac for i, mac in prune.pruned})

    sealed_ranges: list[Sequence[int]] = []
    emptied_ranges: list[Sequence[int]] = []
    prev_digest, expected_number, last = GENESIS, 1, None
    for seal in AuditSeal.objects.order_by("number").iterator():
        report.seals_checked += 1
        digests[seal.number] = seal.digest
        first_id = seal.ranges[0][0] if seal.ranges else 0
        if seal.number != expected_number:
            report.problems.append(
                Problem(first_id, f"seal chain broken: seal {expected_number} is missing")
            )
        if seal.prev_digest != prev_digest:
            report.problems.append(
                Problem(first_id, f"seal chain broken at seal {seal.number}: wrong previous digest")
            )
        if record_mac(seal_fields(seal)) != seal.digest:
            report.problems.append(Problem(first_id, f"seal {seal.number} was modified"))
        prev_digest, expected_number, last = seal.digest, seal.number + 1, seal
        if seal.number in emptied:
            emptied_ranges.extend(seal.ranges)
            continue
        sealed_ranges.extend(seal.ranges)
        _check_seal_events(seal, pruned.get(seal.number, {}), report)
    report.head_digest = prev_digest
    if last is not None:
        report.open_gaps = len(last.open_gaps)

    sealed = _Intervals(sealed_ranges)
    gone = _Intervals(emptied_ranges)
    gaps = _Intervals(last.open_gaps if last else [])
    high_water = last.high_water if last else 0
    after = 0
    while True:
        rows = list(AuditEvent.objects.filter(id__gt=after).order_by("id")[:chunk])
        if not rows:
            break
        for event in rows:
            report.events_checked += 1
            if mac_of(event) != event.mac:
                report.problems.append(
                    Problem(event.id, f"event #{event.id} ({event.uuid}) was modified or forged")
                )
            if event.id in sealed:
                continue
            if event.id in gone:
                report.problems.append(
                    Problem(event.id, f"event #{event.id} was inserted into a pruned range")
                )
            elif event.id <= high_water and event.id not in gaps:
                report.problems.append(
                    Problem(event.id, f"event #{event.id} was inserted out of band (in no seal)")
                )
            else:
                report.unsealed += 1
                if report.unsealed_first_id is None:
                    report.unsealed_first_id = event.id
                if report.unsealed_oldest is None or event.timestamp < report.unsealed_oldest:
                    report.unsealed_oldest = event.timestamp
        after = rows[-1].id
        if progress:
            progress(len(rows))
    if anchors:
        check = check_anchors(digests, has_events=report.events_checked > 0)
        report.anchors_checked = check.checked
        report.warnings.extend(check.warnings)
        # First, so that the recorded check names the truncation, not its fallout.
        report.problems[:0] = [Problem(0, message) for message in check.problems]
    return report


def _check_seal_events(seal: AuditSeal, pruned: dict[int, str], report: Report) -> None:
    present = dict(
        AuditEvent.objects.filter(ranges_q(seal.ranges)).order_by("id").values_list("id", "mac")
    )
    for lo, hi in seal.ranges:
        for i in range(lo, hi + 1):
            if i not in present and i not in pruned:
                report.problems.append(
                    Problem(i, f"event #{i} was deleted (it was sealed in seal {seal.number})")
                )
    merged = sorted({**pruned, **present}.items())
    if len(merged) == seal.event_count and events_digest(merged) != seal.events_digest:
        report.problems.append(
            Problem(
                merged[0][0] if merged else 0,
                f"seal {seal.number}: the events it covers no longer match its digest",
            )
        )


def pruned_macs(seal_number: int) -> dict[int, str]:
    """Ids and MACs of this seal's events that retention runs deleted."""
    pruned: dict[int, str] = {}
    for prune in AuditPrune.objects.filter(seal_number=seal_number):
        pruned.update({int(i): mac for i, mac in prune.pruned})
    return pruned


def verify_seal(seal: AuditSeal) -> list[Problem]:
    """Check one seal and the events it covers (retention checks before it deletes)."""
    report = Report()
    if record_mac(seal_fields(seal)) != seal.digest:
        report.problems.append(Problem(0, f"seal {seal.number} was modified"))
    _check_seal_events(seal, pruned_macs(seal.number), report)
    for event in AuditEvent.objects.filter(ranges_q(seal.ranges)).iterator(chunk_size=2000):
        if mac_of(event) != event.mac:
            report.problems.append(
                Problem(event.id, f"event #{event.id} ({event.uuid}) was modified or forged")
            )
    return report.problems
