"""Demo data: three weeks of leads through the real pipeline.

Leads arrive through the same services production uses (web form
ingestion, CSV import), the workflow runner qualifies and routes them four
times a day, and the sales inbox is "down" on two days so the poll fails for
real. After each runner pass the task worker runs the workflow's steps (CRM
sync to a fake HubSpot on a loopback port, enrollment in the "welcome"
sequence), then `sync_crm`'s and `send_followups`' services run. Recipients
open, click, reply, bounce and unsubscribe through the same services the
tracking views and the inbox handlers call. The clock is moved with
time_machine so the history spreads over the weeks; nothing writes audit
events directly, and nothing leaves the machine (mail goes to Django's
in-memory backend, the CRM listens on 127.0.0.1).
"""

import contextlib
import csv
import heapq
import json
import logging
import os
import random
import re
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from html import unescape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core import mail
from django.core.mail import EmailMultiAlternatives
from django.db import connections, transaction
from django.db.backends.signals import connection_created
from django.db.models import Max
from django.test import override_settings
from django.urls import Resolver404, resolve
from django.utils import timezone
from django_tasks_db.management.commands.db_worker import Worker
from imap_tools import MailMessage

from audit.integrity import seal_all
from audit.models import AuditEvent
from audit.services import audit_context, new_correlation_id
from leads.crm.models import CrmConnection, CrmRecord
from leads.crm.services import crm_sync_due
from leads.crm.steps import CrmSyncFailed
from leads.followups import services as followups
from leads.followups import tokens
from leads.followups.models import Enrollment, OutboundEmail, Sequence, SequenceStep
from leads.intake.csv_import import import_csv
from leads.intake.inbox import HandlerContext, InboxConfig, dispatch, parse_message
from leads.models import InboxMessage, Lead, LeadSource
from leads.services import LeadValidationError, ingest_lead
from leads.workflows.config import apply_config
from leads.workflows.models import Workflow
from leads.workflows.runner import run_pass
from orchestrator.dashboard.access import AUDITOR, OPERATOR


class DemoError(Exception):
    """The database holds something the demo would have to overwrite."""


@dataclass(frozen=True)
class DemoLogin:
    username: str
    password: str
    role: str  # a dashboard group, or "superuser"


# Printed by `make demo`; load_demo runs with DEBUG only.
DEMO_LOGINS = (
    DemoLogin("demo", "demo-password", "superuser"),
    DemoLogin("auditor", "auditor-password", AUDITOR),
    DemoLogin("operator", "operator-password", OPERATOR),
)
EXAMPLE_CONFIG = Path(settings.BASE_DIR) / "config" / "workflows.example.json"

FIRST = [
    "Ada",
    "Grace",
    "Linus",
    "Margaret",
    "Alan",
    "Barbara",
    "Ken",
    "Frances",
    "Edsger",
    "Radia",
]
LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Turing", "Liskov", "Thompson", "Allen"]
COMPANIES = ["Initech", "Globex", "Umbrella", "Hooli", "Stark Industries", "Wayne Enterprises"]
TITLES = ["CTO", "VP Engineering", "Head of Sales", "Developer", "Student", "Founder", "Analyst"]
COUNTRIES = ["DE", "FR", "GB", "US", "CA", "BR", "IN", "JP", "NL", "ES"]
FREE_MAIL = ["gmail.com", "yahoo.com", "outlook.com"]
PASSES = (8, 12, 16, 20)  # the runner's schedule, hours UTC
INBOX_DOWN_DAYS = {5, 12}

CRM_CONNECTION = "hubspot"
CRM_TOKEN_ENV = "HUBSPOT_DEMO_TOKEN"
# Short waits and a short read timeout: the fake CRM's failures cost the load
# seconds, not minutes, and a "slow" answer past the timeout is a real timeout.
CRM_OPTIONS = {"timeout": [2, 1], "max_attempts": 3, "backoff": 0.02, "max_backoff": 0.1}
SEQUENCE = "welcome"
WORKFLOW = "sales_lead_management"  # the example config's
# Minutes after a pass at which its downstream work runs, so the timeline reads
# qualified -> CRM / enrolled -> retries -> email sent.
TASKS_AT, SYNC_AT, SEND_AT = 1, 5, 6


def ensure_demo_users() -> list[DemoLogin]:
    """Create the demo logins that do not exist yet; returns those it created."""
    User = get_user_model()
    created = []
    for login in DEMO_LOGINS:
        if User.objects.filter(username=login.username).exists():
            continue
        email = f"{login.username}@example.com"
        if login.role == "superuser":
            User.objects.create_superuser(login.username, email, login.password)
        else:
            user = User.objects.create_user(login.username, email, login.password)
            # The groups come from a migration (orchestrator 0002).
            user.groups.add(Group.objects.get_or_create(name=login.role)[0])
        created.append(login)
    return created


