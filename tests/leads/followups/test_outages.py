"""SMTP outages, refusals and emails left in `sending`, against aiosmtpd on loopback."""

from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from audit.models import AuditEvent
from leads.followups import services
from leads.followups.models import OutboundEmail
from leads.followups.services import enroll, send_due
from tests.leads.followups.test_sending import raw_header

pytestmark = pytest.mark.django_db(transaction=True)


def events(event_type, **details):
    found = AuditEvent.objects.filter(event_type=event_type).order_by("id")
    return [e for e in found if all(e.details.get(k) == v for k, v in details.items())]


def statuses():
    return sorted(OutboundEmail.objects.values_list("status", flat=True))


def test_smtp_down_fails_the_command_once_per_pass_and_keeps_the_emails(
    smtp_down, make_lead, one_step
):
    for _ in range(3):
        enroll(lead=make_lead(), sequence=one_step)

    with pytest.raises(CommandError) as raised:
        call_command("send_followups", stdout=StringIO())

    message = str(raised.value)
    assert "\n" not in message
    assert f"127.0.0.1:{smtp_down.port} unreachable: ConnectionRefusedError" in message
    assert "3 due email(s) left pending" in message
    (outage,) = events("error")
    assert outage.details["stage"] == "smtp_connect"
    assert outage.details["host"] == "127.0.0.1"
    assert outage.details["port"] == smtp_down.port
    assert outage.details["due"] == 3
    assert outage.error_type == "ConnectionRefusedError"
    assert outage.lead_public_id == ""
    assert statuses() == ["pending"] * 3
    assert set(OutboundEmail.objects.values_list("attempts", flat=True)) == {0}

    # The next pass: one more event, not one per email.
    with pytest.raises(CommandError):
        call_command("send_followups", stdout=StringIO())
    assert [e.details["stage"] for e in events("error")] == ["smtp_connect"] * 2

    smtp_down.start()
    out = StringIO()
    call_command("send_followups", stdout=out)
    assert "sent 3" in out.getvalue()
    assert statuses() == ["sent"] * 3
    assert len(smtp_down.envelopes) == 3
    assert len(events("error")) == 2


@pytest.mark.parametrize("reply", ["451 4.7.1 Greylisted", "554 5.6.0 Message refused"])
def test_a_refused_data_for_one_recipient_does_not_stop_the_others(
    smtp, make_lead, one_step, reply
):
    for address in ("a@example.com", "b@example.com", "c@example.com"):
        enroll(lead=make_lead(address), sequence=one_step)
    smtp.recorder.data_replies_for = {"b@example.com": reply}

    out = StringIO()
    call_command("send_followups", stdout=out)  # no CommandError: the server is up

    assert "retry 1, sent 2" in out.getvalue()
    assert sorted(e.rcpt_tos[0] for e in smtp.envelopes) == ["a@example.com", "c@example.com"]
    refused = OutboundEmail.objects.get(recipient="b@example.com")
    assert refused.status == OutboundEmail.Status.PENDING
    assert reply.split()[0] in refused.last_error
    assert events("error", stage="smtp_connect") == []


def kill_a_sender_mid_send(worker_id: str = "mail-1:4242:deadbeef") -> OutboundEmail:
    """What a SIGKILLed sender leaves: its claim committed, nothing after it."""
    email = services.claim_next(worker_id=worker_id)
    assert email is not None
    return email


def test_an_email_a_dead_sender_left_in_sending_is_sent_again_after_the_bound(
    smtp, settings, lead, one_step
):
    settings.FOLLOWUPS_STUCK_SENDING_SECONDS = 600
    enroll(lead=lead, sequence=one_step)
    claimed = kill_a_sender_mid_send()
    start = timezone.now()

    # Within the bound the claim may be a live, slow send: leave it alone.
    with time_machine.travel(start + timedelta(seconds=590)):
        assert send_due().counts == {}
    assert OutboundEmail.objects.get().status == OutboundEmail.Status.SENDING
    assert smtp.envelopes == []

    out = StringIO()
    with time_machine.travel(start + timedelta(seconds=610)):
        call_command("send_followups", stdout=out)
    assert "sent 1; requeued 1 stuck in sending" in out.getvalue()

    email = OutboundEmail.objects.get()
    assert (email.status, email.attempts) == ("sent", 2)
    (envelope,) = smtp.envelopes
    # Sent under the Message-ID it was claimed with, so a duplicate is recognisable.
    assert raw_header(envelope.raw, b"Message-ID") == claimed.message_id.encode()
    (requeued,) = events("email_requeued")
    assert requeued.lead_public_id == lead.public_id
    assert requeued.details["reason"] == "stuck_sending"
    assert requeued.details["message_id"] == claimed.message_id
    assert requeued.details["claimed_by"] == "mail-1:4242:deadbeef"
    assert requeued.details["stuck_seconds"] >= 600
    assert events("error") == []


def test_stuck_emails_are_left_alone_when_the_bound_is_zero(smtp, settings, lead, one_step):
    settings.FOLLOWUPS_STUCK_SENDING_SECONDS = 0
    enroll(lead=lead, sequence=one_step)
    kill_a_sender_mid_send()
    with time_machine.travel(timezone.now() + timedelta(days=1)):
        assert send_due().requeued == 0
    assert statuses() == ["sending"]
    assert smtp.envelopes == []


def test_an_email_cut_off_mid_send_waits_for_a_person(smtp, settings, lead, one_step):
    settings.FOLLOWUPS_STUCK_SENDING_SECONDS = 600
    enroll(lead=lead, sequence=one_step)
    smtp.recorder.drop_data = 1

    assert send_due().counts == {"unknown": 1}

    email = OutboundEmail.objects.get()
    assert (email.status, email.outcome_unknown) == ("sending", True)
    (error,) = events("error")
    assert error.details["stage"] == "send_followup"
    assert error.details["outcome"] == "unknown"
    # The server may have delivered it: no pass sends it again on its own.
    with time_machine.travel(timezone.now() + timedelta(hours=2)):
        assert send_due().requeued == 0
    assert statuses() == ["sending"]
    assert events("email_requeued") == []

    # A person checked the mail log and requeues it: it goes out under its Message-ID.
    with time_machine.travel(timezone.now() + timedelta(hours=2)):
        call_command("send_followups", "--requeue-stale", "60", stdout=StringIO())
    email.refresh_from_db()
    assert (email.status, email.outcome_unknown) == ("sent", False)
    (envelope,) = smtp.envelopes
    assert raw_header(envelope.raw, b"Message-ID") == email.message_id.encode()
