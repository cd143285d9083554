"""One lead through the whole product, against real servers on loopback.

Posted to the API -> qualified and routed by the runner -> created in a fake
HubSpot (pytest-httpserver) -> first follow-up delivered to aiosmtpd ->
the lead replies over IMAP (Dovecot) -> the poll cancels the sequence. The
lead's audit history shows each step, in order.
"""

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from pytest_httpserver import HTTPServer

from audit.integrity import seal_all, verify
from audit.models import AuditEvent
from leads.crm.models import CrmConnection, CrmRecord
from leads.followups.models import Enrollment, Sequence, SequenceStep
from leads.intake.apikeys import api_key_create
from leads.intake.inbox import poll_source
from leads.models import Lead, LeadSource, Team, TeamMember
from leads.workflows.models import Workflow
from leads.workflows.runner import run_pass
from tests.leads.followups.test_stopping import reply_to

WORKFLOW = {
    "qualification": {
        "base_score": 10,
        "rules": [
            {
                "name": "decision maker",
                "when": {"field": "title", "op": "contains", "value": "cto"},
                "points": 60,
            }
        ],
        "thresholds": {"qualified": 50, "nurture": 20},
        "disqualify": {"free_mail": True, "disposable": True},
    },
    "routing": {"rules": [], "default_team": "sales"},
    "steps": [
        {"kind": "crm_sync", "connection": "hubspot"},
        {"kind": "email_sequence", "sequence": "welcome"},
    ],
}


@pytest.fixture
def hubspot():
    server = HTTPServer(host="127.0.0.1")
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_lead_from_api_post_to_reply(
    settings, client, hubspot, smtp, dovecot, make_inbox_source, monkeypatch, django_user_model
):
    settings.ROOT_URLCONF = "orchestrator.urls"
    monkeypatch.setenv("HUBSPOT_E2E_TOKEN", "pat-e2e")

    workflow = Workflow.objects.create(name="sales", config=WORKFLOW)
    web = LeadSource.objects.create(
        name="Website", slug="website", kind="web_form", workflow=workflow
    )
    inbox = make_inbox_source(workflow=workflow)
    team = Team.objects.create(slug="sales", name="Sales")
    owner = django_user_model.objects.create_user("olivia", email="olivia@example.test")
    TeamMember.objects.create(team=team, user=owner)
    CrmConnection.objects.create(
        name="hubspot",
        kind="hubspot",
        base_url=hubspot.url_for("").rstrip("/"),
        credentials={"token_env": "HUBSPOT_E2E_TOKEN"},
    )
    sequence = Sequence.objects.create(slug="welcome", name="Welcome", sender="sales@example.test")
    SequenceStep.objects.create(
        sequence=sequence,
        position=1,
        delay=timedelta(0),
        subject_template="Hello {{ lead.name }}",
        text_template="Hi {{ lead.name }}, thanks for your interest.",
        html_template="<p>Hi {{ lead.name }}, thanks for your interest.</p>",
    )
    SequenceStep.objects.create(
        sequence=sequence,
        position=2,
        delay=timedelta(days=3),
        subject_template="Following up",
        text_template="Any questions?",
        html_template="<p>Any questions?</p>",
    )

    # 1. The lead arrives through the API.
    _, key = api_key_create(source=web, name="website")
    response = client.post(
        "/api/v1/leads",
        data=json.dumps({"email": "ada@acme.example", "name": "Ada", "title": "CTO"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 201, response.content
    lead = Lead.objects.get(public_id=response.json()["lead_id"])

    # 2. HubSpot: no contact with that email yet, then the create.
    auth = {"Authorization": "Bearer pat-e2e"}
    hubspot.expect_oneshot_request(
        "/crm/v3/objects/contacts/search", method="POST", headers=auth
    ).respond_with_json({"total": 0, "results": []})
    hubspot.expect_oneshot_request(
        "/crm/v3/objects/contacts", method="POST", headers=auth
    ).respond_with_json({"id": "901", "properties": {"email": "ada@acme.example"}}, status=201)

    # 3. The runner qualifies and routes; the worker runs the CRM and email steps.
    run = run_pass(workflow=workflow, poll=False)
    assert run.counts["qualified"] == 1
    call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)
    hubspot.check_assertions()
    created = json.loads(hubspot.log[1][0].get_data())
    assert created["properties"]["email"] == "ada@acme.example"
    assert CrmRecord.objects.get(lead=lead).external_id == "901"

    # 4. The first email goes out through SMTP.
    call_command("send_followups", verbosity=0)
    (envelope,) = smtp.envelopes
    assert envelope.rcpt_tos == ["ada@acme.example"]
    assert envelope.message["Subject"] == "Hello Ada"
    assert envelope.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # 5. Ada replies; the inbox poll sees it and stops the sequence.
    dovecot.deliver(reply_to(envelope.message))
    summary = poll_source(source=inbox)
    assert summary.created == 0  # a reply is not a new lead
    enrollment = Enrollment.objects.get(lead=lead)
    assert enrollment.status == "cancelled"
    assert enrollment.cancel_reason == "replied"
    call_command("send_followups", verbosity=0)
    assert len(smtp.envelopes) == 1  # step 2 never goes out

    # 6. The audit history tells the story, in order.
    history = list(
        AuditEvent.objects.filter(lead_public_id=lead.public_id)
        .order_by("timestamp", "id")
        .values_list("event_type", flat=True)
    )
    assert history == [
        "lead_ingested",
        "lead_qualified",
        "lead_routed",
        "crm_create",
        "email_scheduled",
        "email_sent",
        "email_replied",
        "email_cancelled",
    ] or history == [
        # The two steps are separate tasks; either may finish first.
        "lead_ingested",
        "lead_qualified",
        "lead_routed",
        "email_scheduled",
        "crm_create",
        "email_sent",
        "email_replied",
        "email_cancelled",
    ], history
    ingested = AuditEvent.objects.get(event_type="lead_ingested", lead_public_id=lead.public_id)
    assert ingested.actor == "api:website"
    routed = AuditEvent.objects.get(event_type="lead_routed", lead_public_id=lead.public_id)
    assert routed.details["owner"] == "olivia"
    seal_all()
    assert verify().ok
