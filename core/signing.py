"""The one request-signing primitive: HMAC-SHA256, sent as "sha256=<hex>".

A receiver recomputes the MAC over the raw body it got and compares in
constant time. With a timestamp the signed material is "<timestamp>.<body>"
(as Stripe and Slack sign), so a receiver that rejects old timestamps cannot
be fed a captured request again; without one, only the body is signed.
"""

import hashlib
import hmac

PREFIX = "sha256="


def sign(secret: str, body: bytes, *, timestamp: str | None = None) -> str:
    signed = body if timestamp is None else timestamp.encode() + b"." + body
    return PREFIX + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str, *, timestamp: str | None = None) -> bool:
    """What a receiver runs: constant-time comparison with the header it got."""
    return hmac.compare_digest(sign(secret, body, timestamp=timestamp), signature)
