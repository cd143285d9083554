"""HubSpot: contacts through the CRM v3 API, authenticated with a private app token.

Vendor reference for the endpoints and payloads used here:

- Contacts (create, update): https://developers.hubspot.com/docs/api/crm/contacts
  POST  /crm/v3/objects/contacts             {"properties": {...}}  -> 201 {"id": "..."}
  PATCH /crm/v3/objects/contacts/{contactId} {"properties": {...}}  -> 200
- Search: https://developers.hubspot.com/docs/api/crm/search
  POST /crm/v3/objects/contacts/search
  {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": ...}]}],
   "properties": ["email"], "limit": 1}  -> 200 {"total": n, "results": [{"id": ...}]}
- Authentication (private apps, "Authorization: Bearer <token>"):
  https://developers.hubspot.com/docs/api/private-apps
- Errors and rate limits (429, 409 CONFLICT): https://developers.hubspot.com/docs/api/error-handling
  and https://developers.hubspot.com/docs/api/usage-details

The search index lags a few seconds behind writes, so a contact created a
moment ago (by an attempt whose answer was lost, or by someone else) may not
be found; the create then fails with 409 CONFLICT "Contact already exists.
Existing ID: 123", and that id is updated instead. Email is unique per
HubSpot portal, which is what makes this safe.

Connection: credentials {"token_env": "HUBSPOT_TOKEN"}; base URL defaults to
https://api.hubapi.com.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from leads.crm.base import BaseConnector, CrmError, Upsert
from leads.crm.models import CrmCall

if TYPE_CHECKING:
    from leads.models import Lead

CONTACTS = "/crm/v3/objects/contacts"
EXISTING_ID_RE = re.compile(r"Existing ID:\s*(\d+)")


class HubSpotConnector(BaseConnector):
    kind = "hubspot"
    default_base_url = "https://api.hubapi.com"
    default_field_mapping = {
        "email": "email",
        "name": ["firstname", "lastname"],
        "company": "company",
        "phone": "phone",
        "title": "jobtitle",
        "country": "country",
    }

    def __init__(self, connection) -> None:
        super().__init__(connection)
        token = self.secret("token_env", "HubSpot private app token")
        self.session.headers["Authorization"] = f"Bearer {token}"

    def find(self, email: str) -> str | None:
        body = {
            "filterGroups": [
                {"filters": [{"propertyName": "email", "operator": "EQ", "value": email}]}
            ],
            "properties": ["email"],
            "limit": 1,
        }
        response = self.request("search", "POST", f"{CONTACTS}/search", json=body)
        results = self.json(response).get("results") or []
        return str(results[0]["id"]) if results else None

    def upsert_once(self, lead: Lead) -> Upsert:
        props = self.properties(lead)
        props["email"] = lead.email
        existing = self.find(lead.email)
        if existing is not None:
            self.update_once(existing, lead)
            return Upsert(existing, created=self.create_maybe_sent)
        response = self.request(
            "create",
            "POST",
            CONTACTS,
            json={"properties": props},
            creates=True,
            passthrough={409: CrmCall.Outcome.OK},
        )
        if response.status_code == 409:
            match = EXISTING_ID_RE.search(response.text)
            if match is None:
                raise CrmError(
                    f"POST {CONTACTS} returned 409 without an existing id: {response.text[:500]}",
                    permanent=True,
                    status=409,
                )
            existing = match.group(1)
            self.update_once(existing, lead)
            return Upsert(existing, created=self.create_maybe_sent)
        return Upsert(self.id_from(response), created=True)

    def update_once(self, external_id: str, lead: Lead) -> None:
        props = self.properties(lead)
        props["email"] = lead.email
        self.request("update", "PATCH", f"{CONTACTS}/{external_id}", json={"properties": props})
