"""Leads from an email inbox over IMAP.

`poll_source` reads the messages that arrived in a source's folder since the
last poll (a UID watermark, reset when the folder's UIDVALIDITY changes) and
gives each one to the message handlers in order; the first that returns a
result consumes it. Each message is handled in its own transaction (its
InboxMessage row, whatever the handler wrote and the audit events commit
together) and moved out of the folder only after that commit, so a crash in
between means the message is read again and skipped by its Message-ID.

Handlers are a small registry (`HANDLERS`): reply and bounce detection go
before the lead parser, which is last and takes whatever is left.

The source's settings live in LeadSource.options["inbox"]:

    {"host": "imap.example.com", "port": 993, "security": "ssl",
     "username_env": "LEADS_IMAP_USER", "password_env": "LEADS_IMAP_PASSWORD",
     "folder": "INBOX", "processed_folder": "Processed", "failed_folder": "Failed",
     "timeout": 30, "parse": {"key_value": true, "field_aliases": {"Firma": "company"}}}

Credentials are never stored: the options name environment variables.
"""

import contextlib
import hashlib
import html
import imaplib
import os
import re
import ssl
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.errors import MessageError
from email.message import Message
from functools import cache
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.html import strip_tags
from django.utils.module_loading import import_string
from imap_tools import MailBox, MailBoxStartTls, MailBoxUnencrypted, MailMessage
from imap_tools.errors import ImapToolsError, MailboxLoginError
from imap_tools.mailbox import BaseMailBox

from audit.services import audit_context, new_correlation_id, record_event
from leads.models import LEAD_FIELDS, InboxMessage, Lead, LeadSource
from leads.services import LeadValidationError, ingest_lead

MAILBOX_CLASSES: dict[str, type[BaseMailBox]] = {
    "ssl": MailBox,
    "starttls": MailBoxStartTls,
    "plain": MailBoxUnencrypted,
}
DEFAULT_PORTS = {"ssl": 993, "starttls": 143, "plain": 143}
OPTION_KEYS = {
    "host",
    "port",
    "security",
    "username_env",
    "password_env",
    "folder",
    "processed_folder",
    "failed_folder",
    "timeout",
    "parse",
}
# "Key: value" names that mean a lead field without any configuration.
DEFAULT_ALIASES = {name: name for name in LEAD_FIELDS} | {"e-mail": "email"}
MAX_MESSAGE_ID = 998  # InboxMessage.message_id, and RFC 5322's line limit

# Outcomes stored on InboxMessage (handlers may add their own, e.g. reply, bounce).
LEAD = "lead"
DUPLICATE = "duplicate"
ERROR = "error"
SKIPPED = "skipped"


class InboxError(Exception):
    """A poll could not run (or went on no further); the messages it did handle are kept."""


class InboxConfigError(InboxError):
    """The source's inbox options are incomplete or wrong, or a credential is not set."""


class InboxConnectionError(InboxError):
    """The IMAP server could not be reached, refused the login, or failed a command."""


class MalformedMessage(ValueError):
    """A message that cannot become anything; it is recorded as an error and moved aside."""


# A bad message is recorded and moved aside; anything else stops the poll, so a
# bug or an outage never sends good mail to the failed folder.
MESSAGE_ERRORS = (MalformedMessage, LeadValidationError)


# --- Settings --------------------------------------------------------------------------


