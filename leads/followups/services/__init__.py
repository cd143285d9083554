"""Follow-up sequences: enroll a lead, send what is due, stop, track engagement.

Sending is at most once. Each email is claimed with a conditional UPDATE
(pending -> sending) that commits before the SMTP conversation starts, so two
senders never both get it. What happens next:

- the server accepted it: sent, email_sent, the next step is scheduled;
- the server could not be reached, or refused it with a reply code (4xx, or
  5xx for the sender or the data): nothing was delivered, so it goes back to
  pending with a later due_at (until FOLLOWUPS_MAX_ATTEMPTS);
- the server refused the recipient for good (5xx on RCPT): failed, and the
  enrollment is cancelled ("rejected");
- the sender died (killed, crashed) holding the row: it stays in `sending`
  until FOLLOWUPS_STUCK_SENDING_SECONDS have passed, then the next send pass
  puts it back (same Message-ID, an `email_requeued` event): a dead sender
  almost never got as far as the server's final reply;
- the connection broke or timed out mid-conversation: the message may have
  been delivered, so the row is flagged `outcome_unknown` and waits for a
  person (admin action, `send_followups --requeue-stale`), and the
  `emails_stuck_sending` alert says so; a follow-up sent twice is worse than
  one an operator has to look at.

The code lives in one module of this package per part (conf, enrollment, stopping,
rendering, sending, tracking); this module is their public surface.
"""

from leads.followups import tokens
from leads.followups.services.conf import (
    BOUNCED,
    DISQUALIFIED,
    MAILER,
    MANUAL,
    REJECTED,
    REPLIED,
    SUPPRESSED,
    SUPPRESSING_REASONS,
    UNSUBSCRIBED,
    URLCONF,
    base_url,
    link,
    max_attempts,
    message_id_domain,
    retry_delay,
)
from leads.followups.services.enrollment import SequenceError, enroll, is_suppressed
from leads.followups.services.rendering import Rendered, build_message, render_email
from leads.followups.services.sending import (
    SendSummary,
    claim_next,
    default_worker_id,
    requeue,
    send_claimed,
    send_due,
    stale_sending,
)
from leads.followups.services.stopping import (
    cancel,
    cancel_lead,
    lead_disqualified,
    sequence_cancel_by_hand,
    unsubscribe,
)
from leads.followups.services.tracking import (
    NotTracked,
    click_target,
    record_click,
    record_open,
)

__all__ = [
    "BOUNCED",
    "DISQUALIFIED",
    "MAILER",
    "MANUAL",
    "REJECTED",
    "REPLIED",
    "SUPPRESSED",
    "SUPPRESSING_REASONS",
    "UNSUBSCRIBED",
    "URLCONF",
    "NotTracked",
    "Rendered",
    "SendSummary",
    "SequenceError",
    "base_url",
    "build_message",
    "cancel",
    "cancel_lead",
    "claim_next",
    "click_target",
    "default_worker_id",
    "enroll",
    "is_suppressed",
    "lead_disqualified",
    "link",
    "max_attempts",
    "message_id_domain",
    "record_click",
    "record_open",
    "render_email",
    "requeue",
    "retry_delay",
    "send_claimed",
    "send_due",
    "sequence_cancel_by_hand",
    "stale_sending",
    "tokens",
    "unsubscribe",
]
