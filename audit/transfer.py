"""Moving events in and out: legacy JSON Lines import, JSON Lines / CSV export."""

import csv
import gzip
import json
import os
import re
import uuid
from collections import Counter, deque
from collections.abc import Callable, Container, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import IO, Any

from django.db import transaction
from jsonschema import Draft202012Validator

from audit.jsonl import (
    LINE_SCHEMA,
    event_to_legacy,
    legacy_event_uuid,
    legacy_line_text,
    parse_timestamp,
)
from audit.mirror import mirror
from audit.models import AuditEvent
from audit.selectors import event_list
from audit.services import (
    AuditValidationError,
    event_fields,
    insert_events,
    insert_rows,
    record_event,
    storage_row,
    stored_uuids,
)
from audit.types import ERROR, UnknownEventType, known_event_types
from core.jsonvalues import strict_loads

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
    # Types kept although the vocabulary does not know them: name -> lines.
    unknown_types: Counter[str] = field(default_factory=Counter)
    # Given to the events of lines that have none.
    correlation_id: str = ""

    def summary(self) -> list[str]:
        lines = [
            f"Read {self.lines} lines: {self.imported} imported, "
            f"{self.already_present} already present, {len(self.bad)} bad."
        ]
        if self.unknown_types:
            total = sum(self.unknown_types.values())
            kinds = ", ".join(f"{k} ({n})" for k, n in sorted(self.unknown_types.items()))
            lines.append(
                f"Kept {total} event{'s' if total != 1 else ''} of a type this system "
                f"does not know: {kinds}."
            )
        return lines


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


def parse_line(raw: str, *, correlation_id: str, legacy: bool = True) -> AuditEvent:
    """One line of a legacy log to a signed, unsaved event; ValueError says what is wrong."""
    return AuditEvent(**line_fields(raw, correlation_id=correlation_id, legacy=legacy))


