"""The sync service: CrmRecord state and the audit events, against a loopback HubSpot."""

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from leads.crm import services
from leads.crm.models import CrmCall, CrmRecord
from leads.crm.services import crm_sync_lead

pytestmark = pytest.mark.django_db

CONTACTS = "/crm/v3/objects/contacts"
SEARCH = f"{CONTACTS}/search"


def events(*types):
    return list(AuditEvent.objects.filter(event_type__in=types).order_by("id"))


def test_first_sync_creates_then_a_change_updates(httpserver, hubspot, lead):
    httpserver.expect_ordered_request(SEARCH, method="POST").respond_with_json(
        {"total": 0, "results": []}
    )
    httpserver.expect_ordered_request(CONTACTS, method="POST").respond_with_json(
        {"id": "501"}, status=201
    )
    record = crm_sync_lead(lead=lead, connection=hubspot)
    assert record.status == CrmRecord.Status.SYNCED
    assert record.external_id == "501" and record.attempts == 0
    assert record.last_synced_at is not None and record.locked_until is None
    (created,) = events("crm_create")
    assert created.lead_public_id == lead.public_id
    assert created.details["crm_type"] == "hubspot"
    assert created.details["connection"] == "hubspot"
    assert created.details["external_id"] == created.details["crm_record_id"] == "501"
    assert isinstance(created.details["latency_ms"], int)

    # Nothing changed since: the record is left alone, no call is made.
    crm_sync_lead(lead=lead, connection=hubspot)
    assert len(httpserver.log) == 2

    lead.title = "CEO"
    lead.save()
    httpserver.expect_request(f"{CONTACTS}/501", method="PATCH").respond_with_json({"id": "501"})
    record = crm_sync_lead(lead=lead, connection=hubspot)
    assert record.status == CrmRecord.Status.SYNCED
    (updated,) = events("crm_update")
    assert updated.details["external_id"] == "501"
    assert "latency_ms" in updated.details
    assert httpserver.log[-1][0].json["properties"]["jobtitle"] == "CEO"
    assert [e.event_type for e in events("crm_create", "crm_update")] == [
        "crm_create",
        "crm_update",
    ]


def test_a_contact_deleted_in_the_crm_is_found_or_created_again(httpserver, hubspot, lead):
    CrmRecord.objects.create(lead=lead, connection=hubspot, external_id="9", status="pending")
    httpserver.expect_ordered_request(f"{CONTACTS}/9", method="PATCH").respond_with_json(
        {"status": "error", "message": "resource not found", "category": "OBJECT_NOT_FOUND"},
        status=404,
    )
    httpserver.expect_ordered_request(SEARCH, method="POST").respond_with_json(
        {"total": 0, "results": []}
    )
    httpserver.expect_ordered_request(CONTACTS, method="POST").respond_with_json(
        {"id": "10"}, status=201
    )
    record = crm_sync_lead(lead=lead, connection=hubspot)
    assert record.external_id == "10" and record.status == "synced"
    assert events("crm_create")[0].details["external_id"] == "10"


def test_a_400_marks_the_record_for_attention_with_an_error_event(httpserver, hubspot, lead, waits):
    httpserver.expect_request(SEARCH, method="POST").respond_with_json({"total": 0, "results": []})
    httpserver.expect_request(CONTACTS, method="POST").respond_with_json(
        {
            "status": "error",
            "message": "Property values were not valid",
            "category": "VALIDATION_ERROR",
        },
        status=400,
    )
    record = crm_sync_lead(lead=lead, connection=hubspot)
    assert record.status == CrmRecord.Status.NEEDS_ATTENTION
    assert record.attempts == 1 and record.next_attempt_at is None
    assert "VALIDATION_ERROR" in record.last_error
    assert waits == []
    assert len(httpserver.log) == 2  # no retry
    (error,) = events("error")
    assert error.lead_public_id == lead.public_id
    assert error.error_type == "CrmError"
    assert "Traceback" in error.traceback
    assert error.details["permanent"] is True
    assert error.details["status_code"] == 400
    assert error.details["gave_up"] is True
    assert error.details["crm_type"] == "hubspot"
    assert not events("crm_create", "crm_update")


def test_transient_failures_retry_later_then_need_attention(httpserver, hubspot, lead, waits):
    httpserver.expect_request(SEARCH, method="POST").respond_with_data("down", status=503)
    before = timezone.now()
    record = crm_sync_lead(lead=lead, connection=hubspot)
    assert record.status == CrmRecord.Status.FAILED and record.attempts == 1
    assert record.next_attempt_at >= before + services.RETRY_BASE
    assert len(httpserver.log) == 3  # the connector's own attempts
    for attempt in range(2, services.MAX_ATTEMPTS + 1):
        record = crm_sync_lead(lead=lead, connection=hubspot)
        assert record.attempts == attempt
    assert record.status == CrmRecord.Status.NEEDS_ATTENTION
    assert record.next_attempt_at is None
    errors = events("error")
    assert len(errors) == services.MAX_ATTEMPTS
    assert [e.details["gave_up"] for e in errors] == [False] * 4 + [True]
    assert {e.details["permanent"] for e in errors} == {False}


def test_a_missing_credential_is_recorded_naming_the_variable(hubspot, lead, monkeypatch):
    monkeypatch.delenv("HUBSPOT_TEST_TOKEN")
    record = crm_sync_lead(lead=lead, connection=hubspot)
    assert record.status == CrmRecord.Status.NEEDS_ATTENTION
    assert "HUBSPOT_TEST_TOKEN is not set" in record.last_error
    assert events("error")[0].error_type == "CrmConfigError"


def test_a_record_another_worker_holds_is_skipped(httpserver, hubspot, lead):
    CrmRecord.objects.create(
        lead=lead, connection=hubspot, locked_until=timezone.now() + timedelta(minutes=5)
    )
    record = crm_sync_lead(lead=lead, connection=hubspot)
    assert record.status == CrmRecord.Status.PENDING
    assert httpserver.log == []


def test_every_call_is_recorded_with_its_outcome(httpserver, hubspot, lead, waits):
    httpserver.expect_oneshot_request(SEARCH, method="POST").respond_with_data("", status=500)
    httpserver.expect_request(SEARCH, method="POST").respond_with_json(
        {"total": 1, "results": [{"id": "5"}]}
    )
    httpserver.expect_request(f"{CONTACTS}/5", method="PATCH").respond_with_json({"id": "5"})
    crm_sync_lead(lead=lead, connection=hubspot)
    calls = CrmCall.objects.filter(connection=hubspot).order_by("id")
    assert [c.outcome for c in calls] == [
        CrmCall.Outcome.RETRY,
        CrmCall.Outcome.OK,
        CrmCall.Outcome.OK,
    ]
    assert all(c.latency_ms is not None and c.latency_ms >= 0 for c in calls)
