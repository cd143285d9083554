"""The legacy import's fast paths give exactly what the plain ones give: rows
built without model instances, lines parsed in worker processes, mirror lines
put together from their parts, timestamps formatted without strftime."""

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from audit import transfer
from audit.integrity import verify
from audit.jsonl import event_to_legacy, legacy_line_text
from audit.mirror import mirror
from audit.models import AuditEvent
from audit.services import AuditValidationError, build_event, record_event
from audit.signing import format_timestamp, mac_of
from audit.transfer import import_files, parse_line
from core.jsonvalues import strict_loads
from orchestrator.devtools.legacy_corpus import legacy_lines
from tests.audit.test_transfer import empty_audit_tables

ODD_LINES = [
    "not json at all\n",
    '{"timestamp": "2025-01-01T00:00:00Z", "event_type": "lead_teleported", "details": 2.0}\n',
    '{"timestamp": "2025-01-01T00:00:00Z", "event_type": "error", "details": {"error": 1.0}}\n',
    '{"timestamp": "2025-01-01", "event_type": "lead_routed", "details": {"x": "a\\u0000b"}}\n',
    "\n",
    '{"timestamp": "2025-01-01T00:00:00+02:00", "event_type": "lead_routed", '
    '"details": {"n": [1.0, 1.5, {"k": -0.0}], "s": "Grüße \\"q\\" \\\\u0000"}}\n',
]


