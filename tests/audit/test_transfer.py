"""Moving events in and out: import_audit_log and export_audit_log."""

import csv
import gzip
import hashlib
import io
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit import transfer
from audit.integrity import seal_all, verify
from audit.jsonl import LEGACY_NAMESPACE, event_to_legacy
from audit.models import AuditEvent
from audit.services import record_event
from audit.signing import canonical_json, mac_of
from audit.transfer import CSV_COLUMNS, iter_events, write_export
from leads.models import Lead

AUDIT_TABLES = (
    "audit_auditevent",
    "audit_auditseal",
    "audit_auditprune",
    "audit_auditrollup",
    "audit_auditleadday",
)


def empty_audit_tables():
    """Empty the audit store as a restore onto a fresh database would find it.

    The append-only trigger on PostgreSQL blocks DELETE but not TRUNCATE.
    """
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(AUDIT_TABLES)}")
        else:
            for table in AUDIT_TABLES:
                cursor.execute(f"DELETE FROM {table}")


@dataclass
class Run:
    out: str
    err: str
    error: CommandError | None


def run_command(name, *args):
    out, err = StringIO(), StringIO()
    try:
        call_command(name, *args, stdout=out, stderr=err)
    except CommandError as exc:
        return Run(out.getvalue(), err.getvalue(), exc)
    return Run(out.getvalue(), err.getvalue(), None)


def jsonl(*objects):
    return "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects).encode()


