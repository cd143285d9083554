"""Every shape of line the legacy logger could have written imports, with nothing
of it lost; what is refused is refused with the line number and the reason."""

import json
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from audit.signing import mac_of
from audit.transfer import NO_ERROR_DETAILS, _plainly_valid, _validator, import_files
from orchestrator.devtools.legacy_corpus import TRACEBACK, legacy_lines

pytestmark = pytest.mark.django_db

T = "2026-02-04T20:30:45.123456Z"


def line(**fields) -> dict:
    return {"timestamp": T, "actor": "system", "workflow": "sales", **fields}


# (the line as the legacy logger wrote it, what the stored event must hold)
CORPUS = [
    # log_error(): the error's parts inside details, in log_error's own keys.
    (
        line(
            event_type="error",
            lead_id="LEAD-001",
            details={
                "error_type": "ValueError",
                "error_message": "bad email",
                "traceback": TRACEBACK,
            },
        ),
        {"error_type": "ValueError", "error_message": "bad email", "traceback": TRACEBACK},
    ),
    # Hand-written log_event("error", {...}) calls, with other spellings.
    (
        line(event_type="error", details={"error": "timeout talking to HubSpot"}),
        {"error_type": "", "error_message": "timeout talking to HubSpot", "traceback": ""},
    ),
    (
        line(
            event_type="error",
            details={"type": "KeyError", "message": "'email'", "stack_trace": "Traceback..."},
        ),
        {"error_type": "KeyError", "error_message": "'email'", "traceback": "Traceback..."},
    ),
    (
        line(event_type="error", details={"exception": {"code": 500}, "step": "crm"}),
        {"error_type": "", "error_message": '{"code": 500}', "traceback": ""},
    ),
    # An error line that recorded nothing about the error is kept, and says so.
    (
        line(event_type="error", lead_id=None, details={}),
        {"error_type": "", "error_message": NO_ERROR_DETAILS, "lead_public_id": ""},
    ),
    # Workflow events carry no lead id; the legacy logger wrote null.
    (line(event_type="workflow_started", lead_id=None, details={}), {"lead_public_id": ""}),
    (line(event_type="workflow_stopped", details={"reason": "manual"}), {"lead_public_id": ""}),
    # Lead ids with any printable characters.
    (
        line(event_type="lead_ingested", lead_id="acme/42 ü#?%", details={}),
        {"lead_public_id": "acme/42 ü#?%"},
    ),
    (line(event_type="lead_routed", lead_id=42, details={}), {"lead_public_id": "42"}),
    # A type the vocabulary does not know: kept as written.
    (
        line(event_type="lead_scored", lead_id="L1", details={"score": 80}),
        {"event_type": "lead_scored"},
    ),
    (line(event_type="CRM.Sync-Done", details={}), {"event_type": "CRM.Sync-Done"}),
    # No zone: the legacy logger wrote UTC.
    (
        {"timestamp": "2026-02-04T20:30:45", "event_type": "email_sent", "details": {}},
        {"timestamp": datetime(2026, 2, 4, 20, 30, 45, tzinfo=UTC)},
    ),
    # Keys the format does not have are kept, inside details.
    (
        line(event_type="crm_update", details={"crm_record_id": "c1"}, host="legacy-01"),
        {"details": {"crm_record_id": "c1", "legacy_fields": {"host": "legacy-01"}}},
    ),
    # No actor, null details.
    (
        {"timestamp": T, "event_type": "email_cancelled", "details": None},
        {"actor": "system", "details": {}},
    ),
]


def write(tmp_path, lines) -> object:
    path = tmp_path / "audit.log"
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    return path


def test_every_documented_shape_imports_with_nothing_lost(tmp_path):
    path = write(tmp_path, [raw for raw, _ in CORPUS])
    report = import_files([path])
    assert report.bad == []
    assert report.imported == len(CORPUS)
    assert dict(report.unknown_types) == {"lead_scored": 1, "CRM.Sync-Done": 1}
    events = list(AuditEvent.objects.exclude(event_type="audit_imported").order_by("id"))
    assert len(events) == len(CORPUS)
    for event, (raw, expected) in zip(events, CORPUS, strict=True):
        for field, value in expected.items():
            assert getattr(event, field) == value, (field, raw)
        if "details" not in expected and isinstance(raw.get("details"), dict):
            # The original details are kept as written, error keys included.
            assert event.details == raw["details"], raw
        assert mac_of(event) == event.mac
    # Imported again: nothing new, by the id derived from each line's content.
    again = import_files([path])
    assert (again.imported, again.already_present) == (0, len(CORPUS))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"timestamp": "yesterday", "event_type": "email_sent"}', "timestamp: "),
        (
            '{"timestamp": "2026-02-04T20:30:45Z", "event_type": "lead scored!"}',
            "not a usable type",
        ),
        (
            '{"timestamp": "2026-02-04T20:30:45Z", "event_type": "crm_create", "lead_id": "'
            + "L" * 33
            + '"}',
            "lead_id: ",
        ),
        ('{"event_type": "email_sent"}', "'timestamp' is a required property"),
        ("[1, 2]", "line: list is not an object"),
        (
            '{"timestamp": "2026-02-04T20:30:45Z", "event_type": "error", '
            '"details": {"a": "\\u0000"}}',
            "NUL",
        ),
    ],
)
def test_what_is_refused_is_named_with_its_line(tmp_path, raw, reason):
    path = tmp_path / "audit.log"
    path.write_text(
        '{"timestamp": "2026-02-04T20:30:45Z", "event_type": "email_sent"}\n' + raw + "\n"
    )
    report = import_files([path])
    assert report.imported == 1
    (bad,) = report.bad
    assert bad.line_no == 2
    assert reason in bad.reason


def test_the_event_page_of_a_lead_id_with_a_slash_opens(tmp_path, admin_client):
    path = write(tmp_path, [line(event_type="lead_ingested", lead_id="acme/42", details={})])
    import_files([path])
    event = AuditEvent.objects.get(lead_public_id="acme/42")
    page = admin_client.get(reverse("event-detail", args=[event.pk]))
    assert page.status_code == 200
    assert "acme/42" in page.content.decode()


def test_the_fast_check_never_passes_a_line_the_schema_refuses():
    samples = [json.loads(x) for x in legacy_lines(300, seed=3)]
    samples += [raw for raw, _ in CORPUS]
    samples += [
        {"timestamp": T, "event_type": "x"},  # type too short for the pattern
        {"timestamp": T, "event_type": "email_sent", "event_id": 5},
        {"timestamp": T, "event_type": "email_sent", "lead_id": "L" * 33},
        {"timestamp": "2026", "event_type": "email_sent"},
        {"timestamp": T, "event_type": "email_sent", "details": []},
        {"timestamp": T, "event_type": "email_sent", "actor": 7},
    ]
    for sample in samples:
        if _plainly_valid(sample):
            assert not list(_validator.iter_errors(sample)), sample