def corpus(path, *, count=400):
    lines = list(legacy_lines(count, seed=11))
    # Odd lines among the good ones, and one line twice.
    for at, odd in zip(range(5, count, count // len(ODD_LINES)), ODD_LINES, strict=False):
        lines.insert(at, odd)
    lines.append(lines[0])
    path.write_bytes("".join(lines).encode() + b"\xff\xfe not utf-8\n")
    return lines


def stored():
    return {
        e.uuid: (
            e.timestamp,
            e.event_type,
            e.actor,
            e.lead_public_id,
            e.workflow,
            e.details,
            e.error_type,
            e.error_message,
            e.traceback,
            e.fingerprint,
            e.correlation_id,
            e.mac,
        )
        for e in AuditEvent.objects.exclude(event_type="audit_imported")
    }


def mirror_lines(path):
    assert mirror.flush()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted(
        (line for line in lines if line["event_type"] != "audit_imported"),
        key=lambda line: line["event_id"],
    )


def expected_mirror_lines():
    # Compared as JSON: PostgreSQL's jsonb gives details back in its own key order.
    events = AuditEvent.objects.exclude(event_type="audit_imported")
    return sorted(
        (json.loads(legacy_line_text(e)) for e in events), key=lambda line: line["event_id"]
    )


def without_run(rows):
    """Rows minus what differs between two runs: lines with no correlation id
    take the run's, which the MAC covers."""
    return {key: row[:-2] for key, row in rows.items()}


@pytest.mark.django_db(transaction=True)  # the mirror is written after commit
def test_parallel_import_stores_and_reports_what_the_serial_one_does(
    tmp_path, monkeypatch, audit_mirror_path
):
    monkeypatch.setattr(transfer, "CHUNK_LINES", 17)
    path = tmp_path / "audit.log"
    lines = corpus(path)

    parallel = import_files([path], jobs=2, batch_size=50)
    parallel_rows = stored()
    assert mirror_lines(audit_mirror_path) == expected_mirror_lines()
    assert verify().ok
    empty_audit_tables()
    audit_mirror_path.unlink()
    serial = import_files([path], jobs=1, batch_size=50)
    serial_rows = stored()
    assert mirror_lines(audit_mirror_path) == expected_mirror_lines()

    assert parallel.imported == serial.imported == len(parallel_rows) > 390
    assert parallel.already_present == serial.already_present == 1
    assert parallel.lines == serial.lines == len([t for t in lines if t.strip()]) + 1
    assert [(b.line_no, b.reason) for b in parallel.bad] == [
        (b.line_no, b.reason) for b in serial.bad
    ]
    assert [b.reason.split(" (")[0] for b in parallel.bad] == [
        "not valid JSON",
        "details contain a NUL character, which JSON columns refuse",
        "not UTF-8",
    ]
    assert parallel.unknown_types == serial.unknown_types == {"lead_teleported": 1}
    assert without_run(parallel_rows) == without_run(serial_rows)

    # Each row is what parse_line, through the model, makes of its line.
    for line in lines:
        try:
            event = parse_line(line, correlation_id=serial.correlation_id)
        except ValueError:
            continue
        row = serial_rows[event.uuid]
        assert row[-1] == event.mac == mac_of(event)
        assert row[5] == event.details
        assert row[:2] == (event.timestamp, event.event_type)
    kept = AuditEvent.objects.get(event_type="lead_teleported")
    assert kept.details == {"value": 2}
    error = AuditEvent.objects.get(event_type="error", details={"error": 1})
    assert error.error_message == "1"
    assert verify().ok


EVENTS = [
    {"event_type": "lead_ingested"},
    {"event_type": "lead_ingested", "lead_id": "LEAD-1", "workflow": "sales"},
    {
        "event_type": "lead_routed",
        "details": {"z": "Grüße", "a": ['"q"', "\\", "\n\t\x01"], "n": None, "f": 1.5},
        "correlation_id": "c-1",
        "actor": "user:zoë",
    },
    {"event_type": "error", "error_type": "ValueError", "error_message": 'a "b"\n'},
    {"event_type": "error", "error_message": "m", "traceback": "Traceback ...\n  ü\n"},
]
TIMES = [
    datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # no microseconds
    datetime(1000, 1, 1, tzinfo=UTC),
    datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 6, 1, 12, tzinfo=UTC) + timedelta(hours=5),
]


@pytest.mark.parametrize("kwargs", EVENTS)
@pytest.mark.parametrize("when", TIMES[:3])
def test_line_text_is_the_dumps_of_event_to_legacy(kwargs, when):
    event = build_event(timestamp=when, **kwargs)
    expected = json.dumps(event_to_legacy(event), ensure_ascii=False)
    assert legacy_line_text(event) == expected
    assert legacy_line_text(dict(vars(event))) == expected


@pytest.mark.parametrize("when", TIMES)
def test_timestamps_are_formatted_as_strftime_formats_them(when):
    assert format_timestamp(when) == when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if when.year > 1:  # the same instant, three hours west
        west = when.astimezone(timezone(timedelta(hours=-3)))
        assert format_timestamp(west) == format_timestamp(when)


@pytest.mark.django_db
def test_a_nul_in_details_is_refused_and_the_text_backslash_u0000_is_kept():
    with pytest.raises(AuditValidationError, match="NUL"):
        record_event(event_type="lead_routed", details={"deep": [{"x": "a\x00b"}]})
    with pytest.raises(AuditValidationError, match="NUL"):
        record_event(event_type="lead_routed", details={"key\x00": 1})
    kept = record_event(event_type="lead_routed", details={"x": "\\u0000", "y": "\\\\u0000"})
    assert AuditEvent.objects.get(pk=kept.pk).details == {"x": "\\u0000", "y": "\\\\u0000"}


@pytest.mark.parametrize("fold", [False, True])
def test_strict_loads_reads_text_and_bytes_alike(fold):
    text = '{"a": [1.0, 2.5, -0.0, 3], "b": "é"}'
    for raw in (text, text.encode(), text.encode("utf-16")):
        data = strict_loads(raw, integral_floats_as_int=fold)
        assert data == {"a": [1, 2.5, 0, 3], "b": "é"}
        assert [type(v) for v in data["a"]] == (
            [int, float, int, int] if fold else [float, float, float, int]
        )
    for bad, message in [
        ('{"a": NaN}', "NaN is not valid JSON"),
        ('{"a": 1e999}', "out of range"),
        ("\ufeff{}", "BOM"),
        ('{"a": ', "Expecting value"),
    ]:
        with pytest.raises(ValueError, match=message):
            strict_loads(bad, integral_floats_as_int=fold)
