"""The message handlers: a registry tried in order; the first that returns Handled wins.

Reply and bounce detection (leads.followups) register ahead of the lead
parser, which is last and takes whatever is left.
"""

from collections.abc import Callable
from dataclasses import dataclass

from core.registry import Registry
from leads.intake.inbox.config import InboxConfig
from leads.intake.inbox.parsing import MalformedMessage, ParsedMessage, lead_payload
from leads.models import Lead, LeadSource
from leads.services import ingest_lead

# Outcomes stored on InboxMessage (handlers may add their own, e.g. reply, bounce).
LEAD = "lead"
DUPLICATE = "duplicate"
ERROR = "error"
SKIPPED = "skipped"


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


# The lead parser's kind; it stays last.
LEAD_HANDLER = "lead"
# Tried in order; a handler returns Handled when it consumed the message and
# None to pass it on.
HANDLERS: Registry[Handler] = Registry(
    "inbox handler",
    {LEAD_HANDLER: ("Lead parser", "leads.intake.inbox.handlers.handle_lead")},
)


def register_handler(kind: str, label: str, path: str, *, before: str = LEAD_HANDLER) -> None:
    """Add a handler ahead of another one (by default, ahead of the lead parser)."""
    HANDLERS.register(kind, label, path, before=before)


def dispatch(message: ParsedMessage, context: HandlerContext) -> Handled | None:
    for kind in HANDLERS:
        handled = HANDLERS.load(kind)(message, context)
        if handled is not None:
            return handled
    return None
