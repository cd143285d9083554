"""Inbox handlers that stop sequences; they run before the lead parser (see apps.py).

- handle_bounce: a delivery status notification (RFC 3464) or a mailer-daemon
  message about one of our emails. Every bounce is consumed, ours or not: a
  bounce must never become a lead.
- handle_reply: a message whose In-Reply-To / References names an email we sent.
- handle_unsubscribe_mail: the mailto: target of List-Unsubscribe.
"""

import logging
import re
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr

from django.db import transaction

from audit.services import record_event
from leads.followups import services, tokens
from leads.followups.models import Enrollment, OutboundEmail
from leads.intake.inbox import ANGLE_ID_RE, Handled, HandlerContext, ParsedMessage

log = logging.getLogger(__name__)

REPLY = "reply"
AUTO_REPLY = "auto_reply"
BOUNCE = "bounce"
UNSUBSCRIBE = "unsubscribe"

DAEMON_RE = re.compile(r"^(mailer-daemon|postmaster)$", re.IGNORECASE)
UNSUBSCRIBE_RE = re.compile(r"^\s*unsubscribe\s+(\S+)\s*$", re.IGNORECASE)
MAX_IDS = 50


def _details(
    email: OutboundEmail, message: ParsedMessage, context: HandlerContext
) -> dict[str, object]:
    return {
        "recipient": email.recipient,
        "message_id": email.message_id,
        "sequence_step": email.step.position,
        "sequence": email.enrollment.sequence.slug,
        "inbox_message_id": message.message_id,
        "inbox_source": context.source.slug,
    }


def _our_emails(ids) -> list[OutboundEmail]:
    ids = list(dict.fromkeys(ids))[:MAX_IDS]
    if not ids:
        return []
    return list(
        OutboundEmail.objects.select_related(
            "step", "enrollment__lead__workflow", "enrollment__sequence"
        )
        .filter(message_id__in=ids, status=OutboundEmail.Status.SENT)
        .order_by("-sent_at")
    )


def _is_auto_reply(msg: Message) -> bool:
    auto = str(msg.get("Auto-Submitted", "no")).strip().lower()
    precedence = str(msg.get("Precedence", "")).strip().lower()
    return (
        auto not in ("", "no")
        or precedence in ("auto_reply", "bulk", "junk")
        or msg.get("X-Autoreply") is not None
        or msg.get("X-Autorespond") is not None
    )


def handle_reply(message: ParsedMessage, context: HandlerContext) -> Handled | None:
    ids = [*message.in_reply_to, *reversed(message.references)]
    emails = _our_emails(ids)
    if not emails:
        return None
    email = emails[0]
    enrollment = email.enrollment
    lead = enrollment.lead
    if _is_auto_reply(message.mail.obj):
        # An out-of-office is not an answer; the sequence goes on.
        return Handled(outcome=AUTO_REPLY, lead=lead)
    details = _details(email, message, context)
    with transaction.atomic():
        record_event(
            event_type="email_replied",
            lead=lead,
            workflow=lead.workflow_name,
            details=details | {"from": message.sender_email, "subject": message.subject},
        )
        services.cancel(
            enrollment=enrollment,
            reason=services.REPLIED,
            details={"message_id": email.message_id, "inbox_message_id": message.message_id},
        )
    return Handled(outcome=REPLY, lead=lead)


# --- Bounces ----------------------------------------------------------------------------


def is_bounce(msg: Message) -> bool:
    if msg.get_content_type() == "multipart/report":
        return msg.get_param("report-type", "").lower() == "delivery-status"
    local = parseaddr(str(msg.get("From", "")))[1].partition("@")[0]
    return bool(DAEMON_RE.match(local))


def _address(value: str) -> str:
    # "rfc822; someone@example.com"
    kind, _sep, address = value.partition(";")
    return (address if _sep else kind).strip().strip("<>").lower()


def dsn_recipients(msg: Message) -> list[tuple[str, str, str]]:
    """(final recipient, action, status) for each recipient a delivery-status part names."""
    found = []
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):
            continue
        for block in blocks[1:]:  # the first block is about the message, the rest per recipient
            recipient = block.get("Final-Recipient") or block.get("Original-Recipient")
            if recipient:
                found.append(
                    (
                        _address(str(recipient)),
                        str(block.get("Action", "")).strip().lower(),
                        str(block.get("Status", "")).strip(),
                    )
                )
    return found