def write(path, data: bytes, *, gz=False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# --- import -------------------------------------------------------------------------------

GOOD_ID = "3f0b8c8e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
LAST_ID = "9c7d6e5f-4a3b-4c2d-9e1f-0f1e2d3c4b5a"
LEGACY_LINE = {
    "timestamp": "2024-03-01T14:34:56.654321+02:00",
    "event_type": "lead_qualified",
    "actor": "system",
    "lead_id": "LEAD-000002",
    "workflow": "support",
    "details": {"qualified": True, "reason": "score 85 \u2013 Zoë", "score": 85.5},
}

# (line number, raw bytes, what the reason must mention); None for good and blank lines.
MIXED = [
    (
        1,
        jsonl(
            {
                "timestamp": "2024-03-01T12:34:56.123456Z",
                "event_type": "lead_ingested",
                "actor": "user:alice",
                "lead_id": "LEAD-000001",
                "workflow": "sales",
                "details": {"source": "web_form", "nested": {"list": [1, 2.5, "ü"], "ok": None}},
                "event_id": GOOD_ID,
                "correlation_id": "corr-1",
            }
        ),
        None,
    ),
    (2, b'{"timestamp": "2024-03-01T12:00:00Z", "event_type": \n', "not valid JSON"),
    (3, b'["2024-03-01T12:00:00Z", "lead_ingested"]\n', "line: list is not an object"),
    (4, jsonl({"event_type": "lead_ingested", "details": {}}), "'timestamp' is a required"),
    (5, jsonl(LEGACY_LINE), None),
    (
        6,
        # The legacy logger wrote UTC; a time without a zone is read as such.
        jsonl({"timestamp": "2024-03-01T12:00:00", "event_type": "lead_ingested"}),
        None,
    ),
    (7, b"   \n", None),
    (
        8,
        # A type the vocabulary does not know is kept, and listed in the summary.
        jsonl({"timestamp": "2024-03-01T12:00:00Z", "event_type": "lead_teleported"}),
        None,
    ),
    (
        9,
        jsonl({"timestamp": "2024-03-01T12:00:00Z", "event_type": "crm_update", "details": "x"}),
        None,
    ),
    (
        10,
        jsonl(
            {"timestamp": "2024-03-01T12:00:00Z", "event_type": "crm_create", "lead_id": "L" * 33}
        ),
        "lead_id: ",
    ),
    (
        11,
        b'{"timestamp": "2024-03-01T12:00:00Z", "event_type": "lead_ingested", '
        b'"details": {"name": "Zo\xeb"}}\n',
        "not UTF-8",
    ),
    (
        12,
        jsonl(
            {
                "timestamp": "2024-03-02T00:00:00Z",
                "event_type": "error",
                "lead_id": None,
                "workflow": None,
                "details": None,
                "error_type": "ValueError",
                "error_message": "boom",
                "traceback": "Traceback (most recent call last):\n  ...\nValueError: boom\n",
            }
        ),
        None,
    ),
    # The last line has no newline at the end.
    (
        13,
        json.dumps(
            {"timestamp": "2024-12-31T23:59:59.999999Z", "event_type": "email_sent"}
            | {"event_id": LAST_ID, "lead_id": "LEAD-000001", "details": {"subject": "Grüße"}}
        ).encode(),
        None,
    ),
]
BAD = [(n, reason) for n, _, reason in MIXED if reason]


def mixed_file(tmp_path, name="legacy.jsonl", *, gz=False):
    return write(tmp_path / name, b"".join(raw for _, raw, _ in MIXED), gz=gz)


def imported_events():
    return {str(e.uuid): e for e in AuditEvent.objects.exclude(event_type="audit_imported")}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "gz", "jobs"),
    [
        ("legacy.jsonl", False, "1"),
        ("legacy.jsonl.gz", True, "1"),
        ("gzipped-without-suffix.log", True, "1"),
        # Parsed by two worker processes, three lines a chunk: the same result,
        # reported in line order.
        ("legacy.jsonl", False, "2"),
        ("legacy.jsonl.gz", True, "2"),
    ],
)
def test_import_takes_good_lines_and_reports_each_bad_line(
    tmp_path, name, gz, jobs, web_source, monkeypatch
):
    monkeypatch.setattr(transfer, "CHUNK_LINES", 3)
    Lead.objects.create(public_id="LEAD-000001", email="ann@example.com", source=web_source)
    path = mixed_file(tmp_path, name, gz=gz)

    run = run_command("import_audit_log", str(path), "--no-progress", "--jobs", jobs)

    # Every bad line, in order, with its 1-based number and the reason; the
    # blank line 7 is not one of them and processing went on to the end.
    reported = [line for line in run.err.splitlines() if line.strip()]
    assert len(reported) == len(BAD)
    for line, (line_no, reason) in zip(reported, BAD, strict=True):
        assert line.startswith(f"{path}:{line_no}: "), line
        assert reason in line, line
    assert "is too long" in reported[BAD.index((10, "lead_id: "))]
    assert "7 imported, 0 already present, 5 bad." in run.out
    assert "Kept 1 event of a type this system does not know: lead_teleported (1)." in run.out
    assert isinstance(run.error, CommandError)
    assert "5 bad lines were not imported" in str(run.error)
    assert f"(first: {path}:2: not valid JSON" in str(run.error)

    events = imported_events()
    assert len(events) == 7
    first = events[GOOD_ID]
    assert first.timestamp == datetime(2024, 3, 1, 12, 34, 56, 123456, tzinfo=UTC)
    assert first.event_type == "lead_ingested"
    assert first.actor == "user:alice"
    assert first.lead_public_id == "LEAD-000001"
    assert first.workflow == "sales"
    assert first.correlation_id == "corr-1"
    assert first.details == {"source": "web_form", "nested": {"list": [1, 2.5, "ü"], "ok": None}}

    legacy_id = str(uuid.uuid5(LEGACY_NAMESPACE, canonical_json(LEGACY_LINE)))
    second = events[legacy_id]
    assert second.timestamp == datetime(2024, 3, 1, 12, 34, 56, 654321, tzinfo=UTC)
    assert second.event_type == "lead_qualified"
    assert second.lead_public_id == "LEAD-000002"
    assert second.workflow == "support"
    assert second.details == LEGACY_LINE["details"]

    (error,) = [e for e in events.values() if e.event_type == "error"]
    assert error.timestamp == datetime(2024, 3, 2, tzinfo=UTC)
    assert (error.lead_public_id, error.workflow, error.details) == ("", "", {})
    assert (error.error_type, error.error_message) == ("ValueError", "boom")
    assert error.traceback.endswith("ValueError: boom\n")

    # Read liberally, as the legacy logger could have written them.
    teleported = next(e for e in events.values() if e.event_type == "lead_teleported")
    assert teleported.details == {}
    naive = next(
        e for e in events.values() if e.event_type == "lead_ingested" and e.lead_public_id == ""
    )
    assert naive.timestamp == datetime(2024, 3, 1, 12, tzinfo=UTC)
    (wrapped,) = [e for e in events.values() if e.event_type == "crm_update"]
    assert wrapped.details == {"value": "x"}

    last = events[LAST_ID]
    assert last.timestamp == datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert last.event_type == "email_sent"
    assert last.details == {"subject": "Grüße"}

    # Imported events are signed like recorded ones.
    assert all(mac_of(e) == e.mac for e in events.values())
    assert verify().ok


