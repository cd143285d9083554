"""Signed tokens for the links in follow-up emails, one salt per purpose.

A token made for one purpose (say, the open pixel) is refused by the others,
so a leaked pixel URL cannot unsubscribe anyone. Unsubscribe tokens never
expire: a recipient must be able to opt out from an old email.
"""

from datetime import timedelta

from django.conf import settings
from django.core import signing

UNSUBSCRIBE = "unsubscribe"
OPEN = "open"
CLICK = "click"
PURPOSES = (UNSUBSCRIBE, OPEN, CLICK)


class BadToken(Exception):
    """A token that is forged, mangled, expired or made for another purpose."""


def _signer(purpose: str) -> signing.TimestampSigner:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    return signing.TimestampSigner(salt=f"leads.followups.{purpose}")


def make_token(purpose: str, pk: int) -> str:
    return _signer(purpose).sign(str(pk))


def max_age(purpose: str) -> timedelta | None:
    if purpose == UNSUBSCRIBE:
        return None
    days = settings.FOLLOWUPS_TRACKING_MAX_AGE_DAYS
    return timedelta(days=days)


def read_token(purpose: str, token: str) -> int:
    """The primary key a token was made for. Raises BadToken."""
    try:
        value = _signer(purpose).unsign(token, max_age=max_age(purpose))
        return int(value)
    except (signing.BadSignature, ValueError) as exc:
        raise BadToken(str(exc)) from exc
