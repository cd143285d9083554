"""Leads from a CSV file.

Every row goes through ingest_lead, so validation, the source's schema,
normalization and dedupe are the same as for the API. Each row commits on its
own: a bad row is reported and skipped, an interrupted import keeps what it
did, and running it again merges what was already imported (within the
source's dedupe window) instead of creating it twice.

Rows are numbered by the physical line they start on, as an editor shows it:
the header is row 1.
"""

import codecs
import contextlib
import copy
import csv
import difflib
import io
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from django.db import DataError
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from audit.services import AuditValidationError, audit_context
from leads.models import LEAD_FIELDS, LeadSource
from leads.services import LeadValidationError, ingest_lead

SNIFF_DELIMITERS = ",;\t|"
SNIFF_SAMPLE_CHARS = 32 * 1024
NON_FIELD = "non_field_errors"
DELIMITER_NAMES = {"\\t": "\t", "tab": "\t", "TAB": "\t"}

Progress = Callable[[int, int], None]


class CsvImportError(ValueError):
    """The file or the options cannot be imported as given; nothing was imported."""


@dataclass
class BadRow:
    row: int
    errors: dict[str, list[str]]

    def __str__(self) -> str:
        parts = [
            " ".join(messages) if key == NON_FIELD else f"{key}: {' '.join(messages)}"
            for key, messages in self.errors.items()
        ]
        return f"row {self.row}: {'; '.join(parts)}"


@dataclass
class CsvReport:
    correlation_id: str = ""
    delimiter: str = ","
    rows: int = 0
    created: int = 0
    duplicates: int = 0
    bad: list[BadRow] = field(default_factory=list)
    # Things worth a look that did not stop the import (columns kept in extra).
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Columns:
    # Payload key for each header column; None for a column with no name.
    keys: list[str | None]
    names: list[str]
    # Column -> lead field, handed to clean_payload in place of the source's own.
    lead_mapping: dict[str, str]
    warnings: list[str]


def parse_map_options(values: list[str]) -> dict[str, str]:
    """`--map "Column Name=field"` options to {column: field}; a later one wins."""
    mapping: dict[str, str] = {}
    for value in values:
        # Split on the last "=": a column name may hold one, a field name cannot.
        column, sep, target = value.rpartition("=")
        if not sep:
            raise CsvImportError(f"--map {value!r}: expected COLUMN=FIELD, e.g. 'E-mail=email'")
        if not column.strip() or not target.strip():
            raise CsvImportError(f"--map {value!r}: both the column and the field must be given")
        mapping[column.strip()] = target.strip()
    return mapping


def parse_delimiter(value: str | None) -> str | None:
    if value is None:
        return None
    delimiter = DELIMITER_NAMES.get(value, value)
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise CsvImportError(
            f"--delimiter {value!r}: give one character (or 'tab'), not a quote or newline"
        )
    return delimiter


def import_csv(
    *,
    path: Path,
    source: LeadSource,
    mapping: dict[str, str] | None,
    delimiter: str | None = None,
    encoding: str = "utf-8-sig",
    progress: Progress | None = None,
    actor: str = "system",
) -> CsvReport:
    """Import the good rows of a CSV file into `source`, report the bad ones.

    `mapping` ({column: field}) overrides the source's field_mapping; a
    field that is not a lead field names a key of Lead.extra. Raises
    CsvImportError before importing anything when the file cannot be read as
    a whole (missing, wrong encoding, no header, no email column).
    """
    path = Path(path)
    if not path.is_file():
        raise CsvImportError(f"{path}: no such file")
    try:
        encoding = codecs.lookup(encoding).name
    except LookupError:
        raise CsvImportError(f"--encoding {encoding!r}: unknown encoding") from None
    delimiter = parse_delimiter(delimiter)
    _check_schema(source)
    # A decoding error halfway would leave the file half imported: read it
    # through once first (cheap next to a database write per row).
    _check_encoding(path, encoding)
    report = CsvReport(correlation_id=f"import-leads-{uuid.uuid4().hex[:24]}")
    report.delimiter = delimiter or sniff_delimiter(path, encoding=encoding)

    stack = contextlib.ExitStack()
    try:
        stack.enter_context(audit_context(actor=actor, correlation_id=report.correlation_id))
    except AuditValidationError as exc:
        raise CsvImportError(f"--actor: {exc}") from None
    size = path.stat().st_size
    with stack, open(path, "rb") as raw, io.TextIOWrapper(raw, encoding, newline="") as text:
        # strict: a stray or unclosed quote is a bad row, not a cell that
        # silently swallows the lines after it.
        reader = csv.reader(text, delimiter=report.delimiter, strict=True)
        columns = _read_header(reader, source=source, overrides=mapping or {})
        report.warnings.extend(columns.warnings)
        row_source = copy.copy(source)
        row_source.field_mapping = columns.lead_mapping
        done = 0
        for row_no, cells in _records(reader, report):
            payload = _payload(columns, cells, row_no, report)
            if payload is not None:
                _ingest(row_source, payload, row_no, actor, report)
            if progress and raw.tell() != done:
                done = raw.tell()
                progress(done, size)
        if progress:
            progress(size, size)
    return report


