"""Event-browser exports: the lines both the streamed export and the export task
write, and the task writing an export too large to stream (ExportJob)."""

import csv
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.http import QueryDict
from django.tasks import task
from django.utils import timezone

from audit import selectors
from audit.jsonl import event_to_legacy
from audit.models import AuditEvent
from audit.transfer import CSV_COLUMNS, csv_safe
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
        # The same columns and cells as `export_audit` writes (audit.transfer).
        line = event_to_legacy(event)
        line["details"] = json.dumps(event.details, ensure_ascii=False, sort_keys=True)
        line["lead_id"] = event.lead_public_id
        line["workflow"] = event.workflow
        line["correlation_id"] = event.correlation_id
        yield writer.writerow([csv_safe(line.get(c) or "") for c in CSV_COLUMNS])


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


@task()
def write_export_file(job_id: int) -> None:
    """Write job `job_id`'s events to a file in EXPORT_DIR (a temporary file renamed
    into place, so a download never sees half of one)."""
    # Claimed with a conditional UPDATE: a task run twice writes the file once.
    if not ExportJob.objects.filter(pk=job_id, status=ExportJob.Status.QUEUED).update(
        status=ExportJob.Status.RUNNING
    ):
        return
    job = ExportJob.objects.get(pk=job_id)
    directory = Path(settings.EXPORT_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    final = export_path(job)
    tmp_name = ""
    try:
        events = matching_events(_filterset(job.filters), up_to_id=job.filters["up_to_id"])
        rows = 0
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", newline="", dir=directory, suffix=".part", delete=False
        ) as out:
            tmp_name = out.name
            for line in export_lines(_counted(events, counter := [0]), fmt=job.format):
                out.write(line)
            rows = counter[0]
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, final)
    except Exception as exc:
        # Whatever went wrong, the page must show the job failed, not running forever.
        if tmp_name:
            Path(tmp_name).unlink(missing_ok=True)
        ExportJob.objects.filter(pk=job_id).update(
            status=ExportJob.Status.FAILED,
            error=f"{type(exc).__name__}: {exc}"[:2000],
            finished_at=timezone.now(),
        )
        raise
    ExportJob.objects.filter(pk=job_id).update(
        status=ExportJob.Status.DONE,
        file_path=str(final),
        row_count=rows,
        finished_at=timezone.now(),
    )


def _counted(events: Iterator[AuditEvent], counter: list[int]) -> Iterator[AuditEvent]:
    for event in events:
        counter[0] += 1
        yield event
