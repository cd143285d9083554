"""What every part of the follow-ups shares: the settings it reads, cancel reasons, links."""

from datetime import timedelta
from email.utils import parseaddr

from django.conf import settings
from django.urls import reverse

from core.retry import retry_delay as backoff

URLCONF = "leads.followups.urls"
MAILER = "default"
RETRY_MAX_SECONDS = 3600
# Cancel reasons. "suppressed": the address unsubscribed, bounced or was
# rejected before, so a new enrollment is refused.
REPLIED = "replied"
UNSUBSCRIBED = "unsubscribed"
BOUNCED = "bounced"
REJECTED = "rejected"
DISQUALIFIED = "disqualified"
MANUAL = "manual"
SUPPRESSED = "suppressed"
SUPPRESSING_REASONS = (UNSUBSCRIBED, BOUNCED, REJECTED)


def base_url() -> str:
    """Where leads.followups.urls is mounted, as recipients reach it (no trailing slash)."""
    return settings.FOLLOWUPS_BASE_URL.rstrip("/")


def message_id_domain(sender: str = "") -> str:
    configured = settings.FOLLOWUPS_MESSAGE_ID_DOMAIN
    if configured:
        return configured
    address = parseaddr(sender or settings.DEFAULT_FROM_EMAIL)[1]
    return address.rpartition("@")[2] or "localhost"


def max_attempts() -> int:
    return settings.FOLLOWUPS_MAX_ATTEMPTS


def retry_delay(attempts: int) -> timedelta:
    """Backoff after the nth failed attempt: 1, 2, 4, ... minutes, at most an hour."""
    return backoff(attempts, base=settings.FOLLOWUPS_RETRY_BASE_SECONDS, cap=RETRY_MAX_SECONDS)


def link(name: str, token: str) -> str:
    # Reversed in our own urlconf: the links work wherever FOLLOWUPS_BASE_URL mounts it.
    return base_url() + reverse(name, urlconf=URLCONF, args=[token])
