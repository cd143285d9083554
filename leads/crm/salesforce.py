"""Salesforce: Lead records through the REST API, with an OAuth 2.0 refresh token.

Vendor reference for the endpoints and payloads used here:

- sObject basics: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_sobject_basic_info.htm
- Upsert by external ID (idempotent by design; 201 when created, 200 with
  {"id", "created": false} or 204 when updated, 300 when the key matches several):
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_upsert.htm
  PATCH /services/data/vXX.X/sobjects/Lead/<ExternalIdField__c>/<value>  {fields...}
- Update a record: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_update_fields.htm
  PATCH /services/data/vXX.X/sobjects/Lead/<Id>  {fields...}  -> 204
- OAuth 2.0 refresh token flow:
  https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_refresh_token_flow.htm
  POST /services/oauth2/token
       grant_type=refresh_token&client_id=..&client_secret=..&refresh_token=..
  -> 200 {"access_token": ..., "instance_url": ..., "token_type": "Bearer"}
- Status codes and errors (401 INVALID_SESSION_ID, 400 REQUIRED_FIELD_MISSING, ...):
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm

Access tokens expire; a 401 gets one refresh at the token endpoint and the
request is sent again. The access token lives in process memory only.

Connection: base URL is the org's instance (https://MyDomain.my.salesforce.com);
credentials {"client_id_env", "client_secret_env", "refresh_token_env"} and
optionally "access_token_env"; options {"api_version": "v62.0",
"external_id_field": "Orchestrator_Id__c" (an External ID text field on Lead,
filled with the lead's public id), "token_url": default <base URL>/services/oauth2/token}.
Salesforce requires LastName and Company on a Lead: map them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from leads.crm.base import BaseConnector, CrmConfigError, CrmError, Upsert
from leads.crm.models import CrmCall

if TYPE_CHECKING:
    import requests

    from leads.models import Lead

DEFAULT_API_VERSION = "v62.0"
DEFAULT_EXTERNAL_ID_FIELD = "Orchestrator_Id__c"


class SalesforceConnector(BaseConnector):
    kind = "salesforce"
    default_field_mapping = {
        "name": ["FirstName", "LastName"],
        "email": "Email",
        "company": "Company",
        "phone": "Phone",
        "title": "Title",
        "country": "Country",
    }
    # Connection pk -> access token, shared by the connectors of one process
    # so each task does not refresh anew.
    _tokens: ClassVar[dict[int, str]] = {}

    def __init__(self, connection) -> None:
        super().__init__(connection)
        options = connection.options or {}
        self.api_version = options.get("api_version", DEFAULT_API_VERSION)
        self.external_id_field = options.get("external_id_field", DEFAULT_EXTERNAL_ID_FIELD)
        self.token_url = options.get("token_url") or f"{self.base_url}/services/oauth2/token"
        # Read now, so a missing variable is reported before any call.
        self.client_id = self.secret("client_id_env", "Salesforce connected app client id")
        self.client_secret = self.secret(
            "client_secret_env", "Salesforce connected app client secret"
        )
        self.refresh_token = self.secret("refresh_token_env", "Salesforce OAuth refresh token")
        token = self._tokens.get(connection.pk)
        if token is None and (connection.credentials or {}).get("access_token_env"):
            token = self.secret("access_token_env", "Salesforce access token")
        if token:
            self._use(token)

    def _use(self, token: str) -> None:
        self._tokens[self.connection.pk] = token
        self.session.headers["Authorization"] = f"Bearer {token}"

    def refresh(self) -> None:
        data = {
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "refresh_token": self.refresh_token,
        }
        # No bearer token on the token request.
        response = self.request(
            "token", "POST", self.token_url, data=data, headers={"Authorization": None}
        )
        token = self.json(response).get("access_token")
        if not token:
            raise CrmError(f"the token endpoint returned no access_token: {response.text[:200]}")
        self._use(token)

    def classify(self, response: requests.Response) -> CrmError | None:
        error = super().classify(response)
        # invalid_grant / invalid_client: the refresh token or the app
        # credentials are wrong or revoked; a person has to fix them.
        if (
            error is not None
            and response.request.url == self.token_url
            and 400 <= response.status_code < 500
        ):
            return CrmConfigError(
                f"Salesforce refused the token refresh ({response.status_code}): "
                f"{response.text[:300]}"
            )
        return error

    def send(self, operation: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A data API request, refreshing the access token once on a 401."""
        if "Authorization" not in self.session.headers:
            self.refresh()
        response = self.request(
            operation, method, path, passthrough={401: CrmCall.Outcome.RETRY}, **kwargs
        )
        if response.status_code != 401:
            return response
        self.refresh()
        return self.request(operation, method, path, **kwargs)

    def upsert_once(self, lead: Lead) -> Upsert:
        if not lead.public_id:
            raise CrmError("the lead has no public id to upsert by", permanent=True)
        fields = self.properties(lead)
        # The key travels in the URL; Salesforce rejects it in the body too.
        fields.pop(self.external_id_field, None)
        key = f"{self.external_id_field}/{quote(lead.public_id, safe='')}"
        path = f"/services/data/{self.api_version}/sobjects/Lead/{key}"
        response = self.send("upsert", "PATCH", path, json=fields, creates=True)
        if response.status_code == 204:
            # Before API v46 an update answers 204 with no body: read the id.
            found = self.send("lookup", "GET", path, params={"fields": "Id"})
            return Upsert(self.id_from(found, "Id"), created=self.create_maybe_sent)
        external_id = self.id_from(response)
        created = response.status_code == 201 or bool(self.json(response).get("created"))
        return Upsert(external_id, created=created or self.create_maybe_sent)

    def update_once(self, external_id: str, lead: Lead) -> None:
        path = f"/services/data/{self.api_version}/sobjects/Lead/{quote(external_id, safe='')}"
        self.send("update", "PATCH", path, json=self.properties(lead))