@dataclass(frozen=True)
class InboxConfig:
    host: str
    port: int
    security: str
    username_env: str
    password_env: str
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    failed_folder: str = ""
    timeout: float = 30.0
    key_value: bool = True
    field_aliases: Mapping[str, str] = field(default_factory=dict)

    @property
    def error_folder(self) -> str:
        return self.failed_folder or self.processed_folder

    @classmethod
    def from_source(cls, source: LeadSource) -> "InboxConfig":
        where = f"source {source.slug}: options.inbox"
        raw = (source.options or {}).get("inbox")
        if not isinstance(raw, dict):
            raise InboxConfigError(
                f"{where} is missing; it needs host, security, username_env and password_env"
            )
        unknown = sorted(set(raw) - OPTION_KEYS)
        if unknown:
            raise InboxConfigError(
                f"{where} has unknown keys {', '.join(unknown)} "
                f"(known: {', '.join(sorted(OPTION_KEYS))})"
            )

        def text(key: str, default: str | None = None) -> str:
            value = raw.get(key, default)
            if not isinstance(value, str) or (default is None and not value.strip()):
                raise InboxConfigError(f"{where}.{key} must be a non-empty string")
            return value.strip()

        security = text("security", "ssl").lower()
        if security not in MAILBOX_CLASSES:
            raise InboxConfigError(
                f"{where}.security is {security!r}; use one of {', '.join(MAILBOX_CLASSES)}"
            )
        port = raw.get("port", DEFAULT_PORTS[security])
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise InboxConfigError(f"{where}.port must be a port number, not {port!r}")
        if security == "starttls" and port == 993:
            raise InboxConfigError(f"{where}: port 993 speaks TLS from the start; use security ssl")
        timeout = raw.get("timeout", 30)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise InboxConfigError(f"{where}.timeout must be a positive number of seconds")
        parse = raw.get("parse", {})
        if not isinstance(parse, dict):
            raise InboxConfigError(f"{where}.parse must be an object")
        aliases = parse.get("field_aliases", {})
        if not isinstance(aliases, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
        ):
            raise InboxConfigError(f"{where}.parse.field_aliases must map names to names")
        key_value = parse.get("key_value", True)
        if not isinstance(key_value, bool):
            raise InboxConfigError(f"{where}.parse.key_value must be true or false")
        folder = text("folder", "INBOX") or "INBOX"
        processed = text("processed_folder", "Processed") or "Processed"
        failed = text("failed_folder", "")
        # A message moved back into the folder read would be read again forever.
        for key, value in (("processed_folder", processed), ("failed_folder", failed)):
            if value == folder:
                raise InboxConfigError(f"{where}.{key} must differ from folder ({folder})")
        return cls(
            host=text("host"),
            port=port,
            security=security,
            username_env=text("username_env"),
            password_env=text("password_env"),
            folder=folder,
            processed_folder=processed,
            failed_folder=failed,
            timeout=float(timeout),
            key_value=key_value,
            field_aliases=aliases,
        )


def credentials(config: InboxConfig, *, source: LeadSource) -> tuple[str, str]:
    values = []
    for setting in ("username_env", "password_env"):
        name = getattr(config, setting)
        value = os.environ.get(name, "")
        if not value:
            raise InboxConfigError(
                f"environment variable {name} is not set "
                f"(source {source.slug}: options.inbox.{setting})"
            )
        values.append(value)
    return values[0], values[1]


def mailbox_class(security: str) -> type[BaseMailBox]:
    """The imap-tools class for a security setting: ssl, starttls or plain."""
    try:
        return MAILBOX_CLASSES[security]
    except KeyError:
        raise InboxConfigError(
            f"unknown IMAP security {security!r}; use one of {', '.join(MAILBOX_CLASSES)}"
        ) from None


# --- Parsing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedMessage:
    uid: int
    message_id: str
    synthetic_id: bool
    sender_email: str  # "" when From has no address
    sender_name: str
    subject: str
    text: str  # the text/plain part, or the HTML part stripped of its tags
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    mail: MailMessage  # headers, parts and attachments, for handlers that need more


ANGLE_ID_RE = re.compile(r"<[^<>\s]+>")
KEY_VALUE_RE = re.compile(r"^\s*(?P<key>[^\W\d_][\w .&'/()-]{0,63}?)\s*:\s*(?P<value>\S.*?)\s*$")
SIGNATURE_RE = re.compile(r"^(-- ?|_{5,}|-{5,}\s*Original Message\s*-{5,}|On .+ wrote:)$")


def _raw_body(msg: Message) -> str:
    # The body as transmitted, without decoding it: copies of one message
    # hash the same, and a body that cannot be decoded still hashes.
    payload = msg.get_payload()
    if isinstance(payload, list):
        return "\n".join(_raw_body(part) for part in payload)
    return str(payload or "")


def message_id_of(mail: MailMessage) -> tuple[str, bool]:
    """The message's Message-ID, or a synthetic one; and whether it is synthetic."""
    raw = " ".join(str(value) for value in mail.obj.get_all("Message-ID", []))
    match = ANGLE_ID_RE.search(raw)
    message_id = match[0] if match else raw.strip()
    if message_id:
        if len(message_id) > MAX_MESSAGE_ID:
            digest = hashlib.sha256(message_id.encode(errors="surrogateescape")).hexdigest()
            message_id = f"<{digest}@long-id.invalid>"
        return message_id, False
    parts = [str(mail.obj.get(name, "")) for name in ("From", "Date", "Subject")]
    parts.append(_raw_body(mail.obj))
    digest = hashlib.sha256("\x00".join(parts).encode(errors="surrogateescape")).hexdigest()
    return f"<{digest}@synthetic.invalid>", True


