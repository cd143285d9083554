"""manage.py sync_crm: pending and due records inline, --retry-failed, the lock."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from core import locks
from leads.crm.models import CrmRecord
from leads.models import Lead

pytestmark = pytest.mark.django_db

CONTACTS = "/crm/v3/objects/contacts"


def sync(*args):
    out = StringIO()
    call_command("sync_crm", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def crm(httpserver):
    httpserver.expect_request(f"{CONTACTS}/search").respond_with_json({"total": 0, "results": []})
    httpserver.expect_request(CONTACTS, method="POST").respond_with_json({"id": "1"}, status=201)
    return httpserver


def test_pending_and_due_records_are_synced(crm, hubspot, lead):
    late = Lead.objects.create(email="late@example.com", source=lead.source)
    later = Lead.objects.create(email="later@example.com", source=lead.source)
    CrmRecord.objects.create(lead=lead, connection=hubspot)
    CrmRecord.objects.create(
        lead=late,
        connection=hubspot,
        status="failed",
        attempts=1,
        next_attempt_at=timezone.now() - timedelta(minutes=1),
    )
    CrmRecord.objects.create(
        lead=later,
        connection=hubspot,
        status="failed",
        attempts=1,
        next_attempt_at=timezone.now() + timedelta(hours=1),
    )
    out = sync()
    assert "hubspot: synced 2" in out
    assert dict(CrmRecord.objects.values_list("lead__email", "status")) == {
        "ada@example.com": "synced",
        "late@example.com": "synced",
        "later@example.com": "failed",
    }


def test_retry_failed_includes_records_needing_attention(crm, hubspot, lead):
    CrmRecord.objects.create(lead=lead, connection=hubspot, status="needs_attention", attempts=5)
    assert "nothing due" in sync()
    assert "synced 1" in sync("--retry-failed", "--connection", "hubspot")
    record = CrmRecord.objects.get()
    assert record.status == "synced" and record.attempts == 0


def test_routed_leads_without_a_record_are_queued_and_synced(crm, hubspot, pipeline):
    workflow = pipeline["workflow"]
    workflow.config = {**workflow.config, "steps": [{"kind": "crm_sync", "connection": "hubspot"}]}
    workflow.save()
    owner = pipeline["users"]["anna"]
    Lead.objects.create(
        email="a@x.example", source=pipeline["source"], workflow=workflow, owner=owner
    )
    Lead.objects.create(email="b@x.example", source=pipeline["source"], workflow=workflow)
    out = sync()
    assert "queued 1" in out and "synced 1" in out
    assert CrmRecord.objects.get().lead.email == "a@x.example"


def test_a_held_lock_skips_the_run(crm, hubspot, lead):
    CrmRecord.objects.create(lead=lead, connection=hubspot)
    holder = locks.acquire("sync_crm", ttl=timedelta(minutes=5))
    try:
        assert "another run holds the lock" in sync()
    finally:
        locks.release("sync_crm", holder)
    assert crm.log == []
    assert CrmRecord.objects.get().status == "pending"


def test_unknown_connection(db):
    with pytest.raises(CommandError, match="no CRM connection named 'nope'"):
        sync("--connection", "nope")
