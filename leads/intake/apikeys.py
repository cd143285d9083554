"""API keys for the lead and events APIs: generation, hashing, lookup, scopes, revocation.

A key looks like `lo_<prefix>_<secret>`. The prefix is stored in the clear and
finds the row; only the SHA-256 of the whole key is stored, so the database
alone cannot be used to call the API. The key is shown once, by
`manage.py create_api_key`.

A key holds scopes (ApiKey.Scope): what each API asks for, so a key leaked from
a SIEM that reads events cannot send leads, and the reverse.
"""

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterable
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from audit.services import record_event
from leads.models import ApiKey, LeadSource

log = logging.getLogger(__name__)

KEY_RE = re.compile(r"^lo_(?P<prefix>[0-9a-f]{8})_(?P<secret>[A-Za-z0-9_-]{32,128})$")
# The audit trail names the key (actor "api:<name>"), so a name has to fit
# that format: no leading space, no line breaks, 100 characters at most.
NAME_RE = re.compile(r"^[^\s][^\r\n\x00-\x1f\x7f]{0,99}$")
# last_used_at is for "is this key still in use?", not an access log: one write
# a minute per key is plenty and keeps a busy key from writing on every call.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKeyError(Exception):
    """Authentication failed; `status` is 401 (no usable key) or 403 (key revoked)."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        self.status = status
        super().__init__(message)


def hash_key(raw: str) -> str:
    # Plain SHA-256 is enough: the secret has 256 random bits, so there is
    # nothing to brute-force and no salt needed. Not keyed with SECRET_KEY, so
    # rotating SECRET_KEY does not lock every integration out.
    return hashlib.sha256(raw.encode()).hexdigest()


def _generate() -> tuple[str, str]:
    prefix = secrets.token_hex(4)
    return prefix, f"lo_{prefix}_{secrets.token_urlsafe(32)}"


def clean_scopes(scopes: Iterable[str]) -> list[str]:
    """Known scopes, sorted and without repeats; ValueError names an unknown one."""
    chosen = sorted(set(scopes))
    unknown = [s for s in chosen if s not in ApiKey.Scope.values]
    if unknown:
        raise ValueError(
            f"unknown API key scope {unknown[0]!r}; known scopes: {', '.join(ApiKey.Scope.values)}"
        )
    if not chosen:
        raise ValueError("an API key needs at least one scope")
    return chosen


def api_key_create(
    *,
    source: LeadSource | None = None,
    name: str = "",
    scopes: Iterable[str] = (ApiKey.Scope.LEADS_WRITE,),
) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the raw key, which is never stored.

    A leads:write key needs `source` (its leads come from there); other scopes
    need none. Without a name the key is called "<source slug>-<prefix>", or
    "api-<prefix>" without a source.
    """
    name = name.strip()
    if name and not NAME_RE.match(name):
        raise ValueError(
            f"API key name {name!r} must be 1-100 characters without line breaks "
            "or control characters"
        )
    chosen = clean_scopes(scopes)
    if ApiKey.Scope.LEADS_WRITE in chosen and source is None:
        raise ValueError("a key with the leads:write scope needs a source")
    default_name = source.slug if source is not None else "api"
    for _ in range(5):
        prefix, raw = _generate()
        try:
            # A savepoint, so a prefix collision does not spoil a caller's transaction.
            with transaction.atomic():
                key = ApiKey.objects.create(
                    source=source,
                    name=name or f"{default_name}-{prefix}",
                    prefix=prefix,
                    key_hash=hash_key(raw),
                    scopes=",".join(chosen),
                )
                record_event(
                    event_type="api_key_created",
                    details={
                        "key": key.name,
                        "prefix": prefix,
                        "source": source.slug if source is not None else None,
                        "scopes": chosen,
                    },
                )
        except IntegrityError:
            continue
        log.info("API key %s (%s) created with scopes %s", key.name, prefix, key.scopes)
        return key, raw
    raise RuntimeError("could not find a free API key prefix in 5 attempts")


def api_key_revoke(*, key: ApiKey, actor: str) -> bool:
    """Revoke a key from now on; False if it was already revoked."""
    now = timezone.now()
    # Conditional, so the first revocation time is kept if two admins click at once.
    with transaction.atomic():
        changed = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now)
        if changed:
            record_event(
                event_type="api_key_revoked",
                actor=actor,
                details={
                    "key": key.name,
                    "prefix": key.prefix,
                    "source": key.source.slug if key.source is not None else None,
                },
            )
    if changed:
        key.revoked_at = now
        log.info("API key %s (%s) revoked by %s", key.name, key.prefix, actor)
    return bool(changed)


def parse_bearer(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(authorization: str, *, scope: str) -> ApiKey:
    """The active key an Authorization header carries, with its source loaded,
    if it holds `scope` (required, so no caller can forget to ask).

    Raises ApiKeyError: 401 when the header is missing, malformed or names no
    key; 403 when the key is right but revoked or lacks the scope.
    """
    if not authorization:
        raise ApiKeyError("Authentication required: send 'Authorization: Bearer <API key>'.")
    token = parse_bearer(authorization)
    match = KEY_RE.match(token) if token else None
    if match is None:
        raise ApiKeyError("Malformed Authorization header: expected 'Bearer lo_<prefix>_<secret>'.")
    # The source's workflow too: each lead's event names it.
    key = ApiKey.objects.select_related("source__workflow").filter(prefix=match["prefix"]).first()
    # Hash and compare even when the prefix is unknown, so both failures take as long.
    expected = key.key_hash if key else hash_key("")
    if not hmac.compare_digest(hash_key(token), expected) or key is None:
        raise ApiKeyError("Unknown API key.")
    if key.revoked_at is not None:
        raise ApiKeyError("This API key has been revoked.", status=403)
    if not key.has_scope(scope):
        raise ApiKeyError(f"This API key does not have the {str(scope)!r} scope.", status=403)
    touch_last_used(key)
    return key


def touch_last_used(key: ApiKey) -> None:
    now = timezone.now()
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_RESOLUTION:
        return
    # Conditional, so of many requests arriving together only one writes.
    ApiKey.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION),
        pk=key.pk,
    ).update(last_used_at=now)
    key.last_used_at = now
