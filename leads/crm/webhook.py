"""A generic webhook: the lead as JSON, POSTed to a URL, signed with HMAC-SHA256.

No vendor here; the receiver is ours or a customer's. What it gets:

    POST <base URL><options.path>
    Content-Type: application/json
    X-Orchestrator-Timestamp: <unix seconds>
    X-Orchestrator-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed with the secret>
    Idempotency-Key: <event id>

    {"event": "lead.upsert" | "lead.update", "event_id": ..., "sent_at": <unix seconds>,
     "connection": <name>, "external_id": <id or null>, "lead": {"public_id": ..., <mapped fields>}}

The timestamp is inside the signed body as well, so a captured request cannot
be replayed with a fresh header. The event id is the same for every attempt
to send the same lead state, so a receiver that keeps the ids it has seen
(as the IETF Idempotency-Key draft describes) never applies a retry twice.
The receiver may answer with {"id": "..."} (or "external_id") to name its
record, and {"created": false} if it already had the lead.

References: HMAC, RFC 2104 (https://www.rfc-editor.org/rfc/rfc2104);
the Idempotency-Key header,
https://datatracker.ietf.org/doc/draft-ietf-httpapi-idempotency-key-header/ ;
Retry-After, RFC 9110 section 10.2.3 (https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3).

Connection: base URL required; credentials {"secret_env": "CRM_WEBHOOK_SECRET"};
options {"path": "/hooks/leads"}.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from core import signing
from leads.crm.base import BaseConnector, Upsert

if TYPE_CHECKING:
    from leads.models import Lead

SIGNATURE_HEADER = "X-Orchestrator-Signature"
TIMESTAMP_HEADER = "X-Orchestrator-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_NAMESPACE = uuid.UUID("5b6f0c52-55d4-4a43-a6a2-6a8f4f0f7a51")


def sign(secret: str, body: bytes) -> str:
    # The body only: its sent_at is the timestamp (see above), so the header is not signed.
    return signing.sign(secret, body)


class WebhookConnector(BaseConnector):
    kind = "webhook"
    default_field_mapping = {
        "email": "email",
        "name": "name",
        "company": "company",
        "phone": "phone",
        "title": "title",
        "country": "country",
    }

    def __init__(self, connection) -> None:
        super().__init__(connection)
        self.secret_key = self.secret("secret_env", "webhook signing secret")
        self.path = (connection.options or {}).get("path", "")

    def event_id(self, event: str, lead: Lead) -> str:
        state = lead.updated_at.isoformat() if lead.updated_at else ""
        name = f"{self.connection.name}:{lead.public_id}:{event}:{state}"
        return str(uuid.uuid5(EVENT_NAMESPACE, name))

    def post(self, event: str, lead: Lead, external_id: str | None) -> dict[str, Any]:
        now = int(time.time())
        payload = {
            "event": event,
            "event_id": self.event_id(event, lead),
            "sent_at": now,
            "connection": self.connection.name,
            "external_id": external_id,
            "lead": {"public_id": lead.public_id, **self.properties(lead)},
        }
        # Signed and sent as the same bytes: re-serializing could change them.
        body = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(now),
            SIGNATURE_HEADER: sign(self.secret_key, body),
            IDEMPOTENCY_HEADER: payload["event_id"],
        }
        response = self.request(
            event, "POST", self.path, data=body, headers=headers, creates=external_id is None
        )
        if not response.content:
            return {}
        data = self.json(response)
        return data if isinstance(data, dict) else {}

    def upsert_once(self, lead: Lead) -> Upsert:
        data = self.post("lead.upsert", lead, None)
        external_id = data.get("external_id") or data.get("id") or lead.public_id
        return Upsert(str(external_id), created=bool(data.get("created", True)))

    def update_once(self, external_id: str, lead: Lead) -> None:
        self.post("lead.update", lead, external_id)
