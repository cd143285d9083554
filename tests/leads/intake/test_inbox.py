"""The inbox poll against a real Dovecot (tests/leads/conftest.py starts it)."""

import imaplib
from datetime import timedelta
from email.message import EmailMessage
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from imap_tools import MailBox, MailBoxStartTls, MailBoxUnencrypted, MailMessage
from imap_tools.mailbox import BaseMailBox

from audit.models import AuditEvent
from core import locks
from leads.intake import inbox
from leads.intake.inbox import (
    Handled,
    InboxConfig,
    InboxConfigError,
    InboxConnectionError,
    lead_payload,
    mailbox_class,
    parse_message,
    poll_source,
)
from leads.models import InboxMessage, Lead, LeadSource

USER_ENV = "IMAP_TEST_USER"
PASSWORD_ENV = "IMAP_TEST_PASSWORD"
DATE = "Tue, 03 Mar 2026 10:00:00 +0000"


def make_mail(
    body: str = "Firma: Acme GmbH\nPhone: +49 30 1234567\nCountry: de\nBudget: 10k\n",
    *,
    sender: str = "Ada Lovelace <ada@example.com>",
    subject: str = "Demo request",
    message_id: str | None = "<demo-1@example.com>",
    html: bool = False,
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "leads@example.test"
    msg["Subject"] = subject
    msg["Date"] = DATE
    if message_id:
        msg["Message-ID"] = message_id
    for name, value in (headers or {}).items():
        msg[name] = value
    if html:
        msg.set_content(body, subtype="html")
    else:
        msg.set_content(body)
    return msg.as_bytes()


def events(event_type):
    return list(AuditEvent.objects.filter(event_type=event_type).order_by("id"))


def message_ids(dovecot, folder):
    return [m.headers.get("message-id", ("",))[0].strip() for m in dovecot.messages(folder)]


@pytest.fixture
def source(make_inbox_source, transactional_db):
    return make_inbox_source(
        failed_folder="Failed",
        parse={"key_value": True, "field_aliases": {"Firma": "company"}},
    )


def poll(**kwargs):
    out = StringIO()
    call_command("poll_inbox", stdout=out, **kwargs)
    return out.getvalue()


# --- Against Dovecot ----------------------------------------------------------------


def test_lead_mail_becomes_a_lead_and_is_moved(dovecot, source):
    dovecot.deliver(make_mail())
    (uid,) = dovecot.uids()

    summary = poll_source(source=source)

    assert (summary.seen, summary.created, summary.errors) == (1, 1, 0)
    lead = Lead.objects.get()
    assert lead.email == "ada@example.com"
    assert lead.name == "Ada Lovelace"
    assert lead.company == "Acme GmbH"
    assert lead.phone == "+49 30 1234567"
    assert lead.country == "DE"
    assert lead.extra == {"Budget": "10k", "subject": "Demo request"}
    assert lead.source == source
    (event,) = events("lead_ingested")
    assert event.lead_public_id == lead.public_id
    assert event.actor == "system"
    assert event.correlation_id == summary.correlation_id
    assert event.details["source"] == "sales-inbox"
    assert event.details["duplicate"] is False
    row = InboxMessage.objects.get()
    assert (row.message_id, row.outcome, row.lead, row.uid) == (
        "<demo-1@example.com>",
        "lead",
        lead,
        uid,
    )
    assert dovecot.messages("INBOX") == []
    assert message_ids(dovecot, "Processed") == ["<demo-1@example.com>"]
    source.refresh_from_db()
    assert source.state["last_uid"] == uid
    assert isinstance(source.state["uidvalidity"], int)
    # A good poll leaves no event, so its time is kept for the inbox alert.
    assert source.state["last_poll_ok_at"] and "last_poll_failed_at" not in source.state


def test_command_prints_the_summary_and_a_second_poll_does_nothing(dovecot, source):
    dovecot.deliver(make_mail())

    assert "sales-inbox: 1 seen, 1 created" in poll()
    assert "sales-inbox: 0 seen, 0 created" in poll(source="sales-inbox")

    assert Lead.objects.count() == 1
    assert len(events("lead_ingested")) == 1


def test_the_uid_watermark_skips_what_was_read(dovecot, source):
    dovecot.deliver(make_mail())
    (uid,) = dovecot.uids()
    with dovecot.connect() as mailbox:
        validity = mailbox.folder.status("INBOX")["UIDVALIDITY"]
    source.state = {"uidvalidity": validity, "last_uid": uid}
    source.save()

    summary = poll_source(source=source)

    assert summary.seen == 0
    assert Lead.objects.count() == 0
    assert len(dovecot.messages("INBOX")) == 1


def test_a_new_uidvalidity_resets_the_watermark(dovecot, source):
    dovecot.deliver(make_mail())
    (uid,) = dovecot.uids()
    with dovecot.connect() as mailbox:
        validity = mailbox.folder.status("INBOX")["UIDVALIDITY"]
    # As if the folder had been recreated since the last poll, which read further.
    source.state = {"uidvalidity": validity + 1, "last_uid": uid + 50}
    source.save()

    summary = poll_source(source=source)

    assert (summary.seen, summary.created) == (1, 1)
    source.refresh_from_db()
    assert {k: source.state[k] for k in ("uidvalidity", "last_uid")} == {
        "uidvalidity": validity,
        "last_uid": uid,
    }


def test_the_same_message_id_again_is_moved_not_ingested(dovecot, source):
    dovecot.deliver(make_mail())
    poll_source(source=source)
    dovecot.deliver(make_mail())  # a second copy: a new UID, the same Message-ID

    summary = poll_source(source=source)

    assert (summary.seen, summary.created, summary.merged, summary.duplicates) == (1, 0, 0, 1)
    assert Lead.objects.count() == 1
    assert len(events("lead_ingested")) == 1
    assert InboxMessage.objects.count() == 1
    assert dovecot.messages("INBOX") == []
    assert message_ids(dovecot, "Processed") == ["<demo-1@example.com>"] * 2


def test_two_copies_in_one_poll_make_one_lead(dovecot, source):
    dovecot.deliver(make_mail())
    dovecot.deliver(make_mail())

    summary = poll_source(source=source)

    assert (summary.seen, summary.created, summary.duplicates) == (2, 1, 1)
    assert Lead.objects.count() == 1


def test_a_message_without_message_id_gets_a_stable_synthetic_one(dovecot, source):
    dovecot.deliver(make_mail(message_id=None))
    dovecot.deliver(make_mail(message_id=None))

    summary = poll_source(source=source)

    assert (summary.created, summary.duplicates) == (1, 1)
    (row,) = InboxMessage.objects.all()
    assert row.message_id.endswith("@synthetic.invalid>")


def test_a_second_mail_from_the_same_lead_is_merged(dovecot, source):
    dovecot.deliver(make_mail("Phone: +49 30 1\n"))
    dovecot.deliver(make_mail("Title: CTO\n", message_id="<demo-2@example.com>"))

    summary = poll_source(source=source)

    assert (summary.created, summary.merged) == (1, 1)
    lead = Lead.objects.get()
    assert lead.title == "CTO"
    assert sorted(InboxMessage.objects.values_list("outcome", flat=True)) == ["duplicate", "lead"]


def test_bad_messages_are_recorded_and_moved_and_the_poll_goes_on(dovecot, source):
    dovecot.deliver(b"this is no mail at all\r\n\r\n\xff\xfe garbage\r\n")
    dovecot.deliver(make_mail(sender="Bob <bob@example>", message_id="<bad-sender@x>"))
    dovecot.deliver(make_mail(message_id="<good@example.com>"))
    garbage_uid, bad_sender_uid, _good_uid = dovecot.uids()

    summary = poll_source(source=source)

    assert (summary.seen, summary.created, summary.errors) == (3, 1, 2)
    assert Lead.objects.get().email == "ada@example.com"
    garbage, bad_sender = events("error")
    assert garbage.error_type == "MalformedMessage"
    assert "no sender" in garbage.error_message
    assert "Traceback" in garbage.traceback
    assert garbage.details["source"] == "sales-inbox"
    assert garbage.details["uid"] == garbage_uid
    assert garbage.details["message_id"].endswith("@synthetic.invalid>")
    assert "no sender" in garbage.details["reason"]
    assert garbage.correlation_id == summary.correlation_id
    assert bad_sender.error_type == "LeadValidationError"
    assert bad_sender.details == {
        "source": "sales-inbox",
        "message_id": "<bad-sender@x>",
        "uid": bad_sender_uid,
        "reason": bad_sender.error_message,
    }
    assert "not a valid email address" in bad_sender.error_message
    assert "Traceback" in bad_sender.traceback
    assert sorted(InboxMessage.objects.values_list("outcome", flat=True)) == [
        "error",
        "error",
        "lead",
    ]
    assert dovecot.messages("INBOX") == []
    assert len(dovecot.messages("Failed")) == 2
    assert message_ids(dovecot, "Processed") == ["<good@example.com>"]


def test_bad_messages_go_to_the_processed_folder_without_a_failed_one(dovecot, source):
    del source.options["inbox"]["failed_folder"]
    source.save()
    dovecot.deliver(make_mail(sender="nobody"))

    summary = poll_source(source=source)

    assert summary.errors == 1
    assert len(dovecot.messages("Processed")) == 1
    assert "Failed" not in dovecot.folders()


def test_a_crash_between_commit_and_move_is_caught_by_the_message_id(dovecot, source, monkeypatch):
    dovecot.deliver(make_mail())
    (uid,) = dovecot.uids()
    real_move = BaseMailBox.move

    def lost_connection(self, *args, **kwargs):
        raise imaplib.IMAP4.abort("socket error: EOF")

    monkeypatch.setattr(BaseMailBox, "move", lost_connection)
    with pytest.raises(InboxConnectionError, match=f"moving UID {uid} to Processed"):
        poll_source(source=source)
    assert Lead.objects.count() == 1  # committed before the move
    source.refresh_from_db()
    assert source.state.get("last_uid") == 0  # so the next poll reads it again
    (error,) = events("error")
    assert error.details["source"] == "sales-inbox"

    monkeypatch.setattr(BaseMailBox, "move", real_move)
    summary = poll_source(source=source)

    assert (summary.seen, summary.created, summary.duplicates) == (1, 0, 1)
    assert Lead.objects.count() == 1
    assert message_ids(dovecot, "Processed") == ["<demo-1@example.com>"]


def reply_handler(message, context):
    """A stand-in for the reply detection a later issue adds."""
    if message.in_reply_to:
        return Handled(outcome="reply")
    return None


def test_a_handler_ahead_of_the_lead_parser_consumes_its_messages(dovecot, source, request):
    inbox.register_handler(
        "test_reply", "Test reply", "tests.leads.intake.test_inbox.reply_handler"
    )
    request.addfinalizer(lambda: inbox.HANDLERS.unregister("test_reply"))
    assert list(inbox.HANDLERS)[-2:] == ["test_reply", inbox.LEAD_HANDLER]
    dovecot.deliver(make_mail(headers={"In-Reply-To": "<sent-1@orchestrator>"}))
    dovecot.deliver(make_mail(message_id="<demo-2@example.com>"))

    summary = poll_source(source=source)

    assert (summary.seen, summary.created, summary.skipped) == (2, 1, 1)
    assert summary.outcomes == {"reply": 1, "lead": 1}
    assert InboxMessage.objects.get(outcome="reply").lead is None


def test_a_form_notification_takes_the_lead_from_the_body(dovecot, source):
    body = (
        "<html><body><table>"
        "<tr><td>Name:</td><td>Grace Hopper</td></tr>"
        "<tr><td>Email:</td><td>grace@example.org</td></tr>"
        "<tr><td>Company:</td><td>Navy &amp; Co</td></tr>"
        "</table></body></html>"
    )
    dovecot.deliver(make_mail(body, sender="Website <noreply@example.net>", html=True))

    poll_source(source=source)

    lead = Lead.objects.get()
    assert (lead.email, lead.name, lead.company) == (
        "grace@example.org",
        "Grace Hopper",
        "Navy & Co",
    )


def test_missing_password_variable_is_a_command_error_naming_it(dovecot, source, monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV)
    dovecot.deliver(make_mail())

    with pytest.raises(CommandError, match=f"environment variable {PASSWORD_ENV} is not set"):
        poll()

    (error,) = events("error")
    assert error.error_type == "InboxConfigError"
    assert error.details["source"] == "sales-inbox"
    assert len(dovecot.messages("INBOX")) == 1


def test_wrong_password_is_a_command_error(dovecot, source, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")

    with pytest.raises(CommandError, match=r"sales-inbox: login as leads@example.test .* refused"):
        poll()

    (error,) = events("error")
    assert error.error_type == "InboxConnectionError"
    assert "AUTHENTICATIONFAILED" in error.error_message
    assert error.details["port"] == dovecot.port
    source.refresh_from_db()
    assert source.state["last_poll_failed_at"] and "last_poll_ok_at" not in source.state


def test_unreachable_server_is_a_command_error(source, unused_port):
    source.options["inbox"]["port"] = unused_port
    source.save()

    with pytest.raises(CommandError, match=rf"connecting on 127.0.0.1:{unused_port} .*failed"):
        poll()
    assert len(events("error")) == 1


@pytest.mark.django_db(transaction=True)
def test_unknown_source_is_a_command_error():
    with pytest.raises(CommandError, match="no lead source 'nope'"):
        poll(source="nope")


@pytest.mark.django_db(transaction=True)
def test_a_source_of_another_kind_is_a_command_error():
    LeadSource.objects.create(name="Web", slug="web", kind=LeadSource.Kind.WEB_FORM)
    with pytest.raises(CommandError, match="web is a Web form source"):
        poll(source="web")


def test_a_run_skips_while_another_holds_the_lock(dovecot, source):
    dovecot.deliver(make_mail())
    holder = locks.acquire("poll_inbox", ttl=timedelta(minutes=5))
    try:
        assert "another run holds the lock" in poll()
    finally:
        locks.release("poll_inbox", holder)

    assert Lead.objects.count() == 0
    assert len(dovecot.messages("INBOX")) == 1


def test_inactive_sources_are_not_polled(dovecot, source):
    source.active = False
    source.save()
    dovecot.deliver(make_mail())

    assert "No active email inbox sources." in poll()
    assert Lead.objects.count() == 0


@pytest.fixture
def unused_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- Without a server ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("security", "cls"),
    [("ssl", MailBox), ("starttls", MailBoxStartTls), ("plain", MailBoxUnencrypted)],
)
def test_mailbox_class_follows_the_security_setting(security, cls):
    assert mailbox_class(security) is cls


def test_an_unknown_security_setting_is_refused():
    with pytest.raises(InboxConfigError, match="use one of ssl, starttls, plain"):
        mailbox_class("tls")


def config_of(**inbox_options):
    source = LeadSource(
        slug="s", kind=LeadSource.Kind.EMAIL_INBOX, options={"inbox": inbox_options}
    )
    return InboxConfig.from_source(source)


BASE = {"host": "imap.example.com", "username_env": "U", "password_env": "P"}


def test_config_defaults_follow_the_security():
    config = config_of(**BASE)
    assert (config.security, config.port, config.folder) == ("ssl", 993, "INBOX")
    assert config_of(**BASE, security="starttls").port == 143
    assert config.error_folder == "Processed"
    assert config_of(**BASE, failed_folder="Failed").error_folder == "Failed"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "options.inbox.host must be a non-empty string"),
        ({**BASE, "security": "tls"}, "security is 'tls'"),
        ({**BASE, "port": "993"}, "port must be a port number"),
        ({**BASE, "security": "starttls", "port": 993}, "use security ssl"),
        ({**BASE, "pasword_env": "P"}, "unknown keys pasword_env"),
        ({**BASE, "processed_folder": "INBOX"}, "processed_folder must differ"),
        ({**BASE, "parse": {"key_value": "yes"}}, "key_value must be true or false"),
    ],
)
def test_config_errors_say_what_is_wrong(options, message):
    with pytest.raises(InboxConfigError, match=message):
        config_of(**options)


def parsed(raw: bytes):
    return parse_message(MailMessage.from_bytes(raw), uid=7)


def test_key_value_lines_stop_at_the_signature_and_skip_quotes():
    message = parsed(
        make_mail(
            "Hello!\nCompany: Acme\nSee https://example.com\n> Title: quoted\n"
            "Budget: 5k\n-- \nPhone: signature\n"
        )
    )
    source = LeadSource(slug="s", field_mapping={"Budget": "title"})
    payload = lead_payload(message, source=source, config=config_of(**BASE))
    assert payload == {
        "email": "ada@example.com",
        "name": "Ada Lovelace",
        "company": "Acme",
        "Budget": "5k",
        "subject": "Demo request",
    }


def test_parse_keeps_threading_headers_for_later_handlers():
    message = parsed(make_mail(headers={"In-Reply-To": "<a@x>", "References": "<root@x> <a@x>"}))
    assert message.in_reply_to == ("<a@x>",)
    assert message.references == ("<root@x>", "<a@x>")
    assert (message.uid, message.message_id, message.synthetic_id) == (
        7,
        "<demo-1@example.com>",
        False,
    )
