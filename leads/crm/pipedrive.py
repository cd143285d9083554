"""Pipedrive: persons through the v1 API, authenticated with a personal API token.

Vendor reference for the endpoints and payloads used here:

- Persons: https://developers.pipedrive.com/docs/api/v1/Persons
  GET  /v1/persons/search?term=<email>&fields=email&exact_match=true&limit=1
       -> 200 {"success": true, "data": {"items": [{"item": {"id": 1, ...}}]}}
  POST /v1/persons      {"name": ..., "email": [{"value": ..., "primary": true}], ...}
       -> 201 {"success": true, "data": {"id": 1, ...}}
  PUT  /v1/persons/{id} {...}  -> 200
- Authentication: https://pipedrive.readme.io/docs/core-api-concepts-authentication
  (the token in the "x-api-token" header; the older api_token query parameter
  would put the token in every URL, and URLs end up in logs)
- Rate limiting (429): https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting

Pipedrive does not keep emails unique, so the search before each create is
the only guard against duplicates; an attempt after a lost create answer
searches again before it creates.

Connection: credentials {"token_env": "PIPEDRIVE_API_TOKEN"}; base URL
defaults to https://api.pipedrive.com (a company domain such as
https://acme.pipedrive.com works too). Custom fields map by their 40-character
key, e.g. {"company": "0b2c...e1"}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from leads.crm.base import BaseConnector, CrmError, Upsert

if TYPE_CHECKING:
    from leads.models import Lead

PERSONS = "/v1/persons"
# Pipedrive keeps these as lists of {"value", "primary", "label"}.
MULTI_VALUE = ("email", "phone")


class PipedriveConnector(BaseConnector):
    kind = "pipedrive"
    default_base_url = "https://api.pipedrive.com"
    default_field_mapping = {"name": "name", "email": "email", "phone": "phone"}

    def __init__(self, connection) -> None:
        super().__init__(connection)
        self.session.headers["x-api-token"] = self.secret("token_env", "Pipedrive API token")

    def person(self, lead: Lead) -> dict[str, Any]:
        props = self.properties(lead)
        props["email"] = lead.email
        props.setdefault("name", lead.name or lead.email)
        for key in MULTI_VALUE:
            if key in props and not isinstance(props[key], list):
                props[key] = [{"value": props[key], "primary": True, "label": "work"}]
        return props

    def find(self, email: str) -> str | None:
        params = {"term": email, "fields": "email", "exact_match": "true", "limit": 1}
        response = self.request("search", "GET", f"{PERSONS}/search", params=params)
        items = (self.json(response).get("data") or {}).get("items") or []
        return str(items[0]["item"]["id"]) if items else None

    def upsert_once(self, lead: Lead) -> Upsert:
        existing = self.find(lead.email)
        if existing is not None:
            self.update_once(existing, lead)
            return Upsert(existing, created=self.create_maybe_sent)
        response = self.request("create", "POST", PERSONS, json=self.person(lead), creates=True)
        data = self.json(response).get("data") or {}
        if "id" not in data:
            raise CrmError(f"POST {PERSONS} returned no person id: {response.text[:500]}")
        return Upsert(str(data["id"]), created=True)

    def update_once(self, external_id: str, lead: Lead) -> None:
        self.request("update", "PUT", f"{PERSONS}/{external_id}", json=self.person(lead))