def line_fields(
    raw: str, *, correlation_id: str, legacy: bool = True, known: Container[str] | None = None
) -> dict[str, Any]:
    """parse_line's event as its field values (services.event_fields)."""
    try:
        # Integral floats are folded as they are read, so nothing below walks
        # the decoded line again to normalize it for signing.
        data = strict_loads(raw, integral_floats_as_int=True)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError as exc:  # NaN, Infinity, a number out of range
        raise ValueError(f"not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError("not valid JSON (nested too deeply)") from None
    return record_fields(
        data, correlation_id=correlation_id, legacy=legacy, normalized=True, known=known
    )


# Where the legacy logger's callers put an error's parts inside `details`
# (log_error's own keys, and what hand-written log_event("error", ...) calls
# used), in order of preference. Top-level fields, when present, win.
ERROR_TYPE_KEYS = ("error_type", "exception_type", "exception_class", "exc_type", "type")
ERROR_MESSAGE_KEYS = ("error_message", "message", "error", "msg", "exception", "reason")
TRACEBACK_KEYS = ("traceback", "stack_trace", "stacktrace", "stack", "exc_info")
# What an error line with none of them records instead of being refused.
NO_ERROR_DETAILS = "(the legacy line recorded no error details)"
# A type the vocabulary does not know is kept as it was written, within reason.
LEGACY_TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _first(details: dict[str, Any], keys: tuple[str, ...]) -> str:
    for key in keys:
        text = _text(details.get(key))
        if text.strip():
            return text
    return ""


def read_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """A legacy line as the legacy logger could have written it, in the shape
    parse_record checks: the error's parts lifted out of details (details kept
    as written), numbers used as ids made text, a missing zone read as UTC (the
    legacy logger wrote UTC), details that are not an object wrapped, and keys
    this format does not have kept in details under "legacy_fields"."""
    line = dict(data)
    details = line.get("details")
    if details is None:
        details = {}
    elif not isinstance(details, dict):
        details = {"value": details}
    extra = {k: v for k, v in line.items() if k not in LINE_SCHEMA["properties"]}
    if extra:
        details = {**details, "legacy_fields": extra}
        for key in extra:
            del line[key]
    line["details"] = details
    for key in ("lead_id", "workflow", "actor", "correlation_id"):
        if isinstance(line.get(key), int | float) and not isinstance(line.get(key), bool):
            line[key] = str(line[key])
    stamp = line.get("timestamp")
    if isinstance(stamp, str):
        try:
            moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            moment = None  # parse_record says what is wrong with it
        if moment is not None and moment.tzinfo is None:
            # A date alone reads as its midnight.
            line["timestamp"] = moment.replace(tzinfo=UTC).isoformat()
    if line.get("event_type") == ERROR:
        line["error_type"] = _text(line.get("error_type")) or _first(details, ERROR_TYPE_KEYS)
        line["error_message"] = _text(line.get("error_message")) or _first(
            details, ERROR_MESSAGE_KEYS
        )
        line["traceback"] = _text(line.get("traceback")) or _first(details, TRACEBACK_KEYS)
        if not (line["error_type"] or line["error_message"]):
            line["error_message"] = NO_ERROR_DETAILS
    return line


_TYPE_RE = re.compile(LINE_SCHEMA["properties"]["event_type"]["pattern"])
_ID_RE = re.compile(LINE_SCHEMA["properties"]["event_id"]["pattern"])
# key -> max length, for the optional text fields (null allowed)
_TEXT_LIMITS = {
    key: spec.get("maxLength")
    for key, spec in LINE_SCHEMA["properties"].items()
    if spec.get("type") == ["string", "null"]
}


def _plainly_valid(data: dict[str, Any]) -> bool:
    """LINE_SCHEMA for the lines that pass it, 40 times faster than jsonschema
    (which took most of an import's time). Never laxer than the schema: a
    False sends the line to jsonschema, which decides (a test holds the two
    to the same verdicts)."""
    stamp, kind = data.get("timestamp"), data.get("event_type")
    if not (isinstance(stamp, str) and 10 <= len(stamp) <= 40):
        return False
    if not (isinstance(kind, str) and _TYPE_RE.search(kind)):
        return False
    for key, limit in _TEXT_LIMITS.items():
        value = data.get(key)
        if value is not None and not (
            isinstance(value, str) and (limit is None or len(value) <= limit)
        ):
            return False
    details = data.get("details")
    if details is not None and not isinstance(details, dict):
        return False
    event_id = data.get("event_id", "0" * 32)
    return isinstance(event_id, str) and _ID_RE.search(event_id) is not None


def parse_record(data: Any, *, correlation_id: str, legacy: bool = False) -> AuditEvent:
    """One event in the legacy line format (a decoded JSON object) to a signed,
    unsaved event; ValueError says what is wrong.

    legacy=True reads it as the legacy logger wrote it (read_legacy) and keeps
    an event type the vocabulary does not know; the events API (legacy=False)
    takes the format as documented and known types only."""
    return AuditEvent(**record_fields(data, correlation_id=correlation_id, legacy=legacy))


def record_fields(
    data: Any,
    *,
    correlation_id: str,
    legacy: bool = False,
    normalized: bool = False,
    known: Container[str] | None = None,
) -> dict[str, Any]:
    """parse_record's event as its field values. normalized: `data` was read with
    integral floats folded (strict_loads(integral_floats_as_int=True))."""
    if not isinstance(data, dict):
        raise ValueError(f"line: {type(data).__name__} is not an object")
    # The id comes from the line as written, so that lines imported before
    # read_legacy existed keep theirs and are not imported twice.
    try:
        event_uuid = legacy_event_uuid(data, normalized=normalized)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"event_id: {exc}") from None
    unknown_type = False
    if legacy:
        data = read_legacy(data)
        kind = data.get("event_type")
        if known is None:
            known = known_event_types()
        if isinstance(kind, str) and kind not in known:
            if not LEGACY_TYPE_RE.match(kind):
                raise ValueError(f"event_type: {kind!r} is not a usable type name")
            unknown_type = True
            data = {**data, "event_type": "error" if kind == ERROR else "legacy_unknown"}
    if not _plainly_valid(data):
        # The schema's own check, for its precise message (and the final word).
        errors = sorted(_validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            raise ValueError(_error_text(errors[0]))
    if unknown_type:
        data = {**data, "event_type": kind}
    try:
        timestamp = parse_timestamp(data["timestamp"])
    except ValueError as exc:
        raise ValueError(f"timestamp: {exc}") from None
    try:
        return event_fields(
            allow_unknown_type=unknown_type,
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
            normalized=normalized,
        )
    except (AuditValidationError, UnknownEventType) as exc:
        raise ValueError(str(exc)) from None


@dataclass
class ParsedChunk:
    """What parse_chunk made of some lines: rows to store, their mirror lines,
    and the refused lines by number."""

    lines: int = 0
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    mirror: list[str] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)