def demo_config() -> dict:
    """The example config, with the inbox pointed at a port where nothing listens."""
    config = json.loads(EXAMPLE_CONFIG.read_text())
    for workflow in config["workflows"]:
        for source in workflow.get("sources", []):
            if source["kind"] == "email_inbox":
                source["inbox"].update(host="127.0.0.1", port=1, security="plain")
                source["inbox"].update(
                    username_env="INBOX_DEMO_USER", password_env="INBOX_DEMO_PASSWORD"
                )
    return config


def _person(rng: random.Random, n: int) -> dict[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    company = rng.choice(COMPANIES)
    domain = (
        rng.choice(FREE_MAIL)
        if rng.random() < 0.12
        else company.lower().replace(" ", "") + ".example"
    )
    return {
        "email": f"{first}.{last}.{n}@{domain}".lower(),
        "full_name": f"{first} {last}",
        "organisation": company,
        "title": rng.choice(TITLES),
        "country": rng.choice(COUNTRIES),
    }


def _csv_batch(rng: random.Random, start: int, rows: int) -> Path:
    with tempfile.NamedTemporaryFile(
        "w", suffix=".csv", delete=False, newline="", encoding="utf-8"
    ) as handle:
        writer = csv.writer(handle)
        writer.writerow(["E-mail", "Name", "Company", "Country", "Title"])
        for i in range(rows):
            p = _person(rng, start + i)
            email = "not-an-email" if rng.random() < 0.07 else p["email"]
            writer.writerow([email, p["full_name"], p["organisation"], p["country"], p["title"]])
    return Path(handle.name)


# --- A fake HubSpot ----------------------------------------------------------------------


@dataclass
class FakeHubSpot:
    """HubSpot's contacts v3 API as leads/crm/hubspot.py calls it (search, create, update).

    Most calls succeed; a few answer 429 with Retry-After 0, 500, or slowly (one
    in a while past the client's read timeout, after creating the contact, so
    the retry meets the search index lag and the 409 CONFLICT path). During an
    `outage` every call answers 500. Decisions come from a seeded generator and
    the client calls one at a time, so a demo load is repeatable.
    """

    token: str
    seed: int
    outage: bool = False
    # Seconds a new contact stays out of search results (HubSpot's index lags).
    index_lag: float = 1.5
    contacts: dict[str, str] = field(default_factory=dict)  # email -> id
    _indexed_at: dict[str, float] = field(default_factory=dict)
    _next_id: int = 51001
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def answer(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], dict[str, Any], float]:
        """(status, extra headers, JSON body, seconds to wait before answering)."""
        with self._lock:
            if headers.get("Authorization") != f"Bearer {self.token}":
                return 401, {}, _hubspot_error("INVALID_AUTHENTICATION", "Invalid token."), 0
            if self.outage:
                return 500, {}, _hubspot_error("INTERNAL_ERROR", "internal error"), 0
            roll = self._rng.random()
            if roll < 0.04:
                return (
                    429,
                    {"Retry-After": "0"},
                    _hubspot_error("RATE_LIMITS", "You have reached your secondly limit."),
                    0,
                )
            if roll < 0.06:
                return 500, {}, _hubspot_error("INTERNAL_ERROR", "internal error"), 0
            delay = self._rng.uniform(0.15, 0.5) if roll < 0.08 else 0.0
            timeout = roll > 0.985  # answered after the client gave up
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                return 400, {}, _hubspot_error("VALIDATION_ERROR", "Invalid JSON."), 0
            status, payload = self._contacts(method, path, data, now=time.monotonic())
            if timeout and method == "POST" and status == 201:
                delay = 1.3
            return status, {}, payload, delay

    def _contacts(self, method: str, path: str, data: dict, *, now: float) -> tuple[int, dict]:
        base = "/crm/v3/objects/contacts"
        if method == "POST" and path == f"{base}/search":
            filters = data.get("filterGroups", [{}])[0].get("filters", [{}])
            email = str(filters[0].get("value", "")).lower()
            found = self.contacts.get(email)
            if found is None or self._indexed_at[found] > now:
                return 200, {"total": 0, "results": []}
            return 200, {"total": 1, "results": [{"id": found, "properties": {"email": email}}]}
        props = data.get("properties") or {}
        email = str(props.get("email", "")).lower()
        if _rejected(email):
            detail = {
                "isValid": False,
                "message": f"Email address {email} is invalid",
                "error": "INVALID_EMAIL",
                "name": "email",
            }
            return 400, _hubspot_error(
                "VALIDATION_ERROR", f"Property values were not valid: {json.dumps([detail])}"
            )
        if method == "POST" and path == base:
            if email in self.contacts:
                existing = self.contacts[email]
                return 409, _hubspot_error(
                    "CONFLICT", f"Contact already exists. Existing ID: {existing}"
                )
            contact_id = str(self._next_id)
            self._next_id += 1
            self.contacts[email] = contact_id
            self._indexed_at[contact_id] = now + self.index_lag
            return 201, {"id": contact_id, "properties": props}
        if method == "PATCH" and path.startswith(f"{base}/"):
            contact_id = path.rpartition("/")[2]
            if contact_id not in self._indexed_at:
                return 404, _hubspot_error("OBJECT_NOT_FOUND", "resource not found")
            return 200, {"id": contact_id, "properties": props}
        return 404, _hubspot_error("OBJECT_NOT_FOUND", f"no route for {method} {path}")

    def remember(self, contacts: dict[str, str]) -> None:
        """Contacts an earlier fake created (email -> id), found at once and updatable."""
        with self._lock:
            for email, contact_id in contacts.items():
                self.contacts[email] = contact_id
                self._indexed_at[contact_id] = 0.0
            numeric = [int(i) for i in contacts.values() if i.isdigit()]
            self._next_id = max([self._next_id - 1, *numeric]) + 1


