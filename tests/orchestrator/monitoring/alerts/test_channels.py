"""Notices on the wire: a real SMTP server (aiosmtpd) and a real HTTP server checking HMACs."""

import json
from datetime import timedelta

import pytest
import time_machine
from werkzeug import Request, Response

from audit.models import AuditEvent
from orchestrator.monitoring.alerts.channels.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    verify,
)
from orchestrator.monitoring.alerts.models import AlertChannel, Delivery
from orchestrator.monitoring.alerts.services import check_alerts
from tests.orchestrator.monitoring.alerts.conftest import BASE_URL, SECRET, T0, add_run, run_at

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _strict_server(httpserver):
    """A request no handler expected fails the test."""
    yield
    httpserver.check_assertions()


def sent_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type="alert_sent").order_by("id"))


# --- Email -------------------------------------------------------------------------------


def test_email_alert_arrives_over_smtp(smtp, firing, email_channel):
    firing.channels.add(email_channel)
    run_at(T0)
    [envelope] = smtp.envelopes
    assert sorted(envelope.rcpt_tos) == ["oncall@example.test", "ops@example.test"]
    assert envelope.mail_from == "alerts@example.test"
    message = envelope.message
    assert message["Subject"].startswith("[ALERT] Workflow missed its schedule: workflow_missed")
    assert message["Auto-Submitted"] == "auto-generated"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    link = f"{BASE_URL}/workflows/?workflow=sales"
    assert "Workflow sales missed its schedule" in text
    assert link in text
    assert f'href="{link}"' in html
    delivery = Delivery.objects.get()
    assert delivery.status == "sent" and delivery.attempts == 1
    [event] = sent_events()
    assert event.details["channel_kind"] == "email"
    assert event.details["delivery_id"] == str(delivery.uuid)


def test_email_to_a_server_that_is_down_is_retried_on_a_later_pass(
    smtp_down, firing, email_channel
):
    firing.channels.add(email_channel)
    summary = run_at(T0)
    assert summary.counts["retry"] == 1
    delivery = Delivery.objects.get()
    assert delivery.status == "pending"
    assert delivery.attempts == 1
    assert delivery.last_error  # connection refused, recorded
    assert delivery.next_attempt_at == T0 + timedelta(seconds=60)
    assert sent_events() == []

    smtp_down.start()
    run_at(T0 + timedelta(seconds=30))  # not due yet
    assert smtp_down.envelopes == []
    run_at(T0 + timedelta(seconds=61))
    assert len(smtp_down.envelopes) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 2, "")
    assert [e.details["attempt"] for e in sent_events()] == [2]


def test_a_permanent_smtp_refusal_marks_the_delivery_failed(smtp, firing, email_channel):
    smtp.recorder.rcpt_replies = {
        "ops@example.test": "550 5.1.1 No such user",
        "oncall@example.test": "550 5.1.1 No such user",
    }
    firing.channels.add(email_channel)
    assert run_at(T0).counts["failed"] == 1
    delivery = Delivery.objects.get()
    assert delivery.status == "failed"
    assert "550" in delivery.last_error
    assert sent_events() == []


# --- Generic webhook ----------------------------------------------------------------------


def test_webhook_alert_is_signed_with_the_timestamp(httpserver, firing, hook_channel):
    received: list[Request] = []

    def handler(request: Request) -> Response:
        received.append(request)
        body = request.get_data()
        ok = verify(
            SECRET, request.headers[TIMESTAMP_HEADER], body, request.headers[SIGNATURE_HEADER]
        )
        return Response("ok" if ok else "bad signature", status=200 if ok else 401)

    httpserver.expect_oneshot_request("/hooks/alerts", method="POST").respond_with_handler(handler)
    firing.channels.add(hook_channel)
    with time_machine.travel(T0, tick=False):
        check_alerts()
    [request] = received
    body = request.get_data()
    payload = json.loads(body)
    timestamp = request.headers[TIMESTAMP_HEADER]
    assert timestamp == str(int(T0.timestamp())) == str(payload["sent_at"])
    assert request.headers[SIGNATURE_HEADER] == sign(SECRET, timestamp, body)
    # The timestamp is signed: the same body under another timestamp does not verify.
    assert not verify(
        SECRET, str(int(T0.timestamp()) + 300), body, request.headers[SIGNATURE_HEADER]
    )
    assert payload["event"] == "alert.opened"
    assert payload["rule"]["kind"] == "workflow_missed"
    assert payload["incident"]["key"] == "sales"
    assert payload["incident"]["state"] == "open"
    assert payload["incident"]["url"] == f"{BASE_URL}/workflows/?workflow=sales"
    delivery = Delivery.objects.get()
    assert request.headers["Idempotency-Key"] == str(delivery.uuid)
    assert delivery.status == "sent"
    [event] = sent_events()
    assert event.details["channel"] == "ops-hook"