@pytest.mark.django_db
def test_import_records_an_audit_imported_event_with_the_counts(tmp_path):
    path = mixed_file(tmp_path)
    run_command("import_audit_log", str(path), "--no-progress")

    marker = AuditEvent.objects.get(event_type="audit_imported")
    assert marker.details == {
        "files": [str(path)],
        "imported": 7,
        "already_present": 0,
        "bad_lines": 5,
    }
    assert marker.actor == "system"
    assert marker.correlation_id.startswith("import-")
    # Lines without a correlation id of their own join the run's.
    legacy_id = uuid.uuid5(LEGACY_NAMESPACE, canonical_json(LEGACY_LINE))
    assert AuditEvent.objects.get(uuid=legacy_id).correlation_id == marker.correlation_id
    assert AuditEvent.objects.get(uuid=GOOD_ID).correlation_id == "corr-1"


@pytest.mark.django_db
def test_summary_counts_every_non_blank_line_as_read(tmp_path):
    path = mixed_file(tmp_path)
    run = run_command("import_audit_log", str(path), "--no-progress")
    # 13 lines, one of them blank: 7 imported + 5 bad.
    assert "Read 12 lines: 7 imported, 0 already present, 5 bad." in run.out


ODD_LINES = [
    # A \ud800 escape decodes to a lone surrogate, which cannot be encoded.
    b'{"timestamp": "2024-01-01T00:00:00Z", "event_type": "lead_ingested", '
    b'"details": {"x": "\\ud800"}}\n',
    b'{"timestamp": "2024-01-01T00:00:00Z", "event_type": "lead_ingested", '
    b'"event_id": "------------------------------------"}\n',
    b'{"timestamp": "2024-01-01T00:00:00Z", "event_type": "lead_ingested", '
    b'"details": {"x": NaN}}\n',
    b'{"timestamp": "2024-01-01T00:00:00Z", "event_type": "lead_ingested", "actor": "bob"}\n',
    b'{"timestamp": "2024-01-01T00:00:00Z", "event_type": "lead_ingested", '
    b'"details": {"x": "a\\u0000b"}}\n',
]


@pytest.mark.django_db
def test_odd_lines_are_reported_not_fatal(tmp_path):
    good = jsonl({"timestamp": "2024-01-02T00:00:00Z", "event_type": "lead_routed"})
    path = write(tmp_path / "odd.jsonl", b"".join([*ODD_LINES, good]))
    run = run_command("import_audit_log", str(path), "--no-progress")
    assert "1 imported, 0 already present, 5 bad." in run.out
    reported = run.err.splitlines()
    assert [line.split(": ", 1)[0] for line in reported] == [f"{path}:{n}" for n in range(1, 6)]
    assert "surrogate" in reported[0]
    assert "UUID" in reported[1]
    assert "NaN" in reported[2]
    assert "actor 'bob'" in reported[3]
    assert "NUL" in reported[4]
    assert AuditEvent.objects.filter(event_type="lead_routed").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("line", "reasons"),
    [(ODD_LINES[1], ("event_id: ",)), (ODD_LINES[2], ("details", "not valid JSON"))],
    ids=["bad-event-id", "nan-in-details"],
)
def test_odd_line_reasons_say_where(tmp_path, line, reasons):
    path = write(tmp_path / "odd.jsonl", line)
    run = run_command("import_audit_log", str(path), "--no-progress")
    assert run.err.startswith(tuple(f"{path}:1: {r}" for r in reasons))


