"""What stops a sequence: a reply or a bounce found by the inbox poll (real Dovecot),
a disqualified lead, a manual cancel."""

from email.message import EmailMessage
from urllib.parse import unquote

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from leads.followups import services
from leads.followups.models import OutboundEmail
from leads.followups.services import cancel, enroll, lead_disqualified, send_due
from leads.intake.inbox import poll_source
from leads.models import InboxMessage, Lead

pytestmark = pytest.mark.django_db(transaction=True)


def events(event_type):
    return list(AuditEvent.objects.filter(event_type=event_type).order_by("id"))


@pytest.fixture
def inbox(make_inbox_source):
    return make_inbox_source(failed_folder="Failed")


@pytest.fixture
def sent(smtp, lead, sequence):
    """The lead is enrolled and the first email went out through SMTP."""
    enrollment = enroll(lead=lead, sequence=sequence)
    assert send_due().counts == {"sent": 1}
    (envelope,) = smtp.envelopes
    return enrollment, envelope.message


def reply_to(original, *, body="Sounds good, call me tomorrow.\nPhone: +1 555 0100\n", **headers):
    msg = EmailMessage()
    msg["From"] = "Ada <ada@example.com>"
    msg["To"] = original["From"]
    msg["Subject"] = "Re: " + original["Subject"]
    msg["Message-ID"] = "<reply-1@example.com>"
    msg["In-Reply-To"] = original["Message-ID"]
    msg["References"] = original["Message-ID"]
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


def test_a_reply_found_by_the_inbox_poll_cancels_the_sequence(dovecot, inbox, sent):
    enrollment, original = sent
    dovecot.deliver(reply_to(original))

    summary = poll_source(source=inbox)

    assert (summary.seen, summary.created, summary.skipped) == (1, 0, 1)
    assert Lead.objects.count() == 1  # the reply made no lead
    (row,) = InboxMessage.objects.all()
    assert row.outcome == "reply"
    assert row.lead == enrollment.lead
    (replied,) = events("email_replied")
    assert replied.lead_public_id == enrollment.lead.public_id
    assert replied.details["message_id"] == original["Message-ID"]
    assert replied.details["recipient"] == "ada@example.com"
    assert replied.details["inbox_message_id"] == "<reply-1@example.com>"
    assert replied.correlation_id == summary.correlation_id
    (cancelled,) = events("email_cancelled")
    assert cancelled.details["reason"] == "replied"
    assert cancelled.details["recipient"] == "ada@example.com"
    enrollment.refresh_from_db()
    assert (enrollment.status, enrollment.cancel_reason) == ("cancelled", "replied")
    assert enrollment.next_send_at is None
    assert OutboundEmail.objects.get(step__position=2).status == "cancelled"
    assert [m.headers["message-id"][0] for m in dovecot.messages("Processed")] == [
        "<reply-1@example.com>"
    ]


def test_a_reply_referencing_our_email_only_in_references_counts(dovecot, inbox, sent):
    _enrollment, original = sent
    raw = reply_to(original)
    raw = raw.replace(b"In-Reply-To: " + original["Message-ID"].encode(), b"In-Reply-To: <x@y>")
    dovecot.deliver(raw)
    poll_source(source=inbox)
    assert len(events("email_replied")) == 1


def test_an_out_of_office_reply_does_not_stop_the_sequence(dovecot, inbox, sent):
    enrollment, original = sent
    dovecot.deliver(reply_to(original, body="I am away.", Auto_Submitted="auto-replied"))
    poll_source(source=inbox)
    assert InboxMessage.objects.get().outcome == "auto_reply"
    assert Lead.objects.count() == 1
    enrollment.refresh_from_db()
    assert enrollment.status == "active"
    assert not events("email_replied")


DSN = """\
From: Mail Delivery System <MAILER-DAEMON@mx.example.test>
To: sales@example.test
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn-1@mx.example.test>
Date: Tue, 03 Mar 2026 10:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"

--BOUNDARY
Content-Type: text/plain

The mail system could not deliver your message to ada@example.com.
Email: someone-else@example.com

--BOUNDARY
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.test

Final-Recipient: rfc822; {recipient}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 User unknown

--BOUNDARY
Content-Type: text/rfc822-headers

From: sales@example.test
To: ada@example.com
Subject: Hello
Message-ID: {message_id}

--BOUNDARY--
"""


