"""The follow-up alert rules against what real send passes leave (aiosmtpd on loopback)."""

import json
from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from leads.followups import services
from leads.followups.models import OutboundEmail
from leads.followups.services import enroll, send_due
from leads.followups.steps import EmailSequenceStep
from orchestrator.monitoring.alerts import params
from orchestrator.monitoring.alerts.models import Incident
from orchestrator.monitoring.alerts.services import check_alerts
from tests.leads.followups import conftest as followups

pytestmark = pytest.mark.django_db(transaction=True)

# The follow-up tests' fixtures: leads, a one-step sequence, their settings.
source = followups.source
make_lead = followups.make_lead
one_step = followups.one_step
followup_settings = followups.followup_settings


def evaluate(kind: str, now=None, **overrides):
    return params.evaluator(kind)(params.resolve(kind, overrides), now or timezone.now())


@pytest.fixture(autouse=True)
def _followups(followup_settings, alert_settings):
    # Both apps' settings; the alert tests' URL conf, for the links in alerts.
    followup_settings.ROOT_URLCONF = "tests.orchestrator.monitoring.alerts.urls"


def test_smtp_down_fires_smtp_unreachable_and_the_webhook_hears_it(
    smtp_down, make_lead, one_step, make_rule, hook_channel, httpserver
):
    httpserver.expect_request("/hooks/alerts", method="POST").respond_with_data("ok")
    make_rule("smtp_unreachable", [hook_channel], params={"window_minutes": 15})
    for _ in range(2):
        enroll(lead=make_lead(), sequence=one_step)
    assert evaluate("smtp_unreachable") == {}

    with pytest.raises(CommandError, match="unreachable"):
        call_command("send_followups", stdout=StringIO())
    assert check_alerts().counts["opened"] == 1

    server = f"127.0.0.1:{smtp_down.port}"
    (incident,) = Incident.objects.filter(state=Incident.State.OPEN)
    assert incident.key == server
    (request, _response) = httpserver.log[0]
    sent = json.loads(request.get_data())
    assert sent["rule"]["kind"] == "smtp_unreachable"
    assert sent["incident"]["key"] == server
    assert "2 follow-up emails waiting" in sent["incident"]["summary"]
    assert "ConnectionRefusedError" in sent["incident"]["details"]["reason"]

    # The server is back: an email goes out, and the incident resolves on the next check.
    smtp_down.start()
    call_command("send_followups", stdout=StringIO())
    assert evaluate("smtp_unreachable") == {}
    assert check_alerts().counts["resolved"] == 1


def test_smtp_unreachable_needs_min_failures_in_the_window(smtp_down, make_lead, one_step):
    enroll(lead=make_lead(), sequence=one_step)
    start = timezone.now()
    for minutes in (0, 5):
        with time_machine.travel(start + timedelta(minutes=minutes)):
            send_due()
    at = start + timedelta(minutes=6)
    (finding,) = evaluate("smtp_unreachable", at, min_failures=2).values()
    assert finding.details["failures"] == 2
    assert evaluate("smtp_unreachable", at, min_failures=3) == {}
    # Both passes fall out of a 15-minute window 20 minutes later.
    assert evaluate("smtp_unreachable", start + timedelta(minutes=21)) == {}


def test_emails_stuck_sending_fires_for_held_and_abandoned_emails(
    smtp, settings, make_lead, one_step
):
    settings.FOLLOWUPS_STUCK_SENDING_SECONDS = 600
    cut_off = make_lead("cut@example.com")
    enroll(lead=cut_off, sequence=one_step)
    smtp.recorder.drop_data = 1
    assert send_due().counts == {"unknown": 1}
    enroll(lead=make_lead("killed@example.com"), sequence=one_step)
    assert services.claim_next(worker_id="mail-1:4242:deadbeef") is not None
    start = timezone.now()

    assert evaluate("emails_stuck_sending", start + timedelta(minutes=29)) == {}
    found = evaluate("emails_stuck_sending", start + timedelta(minutes=31))
    assert list(found) == ["sending"]
    assert found["sending"].details["stuck"] == 2
    assert found["sending"].details["outcome_unknown"] == 1
    assert "is send_followups running?" in found["sending"].summary

    # A send pass requeues and sends the one a dead sender left; the cut-off one waits.
    with time_machine.travel(start + timedelta(minutes=31)):
        assert send_due().counts == {"sent": 1}
    found = evaluate("emails_stuck_sending", start + timedelta(minutes=32))
    assert found["sending"].details["stuck"] == 1
    held = OutboundEmail.objects.get(recipient="cut@example.com")
    assert found["sending"].details["message_ids"] == [held.message_id]
    assert "may have been delivered" in found["sending"].summary

    # A person requeues it: nothing is stuck any more.
    services.requeue(emails=OutboundEmail.objects.filter(pk=held.pk))
    assert evaluate("emails_stuck_sending", start + timedelta(minutes=33)) == {}


def test_a_follow_up_given_up_on_fires_step_failures(smtp, make_lead, one_step):
    enroll(lead=make_lead("gone@example.com"), sequence=one_step)
    smtp.recorder.rcpt_replies = {"gone@example.com": "550 5.1.1 No such user"}
    assert evaluate("step_failures") == {}

    assert send_due().counts == {"failed": 1}

    found = evaluate("step_failures")
    assert list(found) == ["send_followup"]
    assert found["send_followup"].details["stages"] == {"send_followup:smtp": 1}
    assert found["send_followup"].details["leads"] == 1


def test_an_enrollment_that_fails_fires_step_failures(make_lead):
    lead = make_lead()
    with pytest.raises(services.SequenceError):
        EmailSequenceStep().run(
            lead_id=lead.pk, config={"kind": "email_sequence", "sequence": "missing"}
        )

    found = evaluate("step_failures")
    assert list(found) == ["enroll"]
    assert found["enroll"].details["stages"] == {"enroll": 1}
    assert "no sequence 'missing'" in found["enroll"].summary
