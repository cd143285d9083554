"""Enrollment and sending against a real SMTP server (aiosmtpd) on loopback."""

from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone

from audit.models import AuditEvent
from leads.followups import services
from leads.followups.models import Enrollment, OutboundEmail
from leads.followups.services import enroll, send_due
from leads.followups.steps import EmailSequenceStep
from leads.workflows.steps import step_class

pytestmark = pytest.mark.django_db(transaction=True)


def events(event_type):
    return list(AuditEvent.objects.filter(event_type=event_type).order_by("id"))


def test_enroll_schedules_the_first_step_and_records_email_scheduled(lead, sequence):
    enrollment = enroll(lead=lead, sequence=sequence)

    assert enrollment.status == Enrollment.Status.ACTIVE
    email = OutboundEmail.objects.get()
    assert email.status == OutboundEmail.Status.PENDING
    assert email.step.position == 1
    assert email.recipient == "ada@example.com"
    assert email.message_id.startswith("<") and email.message_id.endswith("@mail.example.test>")
    enrollment.refresh_from_db()
    assert enrollment.next_step == email.step
    assert enrollment.next_send_at == email.due_at
    (event,) = events("email_scheduled")
    assert event.lead_public_id == lead.public_id
    assert event.details["recipient"] == "ada@example.com"
    assert event.details["sequence_length"] == 2
    assert event.details["sequence"] == "demo"

    # Enrolling again while active changes nothing.
    assert enroll(lead=lead, sequence=sequence) == enrollment
    assert OutboundEmail.objects.count() == 1
    assert len(events("email_scheduled")) == 1


def test_email_arrives_with_headers_and_both_bodies(smtp, lead, sequence):
    enroll(lead=lead, sequence=sequence)

    summary = send_due()

    assert summary.counts == {"sent": 1}
    (envelope,) = smtp.envelopes
    msg = envelope.message
    email = OutboundEmail.objects.get(step__position=1)
    assert envelope.mail_from == "sales@example.test"
    assert envelope.rcpt_tos == ["ada@example.com"]
    assert msg["From"] == "Sales Team <sales@example.test>"
    assert msg["To"] == "ada@example.com"
    assert msg["Subject"] == "Hello Lead 1 from Acme"
    assert msg["Message-ID"] == email.message_id
    # Folded onto its own line (the URL is longer than 78 characters), hence strip().
    # The token carries the time it was signed, so read it back rather than remake it.
    header = msg["List-Unsubscribe"].strip()
    assert header.startswith("<http://testserver/u/")
    assert header.endswith(">")
    token = header.removeprefix("<http://testserver/u/").removesuffix(">")
    assert services.tokens.read_token("unsubscribe", token) == email.enrollment_id
    unsubscribe_url = f"http://testserver/u/{token}"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Auto-Submitted"] == "auto-generated"

    text = msg.get_body(("plain",)).get_content()
    assert "Hi Lead 1," in text
    assert "https://example.com/pricing" in text  # plain text links stay as they are
    assert f"Unsubscribe: {unsubscribe_url}" in text
    html = msg.get_body(("html",)).get_content()
    assert "Hi Lead 1 &amp; team" in html
    assert "http://testserver/c/" in html
    assert 'href="https://example.com' not in html  # every outside link is tracked
    assert f'href="{unsubscribe_url}"' in html  # but not the unsubscribe link
    assert '<img src="http://testserver/o/' in html and html.index("<img") < html.index("</body>")

    email.refresh_from_db()
    assert email.status == OutboundEmail.Status.SENT
    assert email.subject == "Hello Lead 1 from Acme"
    assert email.links == [
        "https://example.com/pricing?plan=pro&ref=mail",
        "https://example.com/demo",
    ]
    (sent,) = events("email_sent")
    assert sent.lead_public_id == lead.public_id
    assert sent.details["recipient"] == "ada@example.com"
    assert sent.details["subject"] == "Hello Lead 1 from Acme"
    assert sent.details["sequence_step"] == 1
    assert sent.details["message_id"] == email.message_id

    # Step 2 is scheduled three days after the send, under its own Message-ID.
    second = OutboundEmail.objects.get(step__position=2)
    assert second.status == OutboundEmail.Status.PENDING
    assert second.due_at == email.sent_at + timedelta(days=3)
    assert second.message_id != email.message_id
    enrollment = Enrollment.objects.get()
    assert enrollment.next_step == second.step
    assert enrollment.next_send_at == second.due_at

    assert send_due().counts == {}  # not due yet
    with time_machine.travel(timezone.now() + timedelta(days=3, minutes=1)):
        assert send_due().counts == {"sent": 1}
    assert smtp.envelopes[1].message["Subject"] == "Following up, Lead 1"
    assert not smtp.envelopes[1].message.get_body(("html",))  # text only step
    enrollment.refresh_from_db()
    assert enrollment.status == Enrollment.Status.COMPLETED
    assert enrollment.next_step is None
    assert len(events("email_sent")) == 2


