"""The poll: read a source's new mail over IMAP and hand each message to the handlers."""

import contextlib
import imaplib
import ssl
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone
from imap_tools import MailBoxUnencrypted, MailMessage
from imap_tools.errors import ImapToolsError, MailboxLoginError
from imap_tools.mailbox import BaseMailBox

from audit.services import audit_context, new_correlation_id, record_event
from leads.intake.inbox.config import (
    InboxConfig,
    InboxConnectionError,
    InboxError,
    credentials,
    mailbox_class,
)
from leads.intake.inbox.handlers import (
    DUPLICATE,
    ERROR,
    LEAD,
    SKIPPED,
    HandlerContext,
    dispatch,
)
from leads.intake.inbox.parsing import MalformedMessage, message_id_of, parse_message
from leads.models import InboxMessage, LeadSource
from leads.services import LeadValidationError

# A bad message is recorded and moved aside; anything else stops the poll, so a
# bug or an outage never sends good mail to the failed folder.
MESSAGE_ERRORS = (MalformedMessage, LeadValidationError)


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