def parse_chunk(lines: list[tuple[int, bytes]], correlation_id: str) -> ParsedChunk:
    """Numbered raw lines to storage rows (services.storage_row) and mirror lines.

    Runs in the import's worker processes: it reads settings and the event
    vocabulary but never the database, and returns plain values."""
    known = known_event_types()
    parsed = ParsedChunk()
    for line_no, raw in lines:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            parsed.lines += 1
            parsed.bad.append((line_no, f"not UTF-8 ({exc.reason})"))
            continue
        if not text.strip():
            continue
        parsed.lines += 1
        try:
            fields = line_fields(text, correlation_id=correlation_id, known=known)
        except ValueError as exc:
            parsed.bad.append((line_no, str(exc)))
            continue
        parsed.rows.append(storage_row(fields))
        parsed.mirror.append(legacy_line_text(fields))
    return parsed


class _Parser:
    """parse_chunk over a stream of chunks, in order: in this process (jobs=1)
    or in `jobs` forked processes while this one inserts, which is what lets
    an import use both cores of a small machine."""

    def __init__(self, jobs: int, correlation_id: str) -> None:
        self.jobs = jobs
        self.correlation_id = correlation_id
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "_Parser":
        if self.jobs > 1:
            # Forked, so the workers start with Django set up. They inherit this
            # process's database connection but never use it, and they leave
            # through os._exit, which closes nothing on the server's side.
            self.pool = ProcessPoolExecutor(self.jobs, mp_context=get_context("fork"))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def results(
        self, chunks: Iterator[tuple[list[tuple[int, bytes]], int]]
    ) -> Iterator[tuple[ParsedChunk, int]]:
        if self.pool is None:
            for lines, position in chunks:
                yield parse_chunk(lines, self.correlation_id), position
            return
        # A few chunks ahead per worker: enough to keep them busy, and memory
        # stays bounded however large the file.
        window: deque[tuple[Future[ParsedChunk], int]] = deque()
        for lines, position in chunks:
            window.append((self.pool.submit(parse_chunk, lines, self.correlation_id), position))
            if len(window) > 2 * self.jobs:
                future, done = window.popleft()
                yield future.result(), done
        while window:
            future, done = window.popleft()
            yield future.result(), done


CHUNK_LINES = 2000
# Below this much input, starting workers costs more than they save.
PARALLEL_MIN_BYTES = 4 * 1024 * 1024
MAX_JOBS = 4


def default_jobs(paths: list[Path]) -> int:
    """One parsing process per CPU (up to MAX_JOBS) for a large import, else none."""
    if sum(path.stat().st_size for path in paths) < PARALLEL_MIN_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_JOBS))