def _rejected(email: str) -> bool:
    # HubSpot refuses some addresses its own validation dislikes: a permanent 400
    # (the record needs attention), the same for the same address on every try.
    return zlib.crc32(email.encode()) % 20 == 0


def _hubspot_error(category: str, message: str) -> dict[str, str]:
    return {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
    }


class _HubSpotHandler(BaseHTTPRequestHandler):
    fake: FakeHubSpot  # set on a subclass per server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, headers, payload, delay = self.fake.answer(
            self.command, urlsplit(self.path).path, self.headers, body
        )
        if delay:
            time.sleep(delay)
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and closed the connection

    do_POST = do_PATCH = do_GET = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # CrmCall rows are the log


def known_contacts(connection: CrmConnection) -> dict[str, str]:
    """What the demo's earlier fakes hold, from the records that point at them.

    A new fake starts empty; without this an update of a lead synced in an
    earlier run would meet a 404 for a contact the CRM "lost".
    """
    rows = (
        CrmRecord.objects.filter(connection=connection)
        .exclude(external_id="")
        .values_list("lead__email", "external_id")
    )
    return {email.lower(): external_id for email, external_id in rows if email}


@contextlib.contextmanager
def fake_hubspot(
    *, token: str, seed: int, contacts: dict[str, str] | None = None
) -> Iterator[tuple[FakeHubSpot, str]]:
    """A FakeHubSpot on a free port of 127.0.0.1; yields it and its base URL."""
    fake = FakeHubSpot(token=token, seed=seed)
    fake.remember(contacts or {})
    handler = type("DemoHubSpotHandler", (_HubSpotHandler,), {"fake": fake})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- Recipients -----------------------------------------------------------------------------


REPLIES = [
    "Thanks, this looks interesting. Could we talk on Thursday afternoon?",
    "We are evaluating options this quarter. Can you send pricing for 50 seats?",
    "Please call me next week, my number is in the signature.",
    "Not the right time for us, maybe in Q3.",
]


@dataclass(order=True)
class _Planned:
    when: datetime
    seq: int
    action: str = field(compare=False)
    message: EmailMultiAlternatives = field(compare=False)  # as the recipient got it
    url: str = field(compare=False, default="")