@pytest.mark.django_db
def test_several_files_in_one_run(tmp_path):
    plain = mixed_file(tmp_path, "a.jsonl")
    zipped = mixed_file(tmp_path, "b.jsonl.gz", gz=True)
    run = run_command("import_audit_log", str(plain), str(zipped), "--no-progress")
    assert ": 7 imported, 7 already present, 10 bad." in run.out
    reported = run.err.splitlines()
    assert [r.split(": ", 1)[0] for r in reported] == [
        f"{p}:{n}" for p in (plain, zipped) for n, _ in BAD
    ]
    marker = AuditEvent.objects.get(event_type="audit_imported")
    assert marker.details == {
        "files": [str(plain), str(zipped)],
        "imported": 7,
        "already_present": 7,
        "bad_lines": 10,
    }


@pytest.mark.django_db
def test_a_second_import_of_the_same_file_adds_nothing(tmp_path):
    good = b"".join(raw for _, raw, reason in MIXED if reason is None)
    path = write(tmp_path / "good.jsonl", good)

    first = run_command("import_audit_log", str(path), "--no-progress")
    assert first.error is None
    assert "Read 7 lines: 7 imported, 0 already present, 0 bad." in first.out
    count = AuditEvent.objects.count()
    ids = set(AuditEvent.objects.values_list("uuid", flat=True))
    assert count == 8  # and the audit_imported event

    second = run_command("import_audit_log", str(path), "--no-progress")
    assert second.error is None
    assert "Read 7 lines: 0 imported, 7 already present, 0 bad." in second.out
    assert AuditEvent.objects.count() == count
    assert set(AuditEvent.objects.values_list("uuid", flat=True)) == ids
    # Nothing imported, so no second audit_imported event.
    assert AuditEvent.objects.filter(event_type="audit_imported").count() == 1


@pytest.mark.django_db
def test_legacy_lines_get_an_id_derived_from_their_content(tmp_path):
    line = {
        "timestamp": "2023-07-01T08:00:00Z",
        "event_type": "lead_ingested",
        "lead_id": "LEAD-001",
        "workflow": "sales",
        "details": {"source": "web_form", "email": "p@example.com"},
    }
    a = write(tmp_path / "a.jsonl", jsonl(line))
    # The same content with other key order and spacing is the same event...
    reordered = json.dumps(dict(reversed(line.items())), indent=None, separators=(" , ", " : "))
    b = write(tmp_path / "b.jsonl", (reordered + "\n").encode())
    # ... and one changed field makes another event.
    c = write(tmp_path / "c.jsonl", jsonl(line | {"workflow": "support"}))

    assert run_command("import_audit_log", str(a), "--no-progress").error is None
    expected = uuid.uuid5(LEGACY_NAMESPACE, canonical_json(line))
    assert AuditEvent.objects.get(event_type="lead_ingested").uuid == expected

    run = run_command("import_audit_log", str(b), "--no-progress")
    assert "0 imported, 1 already present" in run.out
    run = run_command("import_audit_log", str(c), "--no-progress")
    assert "1 imported, 0 already present" in run.out
    assert AuditEvent.objects.filter(event_type="lead_ingested").count() == 2


@pytest.mark.django_db
def test_duplicates_within_and_across_batches_are_imported_once(tmp_path):
    lines = [
        {"timestamp": f"2024-01-0{i}T00:00:00Z", "event_type": "lead_routed", "lead_id": f"L{i}"}
        for i in range(1, 6)
    ]
    # Line 2 repeats line 1 (same batch); line 7 repeats line 3 (a later batch).
    path = write(tmp_path / "dups.jsonl", jsonl(lines[0], *lines, lines[2]))
    run = run_command("import_audit_log", str(path), "--no-progress", "--batch-size", "2")
    assert run.error is None
    assert "Read 7 lines: 5 imported, 2 already present, 0 bad." in run.out
    assert sorted(
        AuditEvent.objects.filter(event_type="lead_routed").values_list("lead_public_id", flat=True)
    ) == ["L1", "L2", "L3", "L4", "L5"]


@pytest.mark.django_db
def test_gzip_and_plain_files_import_the_same_events(tmp_path):
    plain = mixed_file(tmp_path, "legacy.jsonl")
    zipped = mixed_file(tmp_path, "legacy.jsonl.gz", gz=True)

    def imported():
        # Lines without a correlation id get the run's, which differs per run.
        return {
            u: event_to_legacy(e) | {"correlation_id": None}
            if e.correlation_id.startswith("import-")
            else event_to_legacy(e)
            for u, e in imported_events().items()
        }

    run_command("import_audit_log", str(plain), "--no-progress")
    from_plain = imported()
    empty_audit_tables()

    run = run_command("import_audit_log", str(zipped), "--no-progress")
    assert "7 imported, 0 already present, 5 bad." in run.out
    assert imported() == from_plain


