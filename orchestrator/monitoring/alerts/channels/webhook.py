"""Alerts by HTTP POST: Slack incoming webhooks, or generic JSON signed with HMAC-SHA256.

What a generic webhook receives:

    POST <target URL>
    Content-Type: application/json
    Idempotency-Key: <delivery id, the same on every attempt>
    X-Orchestrator-Timestamp: <unix seconds>
    X-Orchestrator-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + raw body>

    {"event": "alert.opened" | "alert.resolved", "delivery_id": ..., "sent_at": <unix seconds>,
     "rule": {...}, "incident": {"id", "key", "state", "summary", "opened_at",
     "resolved_at", "url", "details"}}

The timestamp is part of the signed material (as Stripe and Slack do it), so
a receiver that rejects old timestamps cannot be fed a captured request
again. The secret comes from the environment variable the channel names.

Slack gets {"text": ..., "blocks": [...]} (Block Kit); its incoming-webhook
URL is the credential, so there is no signature, and the URL is never stored:
the channel names the environment variable holding it (url_env, e.g.
SLACK_OPS_URL), read through core.credentials when a notice is sent. Errors
name the host only, so the URL's secret path never reaches Delivery.last_error.

Each send is retried a few times at once with exponential backoff and jitter
(tenacity, as the CRM connectors do) on connection errors, timeouts, 408, 429
and 5xx; what still fails is retried on later check_alerts passes. Any other
4xx is permanent: the same request would fail the same way.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

from core import signing
from core.retry import parse_retry_after, retrying
from orchestrator.monitoring.alerts.channels import BaseChannel, ChannelError, Notice

SIGNATURE_HEADER = "X-Orchestrator-Signature"
TIMESTAMP_HEADER = "X-Orchestrator-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
USER_AGENT = "automation-orchestrator-alerts/1"
ERROR_BODY_CHARS = 300


def sleep(seconds: float) -> None:
    """The retry policy's sleep; tests replace it so they do not wait."""
    time.sleep(seconds)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return signing.sign(secret, body, timestamp=timestamp)


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver runs (and the tests do): constant-time comparison."""
    return signing.verify(secret, body, signature, timestamp=timestamp)


class _HttpChannel(BaseChannel):
    needs_secret = False

    @classmethod
    def validate(cls, channel) -> dict[str, str]:
        try:
            URLValidator(schemes=["http", "https"])(channel.target)
        except ValidationError:
            return {"target": "Give the http(s) URL to POST to."}
        if cls.needs_secret and not channel.secret_env:
            return {"secret_env": "Name the environment variable holding the signing secret."}
        return {}

    def url(self) -> str:
        return self.channel.target

    def redact(self, text: str, url: str) -> str:
        """`text` safe to store where staff can read it (Delivery.last_error)."""
        return text

    def payload(self, notice: Notice, sent_at: int) -> dict[str, Any]:
        raise NotImplementedError

    def headers(self, notice: Notice, timestamp: str, body: bytes) -> dict[str, str]:
        return {}

    def send(self, notice: Notice) -> None:
        backoff = settings.ALERTS_HTTP_BACKOFF
        policy = retrying(
            transient=lambda e: isinstance(e, ChannelError) and not e.permanent,
            attempts=settings.ALERTS_HTTP_ATTEMPTS,
            base=backoff,
            cap=10 * backoff,
            # No max_retry_after: a Retry-After is honoured between passes
            # (services.retry_delay), not by sleeping inside this one.
            # Looked up at call time so tests can replace webhook.sleep.
            sleep=lambda seconds: sleep(seconds),
        )
        policy(self._post, notice)

    def _post(self, notice: Notice) -> None:
        now = int(time.time())
        # Signed and sent as the same bytes: re-serializing could change them.
        body = json.dumps(self.payload(notice, now), sort_keys=True, default=str).encode()
        timestamp = str(now)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **self.headers(notice, timestamp, body),
        }
        timeout = settings.ALERTS_HTTP_TIMEOUT
        url = self.url()
        where = urlsplit(url).netloc
        try:
            response = requests.post(url, data=body, headers=headers, timeout=timeout)
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise ChannelError(self.redact(f"POST to {where} failed: {exc}", url)) from None
        except requests.RequestException as exc:
            # InvalidURL, MissingSchema, ...: the configuration, not the network.
            message = self.redact(f"POST to {where}: {exc}", url)
            raise ChannelError(message, permanent=True) from None
        status = response.status_code
        if status < 300:
            return
        message = f"POST to {where} returned {status}: {response.text[:ERROR_BODY_CHARS]}"
        if status in (408, 429) or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise ChannelError(message, retry_after=retry_after)
        raise ChannelError(message, permanent=True)


class WebhookChannel(_HttpChannel):
    kind = "webhook"
    needs_secret = True

    def payload(self, notice: Notice, sent_at: int) -> dict[str, Any]:
        return {**notice.as_dict(), "sent_at": sent_at}

    def headers(self, notice: Notice, timestamp: str, body: bytes) -> dict[str, str]:
        return {
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.secret(), timestamp, body),
            IDEMPOTENCY_HEADER: notice.delivery_id,
        }


def slack_escape(text: str) -> str:
    """Slack's mrkdwn treats &, < and > as markup (links, mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackChannel(_HttpChannel):
    kind = "slack"

    @classmethod
    def validate(cls, channel) -> dict[str, str]:
        if channel.target:
            return {
                "target": "Leave empty: a Slack webhook URL is a credential. Put it in an "
                "environment variable (e.g. SLACK_OPS_URL) and name that in url_env."
            }
        if not channel.url_env:
            return {"url_env": "Name the environment variable holding the Slack webhook URL."}
        return {}

    def url(self) -> str:
        return self.credential("url_env", "the Slack webhook URL")

    def redact(self, text: str, url: str) -> str:
        # requests puts the URL, or its path, in connection errors; the path
        # (/services/T.../B.../secret) is what lets anyone post.
        parts = urlsplit(url)
        for secret in (url, parts.path):
            if secret and secret != "/":
                text = text.replace(secret, "/<redacted>")
        return text

    def payload(self, notice: Notice, sent_at: int) -> dict[str, Any]:
        icon = ":white_check_mark:" if notice.resolved else ":rotating_light:"
        summary = slack_escape(notice.summary)
        text = f"{icon} {slack_escape(notice.title)}: {summary}"
        facts = [f"*Rule:* {slack_escape(notice.rule_name)} ({notice.rule_kind})"]
        facts.append(f"*Opened:* {notice.opened_at:%Y-%m-%d %H:%M:%S %Z}")
        if notice.resolved_at:
            facts.append(f"*Resolved:* {notice.resolved_at:%Y-%m-%d %H:%M:%S %Z}")
        return {
            # Shown in notifications and by clients without Block Kit.
            "text": text,
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": notice.title[:150]}},
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"{summary}\n<{notice.url}|Open>"},
                },
                {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(facts)}]},
            ],
        }