class Recipients:
    """The people the follow-ups reach: each reads the email it got and acts on it later.

    Opens and clicks go through the tracking links in the HTML (the signed
    tokens, as the pixel and redirect views read them), unsubscribes through
    the List-Unsubscribe URL, replies and bounces through the inbox handlers
    (a constructed message with In-Reply-To, or a delivery status notification).
    """

    def __init__(self, *, rng: random.Random, inbox: LeadSource) -> None:
        self.rng = rng
        self.inbox = inbox
        self.planned: list[_Planned] = []
        self.seen = 0
        self.counter = 0
        self.script = ["reply", "bounce", "unsubscribe"]

    def read_new_mail(self, *, now: datetime) -> None:
        outbox = getattr(mail, "outbox", [])
        for message in outbox[self.seen :]:
            self._plan(message, sent=now)
        self.seen = len(outbox)

    def _later(
        self, action: str, message: EmailMultiAlternatives, when: datetime, url: str = ""
    ) -> None:
        self.counter += 1
        heapq.heappush(self.planned, _Planned(when, self.counter, action, message, url))

    def _plan(self, message: EmailMultiAlternatives, *, sent: datetime) -> None:
        rng = self.rng

        def minutes(low: int, high: int) -> timedelta:
            return timedelta(minutes=rng.randint(low, high))

        first = OutboundEmail.objects.filter(
            message_id=message.extra_headers["Message-ID"], step__position=1
        ).exists()
        links = [u for u in _tracked(_html(message)) if _resolve(u)[0] == "click"]
        if first and self.script:
            # The first recipients play each part once, so even a short demo shows them.
            part = self.script.pop(0)
            if part == "bounce":
                self._later("bounce", message, sent + minutes(2, 20))
                return
            opened = sent + minutes(20, 120)
            self._later("open", message, opened)
            if part == "reply":
                if links:
                    self._later("click", message, opened + minutes(1, 5), links[0])
                self._later("reply", message, opened + minutes(30, 180))
            else:
                self._later("unsubscribe", message, opened + minutes(1, 10))
            return
        roll = rng.random()
        if first and roll < 0.04:
            self._later("bounce", message, sent + minutes(1, 40))
            return
        if roll < 0.07:
            self._later("auto_reply", message, sent + minutes(1, 5))
        if rng.random() > 0.5:
            return
        opened = sent + minutes(10, 36 * 60)
        self._later("open", message, opened)
        if links and rng.random() < 0.35:
            self._later("click", message, opened + minutes(1, 30), rng.choice(links))
        answer = rng.random()
        if answer < 0.15:
            self._later("reply", message, opened + minutes(20, 30 * 60))
        elif answer < 0.2:
            self._later("unsubscribe", message, opened + minutes(1, 10))

    def act_until(self, until: datetime, travel: Any) -> None:
        while self.planned and self.planned[0].when <= until:
            planned = heapq.heappop(self.planned)
            with travel(planned.when, tick=False):
                getattr(self, f"_{planned.action}")(planned)

    # Each action does what the view or the inbox poll does with the same input.

    def _open(self, planned: _Planned) -> None:
        pixel = next(u for u in _tracked(_html(planned.message)) if _resolve(u)[0] == "open")
        followups.record_open(email_pk=tokens.read_token(tokens.OPEN, _resolve(pixel)[1]))

    def _click(self, planned: _Planned) -> None:
        token = _resolve(planned.url)[1]
        target = parse_qs(urlsplit(planned.url).query)["u"][0]
        followups.record_click(email_pk=tokens.read_token(tokens.CLICK, token), url=target)

    def _unsubscribe(self, planned: _Planned) -> None:
        header = planned.message.extra_headers["List-Unsubscribe"]
        url = next(u.strip("<> ") for u in header.split(",") if "://" in u)
        pk = tokens.read_token(tokens.UNSUBSCRIBE, _resolve(url)[1])
        enrollment = Enrollment.objects.select_related("lead", "sequence").get(pk=pk)
        followups.unsubscribe(enrollment=enrollment)

    def _reply(self, planned: _Planned, *, auto: bool = False) -> None:
        original = planned.message
        address = parseaddr(original.to[0])[1]
        reply = EmailMessage()
        reply["From"] = address
        reply["To"] = original.from_email
        reply["Subject"] = "Re: " + original.subject
        reply["Date"] = format_datetime(timezone.now())
        reply["Message-ID"] = make_msgid(domain=address.rpartition("@")[2])
        reply["In-Reply-To"] = original.extra_headers["Message-ID"]
        reply["References"] = original.extra_headers["Message-ID"]
        if auto:
            reply["Auto-Submitted"] = "auto-replied"
            reply.set_content("I am out of the office until next week, with limited access.\n")
        else:
            reply.set_content(f"{self.rng.choice(REPLIES)}\n\nOn an earlier date you wrote:\n")
        self._deliver(reply.as_bytes())

    def _auto_reply(self, planned: _Planned) -> None:
        self._reply(planned, auto=True)

    def _bounce(self, planned: _Planned) -> None:
        original = planned.message
        recipient = parseaddr(original.to[0])[1]
        domain = recipient.rpartition("@")[2]
        dsn = DSN.format(
            domain=domain,
            sender=original.from_email,
            recipient=recipient,
            message_id=original.extra_headers["Message-ID"],
            dsn_id=make_msgid(domain=f"mx.{domain}"),
            date=format_datetime(timezone.now()),
            subject=original.subject,
        )
        self._deliver(dsn.replace("\n", "\r\n").encode())

    def _deliver(self, raw: bytes) -> None:
        """What the inbox poll does with one message, minus IMAP (the demo inbox is fake)."""
        mail_message = MailMessage.from_bytes(raw)
        context = HandlerContext(
            source=self.inbox,
            config=InboxConfig.from_source(self.inbox),
            correlation_id=new_correlation_id(),
        )
        with (
            audit_context(actor="system", correlation_id=context.correlation_id),
            transaction.atomic(),
        ):
            parsed = parse_message(mail_message, uid=0)
            handled = dispatch(parsed, context)
            InboxMessage.objects.create(
                source=self.inbox,
                message_id=parsed.message_id,
                outcome=handled.outcome if handled else "skipped",
                lead=handled.lead if handled else None,
            )