@pytest.mark.parametrize(
    ("match_by", "message_id"),
    [("message-id", None), ("final-recipient", "<someone-elses@other.example>")],
)
def test_a_bounce_cancels_the_sequence_and_makes_no_lead(
    dovecot, inbox, sent, match_by, message_id
):
    enrollment, original = sent
    raw = DSN.format(recipient="ada@example.com", message_id=message_id or original["Message-ID"])
    dovecot.deliver(raw.replace("\n", "\r\n"))

    summary = poll_source(source=inbox)

    assert summary.created == 0
    assert Lead.objects.count() == 1
    assert InboxMessage.objects.get().outcome == "bounce"
    (bounced,) = events("email_bounced")
    assert bounced.details["message_id"] == original["Message-ID"]
    assert bounced.details["status"] == "5.1.1"
    (cancelled,) = events("email_cancelled")
    assert cancelled.details["reason"] == "bounced"
    enrollment.refresh_from_db()
    assert enrollment.cancel_reason == "bounced"
    assert services.is_suppressed("ADA@example.com")


def test_a_bounce_about_someone_else_is_consumed_silently(dovecot, inbox, sent):
    raw = DSN.format(recipient="nobody@else.example", message_id="<other@else.example>")
    dovecot.deliver(raw.replace("\n", "\r\n"))
    poll_source(source=inbox)
    assert InboxMessage.objects.get().outcome == "bounce"
    assert Lead.objects.count() == 1
    assert not events("email_bounced") and not events("email_cancelled")


def test_a_disqualified_lead_is_cancelled(lead, sequence):
    enrollment = enroll(lead=lead, sequence=sequence)
    assert lead_disqualified(lead=lead) == 1
    enrollment.refresh_from_db()
    assert (enrollment.status, enrollment.cancel_reason) == ("cancelled", "disqualified")
    assert OutboundEmail.objects.get().status == "cancelled"
    (cancelled,) = events("email_cancelled")
    assert cancelled.details == {
        "recipient": "ada@example.com",
        "reason": "disqualified",
        "sequence": "demo",
    }
    assert cancelled.lead_public_id == lead.public_id
    assert lead_disqualified(lead=lead) == 0  # nothing left: no second event
    assert len(events("email_cancelled")) == 1


def test_manual_cancel_from_the_admin_records_the_user(lead, sequence, admin_client):
    enrollment = enroll(lead=lead, sequence=sequence)
    response = admin_client.post(
        reverse("admin:followups_enrollment_changelist"),
        {"action": "cancel_enrollments", "_selected_action": [enrollment.pk]},
    )
    assert response.status_code == 302
    enrollment.refresh_from_db()
    assert enrollment.cancel_reason == "manual"
    (cancelled,) = events("email_cancelled")
    assert cancelled.actor == "user:admin"
    assert cancelled.details["reason"] == "manual"


def test_a_cancelled_email_already_claimed_is_not_sent(smtp, lead, sequence):
    enrollment = enroll(lead=lead, sequence=sequence)
    claimed = services.claim_next(worker_id="w1")
    cancel(enrollment=enrollment, reason="manual")
    claimed.enrollment.refresh_from_db()
    assert services.send_claimed(claimed) == "cancelled"
    assert smtp.envelopes == []
    assert OutboundEmail.objects.get().status == "cancelled"


def test_the_mailto_unsubscribe_target_works_through_the_inbox(
    dovecot, inbox, settings, smtp, lead, sequence
):
    settings.FOLLOWUPS_UNSUBSCRIBE_MAILTO = "unsubscribe@example.test"
    enrollment = enroll(lead=lead, sequence=sequence)
    send_due()
    header = smtp.envelopes[0].message["List-Unsubscribe"]
    mailto = header.split("<mailto:")[1].rstrip(">")
    address, _, query = mailto.partition("?subject=")
    assert address == "unsubscribe@example.test"
    msg = EmailMessage()
    msg["From"] = "ada@example.com"
    msg["To"] = address
    msg["Subject"] = unquote(query)
    msg["Message-ID"] = "<unsub-1@example.com>"
    msg.set_content("")
    dovecot.deliver(msg.as_bytes())

    poll_source(source=inbox)

    assert InboxMessage.objects.get().outcome == "unsubscribe"
    assert Lead.objects.count() == 1
    enrollment.refresh_from_db()
    assert enrollment.cancel_reason == "unsubscribed"
