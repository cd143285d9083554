"""Event-browser exports: the lines both the streamed export and the export task
write, and the task writing an export too large to stream (ExportJob)."""

import csv
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import F, Q
from django.http import QueryDict
from django.tasks import task
from django.utils import timezone

from audit import selectors
from audit.jsonl import event_to_legacy
from audit.models import AuditEvent
from audit.transfer import CSV_COLUMNS, csv_row
from core.periods import Period
from orchestrator.dashboard.filters.events import EventFilter
from orchestrator.models import ExportJob


class _Echo:
    """A file-like object whose write returns the line, for csv.writer in a stream."""

    def write(self, value: str) -> str:
        return value


def csv_lines(events: Iterator[AuditEvent]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    for event in events:
        # The same columns and cells as `export_audit_log` writes.
        yield writer.writerow(csv_row(event))


def jsonl_lines(events: Iterator[AuditEvent]) -> Iterator[str]:
    for event in events:
        yield json.dumps(event_to_legacy(event), ensure_ascii=False) + "\n"


def export_lines(events: Iterator[AuditEvent], *, fmt: str) -> Iterator[str]:
    return csv_lines(events) if fmt == "csv" else jsonl_lines(events)


def merge_types(filterset: EventFilter) -> list[str]:
    """Types to read one by one and merge (see event_page), when nothing narrower
    than the type drives the query."""
    narrowing = {"lead", "correlation", "fingerprint", "actor", "q"} & set(filterset.active)
    return [] if narrowing else filterset.types


def matching_events(filterset: EventFilter, *, up_to_id: int) -> Iterator[AuditEvent]:
    """The events an export holds, newest first, as the event browser lists them."""
    return selectors.iter_matching(
        events=filterset.events(), up_to_id=up_to_id, merge_types=merge_types(filterset)
    )


def exceeds(filterset: EventFilter, *, up_to_id: int, limit: int) -> bool:
    """Whether more than `limit` events match: a count capped at limit + 1."""
    return filterset.events().filter(id__lte=up_to_id)[: limit + 1].count() > limit


def job_filters(*, query: QueryDict, period: Period, up_to_id: int) -> dict[str, Any]:
    """What the task needs to select the same events later: the query string and the
    period as it was when asked for (a relative range would have moved on)."""
    return {
        "query": query.urlencode(),
        "since": period.start.isoformat(),
        "until": period.end.isoformat(),
        "up_to_id": up_to_id,
    }


def _filterset(filters: dict[str, Any]) -> EventFilter:
    period = Period(
        key="custom",
        start=datetime.fromisoformat(filters["since"]),
        end=datetime.fromisoformat(filters["until"]),
    )
    filterset = EventFilter(QueryDict(filters["query"]), period=period)
    message = filterset.error_message()
    if message:
        raise ValueError(message)
    return filterset


# format -> file extension; the only names an export file can have.
FILE_EXTENSIONS = {"csv": "csv", "jsonl": "jsonl"}


def export_path(job: ExportJob) -> Path:
    """Where a job's file lives, made from its id and a known format only.

    Never a path read back from the database: a row planted by someone who can
    write the database must not make the download serve another file (the
    environment file with the signing key, say). Raises KeyError for a format
    this code did not write."""
    return Path(settings.EXPORT_DIR) / f"audit-events-{int(job.pk)}.{FILE_EXTENSIONS[job.format]}"


class _Superseded(Exception):
    """Another worker took this export over (this one was taken for dead)."""


def _claim(job_id: int) -> int | None:
    """Take a queued job, or a running one whose writer has shown no progress for
    as long as a worker may go without a heartbeat (the task handed back by
    reclaim_abandoned after its worker died); the attempt number that owns it,
    or None.

    A conditional UPDATE: a task enqueued twice (cleanup_exports re-enqueues a
    job it finds abandoned) writes the file once."""
    now = timezone.now()
    dead = now - timedelta(seconds=settings.HEALTHZ_WORKER_MAX_AGE_SECONDS)
    claimable = Q(status=ExportJob.Status.QUEUED) | Q(
        status=ExportJob.Status.RUNNING, progress_at__lt=dead
    )
    claimed = ExportJob.objects.filter(claimable, pk=job_id).update(
        status=ExportJob.Status.RUNNING, attempts=F("attempts") + 1, progress_at=now
    )
    if not claimed:
        return None
    return ExportJob.objects.filter(pk=job_id).values_list("attempts", flat=True).get()


# How often a writer moves progress_at on: well inside EXPORT_STALE_SECONDS.
PROGRESS_EVERY_ROWS = 5_000


def _progressed(job_id: int, attempt: int, rows: int) -> None:
    """Show the job is alive; stop if another attempt owns it now."""
    mine = ExportJob.objects.filter(
        pk=job_id, attempts=attempt, status=ExportJob.Status.RUNNING
    ).update(progress_at=timezone.now(), row_count=rows)
    if not mine:
        raise _Superseded


@task()
def write_export_file(job_id: int) -> None:
    """Write job `job_id`'s events to a file in EXPORT_DIR (a temporary file renamed
    into place, so a download never sees half of one)."""
    attempt = _claim(job_id)
    if attempt is None:
        return
    job = ExportJob.objects.get(pk=job_id)
    directory = Path(settings.EXPORT_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    final = export_path(job)
    tmp_name = ""
    mine = ExportJob.objects.filter(pk=job_id, attempts=attempt)
    try:
        events = matching_events(_filterset(job.filters), up_to_id=job.filters["up_to_id"])
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", newline="", dir=directory, suffix=".part", delete=False
        ) as out:
            tmp_name = out.name
            counter = [0]
            tracked = _tracked(events, job_id=job_id, attempt=attempt, counter=counter)
            out.writelines(export_lines(tracked, fmt=job.format))
            rows = counter[0]
            out.flush()
            os.fsync(out.fileno())
        # Still ours? A writer taken for dead must not overwrite the new one's file.
        _progressed(job_id, attempt, rows)
        os.replace(tmp_name, final)
    except _Superseded:
        Path(tmp_name).unlink(missing_ok=True)
        return
    except Exception as exc:
        # Whatever went wrong, the page must show the job failed, not running forever.
        if tmp_name:
            Path(tmp_name).unlink(missing_ok=True)
        mine.update(
            status=ExportJob.Status.FAILED,
            error=f"{type(exc).__name__}: {exc}"[:2000],
            finished_at=timezone.now(),
        )
        raise
    mine.update(
        status=ExportJob.Status.DONE,
        file_path=str(final),
        row_count=rows,
        finished_at=timezone.now(),
    )


def _tracked(
    events: Iterator[AuditEvent], *, job_id: int, attempt: int, counter: list[int]
) -> Iterator[AuditEvent]:
    """The events, counted, showing progress every PROGRESS_EVERY_ROWS."""
    for event in events:
        counter[0] += 1
        if counter[0] % PROGRESS_EVERY_ROWS == 0:
            _progressed(job_id, attempt, counter[0])
        yield event


@dataclass(frozen=True)
class Cleanup:
    requeued: list[int]
    failed: list[int]
    expired: list[int]
    files_removed: list[str]


_EXPORT_FILE = re.compile(r"audit-events-(\d+)\.(?:csv|jsonl)")


def cleanup_exports(*, now: datetime | None = None) -> Cleanup:
    """Housekeeping for export jobs, run by `manage.py cleanup_exports`.

    - A queued or running job nobody has touched for EXPORT_STALE_SECONDS was
      lost (the enqueue failed after the commit, or its worker was killed): it
      is queued again and its task enqueued, or failed once it has been tried
      EXPORT_MAX_ATTEMPTS times, so it never shows "running" forever.
    - Finished jobs older than EXPORT_RETENTION_DAYS go, file and row: the
      exports hold audit data, and a disk full of old exports stops the trail.
    - Files in EXPORT_DIR no job accounts for (a half-written ".part" of a
      killed worker, the file of a deleted job) go once they are that stale.
    """
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.EXPORT_STALE_SECONDS)
    unfinished = (ExportJob.Status.QUEUED, ExportJob.Status.RUNNING)
    lost = ExportJob.objects.filter(status__in=unfinished).filter(
        Q(progress_at__lt=stale) | Q(progress_at__isnull=True, created_at__lt=stale)
    )
    requeued: list[int] = []
    failed: list[int] = []
    for job in lost.only("pk", "attempts", "status"):
        # Conditional on what was read: a worker that claims it meanwhile wins.
        same = ExportJob.objects.filter(pk=job.pk, status=job.status, attempts=job.attempts)
        if job.attempts >= settings.EXPORT_MAX_ATTEMPTS:
            if same.update(
                status=ExportJob.Status.FAILED,
                error=f"abandoned: its worker stopped {job.attempts} times while writing it",
                finished_at=now,
            ):
                failed.append(job.pk)
        elif same.update(status=ExportJob.Status.QUEUED, progress_at=now):
            write_export_file.enqueue(job.pk)
            requeued.append(job.pk)

    cutoff = now - timedelta(days=settings.EXPORT_RETENTION_DAYS)
    expired = list(
        ExportJob.objects.filter(status__in=(ExportJob.Status.DONE, ExportJob.Status.FAILED))
        .filter(finished_at__lt=cutoff)
        .values_list("pk", flat=True)
    )
    removed: list[str] = []
    for pk in expired:
        # The row goes first: a download between the two finds no job, not a
        # job whose file is gone.
        ExportJob.objects.filter(pk=pk).delete()
    directory = Path(settings.EXPORT_DIR)
    if directory.is_dir():
        done = set(
            ExportJob.objects.filter(status=ExportJob.Status.DONE).values_list("pk", flat=True)
        )
        for path in directory.iterdir():
            match = _EXPORT_FILE.fullmatch(path.name)
            ours = path.name.endswith(".part") or match is not None
            if not ours or not path.is_file():
                continue  # not this code's file: leave it to whoever put it there
            if match is not None and int(match.group(1)) in done:
                continue
            expired_file = match is not None and int(match.group(1)) in expired
            old = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC) < stale
            if expired_file or old:
                path.unlink(missing_ok=True)
                removed.append(path.name)
    return Cleanup(requeued=requeued, failed=failed, expired=expired, files_removed=removed)