@pytest.mark.django_db
def test_truncated_gzip_keeps_what_came_before_and_reports_the_tail(tmp_path):
    lines = [
        {
            "timestamp": f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
            "event_type": "lead_ingested",
            "details": {"blob": hashlib.sha256(str(i).encode()).hexdigest()},
        }
        for i in range(2000)
    ]
    whole = gzip.compress(jsonl(*lines))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])

    run = run_command("import_audit_log", str(path), "--no-progress")
    assert isinstance(run.error, CommandError)
    (reported,) = run.err.splitlines()
    imported = AuditEvent.objects.filter(event_type="lead_ingested").count()
    assert 0 < imported < 2000
    assert reported.startswith(f"{path}:{imported + 1}: file is truncated or corrupt")


@pytest.mark.django_db
def test_import_shows_progress_on_stderr_unless_told_not_to(tmp_path):
    path = mixed_file(tmp_path)
    run = run_command("import_audit_log", str(path))
    assert "legacy.jsonl" in run.err and "100%" in run.err


@pytest.mark.django_db
def test_import_of_a_missing_file_names_it(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(CommandError, match=f"{missing}: no such file"):
        call_command("import_audit_log", str(missing), stdout=StringIO(), stderr=StringIO())
    assert AuditEvent.objects.count() == 0


# --- export -------------------------------------------------------------------------------


def at(day, hour=12):
    return datetime(2024, 5, day, hour, 0, 0, 250000, tzinfo=UTC)


@pytest.fixture
def sample_events():
    """Events in two workflows, for three leads, one an error with a traceback."""
    try:
        raise ValueError("=1+2 from a cell")
    except ValueError as exc:
        raised = exc
    return [
        record_event(
            event_type="lead_ingested",
            lead_id="LEAD-000001",
            workflow="sales",
            actor="api:webform",
            timestamp=at(1),
            details={
                "name": "Zoë Ångström 山田",
                "tags": ["vip", "eu"],
                "address": {"city": "Zürich", "geo": {"lat": 47.37, "lon": 8.54}},
            },
        ),
        record_event(
            event_type="lead_qualified",
            lead_id="LEAD-000001",
            workflow="sales",
            timestamp=at(2),
            details={"qualified": True, "score": 85},
        ),
        record_event(
            event_type="lead_ingested",
            lead_id="LEAD-000002",
            workflow="support",
            timestamp=at(3),
            details={"note": '=HYPERLINK("http://evil.example","x")'},
        ),
        record_event(
            event_type="error",
            lead_id="LEAD-000002",
            workflow="support",
            timestamp=at(4),
            exc=raised,
        ),
        record_event(
            event_type="email_sent",
            lead_id="LEAD-000003",
            workflow="sales",
            timestamp=at(5),
            details={"subject": "Grüße"},
        ),
        record_event(event_type="workflow_started", workflow="support", timestamp=at(6)),
    ]


def parse_jsonl(text):
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.django_db
def test_export_jsonl_to_a_file(tmp_path, sample_events):
    path = tmp_path / "out" / "export.jsonl"
    path.parent.mkdir()
    run = run_command("export_audit_log", "--format", "jsonl", "--output", str(path))
    assert run.error is None
    assert f"Exported 6 events to {path}." in run.err

    text = path.read_text(encoding="utf-8")
    assert "Zoë Ångström 山田" in text  # UTF-8, not \u escapes
    lines = parse_jsonl(text)
    assert lines == [event_to_legacy(AuditEvent.objects.get(pk=e.pk)) for e in sample_events]
    error = lines[3]
    assert error["error_type"] == "ValueError"
    assert error["error_message"] == "=1+2 from a cell"
    assert error["traceback"].startswith("Traceback (most recent call last):")
    assert 'raise ValueError("=1+2 from a cell")' in error["traceback"]
    assert lines[0]["details"]["address"] == {"city": "Zürich", "geo": {"lat": 47.37, "lon": 8.54}}
    assert not path.with_name("export.jsonl.partial").exists()

    marker = AuditEvent.objects.get(event_type="audit_exported")
    assert marker.details["format"] == "jsonl"
    assert marker.details["count"] == 6
    assert marker.details["output"] == str(path)


@pytest.mark.django_db
def test_export_jsonl_to_stdout(sample_events):
    run = run_command("export_audit_log")
    assert run.error is None
    assert run.err == ""
    assert parse_jsonl(run.out) == [
        event_to_legacy(AuditEvent.objects.get(pk=e.pk)) for e in sample_events
    ]
    marker = AuditEvent.objects.get(event_type="audit_exported")
    assert marker.details["output"] == "stdout"
    assert marker.details["count"] == 6


@pytest.mark.django_db
def test_export_csv_has_the_columns_and_neutralises_formulas(tmp_path, sample_events):
    injected = record_event(
        event_type="error",
        lead_id="+15551234567",
        workflow="@ops",
        error_type="RuntimeError",
        error_message="=cmd|' /C calc'!A0",
        timestamp=at(7),
        details={"formula": "=1+1", "minus": "-2"},
    )
    path = tmp_path / "export.csv"
    run = run_command("export_audit_log", "--format", "csv", "-o", str(path))
    assert run.error is None

    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == CSV_COLUMNS
    records = [dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]]
    assert [r["event_id"] for r in records] == [str(e.uuid) for e in [*sample_events, injected]]

    first = records[0]
    assert first["timestamp"] == "2024-05-01T12:00:00.250000Z"
    assert first["event_type"] == "lead_ingested"
    assert first["actor"] == "api:webform"
    assert first["lead_id"] == "LEAD-000001"
    assert first["workflow"] == "sales"
    assert first["correlation_id"] == sample_events[0].correlation_id
    assert json.loads(first["details"]) == sample_events[0].details
    assert first["error_type"] == first["error_message"] == first["traceback"] == ""
    assert records[3]["traceback"].startswith("Traceback (most recent call last):")
    assert records[5]["lead_id"] == ""

    # A cell that would start with = + - @ runs as a formula in a spreadsheet:
    # it gets a leading apostrophe. A details cell is a JSON object, so it
    # starts with "{" and its "=..." values stay inert.
    bad = records[-1]
    assert bad["error_message"] == "'=cmd|' /C calc'!A0"
    assert bad["lead_id"] == "'+15551234567"
    assert bad["workflow"] == "'@ops"
    assert bad["details"].startswith("{")
    assert json.loads(bad["details"]) == {"formula": "=1+1", "minus": "-2"}
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)