def original_message_ids(msg: Message) -> list[str]:
    """Message-IDs of the returned message (message/rfc822 or text/rfc822-headers part)."""
    ids: list[str] = []
    for part in msg.walk():
        kind = part.get_content_type()
        headers: Message | None = None
        if kind in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            headers = payload[0] if isinstance(payload, list) and payload else None
        elif kind in ("text/rfc822-headers", "message/global-headers"):
            raw = part.get_payload(decode=True) or b""
            headers = BytesHeaderParser().parsebytes(raw)
        if headers is not None and headers.get("Message-ID"):
            ids.extend(ANGLE_ID_RE.findall(str(headers["Message-ID"])))
    return ids


def handle_bounce(message: ParsedMessage, context: HandlerContext) -> Handled | None:
    msg = message.mail.obj
    if not is_bounce(msg):
        return None
    recipients = dsn_recipients(msg)
    failed = [r for r in recipients if r[1] == "failed" or r[2].startswith("5")]
    if recipients and not failed:
        return Handled(outcome=BOUNCE)  # delayed / relayed / delivered: nothing to stop
    emails = _our_emails(original_message_ids(msg))
    if not emails:
        if not recipients:
            # A mailer-daemon text without a report: look for our Message-IDs anywhere.
            emails = _our_emails(ANGLE_ID_RE.findall(message.text))
        else:
            addresses = {r[0] for r in failed}
            latest = (
                OutboundEmail.objects.filter(status=OutboundEmail.Status.SENT)
                .filter(recipient__in=[a for a in addresses if a])
                .order_by("-sent_at")
                .values_list("message_id", flat=True)
            )
            emails = _our_emails(list(latest[:MAX_IDS]))
    if not emails:
        log.info("bounce %s names none of our emails", message.message_id)
        return Handled(outcome=BOUNCE)
    email = emails[0]
    lead = email.enrollment.lead
    status = next((r[2] for r in failed if r[0] == email.recipient.lower()), "")
    with transaction.atomic():
        record_event(
            event_type="email_bounced",
            lead=lead,
            workflow=lead.workflow_name,
            details=_details(email, message, context) | {"status": status},
        )
        # Every active sequence to this address stops, not only the one that bounced.
        for enrollment in Enrollment.objects.filter(
            lead__email__iexact=email.recipient, status=Enrollment.Status.ACTIVE
        ).order_by("pk"):
            services.cancel(
                enrollment=enrollment,
                reason=services.BOUNCED,
                details={"message_id": email.message_id, "status": status},
            )
        if email.enrollment.status != Enrollment.Status.ACTIVE and not (
            Enrollment.objects.filter(
                lead__email__iexact=email.recipient, cancel_reason__in=services.SUPPRESSING_REASONS
            ).exists()
        ):
            # Finished already: mark the address so it is not enrolled again.
            Enrollment.objects.filter(pk=email.enrollment_id).update(cancel_reason=services.BOUNCED)
    return Handled(outcome=BOUNCE, lead=lead)


# --- mailto: unsubscribe ----------------------------------------------------------------


def handle_unsubscribe_mail(message: ParsedMessage, context: HandlerContext) -> Handled | None:
    match = UNSUBSCRIBE_RE.match(message.subject)
    if not match:
        return None
    try:
        pk = tokens.read_token(tokens.UNSUBSCRIBE, match[1])
    except tokens.BadToken:
        return None
    enrollment = Enrollment.objects.select_related("lead", "sequence").filter(pk=pk).first()
    if enrollment is None:
        return None
    senders = {a.lower() for _n, a in getaddresses([str(message.mail.obj.get("From", ""))])}
    log.info("unsubscribe by mail for enrollment %s from %s", pk, ", ".join(sorted(senders)))
    services.unsubscribe(enrollment=enrollment)
    return Handled(outcome=UNSUBSCRIBE, lead=enrollment.lead)