DSN = """\
From: Mail Delivery System <MAILER-DAEMON@mx.{domain}>
To: {sender}
Subject: Undelivered Mail Returned to Sender
Message-ID: {dsn_id}
Date: {date}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"

--BOUNDARY
Content-Type: text/plain

The mail system could not deliver your message to {recipient}.

--BOUNDARY
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.{domain}

Final-Recipient: rfc822; {recipient}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown

--BOUNDARY
Content-Type: text/rfc822-headers

From: {sender}
To: {recipient}
Subject: {subject}
Message-ID: {message_id}

--BOUNDARY--
"""


def _html(message: EmailMultiAlternatives) -> str:
    return next((c for c, kind in message.alternatives if kind == "text/html"), "")


def _tracked(html: str) -> list[str]:
    """The URLs in the HTML that point back at this site (pixel, click redirects)."""
    own = followups.base_url() + "/"
    found = re.findall(r"""(?:src|href)="([^"]+)\"""", html)
    return [unescape(u) for u in found if unescape(u).startswith(own)]


def _resolve(url: str) -> tuple[str, str]:
    """(url name, token) of a tracking URL of leads.followups.urls."""
    path = url.removeprefix(followups.base_url())
    try:
        match = resolve(urlsplit(path).path, urlconf=followups.URLCONF)
    except Resolver404:
        return "", ""
    return match.url_name or "", match.kwargs.get("token", "")


# --- Setup -----------------------------------------------------------------------------


def ensure_sequence() -> Sequence:
    """The "welcome" sequence the example config's email_sequence step names: 3 emails."""
    sequence, created = Sequence.objects.get_or_create(
        slug=SEQUENCE,
        defaults={"name": "Welcome", "sender": "Sales team <sales@orchestrator.example>"},
    )
    if not created:
        return sequence
    signature = "\n\n{{ owner.username|default:'The sales team'|capfirst }}\n"
    unsubscribe = '<p><small><a href="{{ unsubscribe_url }}">Unsubscribe</a></small></p>'
    steps = [
        (
            timedelta(0),
            "Welcome, {{ lead.name|default:'there' }}",
            "Thanks for getting in touch{% if lead.company %} about {{ lead.company }}{% endif %}."
            " Our getting-started guide: https://docs.orchestrator.example/start",
            "<p>Thanks for getting in touch{% if lead.company %} about {{ lead.company }}"
            '{% endif %}.</p><p><a href="https://docs.orchestrator.example/start">'
            "Read the getting-started guide</a></p>",
        ),
        (
            timedelta(days=2),
            "How teams like {{ lead.company|default:'yours' }} use the orchestrator",
            "Three customers on how they cut their lead response time: "
            "https://orchestrator.example/customers",
            "<p>Three customers on how they cut their lead response time.</p><p><a href="
            '"https://orchestrator.example/customers">Read their stories</a> or <a href='
            '"https://orchestrator.example/pricing">see the pricing</a>.</p>',
        ),
        (
            timedelta(days=4),
            "Shall we talk, {{ lead.name|default:'there' }}?",
            "Book 20 minutes with us: https://orchestrator.example/meet",
            '<p>Book 20 minutes with us.</p><p><a href="https://orchestrator.example/meet">'
            "Pick a time</a></p>",
        ),
    ]
    for position, (delay, subject, text, html) in enumerate(steps, start=1):
        SequenceStep.objects.create(
            sequence=sequence,
            position=position,
            delay=delay,
            subject_template=subject,
            text_template=text + signature,
            html_template=f"<html><body>{html}{unsubscribe}</body></html>",
        )
    return sequence