EXPORT_FILTERS = [
    (["--type", "lead_ingested"], [0, 2]),
    (["--type", "lead_ingested", "--type", "error"], [0, 2, 3]),
    (["--lead", "LEAD-000002"], [2, 3]),
    (["--workflow", "support"], [2, 3, 5]),
    (["--workflow", "sales", "--lead", "LEAD-000001"], [0, 1]),
    # --since inclusive, --until exclusive; a bare date is midnight UTC.
    (["--since", "2024-05-02", "--until", "2024-05-04"], [1, 2]),
    (["--since", "2024-05-04T12:00:00.250000Z"], [3, 4, 5]),
    (["--until", "2024-05-02T14:00:00+02:00"], [0]),
    (["--until", "2024-05-02T14:00:00.250001+02:00"], [0, 1]),
    (["--since", "2024-05-02", "--type", "lead_ingested", "--workflow", "support"], [2]),
    (["--lead", "LEAD-999999"], []),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("args", "expected"), EXPORT_FILTERS)
def test_export_filters(sample_events, args, expected):
    run = run_command("export_audit_log", *args)
    assert run.error is None
    assert [line["event_id"] for line in parse_jsonl(run.out)] == [
        str(sample_events[i].uuid) for i in expected
    ]
    marker = AuditEvent.objects.get(event_type="audit_exported")
    assert marker.details["count"] == len(expected)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since: 'yesterday' is not a date"),
        (["--until", "2024-13-01"], "--until: '2024-13-01' is not a date"),
        (["--type", "lead_ingested", "--type", "nope"], "--type: unknown audit event type 'nope'"),
        (["--format", "xml"], "invalid choice: 'xml'"),
    ],
)
def test_export_refuses_bad_arguments(sample_events, args, message):
    run = run_command("export_audit_log", *args)
    assert isinstance(run.error, CommandError)
    assert message in str(run.error)
    assert run.out == ""
    assert not AuditEvent.objects.filter(event_type="audit_exported").exists()


