"""HubSpot against a loopback server playing its CRM v3 contacts API."""

import json
import time

import pytest
from werkzeug import Request, Response

from leads.crm.base import CrmConfigError, CrmError, Upsert
from leads.crm.models import CrmCall
from leads.crm.registry import get_connector
from tests.leads.crm.conftest import wait_for_log

pytestmark = pytest.mark.django_db

CONTACTS = "/crm/v3/objects/contacts"
SEARCH = f"{CONTACTS}/search"
AUTH = {"Authorization": "Bearer pat-na1-secret"}
SEARCH_BODY = {
    "filterGroups": [
        {"filters": [{"propertyName": "email", "operator": "EQ", "value": "ada@example.com"}]}
    ],
    "properties": ["email"],
    "limit": 1,
}
PROPERTIES = {
    "email": "ada@example.com",
    "firstname": "Ada",
    "lastname": "Lovelace",
    "company": "Analytical Engines",
    "phone": "+44 20 7946 0000",
    "jobtitle": "CTO",
    "country": "GB",
}
NOT_FOUND = {"total": 0, "results": []}


def found(contact_id):
    return {"total": 1, "results": [{"id": contact_id, "properties": {}}]}


def outcomes():
    return list(CrmCall.objects.order_by("pk").values_list("operation", "status_code", "outcome"))


def test_creates_a_contact_when_the_search_finds_none(httpserver, hubspot, lead):
    httpserver.expect_ordered_request(
        SEARCH, method="POST", headers=AUTH, json=SEARCH_BODY
    ).respond_with_json(NOT_FOUND)
    httpserver.expect_ordered_request(
        CONTACTS, method="POST", headers=AUTH, json={"properties": PROPERTIES}
    ).respond_with_json({"id": "501", "properties": PROPERTIES}, status=201)

    assert get_connector(hubspot).upsert(lead) == Upsert("501", created=True)
    assert outcomes() == [("search", 200, "ok"), ("create", 201, "ok")]
    call = CrmCall.objects.get(operation="create")
    assert call.path == CONTACTS and call.method == "POST" and call.lead == lead
    assert call.latency_ms >= 0 and call.attempt == 1


def test_updates_the_contact_the_search_finds(httpserver, hubspot, lead):
    httpserver.expect_ordered_request(SEARCH, method="POST", json=SEARCH_BODY).respond_with_json(
        found("77")
    )
    httpserver.expect_ordered_request(
        f"{CONTACTS}/77", method="PATCH", headers=AUTH, json={"properties": PROPERTIES}
    ).respond_with_json({"id": "77"})

    assert get_connector(hubspot).upsert(lead) == Upsert("77", created=False)


def test_update_patches_the_known_id(httpserver, hubspot, lead):
    httpserver.expect_request(
        f"{CONTACTS}/77", method="PATCH", headers=AUTH, json={"properties": PROPERTIES}
    ).respond_with_json({"id": "77"})
    get_connector(hubspot).update("77", lead)
    assert len(httpserver.log) == 1


def test_a_409_conflict_updates_the_existing_contact(httpserver, hubspot, lead):
    # The search index lags behind writes: the search misses a contact the
    # create then finds.
    httpserver.expect_ordered_request(SEARCH, method="POST").respond_with_json(NOT_FOUND)
    httpserver.expect_ordered_request(CONTACTS, method="POST").respond_with_json(
        {
            "status": "error",
            "message": "Contact already exists. Existing ID: 12345",
            "correlationId": "2dea5219-07f2-40ce-82ec-9c2e302317a4",
            "category": "CONFLICT",
        },
        status=409,
    )
    httpserver.expect_ordered_request(f"{CONTACTS}/12345", method="PATCH").respond_with_json(
        {"id": "12345"}
    )
    assert get_connector(hubspot).upsert(lead) == Upsert("12345", created=False)


def test_429_waits_what_retry_after_says(httpserver, hubspot, lead, waits):
    httpserver.expect_oneshot_request(SEARCH, method="POST").respond_with_json(
        {
            "status": "error",
            "message": "You have reached your secondly limit.",
            "category": "RATE_LIMITS",
        },
        status=429,
        headers={"Retry-After": "7"},
    )
    httpserver.expect_request(SEARCH, method="POST").respond_with_json(found("77"))
    httpserver.expect_request(f"{CONTACTS}/77", method="PATCH").respond_with_json({"id": "77"})

    assert get_connector(hubspot).upsert(lead).external_id == "77"
    assert waits == [7.0]
    assert outcomes() == [("search", 429, "retry"), ("search", 200, "ok"), ("update", 200, "ok")]
    assert CrmCall.objects.get(status_code=429).attempt == 1
    assert CrmCall.objects.get(operation="update").attempt == 2


def test_a_retry_after_longer_than_the_limit_gives_up_at_once(httpserver, hubspot, lead, waits):
    httpserver.expect_request(SEARCH, method="POST").respond_with_json(
        {"status": "error"}, status=429, headers={"Retry-After": "3600"}
    )
    with pytest.raises(CrmError) as info:
        get_connector(hubspot).upsert(lead)
    assert not info.value.permanent and info.value.retry_after == 3600
    assert waits == []
    assert outcomes() == [("search", 429, "transient")]


