"""Moving events in and out: legacy JSON Lines import, JSON Lines / CSV export."""

import csv
import gzip
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from jsonschema import Draft202012Validator

from audit.jsonl import LINE_SCHEMA, event_to_legacy, legacy_event_uuid, parse_timestamp
from audit.models import AuditEvent
from audit.selectors import event_list
from audit.services import AuditValidationError, build_event, insert_events, record_event
from audit.types import UnknownEventType

_validator = Draft202012Validator(LINE_SCHEMA)


@dataclass
class BadLine:
    path: str
    line_no: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line_no}: {self.reason}"


@dataclass
class ImportReport:
    lines: int = 0
    imported: int = 0
    already_present: int = 0
    bad: list[BadLine] = field(default_factory=list)


def open_binary(path: Path) -> IO[bytes]:
    """Plain or gzip, told apart by the magic bytes rather than the name."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rb")  # type: ignore[return-value]  # a GzipFile is an IO[bytes]
    return open(path, "rb")


def _error_text(error: Any) -> str:
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where or 'line'}: {error.message}"


def _refuse_constant(name: str) -> None:
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


def parse_line(raw: str, *, correlation_id: str) -> AuditEvent:
    """One legacy line to a signed, unsaved event; ValueError says what is wrong."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    return parse_record(data, correlation_id=correlation_id)


def parse_record(data: Any, *, correlation_id: str) -> AuditEvent:
    """One event in the legacy line format (a decoded JSON object) to a signed,
    unsaved event; ValueError says what is wrong."""
    errors = sorted(_validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        raise ValueError(_error_text(errors[0]))
    try:
        timestamp = parse_timestamp(data["timestamp"])
    except ValueError as exc:
        raise ValueError(f"timestamp: {exc}") from None
    try:
        event_uuid = legacy_event_uuid(data)
    except ValueError as exc:
        raise ValueError(f"event_id: {exc}") from None
    try:
        return build_event(
            event_uuid=event_uuid,
            timestamp=timestamp,
            event_type=data["event_type"],
            actor=data.get("actor") or "system",
            lead_id=data.get("lead_id"),
            workflow=data.get("workflow"),
            correlation_id=data.get("correlation_id") or correlation_id,
            details=data.get("details") or {},
            error_type=data.get("error_type") or "",
            error_message=data.get("error_message") or "",
            traceback=data.get("traceback") or "",
        )
    except (AuditValidationError, UnknownEventType) as exc:
        raise ValueError(str(exc)) from None


def import_files(
    paths: Iterable[Path],
    *,
    batch_size: int = 2000,
    progress: Callable[[Path, int, int], None] | None = None,
) -> ImportReport:
    """Import valid lines, report bad ones, skip events already present (by event id).

    Batches commit one by one: an interrupted import keeps what it did, and
    running it again picks up the rest.
    """
    paths = list(paths)
    report = ImportReport()
    run_correlation = f"import-{uuid.uuid4().hex[:24]}"
    for path in paths:
        size = path.stat().st_size
        pending: dict[uuid.UUID, AuditEvent] = {}
        with open_binary(path) as handle:
            raw_file = getattr(handle, "fileobj", None) or handle
            for line_no, raw in _numbered_lines(handle, path, report):
                report.lines += 1
                try:
                    event = parse_line(raw, correlation_id=run_correlation)
                except ValueError as exc:
                    report.bad.append(BadLine(str(path), line_no, str(exc)))
                    continue
                if event.uuid in pending:
                    report.already_present += 1
                    continue
                pending[event.uuid] = event
                if len(pending) >= batch_size:
                    _flush(pending, report, batch_size)
                    if progress:
                        progress(path, raw_file.tell(), size)
        _flush(pending, report, batch_size)
        if progress:
            progress(path, size, size)
    if report.imported:
        record_event(
            event_type="audit_imported",
            correlation_id=run_correlation,
            details={
                "files": [str(p) for p in paths],
                "imported": report.imported,
                "already_present": report.already_present,
                "bad_lines": len(report.bad),
            },
        )
    return report


def _numbered_lines(
    handle: IO[bytes], path: Path, report: ImportReport
) -> Iterator[tuple[int, str]]:
    """Non-blank lines with their numbers; undecodable lines and a corrupt tail are reported."""
    line_no = 0
    try:
        for line_no, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                report.lines += 1
                report.bad.append(BadLine(str(path), line_no, f"not UTF-8 ({exc.reason})"))
                continue
            if text.strip():
                yield line_no, text
    except (EOFError, OSError) as exc:
        report.bad.append(BadLine(str(path), line_no + 1, f"file is truncated or corrupt ({exc})"))


def save_new(events: list[AuditEvent], *, batch_size: int = 2000) -> tuple[int, set[uuid.UUID]]:
    """Insert the events not stored yet (by event id); (how many inserted, the ids
    that were already there)."""
    existing = set(
        AuditEvent.objects.filter(uuid__in=[e.uuid for e in events]).values_list("uuid", flat=True)
    )
    fresh = [e for e in events if e.uuid not in existing]
    return insert_events(fresh, batch_size=batch_size), existing


def _flush(pending: dict[uuid.UUID, AuditEvent], report: ImportReport, batch_size: int) -> None:
    if not pending:
        return
    imported, existing = save_new(list(pending.values()), batch_size=batch_size)
    report.already_present += len(existing)
    report.imported += imported
    pending.clear()


# --- export -------------------------------------------------------------------------------

CSV_COLUMNS = [
    "event_id",
    "timestamp",
    "event_type",
    "actor",
    "lead_id",
    "workflow",
    "correlation_id",
    "details",
    "error_type",
    "error_message",
    "traceback",
]


def iter_events(*, chunk: int = 2000, **filters: Any) -> Iterator[AuditEvent]:
    """Matching events in id order, fetched by keyset so memory stays flat."""
    qs = event_list(**filters).order_by("id")
    after = 0
    while True:
        rows = list(qs.filter(id__gt=after)[:chunk])
        if not rows:
            return
        yield from rows
        after = rows[-1].id


def write_export(
    out: IO[str],
    *,
    fmt: str,
    since: datetime | None = None,
    until: datetime | None = None,
    event_type: list[str] | None = None,
    lead_id: str | None = None,
    workflow: str | None = None,
) -> int:
    """Write matching events as JSON Lines or CSV; returns how many were written."""
    events = iter_events(
        since=since, until=until, event_type=event_type, lead_id=lead_id, workflow=workflow
    )
    count = 0
    if fmt == "jsonl":
        for event in events:
            out.write(json.dumps(event_to_legacy(event), ensure_ascii=False) + "\n")
            count += 1
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for event in events:
            line = event_to_legacy(event)
            line["details"] = json.dumps(event.details, ensure_ascii=False, sort_keys=True)
            line["lead_id"] = event.lead_public_id
            line["workflow"] = event.workflow
            line["correlation_id"] = event.correlation_id
            writer.writerow([csv_safe(line.get(c) or "") for c in CSV_COLUMNS])
            count += 1
    else:
        raise ValueError(f"unknown export format {fmt!r} (jsonl or csv)")
    return count


def csv_safe(value: str) -> str:
    # A cell starting with = + - @ runs as a formula in spreadsheet programs.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
