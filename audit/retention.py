"""Retention: archive, then delete events older than a cut-off, seal by seal.

Deleting is the one change to the audit trail that is allowed, so it is
recorded three ways: the archive file (checksummed), an AuditPrune row per
seal touched (MAC'd, naming what went, so the seal still verifies), and an
audit_pruned event.
"""

import gzip
import hashlib
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from audit.integrity import (
    SEAL_COLUMNS,
    prune_fields,
    pruned_macs,
    ranges_q,
    remove_from_rollups,
    seal_all,
    verify_seal,
)
from audit.jsonl import legacy_line_text
from audit.models import AuditEvent, AuditLeadDay, AuditPrune, AuditSeal
from audit.services import record_event
from audit.signing import record_mac


class PruneRefused(Exception):
    """A seal to be pruned does not verify: deleting now would hide the tampering."""


@dataclass
class PruneResult:
    matched: int
    deleted: int = 0
    seals_touched: int = 0
    archive_path: str = ""
    archive_sha256: str = ""


def _prunable(seal: AuditSeal, before: datetime):  # type: ignore[no-untyped-def]
    return AuditEvent.objects.filter(ranges_q(seal.ranges), timestamp__lt=before)


def _seals_with_old_events(before: datetime):  # type: ignore[no-untyped-def]
    emptied = set(AuditPrune.objects.filter(emptied=True).values_list("seal_number", flat=True))
    for seal in AuditSeal.objects.order_by("number").iterator():
        if seal.number not in emptied and _prunable(seal, before).exists():
            yield seal


def _unsealed_before(before: datetime) -> int:
    head = AuditSeal.objects.order_by("-number").only("high_water", "open_gaps").first()
    unsealed = Q(id__gt=head.high_water if head else 0)
    if head and head.open_gaps:
        unsealed |= ranges_q(head.open_gaps)
    return AuditEvent.objects.filter(unsealed, timestamp__lt=before).count()


def prune(
    *,
    before: datetime,
    archive: Path | None = None,
    dry_run: bool = False,
    actor: str = "system",
) -> PruneResult:
    """Delete sealed events older than `before`, archiving them first when asked.

    Only sealed events are deleted: the seal is what lets verification tell a
    pruned event from a deleted one. Everything committed is sealed first,
    except in a dry run, which writes nothing and counts the unsealed events a
    real run would seal and delete.
    """
    if dry_run:
        seals = list(_seals_with_old_events(before))
        sealed = sum(_prunable(s, before).count() for s in seals)
        return PruneResult(matched=sealed + _unsealed_before(before))
    seal_all()
    seals = list(_seals_with_old_events(before))
    result = PruneResult(matched=sum(_prunable(s, before).count() for s in seals))
    if not result.matched:
        return result
    # Deleting a tampered event (or the rest of a seal an event was already
    # taken from) would erase the evidence, so every seal is checked first.
    for seal in seals:
        problems = verify_seal(seal)
        if problems:
            first = min(problems)
            raise PruneRefused(
                f"seal {seal.number} does not verify ({first.message}); nothing was deleted. "
                "Run verify_audit and investigate before pruning."
            )

    if archive is not None:
        result.archive_path = str(archive)
        result.archive_sha256 = _write_archive(archive, seals, before)

    run = uuid.uuid4()
    for seal in seals:
        with transaction.atomic():
            rows = list(_prunable(seal, before).order_by("id").values_list(*SEAL_COLUMNS))
            if not rows:
                continue
            # The record is written first: on PostgreSQL the deleting function
            # deletes exactly what it names (migration 0008).
            in_seal = AuditEvent.objects.filter(ranges_q(seal.ranges)).count()
            emptied = (
                in_seal == len(rows)
                and len(rows) + len(pruned_macs(seal.number)) == seal.event_count
            )
            record = AuditPrune(
                run=run,
                created_at=timezone.now(),
                before=before,
                actor=actor,
                seal_number=seal.number,
                emptied=emptied,
                pruned=[] if emptied else [[r[0], r[1]] for r in rows],
                deleted_count=len(rows),
                archive_path=result.archive_path,
                archive_sha256=result.archive_sha256,
            )
            record.digest = record_mac(prune_fields(record))
            record.save()
            _delete(record, [r[0] for r in rows])
            remove_from_rollups(rows)
            _drop_lead_days(rows)
            result.deleted += len(rows)
            result.seals_touched += 1

    with transaction.atomic():
        record_event(
            event_type="audit_pruned",
            actor=actor,
            details={
                "before": before.isoformat(),
                "deleted": result.deleted,
                "seals": result.seals_touched,
                "archive": result.archive_path,
                "archive_sha256": result.archive_sha256,
                "run": str(run),
            },
        )
    return result


def _delete(record: AuditPrune, ids: list[int]) -> None:
    """Delete the events `record` names. On PostgreSQL only audit_prune_seal() may
    (the append-only trigger refuses everyone else); SQLite has no trigger."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT audit_prune_seal(%s)", [record.pk])
            (deleted,) = cursor.fetchone()
        if deleted != len(ids):  # the function raises first; this is a tripwire
            raise RuntimeError(f"prune record {record.pk}: {deleted} deleted, {len(ids)} named")
    else:
        AuditEvent.objects.filter(id__in=ids)._raw_delete(connection.alias)


def retention_cutoff(*, now: datetime, days: int) -> datetime:
    """The start of the UTC day `days` before `now`.

    Whole days keep the archives tidy (one per day the schedule runs) and mean
    no event is kept for less than `days` days.
    """
    day = (now - timedelta(days=days)).astimezone(UTC).date()
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def retention_archive_path(directory: Path, *, before: datetime) -> Path:
    """A fresh archive file for a prune up to `before`, named after the cut-off date.

    A second run on the same day only finds events that arrived late (an
    import of old history); it gets a numbered name rather than overwriting.
    """
    stem = f"audit-before-{before.astimezone(UTC):%Y-%m-%d}"
    path = directory / f"{stem}.jsonl.gz"
    number = 1
    while path.exists() or path.with_name(path.name + ".partial").exists():
        number += 1
        path = directory / f"{stem}-{number}.jsonl.gz"
    return path


def _drop_lead_days(rows: list[tuple]) -> None:
    """Forget lead-days that no remaining event supports."""
    for day, workflow, lead in {
        (ts.astimezone(UTC).date(), wf, lead) for _id, _mac, ts, _t, wf, lead, _fp in rows if lead
    }:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        still_there = AuditEvent.objects.filter(
            lead_public_id=lead,
            workflow=workflow,
            timestamp__gte=start,
            timestamp__lt=start + timedelta(days=1),
        ).exists()
        if not still_there:
            AuditLeadDay.objects.filter(day=day, workflow=workflow, lead_public_id=lead).delete()


def _write_archive(path: Path, seals: list[AuditSeal], before: datetime) -> str:
    """Write the events to gzip JSON Lines, fsync, and return the file's SHA-256.

    Written to a temporary name and renamed, so a crash leaves no half archive
    under the final name; nothing is deleted until this returns.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb") as gz:
            for seal in seals:
                for event in _prunable(seal, before).order_by("id").iterator(chunk_size=2000):
                    line = legacy_line_text(event) + "\n"
                    gz.write(line.encode())
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, path)
    digest = hashlib.sha256()
    with open(path, "rb") as done:
        for block in iter(lambda: done.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