def html_to_text(markup: str) -> str:
    markup = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", "", markup)
    markup = re.sub(r"(?i)<br\s*/?>|</(p|div|tr|li|h[1-6]|table)\s*>", "\n", markup)
    markup = re.sub(r"(?i)</t[dh]\s*>", " ", markup)
    return html.unescape(strip_tags(markup))


def _ids(mail: MailMessage, header: str) -> tuple[str, ...]:
    raw = " ".join(str(value) for value in mail.obj.get_all(header, []))
    return tuple(ANGLE_ID_RE.findall(raw))


def parse_message(mail: MailMessage, *, uid: int) -> ParsedMessage:
    """Decode what the handlers need. Raises MalformedMessage if the message cannot be read."""
    message_id, synthetic = message_id_of(mail)
    try:
        sender = mail.from_values
        text = mail.text or html_to_text(mail.html)
        subject = mail.subject.strip()
    except (ValueError, LookupError, TypeError, AttributeError, IndexError, MessageError) as exc:
        raise MalformedMessage(f"cannot decode the message: {exc}") from exc
    return ParsedMessage(
        uid=uid,
        message_id=message_id,
        synthetic_id=synthetic,
        sender_email=sender.email.strip() if sender else "",
        sender_name=sender.name.strip() if sender else "",
        subject=subject[:MAX_MESSAGE_ID],
        text=text,
        in_reply_to=_ids(mail, "In-Reply-To"),
        references=_ids(mail, "References"),
        mail=mail,
    )


def key_values(text: str) -> list[tuple[str, str]]:
    """The `Key: value` lines of a body, in order, up to a signature or quoted reply."""
    pairs = []
    for line in text.splitlines():
        stripped = line.strip()
        if SIGNATURE_RE.match(stripped):
            break
        if stripped.startswith(">"):
            continue
        match = KEY_VALUE_RE.match(line)
        if match and not match["value"].startswith("//"):  # "https://..." is no field
            pairs.append((match["key"], match["value"]))
    return pairs


def lead_payload(
    message: ParsedMessage, *, source: LeadSource, config: InboxConfig
) -> dict[str, Any]:
    """The payload ingest_lead gets: the sender, the `Key: value` lines, the subject.

    Line names go through parse.field_aliases, then the lead field names
    themselves; others keep their spelling (matched case-insensitively to a
    key of the source's field_mapping, which clean_payload then applies) and
    land in Lead.extra.
    """
    mapping = source.field_mapping or {}
    lookup = {k.casefold(): v for k, v in DEFAULT_ALIASES.items()}
    lookup |= {k.casefold(): k for k in mapping}
    lookup |= {k.casefold(): v for k, v in config.field_aliases.items()}
    lines: dict[str, str] = {}
    if config.key_value:
        for key, value in key_values(message.text):
            name = lookup.get(key.casefold(), key)
            lines.setdefault(name, value)  # the first wins; later ones may be quoted text
    payload: dict[str, Any] = {}
    # A form's notification comes from the form's own address with the lead in
    # the body: an Email line replaces the sender, name included.
    if not any(mapping.get(name, name) == "email" for name in lines):
        if message.sender_email:
            payload["email"] = message.sender_email
        if message.sender_name:
            payload["name"] = message.sender_name
    payload.update(lines)
    if message.subject:
        payload.setdefault("subject", message.subject)
    return payload


# --- Handlers --------------------------------------------------------------------------


@dataclass(frozen=True)
class HandlerContext:
    source: LeadSource
    config: InboxConfig
    correlation_id: str


@dataclass(frozen=True)
class Handled:
    """What a handler did with a message it consumed."""

    outcome: str  # stored on InboxMessage: lead, duplicate, reply, bounce, ...
    lead: Lead | None = None


Handler = Callable[[ParsedMessage, HandlerContext], Handled | None]


def handle_lead(message: ParsedMessage, context: HandlerContext) -> Handled:
    """The last handler: every message left is a lead, or an error."""
    payload = lead_payload(message, source=context.source, config=context.config)
    mapping = context.source.field_mapping or {}
    if not any(mapping.get(key, key) == "email" for key in payload):
        raise MalformedMessage("no sender: From has no address and the body no Email line")
    result = ingest_lead(source=context.source, payload=payload, actor="system")
    return Handled(outcome=LEAD if result.created else DUPLICATE, lead=result.lead)


LEAD_HANDLER = "leads.intake.inbox.handle_lead"
# Dotted paths, tried in order; a handler returns Handled when it consumed the
# message and None to pass it on. The lead parser stays last.
HANDLERS: list[str] = [LEAD_HANDLER]


