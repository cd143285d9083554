"""Moving events in and out: legacy JSON Lines import, JSON Lines / CSV export."""

import csv
import gzip
import json
import re
import uuid
from collections import Counter
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
    try:
        data = strict_loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError as exc:  # NaN, Infinity, a number out of range
        raise ValueError(f"not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError("not valid JSON (nested too deeply)") from None
    return parse_record(data, correlation_id=correlation_id, legacy=legacy)


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
            naive = datetime.fromisoformat(stamp.replace("Z", "+00:00")).tzinfo is None
        except ValueError:
            naive = False  # parse_record says what is wrong with it
        if naive:
            line["timestamp"] = stamp + "+00:00"
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
    if not isinstance(data, dict):
        raise ValueError(f"line: {type(data).__name__} is not an object")
    # The id comes from the line as written, so that lines imported before
    # read_legacy existed keep theirs and are not imported twice.
    try:
        event_uuid = legacy_event_uuid(data)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"event_id: {exc}") from None
    unknown_type = False
    if legacy:
        data = read_legacy(data)
        kind = data.get("event_type")
        if isinstance(kind, str) and kind not in known_event_types():
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
        return build_event(
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
    known = known_event_types()
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
                    _flush(pending, report, batch_size, known)
                    if progress:
                        progress(path, raw_file.tell(), size)
        _flush(pending, report, batch_size, known)
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


def _flush(
    pending: dict[uuid.UUID, AuditEvent], report: ImportReport, batch_size: int, known: Any
) -> None:
    if not pending:
        return
    imported, existing = save_new(list(pending.values()), batch_size=batch_size)
    report.already_present += len(existing)
    report.imported += imported
    for event in pending.values():
        if event.uuid not in existing and event.event_type not in known:
            report.unknown_types[event.event_type] += 1
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
