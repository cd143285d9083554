"""A real SMTP server (aiosmtpd) on loopback, sequences and leads for the follow-up tests."""

import asyncio
import email
import email.policy
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller

from leads.followups.models import Sequence, SequenceStep
from leads.models import LeadSource
from leads.services import lead_create

# The Dovecot fixtures of the inbox tests, for reply and bounce detection.
from tests.leads.conftest import dovecot, dovecot_server, make_inbox_source  # noqa: F401

BASE_URL = "http://testserver"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Envelope:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    # The bytes as they came over the wire, for what parsing would hide.
    raw: bytes = b""


@dataclass
class Recorder:
    """aiosmtpd handler: keeps every accepted envelope; can refuse on demand."""

    envelopes: list[Envelope] = field(default_factory=list)
    # Reply codes for the next DATA commands, e.g. ["451 4.3.0 Try again later"].
    data_replies: list[str] = field(default_factory=list)
    # Recipient -> reply for RCPT TO, e.g. {"gone@example.com": "550 5.1.1 No such user"}.
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    # Recipient -> reply to the DATA of a message for it, every time, e.g. a mailbox
    # the server keeps refusing: {"b@example.com": "554 5.6.0 Message refused"}.
    data_replies_for: dict[str, str] = field(default_factory=dict)
    # How many of the next DATA commands to cut off: the connection closes after the
    # message was received and before the reply, as a crash or network break does.
    drop_data: int = 0
    # Seconds to take over each DATA, like a real server does (lets concurrency show).
    data_delay: float = 0.0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.drop_data:
            self.drop_data -= 1
            server.transport.close()
            return "250 never heard"
        if self.data_replies:
            return self.data_replies.pop(0)
        for rcpt in envelope.rcpt_tos:
            if rcpt in self.data_replies_for:
                return self.data_replies_for[rcpt]
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.envelopes.append(
            Envelope(envelope.mail_from, list(envelope.rcpt_tos), msg, envelope.original_content)
        )
        return "250 Message accepted for delivery"

    def message_ids(self) -> list[str]:
        return [e.message["Message-ID"] for e in self.envelopes]


class SMTPServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.recorder = Recorder()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def envelopes(self) -> list[Envelope]:
        return self.recorder.envelopes


def mailers(port: int) -> dict:
    # pytest-django's test environment swaps MAILERS for locmem: put SMTP back.
    return {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": port, "timeout": 10},
        }
    }


@pytest.fixture(autouse=True)
def followup_settings(settings):
    settings.FOLLOWUPS_BASE_URL = BASE_URL
    settings.FOLLOWUPS_MESSAGE_ID_DOMAIN = "mail.example.test"
    settings.ROOT_URLCONF = "tests.leads.followups.urls"
    settings.DEFAULT_FROM_EMAIL = "sales@example.test"
    return settings


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def smtp_down(settings, smtp_port) -> SMTPServer:
    """MAILERS point at a port where nothing listens (yet): start() brings the server up."""
    settings.MAILERS = mailers(smtp_port)
    server = SMTPServer(smtp_port)
    yield server
    server.stop()


@pytest.fixture
def smtp(smtp_down) -> Iterator[SMTPServer]:
    smtp_down.start()
    return smtp_down


@pytest.fixture
def source(db):
    return LeadSource.objects.create(name="Website", slug="website", kind="web_form")


@pytest.fixture
def make_lead(source):
    counter = iter(range(1, 10**6))

    def make(email: str | None = None, **fields):
        n = next(counter)
        return lead_create(
            source=source, email=email or f"lead{n}@example.com", name=f"Lead {n}", **fields
        )

    return make


@pytest.fixture
def lead(make_lead):
    return make_lead("ada@example.com", company="Acme")


@pytest.fixture
def sequence(db):
    seq = Sequence.objects.create(
        name="Demo follow-up", slug="demo", sender="Sales Team <sales@example.test>"
    )
    SequenceStep.objects.create(
        sequence=seq,
        position=1,
        delay=timedelta(0),
        subject_template="Hello {{ lead.name }} from {{ lead.company|default:'your company' }}",
        text_template=(
            "Hi {{ lead.name }},\n\nSee https://example.com/pricing\n"
            "Unsubscribe: {{ unsubscribe_url }}\n"
        ),
        html_template=(
            "<html><body><p>Hi {{ lead.name }} &amp; team,</p>"
            '<p><a href="https://example.com/pricing?plan=pro&amp;ref=mail">Pricing</a> '
            "<a href='https://example.com/demo'>Demo</a></p>"
            '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
        ),
    )
    SequenceStep.objects.create(
        sequence=seq,
        position=2,
        delay=timedelta(days=3),
        subject_template="Following up, {{ lead.name }}",
        text_template="Any questions?",
    )
    return seq


@pytest.fixture
def one_step(db):
    seq = Sequence.objects.create(name="One", slug="one", sender="sales@example.test")
    SequenceStep.objects.create(
        sequence=seq,
        position=1,
        subject_template="Hi {{ lead.name }}",
        text_template="Hello {{ lead.email }}",
    )
    return seq