def register_handler(path: str, *, before: str = LEAD_HANDLER) -> None:
    """Add a handler ahead of another one (by default, ahead of the lead parser)."""
    if path not in HANDLERS:
        HANDLERS.insert(HANDLERS.index(before), path)


@cache
def _load_handler(path: str) -> Handler:
    return import_string(path)


def dispatch(message: ParsedMessage, context: HandlerContext) -> Handled | None:
    for path in HANDLERS:
        handled = _load_handler(path)(message, context)
        if handled is not None:
            return handled
    return None


# --- The poll --------------------------------------------------------------------------


@dataclass
class PollSummary:
    """What one poll of one source did.

    seen: messages read; created: new leads; merged: leads that were already
    there (ingest_lead's dedupe filled them in); duplicates: messages whose
    Message-ID was handled before (moved, nothing else); errors: bad
    messages; skipped: messages a handler took that made no lead (replies,
    bounces) or that no handler took. `outcomes` counts InboxMessage outcomes.
    """

    source: str
    correlation_id: str = ""
    seen: int = 0
    created: int = 0
    merged: int = 0
    duplicates: int = 0
    errors: int = 0
    skipped: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    def __str__(self) -> str:
        return (
            f"{self.source}: {self.seen} seen, {self.created} created, {self.merged} merged, "
            f"{self.duplicates} duplicates, {self.errors} errors, {self.skipped} skipped"
        )

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] += 1
        if outcome == LEAD:
            self.created += 1
        elif outcome == DUPLICATE:
            self.merged += 1
        elif outcome == ERROR:
            self.errors += 1
        else:
            self.skipped += 1


IMAP_ERRORS = (OSError, imaplib.IMAP4.error, ImapToolsError)


@contextlib.contextmanager
def _imap(config: InboxConfig, doing: str) -> Iterator[None]:
    """Turn what imaplib and imap-tools raise into an InboxConnectionError that says what failed."""
    try:
        yield
    except IMAP_ERRORS as exc:
        raise InboxConnectionError(
            f"{doing} on {config.host}:{config.port} ({config.security}) failed: {exc}"
        ) from exc


@contextlib.contextmanager
def connect(config: InboxConfig, *, username: str, password: str) -> Iterator[BaseMailBox]:
    """A logged-in mailbox, logged out at the end of the block."""
    cls = mailbox_class(config.security)
    with _imap(config, "connecting"):
        if cls is MailBoxUnencrypted:
            mailbox = cls(config.host, config.port, timeout=config.timeout)
        else:
            mailbox = cls(
                config.host,
                config.port,
                timeout=config.timeout,
                ssl_context=ssl.create_default_context(),
            )
    try:
        with _imap(config, f"logging in as {username}"):
            try:
                mailbox.login(username, password, initial_folder=None)
            except MailboxLoginError as exc:
                raise InboxConnectionError(
                    f"login as {username} on {config.host}:{config.port} refused "
                    f"(check {config.username_env} and {config.password_env}): "
                    f"{exc.command_result[1]}"
                ) from exc
            # imaplib reads CAPABILITY before login, when servers hide MOVE;
            # without it imap-tools moves by COPY, \Deleted and EXPUNGE, and
            # that EXPUNGE takes every \Deleted message in the folder with it.
            _typ, data = mailbox.client.capability()
            mailbox.client.capabilities = tuple(data[-1].decode().upper().split())
        yield mailbox
    finally:
        with contextlib.suppress(*IMAP_ERRORS):
            mailbox.logout()


def poll_source(*, source: LeadSource) -> PollSummary:
    """Read one source's new mail. Raises InboxError (after recording an error event)."""
    if transaction.get_connection().in_atomic_block:
        # The move to the processed folder must follow a real commit.
        raise RuntimeError("poll_source commits message by message; call it outside a transaction")
    with audit_context(actor="system", correlation_id=new_correlation_id()) as cid:
        summary = PollSummary(source=source.slug, correlation_id=cid)
        config: InboxConfig | None = None
        try:
            config = InboxConfig.from_source(source)
            username, password = credentials(config, source=source)
            with connect(config, username=username, password=password) as mailbox:
                _poll(mailbox, source=source, config=config, summary=summary, correlation_id=cid)
            _note_poll(source, ok=True)
        except InboxError as exc:
            _note_poll(source, ok=False)
            record_event(
                event_type="error",
                exc=exc,
                details={
                    "source": source.slug,
                    "host": config.host if config else "",
                    "port": config.port if config else None,
                    "reason": str(exc),
                    "seen": summary.seen,
                },
            )
            raise
    return summary