def ensure_crm_connection(*, base_url: str) -> CrmConnection:
    """The "hubspot" connection the example config's crm_sync step names, on the fake CRM."""
    existing = CrmConnection.objects.filter(name=CRM_CONNECTION).first()
    if existing is not None and existing.credentials != {"token_env": CRM_TOKEN_ENV}:
        # Someone's real connection: pointing it at the fake CRM would break their setup.
        raise DemoError(
            f"a CRM connection named {CRM_CONNECTION!r} exists already; "
            "load the demo into an empty database"
        )
    connection, _created = CrmConnection.objects.update_or_create(
        name=CRM_CONNECTION,
        defaults={
            "kind": "hubspot",
            "base_url": base_url,
            # The model holds the NAME of the variable; the value is set in load_demo.
            "credentials": {"token_env": CRM_TOKEN_ENV},
            "options": CRM_OPTIONS,
            "active": True,
        },
    )
    connection.full_clean()
    return connection


def run_queued_tasks() -> None:
    """What `manage.py db_worker --batch` does: run every ready task, then return.

    Worker.run directly rather than call_command, which would install the
    worker's SIGINT/SIGTERM handlers and leave them behind (Ctrl+C would no
    longer stop `make demo`).
    """
    Worker(
        queue_names=["default"],
        interval=0,
        batch=True,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id="demo-worker",
        excluded_queue_names=[],
    ).run()


@contextlib.contextmanager
def _fast_sqlite() -> Iterator[None]:
    """On SQLite, skip the WAL's fsync per commit while loading: demo data is disposable.

    The backend syncs the WAL before each commit returns (core/db/sqlite3), and
    the load commits tens of thousands of times. Without it the load is still
    crash-safe for the application; only an OS crash or power loss mid-load
    could lose its last commits.
    """

    def set_durable(connection: Any, durable: bool) -> None:
        if hasattr(connection, "durable_commits"):
            connection.durable_commits = durable

    def relax(sender: Any, connection: Any, **kwargs: Any) -> None:
        set_durable(connection, False)

    connection_created.connect(relax)
    for connection in connections.all(initialized_only=True):
        relax(None, connection)
    try:
        yield
    finally:
        connection_created.disconnect(relax)
        for connection in connections.all(initialized_only=True):
            set_durable(connection, True)


@contextlib.contextmanager
def _loopback_without_proxy() -> Iterator[None]:
    """requests sends even 127.0.0.1 through HTTP(S)_PROXY unless no_proxy says not to."""
    saved = {name: os.environ.get(name) for name in ("no_proxy", "NO_PROXY")}
    current = saved["no_proxy"] or saved["NO_PROXY"] or ""
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = ",".join(
        filter(None, [current, "127.0.0.1", "localhost"])
    )
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _ExpectedTaskFailures(logging.Filter):
    """Drop the task logger's traceback for a CRM sync that failed: the demo makes those
    on purpose, and each is an error event on the dashboard already."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, CrmSyncFailed)


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    # The worker logs a start and a stop line per batch and two lines per task:
    # thousands of lines in `make demo` that say nothing the dashboard does not.
    saved = []
    expected = _ExpectedTaskFailures()
    # leads.crm.services warns once per failed sync; the error events say it all.
    levels = {"django_tasks_db": logging.WARNING, "django.tasks": logging.WARNING}
    levels["leads.crm.services"] = logging.ERROR
    for name, quiet in levels.items():
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(quiet)
        logger.addFilter(expected)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)
            logger.removeFilter(expected)


@contextlib.contextmanager
def _persistent_connections() -> Iterator[None]:
    """Keep database connections open across the worker's task boundaries.

    The worker calls close_old_connections() around each task, which with
    CONN_MAX_AGE=0 closes the connection, as a request's end would. In one
    process that only reopens the database (and, on SQLite, drops its page
    cache) hundreds of times.
    """
    saved = {}
    for connection in connections.all():
        saved[connection.alias] = connection.settings_dict["CONN_MAX_AGE"]
        connection.settings_dict["CONN_MAX_AGE"] = None
        connection.close_at = None
    try:
        yield
    finally:
        for connection in connections.all():
            max_age = saved.get(connection.alias, 0)
            connection.settings_dict["CONN_MAX_AGE"] = max_age
            connection.close_at = None if max_age is None else time.monotonic() + max_age


# --- The load ----------------------------------------------------------------------------


def _after(start: datetime, minutes: int, *, end: datetime) -> datetime:
    # The clock never runs past the real now: the last pass of today may be close to it.
    return min(start + timedelta(minutes=minutes), end)


def set_up_demo(*, crm_url: str) -> CrmConnection:
    """What the demo's traffic needs first: the teams' users, the CRM connection on
    `crm_url`, the "welcome" sequence and the example workflows."""
    User = get_user_model()
    config = demo_config()
    for team in config["teams"]:
        for member in team["members"]:
            User.objects.get_or_create(username=member["username"])
    hubspot = ensure_crm_connection(base_url=crm_url)
    ensure_sequence()
    apply_config(config)
    return hubspot


def demo_connection() -> CrmConnection:
    """The CRM connection load_demo made; DemoError if the data is not the demo's."""
    connection = CrmConnection.objects.filter(
        name=CRM_CONNECTION, credentials={"token_env": CRM_TOKEN_ENV}
    ).first()
    if connection is None or not Workflow.objects.filter(name=WORKFLOW).exists():
        raise DemoError("this database holds no demo data (run load_demo on an empty one)")
    return connection