def import_files(
    paths: Iterable[Path],
    *,
    batch_size: int = 10_000,
    progress: Callable[[Path, int, int], None] | None = None,
    jobs: int | None = None,
) -> ImportReport:
    """Import valid lines, report bad ones, skip events already present (by event id).

    Batches commit one by one: an interrupted import keeps what it did, and
    running it again picks up the rest. jobs > 1 parses and signs lines in that
    many worker processes while this one inserts (default: default_jobs).
    """
    paths = list(paths)
    if jobs is None:
        jobs = default_jobs(paths)
    report = ImportReport()
    known = known_event_types()
    run_correlation = report.correlation_id = f"import-{uuid.uuid4().hex[:24]}"
    with _Parser(jobs, run_correlation) as parser:
        for path in paths:
            size = path.stat().st_size
            pending: dict[str, tuple[tuple[Any, ...], str]] = {}
            with open_binary(path) as handle:
                raw_file = getattr(handle, "fileobj", None) or handle
                chunks = _chunks(handle, path, report, raw_file)
                for parsed, position in parser.results(chunks):
                    report.lines += parsed.lines
                    report.bad.extend(BadLine(str(path), n, why) for n, why in parsed.bad)
                    for row, line in zip(parsed.rows, parsed.mirror, strict=True):
                        if row[0] in pending:
                            report.already_present += 1
                        else:
                            pending[row[0]] = (row, line)
                    if len(pending) >= batch_size:
                        _flush(pending, report, known)
                    if progress:
                        progress(path, position, size)
            _flush(pending, report, known)
            if progress:
                progress(path, size, size)
    report.bad.sort(key=lambda bad: (paths.index(Path(bad.path)), bad.line_no))
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


def _chunks(
    handle: IO[bytes], path: Path, report: ImportReport, raw_file: IO[bytes]
) -> Iterator[tuple[list[tuple[int, bytes]], int]]:
    """Numbered raw lines, CHUNK_LINES at a time, with the position in the file
    after each chunk; a corrupt or truncated file is reported where it breaks."""
    chunk: list[tuple[int, bytes]] = []
    line_no = 0
    try:
        for line_no, raw in enumerate(handle, start=1):
            chunk.append((line_no, raw))
            if len(chunk) >= CHUNK_LINES:
                yield chunk, raw_file.tell()
                chunk = []
    except (EOFError, OSError) as exc:
        report.bad.append(BadLine(str(path), line_no + 1, f"file is truncated or corrupt ({exc})"))
    if chunk:
        yield chunk, raw_file.tell()


def save_new(events: list[AuditEvent], *, batch_size: int = 2000) -> tuple[int, set[uuid.UUID]]:
    """Insert the events not stored yet (by event id); (how many inserted, the ids
    that were already there)."""
    existing = set(
        AuditEvent.objects.filter(uuid__in=[e.uuid for e in events]).values_list("uuid", flat=True)
    )
    fresh = [e for e in events if e.uuid not in existing]
    return insert_events(fresh, batch_size=batch_size), existing


def _flush(
    pending: dict[str, tuple[tuple[Any, ...], str]], report: ImportReport, known: Container[str]
) -> None:
    """Store the pending rows not stored yet, in one transaction; their mirror
    lines follow the commit."""
    if not pending:
        return
    existing = stored_uuids(list(pending))
    fresh = [(row, line) for key, (row, line) in pending.items() if key not in existing]
    with transaction.atomic():
        inserted = insert_rows([row for row, _ in fresh])
        transaction.on_commit(
            partial(mirror.submit_lines, [line for _, line in fresh]), robust=True
        )
    # Rows a concurrent import stored between the look and the insert were skipped.
    report.already_present += len(existing) + len(fresh) - inserted
    report.imported += inserted
    for row, _ in fresh:
        if row[2] not in known:
            report.unknown_types[row[2]] += 1
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
            out.write(legacy_line_text(event) + "\n")
            count += 1
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for event in events:
            writer.writerow(csv_row(event))
            count += 1
    else:
        raise ValueError(f"unknown export format {fmt!r} (jsonl or csv)")
    return count


def csv_row(event: AuditEvent) -> list[str]:
    """An event's cells under CSV_COLUMNS: details as JSON text, empty fields empty,
    every cell safe to open in a spreadsheet."""
    line = event_to_legacy(event)
    line["details"] = json.dumps(event.details, ensure_ascii=False, sort_keys=True)
    line["lead_id"] = event.lead_public_id
    line["workflow"] = event.workflow
    line["correlation_id"] = event.correlation_id
    return [csv_safe(line.get(c) or "") for c in CSV_COLUMNS]


def csv_safe(value: str) -> str:
    # A cell starting with = + - @ runs as a formula in spreadsheet programs.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
