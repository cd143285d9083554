"""From an IMAP message to what the handlers read, and from that to a lead payload."""

import hashlib
import html
import re
from dataclasses import dataclass
from email.errors import MessageError
from email.message import Message
from typing import Any

from django.utils.html import strip_tags
from imap_tools import MailMessage

from leads.intake.inbox.config import InboxConfig
from leads.models import LEAD_FIELDS, LeadSource

# "Key: value" names that mean a lead field without any configuration.
DEFAULT_ALIASES = {name: name for name in LEAD_FIELDS} | {"e-mail": "email"}
MAX_MESSAGE_ID = 998  # InboxMessage.message_id, and RFC 5322's line limit


class MalformedMessage(ValueError):
    """A message that cannot become anything; it is recorded as an error and moved aside."""


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