def _demo_env() -> None:
    # Placeholders the demo's config and connection name: nothing real is reached.
    os.environ.setdefault("INBOX_DEMO_USER", "sales@example.com")
    os.environ.setdefault("INBOX_DEMO_PASSWORD", "not-a-real-password")
    os.environ.setdefault(CRM_TOKEN_ENV, "pat-demo-not-a-real-token")


@contextlib.contextmanager
def _loading(*, seed: int, contacts: dict[str, str]) -> Iterator[tuple[FakeHubSpot, str]]:
    mailers = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
    with (
        _fast_sqlite(),
        _persistent_connections(),
        _loopback_without_proxy(),
        _quiet_logs(),
        override_settings(MAILERS=mailers),
        fake_hubspot(token=os.environ[CRM_TOKEN_ENV], seed=seed, contacts=contacts) as fake,
    ):
        yield fake


@dataclass
class _Traffic:
    """Simulated days of traffic, from `first_day` (midnight) until `end`."""

    rng: random.Random
    crm: FakeHubSpot
    hubspot: CrmConnection
    recipients: Recipients
    per_day: int
    # Person numbers, so addresses of this run do not repeat an earlier run's.
    n: int = 0
    # Only arrivals and passes after this (a top-up starts where the data ends).
    after: datetime | None = None
    inbox_down: bool = False
    outage: tuple[datetime, datetime] | None = None

    def run(self, *, first_day: datetime, end: datetime) -> None:
        import time_machine  # a dev extra, see load_demo

        travel = time_machine.travel
        rng = self.rng
        workflow = Workflow.objects.get(name=WORKFLOW)
        website = LeadSource.objects.get(slug="website")
        trade_shows = LeadSource.objects.get(slug="trade-shows")
        inbox = self.recipients.inbox
        today = end.replace(hour=0, minute=0, second=0, microsecond=0)
        days = (today - first_day).days
        for day in range(days, -1, -1):
            midnight = today - timedelta(days=day)
            if self.inbox_down:
                inbox.active = (days - day) in INBOX_DOWN_DAYS
                inbox.save(update_fields=["active"])
            arrivals = sorted(
                midnight + timedelta(minutes=rng.randint(7 * 60, 21 * 60))
                for _ in range(rng.randint(self.per_day // 2, self.per_day))
            )
            if self.after is not None:
                arrivals = [a for a in arrivals if a > self.after]
            for hour in PASSES:
                run_at = midnight + timedelta(hours=hour, minutes=rng.randint(0, 5))
                if run_at > end:
                    break
                if self.after is not None and run_at <= self.after:
                    continue
                while arrivals and arrivals[0] < run_at:
                    with travel(arrivals.pop(0), tick=False):
                        with contextlib.suppress(LeadValidationError):
                            ingest_lead(source=website, payload=_person(rng, self.n))
                        self.n += 1
                if hour == 12 and day % 3 == 0:
                    path = _csv_batch(rng, self.n, rng.randint(8, 15))
                    with travel(run_at - timedelta(minutes=20), tick=False):
                        report = import_csv(path=path, source=trade_shows, mapping=None)
                    path.unlink()
                    self.n += report.rows
                self.recipients.act_until(run_at, travel)
                self.crm.outage = self.outage is not None and (
                    self.outage[0] <= run_at < self.outage[1]
                )
                with travel(run_at, tick=False):
                    run_pass(workflow=workflow)
                with travel(_after(run_at, TASKS_AT, end=end), tick=False):
                    run_queued_tasks()
                # What `sync_crm` and `send_followups` run, as services: the commands
                # would install SIGINT/SIGTERM handlers (ScheduledCommand) and keep them.
                with travel(_after(run_at, SYNC_AT, end=end), tick=False):
                    crm_sync_due(connection=self.hubspot)
                with (
                    travel(_after(run_at, SEND_AT, end=end), tick=False),
                    audit_context(actor="system"),
                ):
                    followups.send_due()
                    self.recipients.read_new_mail(now=timezone.now())
        self.recipients.act_until(end, travel)
        inbox.active = False
        inbox.save(update_fields=["active"])
        # The fake CRM stops when loading ends. The connection is left in place
        # (records and calls point at it) but inactive, so nothing a later
        # sync_crm / worker does calls a port that is now closed, or worse, taken
        # by some other local service; serve_demo makes it active on its own fake.
        self.hubspot.active = False
        self.hubspot.save(update_fields=["active"])


def load_demo(*, days: int = 21, per_day: int = 24, seed: int = 7) -> int:
    """Run `days` of simulated traffic through the pipeline; returns the number of leads."""
    import time_machine  # a dev extra: imported at the top, it would break load_demo's import

    _demo_env()
    end = timezone.now()
    today = end.replace(hour=0, minute=0, second=0, microsecond=0)
    # The CRM is down from mid-morning on this day until the next afternoon: syncs
    # fail, sync_crm retries them every pass, the first ones give up (needs
    # attention), the later ones go through when it is back.
    first_day = today - timedelta(days=days)
    outage_start = first_day + timedelta(days=max(1, days * 3 // 7), hours=10)
    with _loading(seed=seed, contacts={}) as (crm, crm_url):
        # The steps' targets exist before the config names them (created "a month ago").
        with time_machine.travel(first_day - timedelta(days=1), tick=False):
            hubspot = set_up_demo(crm_url=crm_url)
        inbox = LeadSource.objects.get(slug="sales-inbox")
        _Traffic(
            rng=random.Random(seed),
            crm=crm,
            hubspot=hubspot,
            recipients=Recipients(rng=random.Random(seed + 1), inbox=inbox),
            per_day=per_day,
            inbox_down=True,
            outage=(outage_start, outage_start + timedelta(hours=28)),
        ).run(first_day=first_day, end=end)
    seal_all()
    return Lead.objects.count()


@dataclass(frozen=True)
class TopUp:
    since: datetime  # the newest audit event before the top-up
    leads: int  # leads it added


def top_up_demo(*, per_day: int = 24, seed: int = 7) -> TopUp:
    """Run the demo's traffic from where its data ends until now, through the pipeline.

    Demo data loaded days ago leaves the dashboard's default periods (24 hours,
    7 days) empty. Topping up rather than rebuilding keeps the audit chain, its
    seals, the JSON Lines mirror and the anchor log one continuous history, so
    verify_audit still passes. It starts after the newest audit event (a lead
    posted while serve_demo ran included), so no event is older than one before it.
    """
    _demo_env()
    hubspot = demo_connection()
    since = AuditEvent.objects.aggregate(newest=Max("timestamp"))["newest"]
    end = timezone.now()
    if since is None or since >= end:
        return TopUp(since=since or end, leads=0)
    before = Lead.objects.count()
    first_day = since.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    minute = int(since.timestamp()) // 60
    with _loading(seed=seed, contacts=known_contacts(hubspot)) as (crm, crm_url):
        hubspot.base_url = crm_url
        hubspot.active = True
        hubspot.save(update_fields=["base_url", "active"])
        inbox = LeadSource.objects.get(slug="sales-inbox")
        _Traffic(
            rng=random.Random(seed + minute),
            crm=crm,
            hubspot=hubspot,
            recipients=Recipients(rng=random.Random(seed + minute + 1), inbox=inbox),
            per_day=per_day,
            # Minutes since the epoch: each top-up adds far fewer leads than minutes
            # it covers, so the numbers in the addresses never meet an earlier run's.
            n=minute,
            after=since,
        ).run(first_day=first_day, end=end)
    seal_all()
    return TopUp(since=since, leads=Lead.objects.count() - before)


# --- Serving -----------------------------------------------------------------------------


@contextlib.contextmanager
def demo_crm_online(*, seed: int = 7) -> Iterator[str]:
    """The demo's fake HubSpot on a loopback port, and its connection active on it.

    For as long as the demo serves: the worker, sync_crm and the lead page's
    "Retry CRM sync" reach it. Inactive again afterwards, as load_demo leaves it.
    Yields the fake's base URL.
    """
    _demo_env()
    connection = demo_connection()
    with (
        _loopback_without_proxy(),
        fake_hubspot(
            token=os.environ[CRM_TOKEN_ENV], seed=seed, contacts=known_contacts(connection)
        ) as (_fake, url),
    ):
        CrmConnection.objects.filter(pk=connection.pk).update(base_url=url, active=True)
        try:
            yield url
        finally:
            CrmConnection.objects.filter(pk=connection.pk).update(active=False)