def test_smtp_down_then_up_delivers_everything_once(smtp_down, make_lead, one_step):
    for _ in range(5):
        enroll(lead=make_lead(), sequence=one_step)

    due = dict(OutboundEmail.objects.values_list("pk", "due_at"))

    down = send_due()

    # The first refusal ends the pass. The email it was for goes back as it was: the
    # server never saw it, so the try neither counts nor delays it.
    assert down.counts == {}
    assert "ConnectionRefusedError" in down.stopped
    assert down.left_pending == 5
    tried = OutboundEmail.objects.exclude(last_error="").get()
    assert "ConnectionRefused" in tried.last_error
    assert (tried.status, tried.attempts, tried.claimed_by) == ("pending", 0, "")
    assert dict(OutboundEmail.objects.values_list("pk", "due_at")) == due
    assert OutboundEmail.objects.filter(status="pending").count() == 5

    smtp_down.start()
    assert send_due().counts == {"sent": 5}
    assert send_due().counts == {}

    ids = smtp_down.recorder.message_ids()
    assert len(ids) == 5 and len(set(ids)) == 5
    assert set(ids) == set(OutboundEmail.objects.values_list("message_id", flat=True))
    assert OutboundEmail.objects.filter(status="sent").count() == 5
    assert len(events("email_sent")) == 5
    assert OutboundEmail.objects.get(pk=tried.pk).attempts == 1


def test_a_refused_data_command_is_retried_and_sent_once(smtp, lead, one_step):
    enroll(lead=lead, sequence=one_step)
    smtp.recorder.data_replies = ["451 4.3.0 Try again later"]

    assert send_due().counts == {"retry": 1}
    email = OutboundEmail.objects.get()
    assert email.status == OutboundEmail.Status.PENDING
    assert "451" in email.last_error
    with time_machine.travel(timezone.now() + timedelta(minutes=2)):
        assert send_due().counts == {"sent": 1}
    assert len(smtp.envelopes) == 1


def test_a_rejected_recipient_fails_and_cancels_the_enrollment(smtp, make_lead, one_step):
    lead = make_lead("gone@example.com")
    enroll(lead=lead, sequence=one_step)
    smtp.recorder.rcpt_replies = {"gone@example.com": "550 5.1.1 No such user"}

    assert send_due().counts == {"failed": 1}
    email = OutboundEmail.objects.get()
    assert email.status == OutboundEmail.Status.FAILED
    assert Enrollment.objects.get().cancel_reason == "rejected"
    (cancelled,) = events("email_cancelled")
    assert cancelled.details == {
        "recipient": "gone@example.com",
        "reason": "rejected",
        "sequence": "one",
    }
    # The address is now suppressed: a new enrollment sends nothing.
    again = enroll(lead=make_lead("gone@example.com"), sequence=one_step)
    assert again.status == Enrollment.Status.CANCELLED and again.cancel_reason == "suppressed"
    assert OutboundEmail.objects.count() == 1


def test_gives_up_after_the_last_attempt(smtp, settings, lead, one_step):
    settings.FOLLOWUPS_MAX_ATTEMPTS = 2
    smtp.recorder.data_replies_for = {"ada@example.com": "451 4.3.0 Try again later"}
    enroll(lead=lead, sequence=one_step)
    assert send_due().counts == {"retry": 1}
    with time_machine.travel(timezone.now() + timedelta(hours=1)):
        assert send_due().counts == {"failed": 1}
    email = OutboundEmail.objects.get()
    assert email.status == OutboundEmail.Status.FAILED
    assert email.attempts == 2
    (error,) = events("error")
    assert error.details["gave_up"] is True
    assert error.details["stage"] == "send_followup:smtp"