def _check_schema(source: LeadSource) -> None:
    # Otherwise every row would fail with the same message.
    if not source.schema:
        return
    try:
        Draft202012Validator.check_schema(source.schema)
    except SchemaError as exc:
        raise CsvImportError(
            f"source {source.slug!r}: its JSON Schema is invalid: {exc.message}"
        ) from None


def _check_encoding(path: Path, encoding: str) -> None:
    decoder = codecs.getincrementaldecoder(encoding)()
    line_no = 1
    with open(path, "rb") as handle:
        # readline with a limit, so a file without newlines is still read in pieces.
        for chunk in iter(partial(handle.readline, 1 << 16), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                bad = exc.object[exc.start : exc.end]
                raise CsvImportError(
                    f"line {line_no}: byte {bad.hex(' ', 1)} is not {encoding} ({exc.reason}); "
                    "nothing was imported. Give the file's encoding with --encoding, "
                    "e.g. --encoding cp1252 or --encoding latin-1"
                ) from None
            if chunk.endswith(b"\n"):
                line_no += 1
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise CsvImportError(
                f"line {line_no}: the file ends inside a character, so it is not {encoding}; "
                "nothing was imported. Give the file's encoding with --encoding"
            ) from None


def sniff_delimiter(path: Path, *, encoding: str) -> str:
    """The delimiter csv.Sniffer sees in the start of the file; a comma if it sees none."""
    with open(path, encoding=encoding, newline="") as handle:
        sample = handle.read(SNIFF_SAMPLE_CHARS)
    if len(sample) == SNIFF_SAMPLE_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n") + 1]  # a cut line would skew the counts
    try:
        return csv.Sniffer().sniff(sample, delimiters=SNIFF_DELIMITERS).delimiter
    except csv.Error:
        return ","


def _read_header(reader: Any, *, source: LeadSource, overrides: Mapping[str, str]) -> _Columns:
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                return plan_columns(cells, source=source, overrides=overrides)
    except csv.Error as exc:
        raise CsvImportError(
            f"line {reader.line_num}: the header row cannot be read as CSV ({exc}); "
            "nothing was imported"
        ) from None
    raise CsvImportError("the file is empty: there is no header row")


def plan_columns(
    header: list[str], *, source: LeadSource, overrides: Mapping[str, str]
) -> _Columns:
    """Where each column goes: a lead field (mapped by clean_payload) or an extra key."""
    names = [cell.strip() for cell in header]
    names[0] = names[0].lstrip("\ufeff").strip()  # a BOM read with --encoding utf-8
    shown = ", ".join(repr(n) for n in names if n)
    counts = Counter(n for n in names if n)
    twice = [n for n, count in counts.items() if count > 1]
    if twice:
        raise CsvImportError(
            f"the header names column {twice[0]!r} {counts[twice[0]]} times; "
            "rename the copies so no cell is lost"
        )
    for column in overrides:
        if column not in counts:
            raise CsvImportError(
                f"--map {column}={overrides[column]}: the file has no column {column!r} "
                f"(its columns: {shown})"
            )
    mapping = {**(source.field_mapping or {}), **overrides}
    keys: list[str | None] = []
    lead_mapping: dict[str, str] = {}
    claimed: dict[str, list[str]] = {}
    warnings: list[str] = []
    for name in names:
        if not name:
            keys.append(None)
            continue
        target = mapping.get(name, name)
        origin = "--map" if name in overrides else f"source {source.slug!r} field mapping"
        if not isinstance(target, str) or not target.strip():
            raise CsvImportError(f"{origin}: column {name!r} maps to {target!r}, not a field name")
        if target in LEAD_FIELDS:
            keys.append(name)
            lead_mapping[name] = target
        else:
            if target.startswith("_"):
                if name in mapping:
                    raise CsvImportError(
                        f"{origin}: {name}={target}: {target!r} is neither a lead field "
                        f"({', '.join(LEAD_FIELDS)}) nor an extra key (those cannot start with _)"
                    )
                warnings.append(f"column {name!r} is skipped: names starting with _ are private")
            elif note := _typo_note(name, target):
                warnings.append(note)
            # Renamed here: clean_payload keeps extras under the key they arrive with.
            keys.append(target)
        claimed.setdefault(target, []).append(name)
    for target, columns in claimed.items():
        if len(columns) > 1:
            raise CsvImportError(
                f"columns {' and '.join(repr(c) for c in columns)} both map to {target!r}; "
                "map one of them elsewhere with --map so neither value is lost"
            )
    if "email" not in claimed:
        likely = [n for n in names if n and difflib.get_close_matches(n.lower(), ["email"])]
        example = f"--map '{likely[0]}=email'" if likely else "--map 'COLUMN=email'"
        raise CsvImportError(
            f"no column maps to the lead's email (the columns are {shown}); name it in "
            f"source {source.slug!r}'s field mapping or with {example}. Nothing was imported"
        )
    return _Columns(keys=keys, names=names, lead_mapping=lead_mapping, warnings=warnings)


def _typo_note(name: str, target: str) -> str | None:
    """A note for an extra key that looks like a lead field ("Email", "contry")."""
    close = difflib.get_close_matches(target.lower(), LEAD_FIELDS, n=1, cutoff=0.75)
    if not close:
        return None
    where = f"column {name!r} is kept in extra" + (f" as {target!r}" if target != name else "")
    return f"{where}; if it is the lead's {close[0]}, use --map '{name}={close[0]}'"


def _records(reader: Any, report: CsvReport) -> Iterator[tuple[int, list[str]]]:
    """Non-empty records with the line each starts on; unparsable ones are reported."""
    last_line = reader.line_num
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            report.rows += 1
            start, last_line = last_line + 1, reader.line_num
            message = f"cannot be read as CSV ({exc})"
            if str(exc) == "unexpected end of data":
                message = (
                    f"a quoted cell is never closed, so lines {start}-{last_line} "
                    "(to the end of the file) were not imported"
                )
            report.bad.append(BadRow(start, {NON_FIELD: [message]}))
            continue
        start, last_line = last_line + 1, reader.line_num
        if any(cell.strip() for cell in cells):
            report.rows += 1
            yield start, cells


def _payload(
    columns: _Columns, cells: list[str], row_no: int, report: CsvReport
) -> dict[str, str] | None:
    width = len(columns.keys)
    if len(cells) > width:
        # Usually an unquoted delimiter inside a cell: every cell after it is shifted.
        report.bad.append(
            BadRow(
                row_no,
                {
                    NON_FIELD: [
                        f"{len(cells)} cells, but the header has {width} columns "
                        "(is a delimiter inside a cell not quoted?)"
                    ]
                },
            )
        )
        return None
    errors: dict[str, list[str]] = {}
    payload: dict[str, str] = {}
    for position, (key, cell) in enumerate(zip(columns.keys, cells, strict=False), start=1):
        if not cell.strip():
            continue
        if key is None:
            errors.setdefault(f"column {position}", []).append("Has a value but no header.")
        elif "\x00" in cell:
            errors.setdefault(columns.names[position - 1], []).append("Contains a NUL character.")
        else:
            payload[key] = cell
    if errors:
        report.bad.append(BadRow(row_no, errors))
        return None
    return payload


def _ingest(
    source: LeadSource, payload: dict[str, str], row_no: int, actor: str, report: CsvReport
) -> None:
    try:
        # ingest_lead writes the lead and its event in one transaction of its
        # own (a savepoint inside an outer one): a failing row leaves nothing.
        result = ingest_lead(source=source, payload=payload, actor=actor)
    except LeadValidationError as exc:
        report.bad.append(BadRow(row_no, exc.errors))
        return
    except (ValueError, DataError) as exc:
        report.bad.append(BadRow(row_no, {NON_FIELD: [str(exc)]}))
        return
    if result.created:
        report.created += 1
    else:
        report.duplicates += 1
