"""The generic webhook against a loopback receiver that checks the signature."""

import hashlib
import hmac
import json

import pytest

from leads.crm.base import CrmConfigError, Upsert
from leads.crm.registry import get_connector

pytestmark = pytest.mark.django_db

SECRET = "whsec-test"


@pytest.fixture
def webhook(connect, monkeypatch, httpserver):
    monkeypatch.setenv("CRM_TEST_WEBHOOK_SECRET", SECRET)
    return connect(
        "webhook",
        credentials={"secret_env": "CRM_TEST_WEBHOOK_SECRET"},
        options={"path": "/hooks/leads"},
    )


def check_signature(request):
    body = request.get_data()
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert request.headers["X-Orchestrator-Signature"] == expected
    payload = json.loads(body)
    assert request.headers["X-Orchestrator-Timestamp"] == str(payload["sent_at"])
    assert request.headers["Idempotency-Key"] == payload["event_id"]
    return payload


def test_posts_the_signed_lead(httpserver, webhook, lead):
    httpserver.expect_request(
        "/hooks/leads", method="POST", headers={"Content-Type": "application/json"}
    ).respond_with_json({"id": "wh-1", "created": True})

    assert get_connector(webhook).upsert(lead) == Upsert("wh-1", created=True)
    payload = check_signature(httpserver.log[0][0])
    assert payload["event"] == "lead.upsert"
    assert payload["external_id"] is None
    assert payload["connection"] == "webhook"
    assert payload["lead"] == {
        "public_id": lead.public_id,
        "email": "ada@example.com",
        "name": "Ada Lovelace",
        "company": "Analytical Engines",
        "phone": "+44 20 7946 0000",
        "title": "CTO",
        "country": "GB",
    }


def test_a_retry_carries_the_same_idempotency_key(httpserver, webhook, lead, waits):
    httpserver.expect_oneshot_request("/hooks/leads").respond_with_data("busy", status=502)
    httpserver.expect_request("/hooks/leads").respond_with_data("", status=204)

    # No id in the answer: the lead's public id stands for it.
    assert get_connector(webhook).upsert(lead) == Upsert(lead.public_id, created=True)
    first, second = (check_signature(req) for req, _ in httpserver.log)
    assert first["event_id"] == second["event_id"]
    assert len(waits) == 1


def test_update_names_the_external_id_and_a_new_state_a_new_event(httpserver, webhook, lead):
    httpserver.expect_request("/hooks/leads").respond_with_data("", status=200)
    connector = get_connector(webhook)
    connector.update("wh-1", lead)
    lead.title = "CEO"
    lead.save()
    connector.update("wh-1", lead)
    first, second = (check_signature(req) for req, _ in httpserver.log)
    assert first["event"] == "lead.update" and first["external_id"] == "wh-1"
    assert first["event_id"] != second["event_id"]


def test_a_webhook_needs_a_url_and_a_secret(webhook, monkeypatch):
    monkeypatch.delenv("CRM_TEST_WEBHOOK_SECRET")
    with pytest.raises(CrmConfigError, match="CRM_TEST_WEBHOOK_SECRET is not set"):
        get_connector(webhook)
    webhook.base_url = ""
    with pytest.raises(CrmConfigError, match="needs a base URL"):
        get_connector(webhook)