def test_an_outage_however_long_makes_no_email_give_up(smtp_down, settings, lead, one_step):
    settings.FOLLOWUPS_MAX_ATTEMPTS = 2
    enroll(lead=lead, sequence=one_step)
    for hours in range(4):
        with time_machine.travel(timezone.now() + timedelta(hours=hours)):
            assert "unreachable" in send_due().stopped
    email = OutboundEmail.objects.get()
    assert (email.status, email.attempts) == ("pending", 0)
    assert Enrollment.objects.get().status == Enrollment.Status.ACTIVE
    smtp_down.start()
    assert send_due().counts == {"sent": 1}


def test_a_claimed_email_is_not_sent_by_another_sender(smtp, lead, one_step):
    enroll(lead=lead, sequence=one_step)
    claimed = services.claim_next(worker_id="crashed-worker")
    assert claimed is not None

    # The claim committed: every other sender skips it, and it stays visible.
    assert send_due().counts == {}
    assert smtp.envelopes == []
    email = OutboundEmail.objects.get()
    assert (email.status, email.claimed_by, email.attempts) == ("sending", "crashed-worker", 1)

    out = StringIO()
    with time_machine.travel(timezone.now() + timedelta(minutes=31)):
        call_command("send_followups", "--requeue-stale", "30", stdout=out)
    assert "Requeued 1 stale email(s)." in out.getvalue()
    assert len(smtp.envelopes) == 1
    assert OutboundEmail.objects.get().status == OutboundEmail.Status.SENT


def test_send_followups_command_sends_up_to_the_limit(smtp, make_lead, one_step):
    for _ in range(3):
        enroll(lead=make_lead(), sequence=one_step)
    out = StringIO()
    call_command("send_followups", "--limit", "2", stdout=out)
    assert "sent 2" in out.getvalue()
    assert len(smtp.envelopes) == 2
    call_command("send_followups", stdout=StringIO())
    assert len(smtp.envelopes) == 3


def test_the_workflow_step_enrolls_the_lead(lead, sequence):
    assert step_class("email_sequence") is EmailSequenceStep
    EmailSequenceStep().run(lead_id=lead.pk, config={"kind": "email_sequence", "sequence": "demo"})
    assert Enrollment.objects.get().sequence == sequence

    with pytest.raises(services.SequenceError, match="no sequence 'nope'"):
        EmailSequenceStep().run(
            lead_id=lead.pk, config={"kind": "email_sequence", "sequence": "nope"}
        )


def test_send_due_refuses_to_run_inside_a_transaction():
    from django.db import transaction

    with transaction.atomic(), pytest.raises(RuntimeError, match="outside atomic"):
        send_due()


def raw_header(raw: bytes, name: bytes) -> bytes:
    """A header's value as sent: its lines unfolded, nothing decoded."""
    head = raw.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n")
    unfolded = head.replace(b"\n ", b" ").replace(b"\n\t", b" ")
    (line,) = [x for x in unfolded.split(b"\n") if x.lower().startswith(name.lower() + b":")]
    return line.split(b":", 1)[1].strip()


@pytest.mark.parametrize("length", [21, 60, 200])
def test_list_unsubscribe_is_a_bare_uri_on_the_wire_for_long_base_urls(
    smtp, lead, sequence, settings, length
):
    base = "https://mail.example.com/"
    base_url = base + "p" * (length - len(base)) if length > len(base) else base[:length]
    settings.FOLLOWUPS_BASE_URL = base_url.rstrip("/")
    settings.FOLLOWUPS_UNSUBSCRIBE_MAILTO = "unsubscribe@example.test"
    enroll(lead=lead, sequence=sequence)
    assert send_due().counts == {"sent": 1}

    raw = smtp.envelopes[0].raw
    value = raw_header(raw, b"List-Unsubscribe")
    # RFC 2369 / 8058: angle-bracketed URIs, never RFC 2047 encoded words.
    assert b"=?" not in value
    https, mailto = value.split(b", ")
    assert https.startswith(b"<" + settings.FOLLOWUPS_BASE_URL.encode() + b"/u/")
    assert https.endswith(b">") and b" " not in https
    assert mailto.startswith(b"<mailto:unsubscribe@example.test?subject=unsubscribe%20")
    assert raw_header(raw, b"List-Unsubscribe-Post") == b"List-Unsubscribe=One-Click"
    # Still within RFC 5322's 998-character line limit.
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
