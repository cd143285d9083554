import json
import uuid
from datetime import UTC, datetime

import pytest
from django.db import transaction

from audit.mirror import mirror
from audit.models import AppendOnlyError, AuditEvent
from audit.services import AuditValidationError, audit_context, record_event, record_events
from audit.signing import mac_of
from audit.types import UnknownEventType
from leads.services import lead_create


def mirror_lines(path):
    mirror.flush()
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.django_db(transaction=True)
def test_event_commits_with_the_change_and_reaches_the_mirror(audit_mirror_path, web_source):
    with transaction.atomic():
        lead = lead_create(source=web_source, email="ann@example.com", name="Ann")
        record_event(event_type="lead_qualified", lead=lead, details={"score": 80})
        # Not yet committed: nothing in the mirror.
        assert mirror_lines(audit_mirror_path) == []
    events = list(AuditEvent.objects.order_by("id"))
    assert [e.event_type for e in events] == ["lead_ingested", "lead_qualified"]
    assert all(e.lead_public_id == lead.public_id for e in events)
    lines = mirror_lines(audit_mirror_path)
    assert [line["event_type"] for line in lines] == ["lead_ingested", "lead_qualified"]
    assert lines[1]["lead_id"] == lead.public_id
    assert lines[1]["details"] == {"score": 80}
    assert lines[1]["event_id"] == str(events[1].uuid)


@pytest.mark.django_db(transaction=True)
def test_rollback_leaves_no_event_and_no_mirror_line(audit_mirror_path, web_source):
    class Boom(Exception):
        pass

    with pytest.raises(Boom), transaction.atomic():
        lead_create(source=web_source, email="bob@example.com")
        record_event(event_type="lead_routed", lead_id="LEAD-000001", details={})
        raise Boom
    assert AuditEvent.objects.count() == 0
    assert mirror_lines(audit_mirror_path) == []


@pytest.mark.django_db(transaction=True)
def test_savepoint_rollback_drops_only_its_events(audit_mirror_path):
    with transaction.atomic():
        record_event(event_type="workflow_started", workflow="sales")
        try:
            with transaction.atomic():
                record_event(event_type="lead_routed", workflow="sales")
                raise ValueError("inner failure")
        except ValueError:
            pass
    assert list(AuditEvent.objects.values_list("event_type", flat=True)) == ["workflow_started"]
    assert [line["event_type"] for line in mirror_lines(audit_mirror_path)] == ["workflow_started"]


@pytest.mark.django_db
def test_event_fields_and_mac():
    ts = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    event = record_event(
        event_type="crm_create",
        actor="user:alice",
        lead_id="LEAD-000042",
        workflow="sales",
        correlation_id="req-1",
        details={"crm_record_id": "123", "amount": 10.0, "nested": {"b": 1, "a": [1, 2]}},
        timestamp=ts,
    )
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.timestamp == ts  # microseconds survive
    assert stored.actor == "user:alice"
    assert stored.lead_public_id == "LEAD-000042"
    assert stored.correlation_id == "req-1"
    assert stored.details["amount"] == 10
    assert mac_of(stored) == stored.mac
    assert len(stored.mac) == 64


@pytest.mark.django_db
def test_error_event_captures_exception_and_traceback():
    def fail():
        raise KeyError("missing field 'email'")

    try:
        fail()
    except KeyError as exc:
        event = record_event(event_type="error", exc=exc, workflow="sales")
    assert event.error_type == "KeyError"
    assert "missing field" in event.error_message
    assert "in fail" in event.traceback and "Traceback" in event.traceback


@pytest.mark.django_db
def test_audit_context_sets_actor_and_correlation_for_the_block():
    with audit_context(actor="api:website") as cid:
        first = record_event(event_type="lead_ingested")
        second = record_event(event_type="lead_qualified")
    outside = record_event(event_type="lead_routed")
    assert first.actor == second.actor == "api:website"
    assert first.correlation_id == second.correlation_id == cid
    assert outside.actor == "system"
    assert outside.correlation_id != cid


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"event_type": "lead_teleported"}, "unknown audit event type 'lead_teleported'"),
        ({"event_type": "lead_routed", "details": {"when": datetime.now(UTC)}}, "JSON"),
        ({"event_type": "lead_routed", "details": {"x": float("nan")}}, "JSON"),
        ({"event_type": "lead_routed", "details": ["not", "an", "object"]}, "JSON object"),
        ({"event_type": "lead_routed", "details": {"x": "a\x00b"}}, "NUL"),
        ({"event_type": "lead_routed", "actor": "mallory"}, "actor 'mallory'"),
        ({"event_type": "lead_routed", "lead_id": "L" * 40}, "lead_id is 40 characters"),
        ({"event_type": "error"}, "error event needs"),
        ({"event_type": "lead_routed", "timestamp": datetime(2026, 1, 1)}, "timezone-aware"),
    ],
)
def test_bad_input_gets_a_clear_error_and_writes_nothing(kwargs, message):
    with pytest.raises((AuditValidationError, UnknownEventType), match=message):
        record_event(**kwargs)
    assert AuditEvent.objects.count() == 0


