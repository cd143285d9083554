"""The crm_sync workflow step: registered, run directly, and run by the task worker."""

import json
from pathlib import Path

import pytest
from django.core.management import call_command

from audit.models import AuditEvent
from leads.crm.models import CrmRecord
from leads.crm.steps import CrmSyncFailed, CrmSyncStep
from leads.models import Lead
from leads.services import ingest_lead
from leads.workflows.runner import run_pass
from leads.workflows.steps import STEP_KINDS, step_class

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "workflows.example.json"
CONTACTS = "/crm/v3/objects/contacts"


def test_the_app_registers_the_step():
    assert STEP_KINDS.path("crm_sync") == "leads.crm.steps.CrmSyncStep"
    assert step_class("crm_sync") is CrmSyncStep


@pytest.mark.django_db
def test_load_workflows_accepts_a_crm_sync_step(tmp_path, capsys):
    data = json.loads(EXAMPLE.read_text())
    data["workflows"][0]["steps"] = [{"kind": "crm_sync", "connection": "hubspot"}]
    path = tmp_path / "workflows.json"
    path.write_text(json.dumps(data))
    call_command("load_workflows", str(path), "--check")
    assert "is valid" in capsys.readouterr().out


@pytest.mark.django_db
def test_run_syncs_and_a_failure_raises(httpserver, hubspot, lead):
    httpserver.expect_request(f"{CONTACTS}/search").respond_with_json({"total": 0, "results": []})
    httpserver.expect_oneshot_request(CONTACTS, method="POST").respond_with_json(
        {"id": "501"}, status=201
    )
    CrmSyncStep().run(lead_id=lead.pk, config={"kind": "crm_sync", "connection": "hubspot"})
    assert CrmRecord.objects.get(lead=lead).external_id == "501"

    other = Lead.objects.create(email="bob@example.com", source=lead.source)
    httpserver.expect_request(CONTACTS, method="POST").respond_with_json(
        {"status": "error", "message": "bad", "category": "VALIDATION_ERROR"}, status=400
    )
    with pytest.raises(CrmSyncFailed, match="needs_attention"):
        CrmSyncStep().run(lead_id=other.pk, config={"kind": "crm_sync", "connection": "hubspot"})


@pytest.mark.django_db
def test_run_names_an_unknown_connection(lead):
    with pytest.raises(ValueError, match="no CRM connection named 'nope'"):
        CrmSyncStep().run(lead_id=lead.pk, config={"kind": "crm_sync", "connection": "nope"})


@pytest.mark.django_db
def test_an_inactive_connection_is_skipped(httpserver, hubspot, lead):
    hubspot.active = False
    hubspot.save()
    CrmSyncStep().run(lead_id=lead.pk, config={"kind": "crm_sync", "connection": "hubspot"})
    assert not CrmRecord.objects.exists() and httpserver.log == []
    # The lead's timeline says why it is not in the CRM.
    from audit.models import AuditEvent

    skipped = AuditEvent.objects.get(event_type="crm_sync_skipped")
    assert skipped.lead_public_id == lead.public_id
    assert skipped.details == {"connection": "hubspot", "reason": "the connection is inactive"}


@pytest.mark.django_db(transaction=True)
def test_the_runner_enqueues_the_sync_and_the_worker_runs_it(httpserver, hubspot, pipeline):
    workflow = pipeline["workflow"]
    workflow.config = {**workflow.config, "steps": [{"kind": "crm_sync", "connection": "hubspot"}]}
    workflow.save()
    ingest_lead(
        source=pipeline["source"],
        payload={"email": "ada@engines.example", "title": "CTO", "country": "DE"},
    )
    httpserver.expect_request(f"{CONTACTS}/search").respond_with_json({"total": 0, "results": []})
    httpserver.expect_request(CONTACTS, method="POST").respond_with_json({"id": "77"}, status=201)

    run = run_pass(workflow=workflow)
    assert httpserver.log == []  # enqueued, not run inline
    call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)

    record = CrmRecord.objects.get()
    assert record.status == "synced" and record.external_id == "77"
    created = AuditEvent.objects.get(event_type="crm_create")
    assert created.correlation_id == run.correlation_id
    assert created.workflow == workflow.name