def test_a_failing_webhook_is_retried_on_the_next_pass_and_recorded(
    httpserver, firing, hook_channel, waits
):
    keys: list[str] = []

    def fail(request: Request) -> Response:
        keys.append(request.headers["Idempotency-Key"])
        return Response("upstream down", status=500)

    def succeed(request: Request) -> Response:
        keys.append(request.headers["Idempotency-Key"])
        return Response("", status=204)

    # ALERTS_HTTP_ATTEMPTS is 2: both tries of the first pass fail.
    for _ in range(2):
        httpserver.expect_ordered_request("/hooks/alerts").respond_with_handler(fail)
    httpserver.expect_ordered_request("/hooks/alerts").respond_with_handler(succeed)
    firing.channels.add(hook_channel)

    summary = run_at(T0)
    assert summary.counts["retry"] == 1
    assert len(waits) == 1  # one in-pass backoff, recorded rather than slept
    delivery = Delivery.objects.get()
    assert delivery.status == "pending"
    assert delivery.attempts == 1
    assert "returned 500: upstream down" in delivery.last_error
    assert delivery.next_attempt_at == T0 + timedelta(seconds=60)
    assert sent_events() == []

    run_at(T0 + timedelta(seconds=59))
    assert len(keys) == 2  # not due yet

    summary = run_at(T0 + timedelta(seconds=61))
    assert summary.counts["sent"] == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 2, "")
    assert len(set(keys)) == 1  # every attempt carries the same Idempotency-Key
    [event] = sent_events()
    assert event.details["attempt"] == 2


def test_a_4xx_is_permanent_and_not_retried(httpserver, firing, hook_channel):
    httpserver.expect_oneshot_request("/hooks/alerts").respond_with_data("no such hook", status=404)
    firing.channels.add(hook_channel)
    assert run_at(T0).counts["failed"] == 1
    run_at(T0 + timedelta(hours=2))
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert "returned 404: no such hook" in delivery.last_error
    assert sent_events() == []


def test_retry_after_on_429_is_respected(httpserver, firing, hook_channel, settings):
    settings.ALERTS_HTTP_ATTEMPTS = 1
    httpserver.expect_oneshot_request("/hooks/alerts").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "600"}
    )
    firing.channels.add(hook_channel)
    run_at(T0)
    delivery = Delivery.objects.get()
    assert delivery.status == "pending"
    assert delivery.next_attempt_at == T0 + timedelta(seconds=600)


def test_a_delivery_gives_up_after_max_attempts(httpserver, firing, hook_channel, settings):
    settings.ALERTS_HTTP_ATTEMPTS = 1
    settings.ALERTS_MAX_ATTEMPTS = 2
    httpserver.expect_request("/hooks/alerts").respond_with_data("down", status=503)
    firing.channels.add(hook_channel)
    run_at(T0)
    run_at(T0 + timedelta(seconds=61))
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("failed", 2)
    run_at(T0 + timedelta(hours=5))
    assert len(httpserver.log) == 2


def test_a_webhook_whose_secret_is_not_set_fails_without_sending(
    httpserver, firing, hook_channel, monkeypatch
):
    monkeypatch.delenv("ALERT_HOOK_SECRET")
    firing.channels.add(hook_channel)
    assert run_at(T0).counts["failed"] == 1
    delivery = Delivery.objects.get()
    assert "ALERT_HOOK_SECRET is not set" in delivery.last_error
    assert httpserver.log == []


# --- Slack ---------------------------------------------------------------------------------


def test_slack_gets_text_and_blocks(httpserver, firing, workflow, monkeypatch):
    monkeypatch.setenv("SLACK_TEST_URL", httpserver.url_for("/services/T0/B0/xyz"))
    channel = AlertChannel.objects.create(name="slack", kind="slack", url_env="SLACK_TEST_URL")
    httpserver.expect_ordered_request("/services/T0/B0/xyz", method="POST").respond_with_data("ok")
    httpserver.expect_ordered_request("/services/T0/B0/xyz", method="POST").respond_with_data("ok")
    firing.channels.add(channel)
    run_at(T0)
    add_run(workflow, T0 + timedelta(minutes=5))
    run_at(T0 + timedelta(minutes=6))
    opened, resolved = (json.loads(req.get_data()) for req, _resp in httpserver.log)
    assert opened["text"].startswith(":rotating_light: [ALERT]")
    assert "Workflow sales missed its schedule" in opened["text"]
    assert opened["blocks"][0]["type"] == "header"
    assert f"<{BASE_URL}/workflows/?workflow=sales|Open>" in opened["blocks"][1]["text"]["text"]
    assert resolved["text"].startswith(":white_check_mark: [RESOLVED]")
    assert SIGNATURE_HEADER not in httpserver.log[0][0].headers
    assert [e.details["notice"] for e in sent_events()] == ["opened", "resolved"]


def test_a_failed_delivery_can_be_queued_again(httpserver, firing, hook_channel):
    from orchestrator.monitoring.alerts.services import retry_delivery

    httpserver.expect_ordered_request("/hooks/alerts").respond_with_data("gone", status=410)
    httpserver.expect_ordered_request("/hooks/alerts").respond_with_data("", status=200)
    firing.channels.add(hook_channel)
    run_at(T0)
    delivery = Delivery.objects.get()
    assert delivery.status == "failed"
    with time_machine.travel(T0 + timedelta(seconds=30), tick=False):
        assert retry_delivery(delivery=delivery)
        assert not retry_delivery(delivery=delivery)  # only a failed one
    run_at(T0 + timedelta(minutes=1))
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("sent", 1)
    assert len(sent_events()) == 1