def test_a_500_then_success_backs_off_and_retries(httpserver, hubspot, lead, waits):
    httpserver.expect_oneshot_request(SEARCH, method="POST").respond_with_data(
        "upstream error", status=500
    )
    httpserver.expect_request(SEARCH, method="POST").respond_with_json(NOT_FOUND)
    httpserver.expect_request(CONTACTS, method="POST").respond_with_json({"id": "9"}, status=201)

    assert get_connector(hubspot).upsert(lead) == Upsert("9", created=True)
    assert len(waits) == 1 and 0 < waits[0] <= 0.05
    assert [o for _, _, o in outcomes()] == ["retry", "ok", "ok"]


def test_5xx_every_time_gives_up_after_max_attempts(httpserver, hubspot, lead, waits):
    httpserver.expect_request(SEARCH, method="POST").respond_with_data("down", status=503)
    with pytest.raises(CrmError) as info:
        get_connector(hubspot).upsert(lead)
    assert not info.value.permanent and info.value.status == 503
    assert len(waits) == 2  # max_attempts 3
    assert [o for _, _, o in outcomes()] == ["retry", "retry", "transient"]


def test_a_timeout_is_retried(httpserver, hubspot, lead, waits):
    def slow(request: Request) -> Response:
        time.sleep(1.0)  # past the 0.5 s read timeout
        return Response(json.dumps(NOT_FOUND), content_type="application/json")

    httpserver.expect_oneshot_request(SEARCH, method="POST").respond_with_handler(slow)
    httpserver.expect_request(SEARCH, method="POST").respond_with_json(found("77"))
    httpserver.expect_request(f"{CONTACTS}/77", method="PATCH").respond_with_json({"id": "77"})

    assert get_connector(hubspot).upsert(lead).external_id == "77"
    wait_for_log(httpserver, 3)
    first = CrmCall.objects.order_by("pk").first()
    assert first.status_code is None and first.outcome == "retry"
    assert "timed out" in first.error and first.latency_ms >= 450
    assert len(waits) == 1


def test_a_400_is_permanent_and_not_retried(httpserver, hubspot, lead, waits):
    httpserver.expect_request(SEARCH, method="POST").respond_with_json(NOT_FOUND)
    httpserver.expect_request(CONTACTS, method="POST").respond_with_json(
        {
            "status": "error",
            "message": 'Property values were not valid: [{"name":"email"}]',
            "category": "VALIDATION_ERROR",
        },
        status=400,
    )
    with pytest.raises(CrmError, match="VALIDATION_ERROR") as info:
        get_connector(hubspot).upsert(lead)
    assert info.value.permanent and info.value.status == 400
    assert waits == []
    assert outcomes() == [("search", 200, "ok"), ("create", 400, "permanent")]


class FakeHubSpot:
    """Just enough of HubSpot to count contacts: the first create's answer is lost."""

    def __init__(self):
        self.contacts: dict[str, dict] = {}
        self.creates = 0

    def search(self, request: Request) -> Response:
        email = request.json["filterGroups"][0]["filters"][0]["value"]
        hits = [
            {"id": cid, "properties": props}
            for cid, props in self.contacts.items()
            if props["email"] == email
        ]
        return Response(json.dumps({"total": len(hits), "results": hits}), 200)

    def create(self, request: Request) -> Response:
        self.creates += 1
        cid = str(100 + len(self.contacts))
        self.contacts[cid] = request.json["properties"]
        if self.creates == 1:
            time.sleep(1.0)  # created, but the client has given up on the answer
        return Response(json.dumps({"id": cid}), 201, content_type="application/json")

    def patch(self, request: Request) -> Response:
        cid = request.path.rsplit("/", 1)[1]
        self.contacts[cid].update(request.json["properties"])
        return Response(json.dumps({"id": cid}), 200, content_type="application/json")


def test_a_retried_create_does_not_duplicate_the_contact(httpserver, hubspot, lead):
    fake = FakeHubSpot()
    httpserver.expect_request(SEARCH, method="POST").respond_with_handler(fake.search)
    httpserver.expect_request(CONTACTS, method="POST").respond_with_handler(fake.create)
    httpserver.expect_request(f"{CONTACTS}/100", method="PATCH").respond_with_handler(fake.patch)

    result = get_connector(hubspot).upsert(lead)
    wait_for_log(httpserver, 4)
    assert fake.creates == 1
    assert list(fake.contacts) == ["100"]
    # The contact exists because of this sync, so it still counts as created.
    assert result == Upsert("100", created=True)
    assert [(op, o) for op, _, o in outcomes()] == [
        ("search", "ok"),
        ("create", "retry"),
        ("search", "ok"),
        ("update", "ok"),
    ]


def test_a_missing_token_names_the_variable(hubspot, lead, monkeypatch):
    monkeypatch.delenv("HUBSPOT_TEST_TOKEN")
    with pytest.raises(CrmConfigError, match="HUBSPOT_TEST_TOKEN is not set") as info:
        get_connector(hubspot)
    assert info.value.permanent


def test_a_connection_without_the_credential_key_says_which(hubspot):
    hubspot.credentials = {}
    with pytest.raises(CrmConfigError, match=r"credentials\.token_env must name"):
        get_connector(hubspot)