@pytest.mark.django_db
def test_extra_event_types_from_settings(settings):
    settings.AUDIT_EXTRA_EVENT_TYPES = ["invoice_sent"]
    assert record_event(event_type="invoice_sent").event_type == "invoice_sent"


@pytest.mark.django_db
def test_events_are_append_only_through_the_orm():
    event = record_event(event_type="lead_ingested", details={"a": 1})
    event.details = {"a": 2}
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(details={})
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.bulk_update([event], ["details"])
    assert AuditEvent.objects.get(pk=event.pk).details == {"a": 1}


@pytest.mark.django_db
def test_history_survives_lead_deletion(web_source):
    lead = lead_create(source=web_source, email="gone@example.com")
    public_id = lead.public_id
    lead.delete()
    event = AuditEvent.objects.get(lead_public_id=public_id)
    assert event.event_type == "lead_ingested"


@pytest.mark.django_db
def test_uuid_is_unique():
    event = record_event(event_type="lead_ingested")
    from django.db import IntegrityError

    copy = AuditEvent(
        uuid=event.uuid, timestamp=event.timestamp, event_type="lead_ingested", mac=event.mac
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        copy.save()
    assert isinstance(event.uuid, uuid.UUID)


@pytest.mark.django_db
def test_fast_insert_matches_the_orm():
    """record_event's fast path (SQLite, PostgreSQL) stores exactly what Model.save() would."""
    from audit.services import build_event

    when = datetime(2026, 3, 1, 12, 0, 0, 0, tzinfo=UTC)  # no microseconds: a formatting edge
    kwargs = {
        "event_type": "lead_routed",
        "actor": "user:ann",
        "lead_id": "LEAD-000007",
        "workflow": "sales",
        "correlation_id": "c-1",
        "details": {"ünïcode": "✓", "n": [1, 2.5, None], "nested": {"b": True}},
        "timestamp": when,
    }
    fast = record_event(**kwargs)
    slow = build_event(**kwargs)
    slow.save()
    a, b = AuditEvent.objects.get(pk=fast.pk), AuditEvent.objects.get(pk=slow.pk)
    for field in [
        "timestamp",
        "event_type",
        "actor",
        "lead_public_id",
        "workflow",
        "correlation_id",
        "details",
        "error_type",
        "error_message",
        "traceback",
    ]:
        assert getattr(a, field) == getattr(b, field), field
    assert a.uuid == fast.uuid
    assert mac_of(a) == a.mac
    assert AuditEvent.objects.filter(timestamp=when).count() == 2
    assert AuditEvent.objects.filter(uuid=fast.uuid).exists()
    assert fast._state.adding is False


@pytest.mark.django_db(transaction=True)
def test_record_events_writes_all_in_order_with_the_change_or_none(audit_mirror_path):
    calls = [
        {"event_type": "lead_routed", "lead_id": f"LEAD-{i:06d}", "details": {"i": i}}
        for i in range(5)
    ]
    with transaction.atomic():
        events = record_events(calls)
        assert mirror_lines(audit_mirror_path) == []  # not committed yet
    stored = list(AuditEvent.objects.order_by("id"))
    assert [e.id for e in events] == [e.id for e in stored]
    assert [e.details["i"] for e in stored] == [0, 1, 2, 3, 4]
    assert all(mac_of(e) == e.mac for e in stored)
    assert [line["details"]["i"] for line in mirror_lines(audit_mirror_path)] == [0, 1, 2, 3, 4]
    # One bad event keeps all of them out, and the caller's transaction usable.
    with pytest.raises(AuditValidationError, match="actor"), transaction.atomic():
        record_events([calls[0], {**calls[1], "actor": "nobody"}])
    assert AuditEvent.objects.count() == 5
    with pytest.raises(RuntimeError), transaction.atomic():
        record_events(calls)
        raise RuntimeError
    assert AuditEvent.objects.count() == 5
    assert record_events([]) == []


@pytest.mark.django_db
def test_a_refused_actor_leaves_no_correlation_id_behind():
    with pytest.raises(AuditValidationError), audit_context(actor="mallory", correlation_id="c1"):
        pass
    assert record_event(event_type="lead_routed").correlation_id != "c1"


def _prepared_audit_inserts() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ["INSERT INTO audit_auditevent%"],
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("prepared", [True, False])
def test_on_postgresql_the_insert_is_prepared_once_per_connection_unless_turned_off(
    settings, prepared
):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's; .ci/run runs this there")
    settings.DB_PREPARED_STATEMENTS = prepared
    connection.close()  # a fresh connection: none prepared yet
    for i in range(3):
        record_event(event_type="email_sent", workflow="w", details={"i": i})
    assert _prepared_audit_inserts() == (1 if prepared else 0)
    stored = AuditEvent.objects.filter(workflow="w").order_by("id")
    assert [e.details["i"] for e in stored] == [0, 1, 2]
    assert all(e.mac == mac_of(e) for e in stored)