@pytest.mark.django_db
def test_export_to_an_unwritable_place_is_a_command_error(tmp_path, sample_events):
    path = tmp_path / "no" / "such" / "dir" / "x.jsonl"
    run = run_command("export_audit_log", "-o", str(path))
    assert isinstance(run.error, CommandError)
    assert f"{path}: cannot write" in str(run.error)
    assert not AuditEvent.objects.filter(event_type="audit_exported").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_to_gz_is_gzip(tmp_path, sample_events, fmt):
    path = tmp_path / f"export.{fmt}.gz"
    run = run_command("export_audit_log", "--format", fmt, "-o", str(path))
    assert run.error is None
    data = path.read_bytes()
    assert data[:2] == b"\x1f\x8b"
    text = gzip.decompress(data).decode("utf-8")
    if fmt == "jsonl":
        assert [line["event_id"] for line in parse_jsonl(text)] == [
            str(e.uuid) for e in sample_events
        ]
    else:
        rows = list(csv.reader(io.StringIO(text, newline="")))
        assert rows[0] == CSV_COLUMNS
        assert len(rows) == 1 + len(sample_events)


@pytest.mark.django_db
def test_export_then_import_into_an_empty_store_round_trips(tmp_path, sample_events):
    record_event(event_type="crm_create", lead_id="LEAD-000003", details={"n": 1e20, "f": 0.1})
    seal_all()
    path = tmp_path / "all.jsonl"
    assert run_command("export_audit_log", "-o", str(path)).error is None
    exported = parse_jsonl(path.read_text(encoding="utf-8"))
    assert len(exported) == len(sample_events) + 1

    empty_audit_tables()
    assert AuditEvent.objects.count() == 0
    run = run_command("import_audit_log", str(path), "--no-progress")
    assert run.error is None
    assert f"{len(exported)} imported, 0 already present, 0 bad." in run.out

    def by_id(lines):
        return {line["event_id"]: line for line in lines}

    restored = [event_to_legacy(e) for e in AuditEvent.objects.exclude(event_type="audit_imported")]
    assert by_id(restored) == by_id(exported)
    assert len(restored) == len(exported)

    seal_all()
    run = run_command("verify_audit")
    assert run.error is None
    assert "Audit trail verified." in run.out
    assert verify().ok


@pytest.mark.django_db
def test_iter_events_reads_in_keyset_chunks():
    events = [record_event(event_type="lead_routed", details={"i": i}) for i in range(25)]
    with CaptureQueriesContext(connection) as ctx:
        stream = iter_events(chunk=10)
        first = [next(stream) for _ in range(10)]
        # Lazy: the first chunk is all that has been read so far.
        assert len(ctx.captured_queries) == 1
        rest = list(stream)
    assert [e.pk for e in first + rest] == [e.pk for e in events]
    selects = [q["sql"] for q in ctx.captured_queries]
    assert len(selects) == 4  # 10 + 10 + 5, then an empty chunk ends it
    assert all(sql.startswith("SELECT") and "LIMIT 10" in sql for sql in selects)
    # Keyset, not OFFSET: each chunk starts after the last id seen.
    assert all("OFFSET" not in sql for sql in selects)
    assert f'"id" > {events[9].pk}' in selects[1]
    assert f'"id" > {events[19].pk}' in selects[2]


@pytest.mark.django_db
def test_write_export_streams_in_chunks(monkeypatch):
    events = [record_event(event_type="lead_routed", details={"i": i}) for i in range(25)]
    monkeypatch.setattr(transfer, "iter_events", partial(transfer.iter_events, chunk=10))
    out = StringIO()
    with CaptureQueriesContext(connection) as ctx:
        assert write_export(out, fmt="jsonl") == 25
    assert [line["event_id"] for line in parse_jsonl(out.getvalue())] == [
        str(e.uuid) for e in events
    ]
    selects = [q["sql"] for q in ctx.captured_queries if q["sql"].startswith("SELECT")]
    assert len(selects) == 4
    assert all("LIMIT 10" in sql for sql in selects)