def _note_poll(source: LeadSource, *, ok: bool) -> None:
    """When the source was last polled, and whether that poll worked.

    A failed poll is also an error event; a good one leaves no event, so this
    is how alerts know that an inbox has recovered. One poll of a source runs
    at a time (poll_inbox's lock), so the state is not written concurrently.
    """
    key = "last_poll_ok_at" if ok else "last_poll_failed_at"
    source.refresh_from_db(fields=["state"])
    source.state = {**(source.state or {}), key: timezone.now().isoformat()}
    LeadSource.objects.filter(pk=source.pk).update(state=source.state)


def _poll(
    mailbox: BaseMailBox,
    *,
    source: LeadSource,
    config: InboxConfig,
    summary: PollSummary,
    correlation_id: str,
) -> None:
    with _imap(config, "creating folders"):
        for folder in {config.processed_folder, config.error_folder}:
            if not mailbox.folder.exists(folder):
                mailbox.folder.create(folder)
    with _imap(config, f"opening {config.folder}"):
        uidvalidity = mailbox.folder.status(config.folder, ["UIDVALIDITY"])["UIDVALIDITY"]
        mailbox.folder.set(config.folder)
    state = source.state or {}
    last_uid = state.get("last_uid", 0) if state.get("uidvalidity") == uidvalidity else 0
    if state.get("uidvalidity") != uidvalidity:
        # The folder was recreated: its old UIDs mean nothing now. Message-IDs
        # still keep what was handled from being handled again.
        _save_watermark(source, uidvalidity=uidvalidity, last_uid=0)
    with _imap(config, f"searching {config.folder}"):
        # "UID n:*" always matches the newest message, even one below n.
        uids = sorted(u for u in map(int, mailbox.uids(f"UID {last_uid + 1}:*")) if u > last_uid)
    context = HandlerContext(source=source, config=config, correlation_id=correlation_id)
    for uid in uids:
        with _imap(config, f"fetching UID {uid} from {config.folder}"):
            mail = next(mailbox.fetch(uid_list=[str(uid)], mark_seen=False), None)
        if mail is not None:  # else another client took it meanwhile
            summary.seen += 1
            destination = _handle(mail, uid=uid, context=context, summary=summary)
            with _imap(config, f"moving UID {uid} to {destination}"):
                mailbox.move(str(uid), destination)
        _save_watermark(source, uidvalidity=uidvalidity, last_uid=uid)


def _handle(mail: MailMessage, *, uid: int, context: HandlerContext, summary: PollSummary) -> str:
    """Handle one message in its own transaction; return the folder it goes to."""
    source, config = context.source, context.config
    message_id, _synthetic = message_id_of(mail)
    with transaction.atomic():
        # Serializes polls of this source, so the Message-ID check below holds
        # until this message's row commits.
        LeadSource.objects.select_for_update().filter(pk=source.pk).first()
        before = InboxMessage.objects.filter(source=source, message_id=message_id).first()
        if before is not None:
            summary.duplicates += 1
            return config.error_folder if before.outcome == ERROR else config.processed_folder
        try:
            with transaction.atomic():
                handled = dispatch(parse_message(mail, uid=uid), context)
                outcome = handled.outcome if handled else SKIPPED
                InboxMessage.objects.create(
                    source=source,
                    message_id=message_id,
                    uid=uid,
                    outcome=outcome,
                    lead=handled.lead if handled else None,
                )
        except MESSAGE_ERRORS as exc:
            record_event(
                event_type="error",
                exc=exc,
                details={
                    "source": source.slug,
                    "message_id": message_id,
                    "uid": uid,
                    "reason": str(exc),
                },
            )
            InboxMessage.objects.create(
                source=source, message_id=message_id, uid=uid, outcome=ERROR
            )
            summary.count(ERROR)
            return config.error_folder
    summary.count(outcome)
    return config.processed_folder


def _save_watermark(source: LeadSource, *, uidvalidity: int, last_uid: int) -> None:
    source.state = {**(source.state or {}), "uidvalidity": uidvalidity, "last_uid": last_uid}
    LeadSource.objects.filter(pk=source.pk).update(state=source.state)


def poll_sources(sources: list[LeadSource]) -> tuple[list[PollSummary], dict[str, InboxError]]:
    """Poll each source in turn; one failing does not stop the others."""
    summaries: list[PollSummary] = []
    failures: dict[str, InboxError] = {}
    for source in sources:
        try:
            summaries.append(poll_source(source=source))
        except InboxError as exc:
            failures[source.slug] = exc
    return summaries, failures


def inbox_sources() -> list[LeadSource]:
    return list(
        LeadSource.objects.filter(kind=LeadSource.Kind.EMAIL_INBOX, active=True).order_by("slug")
    )
