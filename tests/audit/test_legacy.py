"""The legacy API keeps its names, arguments and event shapes."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connections

from audit import get_audit_logger
from audit.models import AuditEvent
from audit.services import AuditValidationError
from audit.types import UnknownEventType


@pytest.fixture
def audit():
    return get_audit_logger()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("call", "event_type", "details"),
    [
        (
            lambda a: a.log_lead_ingested(
                "LEAD-001", "web_form", {"email": "p@example.com", "name": "P"}, "sales"
            ),
            "lead_ingested",
            {"source": "web_form", "fields": ["email", "name"], "email": "p@example.com"},
        ),
        (
            lambda a: a.log_lead_qualified("LEAD-001", True, "score 85", "sales"),
            "lead_qualified",
            {"qualified": True, "reason": "score 85"},
        ),
        (
            lambda a: a.log_lead_routed("LEAD-001", "team-emea", "country in EU", "sales"),
            "lead_routed",
            {"destination": "team-emea", "condition": "country in EU"},
        ),
        (
            lambda a: a.log_crm_create("LEAD-001", "hs-991", "hubspot", "sales"),
            "crm_create",
            {"crm_record_id": "hs-991", "crm_type": "hubspot"},
        ),
        (
            lambda a: a.log_crm_update("LEAD-001", "hs-991", ["phone", "title"], "sales"),
            "crm_update",
            {"crm_record_id": "hs-991", "fields_updated": ["phone", "title"]},
        ),
        (
            lambda a: a.log_email_sent("LEAD-001", "p@example.com", "Hello", 1, "sales"),
            "email_sent",
            {"recipient": "p@example.com", "subject": "Hello", "sequence_step": 1},
        ),
        (
            lambda a: a.log_email_scheduled("LEAD-001", "p@example.com", 3, "sales"),
            "email_scheduled",
            {"recipient": "p@example.com", "sequence_length": 3},
        ),
        (
            lambda a: a.log_email_cancelled("LEAD-001", "p@example.com", "replied", "sales"),
            "email_cancelled",
            {"recipient": "p@example.com", "reason": "replied"},
        ),
        (lambda a: a.log_workflow_started("sales"), "workflow_started", {}),
        (lambda a: a.log_workflow_stopped("sales"), "workflow_stopped", {"reason": "manual"}),
        (
            lambda a: a.log_event("lead_ingested", {"k": "v"}, "LEAD-001", "sales"),
            "lead_ingested",
            {"k": "v"},
        ),
    ],
)
def test_each_legacy_method_writes_its_documented_event(audit, call, event_type, details):
    returned = call(audit)
    event = AuditEvent.objects.get()
    assert event.event_type == event_type
    assert event.details == details
    assert event.actor == "system"
    assert event.workflow == "sales"
    assert returned["event_type"] == event_type
    assert returned["details"] == details
    assert returned["timestamp"].endswith("Z")
    if event_type.startswith(("lead_", "crm_", "email_")):
        assert event.lead_public_id == "LEAD-001"
        assert returned["lead_id"] == "LEAD-001"


@pytest.mark.django_db
def test_log_error_captures_the_traceback_being_handled(audit):
    try:
        {}["email"]
    except KeyError:
        line = audit.log_error("KeyError", "no email", "LEAD-007", "sales")
    event = AuditEvent.objects.get()
    assert event.event_type == "error"
    assert event.error_type == "KeyError"
    assert event.error_message == "no email"
    assert "Traceback (most recent call last)" in event.traceback
    assert '{}["email"]' in event.traceback
    assert event.details == {"error_type": "KeyError", "error_message": "no email"}
    assert line["traceback"] == event.traceback


@pytest.mark.django_db
def test_log_error_accepts_an_exception_and_an_explicit_traceback(audit):
    try:
        raise TimeoutError("CRM did not answer")
    except TimeoutError as exc:
        error = exc
    audit.log_error(error, workflow="sales", context={"crm": "hubspot"})
    audit.log_error("ValueError", "bad row", traceback="given traceback")
    first, second = AuditEvent.objects.order_by("id")
    assert first.error_type == "TimeoutError"
    assert first.error_message == "CRM did not answer"
    assert "raise TimeoutError" in first.traceback
    assert first.details["crm"] == "hubspot"
    assert second.traceback == "given traceback"


@pytest.mark.django_db
def test_unknown_type_and_non_json_details_are_refused(audit):
    with pytest.raises(UnknownEventType, match="unknown audit event type 'lead_lost'"):
        audit.log_event("lead_lost", {})
    with pytest.raises(AuditValidationError, match="not JSON-serializable"):
        audit.log_event("lead_ingested", {"when": object()})
    assert AuditEvent.objects.count() == 0


@pytest.mark.django_db
def test_query_events_filters_and_limits(audit):
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    from audit.services import record_event

    for i in range(6):
        record_event(
            event_type="error" if i % 3 == 0 else "lead_routed",
            error_type="X" if i % 3 == 0 else "",
            error_message="boom" if i % 3 == 0 else "",
            lead_id=f"LEAD-00{i % 2}",
            workflow="sales" if i < 4 else "support",
            actor="user:ann" if i == 5 else None,
            timestamp=t0 + timedelta(hours=i),
        )
    errors = audit.query_events(event_type="error", limit=50)
    assert [e["timestamp"] for e in errors] == [
        "2026-05-01T03:00:00.000000Z",
        "2026-05-01T00:00:00.000000Z",
    ]  # newest first
    assert len(audit.query_events(lead_id="LEAD-001")) == 3
    assert len(audit.query_events(workflow="support")) == 2
    assert len(audit.query_events(actor="user:ann")) == 1
    window = audit.query_events(since=t0 + timedelta(hours=1), until=t0 + timedelta(hours=3))
    assert len(window) == 2
    legacy_names = audit.query_events(start_time=t0 + timedelta(hours=4), end_time=None)
    assert len(legacy_names) == 2
    assert len(audit.query_events(limit=2)) == 2


@pytest.mark.django_db
def test_lead_history_is_chronological(audit):
    audit.log_lead_ingested("LEAD-9", "csv", {"email": "a@b.c"}, "sales")
    audit.log_lead_qualified("LEAD-9", False, "free mail", "sales")
    audit.log_lead_routed("LEAD-8", "x", "y", "sales")
    history = audit.get_lead_history("LEAD-9")
    assert [e["event_type"] for e in history] == ["lead_ingested", "lead_qualified"]


@pytest.mark.django_db
def test_get_statistics_keeps_the_legacy_keys(audit):
    audit.log_lead_ingested("LEAD-1", "csv", {"email": "a@b.c"}, "sales")
    audit.log_lead_ingested("LEAD-2", "csv", {"email": "d@b.c"}, "sales")
    audit.log_error("E", "boom", "LEAD-1", "sales")
    audit.log_workflow_started("support")
    stats = audit.get_statistics(workflow="sales")
    assert stats["total_events"] == 3
    assert stats["event_types"] == {"error": 1, "lead_ingested": 2}
    assert stats["errors"] == 1
    assert stats["leads_processed"] == 2
    assert stats["error_rate"] == pytest.approx(1 / 3, abs=1e-6)
    assert stats["by_workflow"] == {"sales": 3}
    assert sum(stats["by_day"].values()) == 3
    assert get_audit_logger().get_statistics()["total_events"] == 4


@pytest.mark.django_db(transaction=True)
def test_one_logger_shared_by_threads():
    loggers, errors = [], []

    def work(n):
        try:
            logger = get_audit_logger()
            loggers.append(logger)
            for i in range(25):
                logger.log_lead_routed(f"LEAD-{n}", "team", f"rule {i}", "sales")
        except Exception as exc:  # noqa: BLE001 (reported to the test thread)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({id(x) for x in loggers}) == 1
    assert AuditEvent.objects.count() == 125
    for n in range(5):
        assert len(get_audit_logger().get_lead_history(f"LEAD-{n}")) == 25


# --- time ranges: since/start_time inclusive, until/end_time exclusive -------------------

SINCE = datetime(2026, 5, 1, 10, 30, tzinfo=UTC)
TICK = timedelta(microseconds=1)
# Each range as the legacy callers wrote it: aware datetimes, the log's own
# timestamp text, naive datetimes (read as UTC, as the log was written).
RANGE_FORMS = {
    "aware": lambda since, until: (since, until),
    "text": lambda since, until: (
        since.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        until.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    ),
    "naive": lambda since, until: (since.replace(tzinfo=None), until.replace(tzinfo=None)),
}


def edge_events(since, until):
    """One lead per edge: just before since, at since, just before until, at until."""
    from audit.services import record_event

    for lead, ts in [
        ("LEAD-BEFORE", since - TICK),
        ("LEAD-FIRST", since),
        ("LEAD-LAST", until - TICK),
        ("LEAD-AT-UNTIL", until),
    ]:
        record_event(event_type="lead_routed", lead_id=lead, workflow="sales", timestamp=ts)


@pytest.mark.django_db
@pytest.mark.parametrize("form", RANGE_FORMS)
@pytest.mark.parametrize("sealed", [False, True], ids=["unsealed", "sealed"])
@pytest.mark.parametrize(
    "length",
    # Within an hour (rows only), over hours, over days (daily and lead-day rollups).
    [timedelta(minutes=20), timedelta(hours=5), timedelta(days=3, hours=2, minutes=45)],
    ids=["minutes", "hours", "days"],
)
def test_get_statistics_counts_from_since_up_to_until(audit, form, sealed, length):
    from audit.integrity import seal_all

    until = SINCE + length
    edge_events(SINCE, until)
    if sealed:
        seal_all()
    since_arg, until_arg = RANGE_FORMS[form](SINCE, until)
    stats = audit.get_statistics(workflow="sales", since=since_arg, until=until_arg)
    assert stats["total_events"] == 2
    assert stats["event_types"] == {"lead_routed": 2}
    assert stats["leads_processed"] == 2
    assert stats["since"] == SINCE.isoformat()
    assert stats["until"] == until.isoformat()
    assert (
        audit.get_statistics(workflow="support", since=since_arg, until=until_arg)["total_events"]
        == 0
    )


@pytest.mark.django_db
def test_get_statistics_takes_dates_as_midnight_utc(audit):
    from datetime import date

    from audit.services import record_event

    for lead, ts in [
        ("LEAD-A", datetime(2026, 5, 1, 23, 59, 59, tzinfo=UTC)),
        ("LEAD-B", datetime(2026, 5, 2, tzinfo=UTC)),
        ("LEAD-C", datetime(2026, 5, 3, 23, 59, 59, tzinfo=UTC)),
        ("LEAD-D", datetime(2026, 5, 4, tzinfo=UTC)),
    ]:
        record_event(event_type="lead_routed", lead_id=lead, workflow="sales", timestamp=ts)
    stats = audit.get_statistics(since=date(2026, 5, 2), until=date(2026, 5, 4))
    assert stats["by_day"] == {"2026-05-02": 1, "2026-05-03": 1}
    assert stats["leads_processed"] == 2


@pytest.mark.django_db
def test_get_statistics_refuses_what_is_not_a_time(audit):
    with pytest.raises(ValueError, match="since: 'last week' is not an ISO 8601 time"):
        audit.get_statistics(since="last week")
    with pytest.raises(TypeError, match="until: expected a datetime"):
        audit.get_statistics(until=1746057600)


@pytest.mark.django_db
@pytest.mark.parametrize("form", RANGE_FORMS)
def test_query_events_from_start_time_up_to_end_time(audit, form):
    until = SINCE + timedelta(hours=2)
    edge_events(SINCE, until)
    start, end = RANGE_FORMS[form](SINCE, until)
    for found in (
        audit.query_events(start_time=start, end_time=end),
        audit.query_events(since=start, until=end),
    ):
        assert [e["lead_id"] for e in found] == ["LEAD-LAST", "LEAD-FIRST"]
    assert [e["lead_id"] for e in audit.query_events(start_time=start)] == [
        "LEAD-AT-UNTIL",
        "LEAD-LAST",
        "LEAD-FIRST",
    ]
    assert [e["lead_id"] for e in audit.query_events(end_time=end, limit=1)] == ["LEAD-LAST"]
