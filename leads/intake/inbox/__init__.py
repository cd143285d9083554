"""Leads from an email inbox over IMAP.

`poll_source` reads the messages that arrived in a source's folder since the
last poll (a UID watermark, reset when the folder's UIDVALIDITY changes) and
gives each one to the message handlers in order; the first that returns a
result consumes it. Each message is handled in its own transaction (its
InboxMessage row, whatever the handler wrote and the audit events commit
together) and moved out of the folder only after that commit, so a crash in
between means the message is read again and skipped by its Message-ID.

Handlers are a registry (`HANDLERS`, core.registry): reply and bounce detection go
before the lead parser, which is last and takes whatever is left.

The source's settings live in LeadSource.options["inbox"]:

    {"host": "imap.example.com", "port": 993, "security": "ssl",
     "username_env": "IMAP_LEADS_USER", "password_env": "IMAP_LEADS_PASSWORD",
     "folder": "INBOX", "processed_folder": "Processed", "failed_folder": "Failed",
     "timeout": 30, "parse": {"key_value": true, "field_aliases": {"Firma": "company"}}}

Credentials are never stored: the options name environment variables.

The package follows the steps: config (the source's settings), parsing,
handlers, poll; this module is its public surface.
"""

from leads.intake.inbox.config import (
    DEFAULT_PORTS,
    MAILBOX_CLASSES,
    OPTION_KEYS,
    InboxConfig,
    InboxConfigError,
    InboxConnectionError,
    InboxError,
    credentials,
    mailbox_class,
)
from leads.intake.inbox.handlers import (
    DUPLICATE,
    ERROR,
    HANDLERS,
    LEAD,
    LEAD_HANDLER,
    SKIPPED,
    Handled,
    Handler,
    HandlerContext,
    dispatch,
    handle_lead,
    register_handler,
)
from leads.intake.inbox.parsing import (
    ANGLE_ID_RE,
    DEFAULT_ALIASES,
    MAX_MESSAGE_ID,
    MalformedMessage,
    ParsedMessage,
    html_to_text,
    key_values,
    lead_payload,
    message_id_of,
    parse_message,
)
from leads.intake.inbox.poll import (
    IMAP_ERRORS,
    MESSAGE_ERRORS,
    PollSummary,
    connect,
    inbox_sources,
    poll_source,
    poll_sources,
)

__all__ = [
    "ANGLE_ID_RE",
    "DEFAULT_ALIASES",
    "DEFAULT_PORTS",
    "DUPLICATE",
    "ERROR",
    "HANDLERS",
    "IMAP_ERRORS",
    "LEAD",
    "LEAD_HANDLER",
    "MAILBOX_CLASSES",
    "MAX_MESSAGE_ID",
    "MESSAGE_ERRORS",
    "OPTION_KEYS",
    "SKIPPED",
    "Handled",
    "Handler",
    "HandlerContext",
    "InboxConfig",
    "InboxConfigError",
    "InboxConnectionError",
    "InboxError",
    "MalformedMessage",
    "ParsedMessage",
    "PollSummary",
    "connect",
    "credentials",
    "dispatch",
    "handle_lead",
    "html_to_text",
    "inbox_sources",
    "key_values",
    "lead_payload",
    "mailbox_class",
    "message_id_of",
    "parse_message",
    "poll_source",
    "poll_sources",
    "register_handler",
]
