"""Follow-up sequences' audit vocabulary."""

from collections.abc import Mapping
from typing import Any

from audit.types import register_event_type, text


def _email(d: Mapping[str, Any], event: Any) -> str:
    step = f"step {d['sequence_step']}" if d.get("sequence_step") else ""
    extra = d.get("subject") or d.get("url") or d.get("status") or ""
    return ": ".join(p for p in (step, text(extra)) if p)


def _scheduled(d: Mapping[str, Any], event: Any) -> str:
    return f"sequence {text(d.get('sequence'))}, {text(d.get('sequence_length'))} emails"


def _cancelled(d: Mapping[str, Any], event: Any) -> str:
    return f"sequence {text(d.get('sequence'))}: {text(d.get('reason'))}"


def _requeued(d: Mapping[str, Any], event: Any) -> str:
    step = f"step {d['sequence_step']}: " if d.get("sequence_step") else ""
    return f"{step}sent again after {text(d.get('stuck_seconds'))} s in sending"


def register() -> None:
    for name, label in (
        ("email_sent", "Follow-up email sent"),
        ("email_opened", "A follow-up email was opened"),
        ("email_clicked", "A link in a follow-up email was clicked"),
        ("email_replied", "The lead replied to a follow-up email"),
        ("email_bounced", "A follow-up email bounced"),
    ):
        register_event_type(name, label, category="email", summary=_email)
    register_event_type(
        "email_scheduled", "Email sequence scheduled", category="email", summary=_scheduled
    )
    register_event_type(
        "email_cancelled", "Email sequence cancelled", category="email", summary=_cancelled
    )
    register_event_type(
        "email_requeued",
        "A follow-up email left in sending was queued again",
        category="email",
        summary=_requeued,
    )
