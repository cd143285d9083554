"""Pipedrive against a loopback server playing its v1 persons API."""

import json
import time

import pytest
from werkzeug import Request, Response

from leads.crm.base import CrmError, Upsert
from leads.crm.registry import get_connector
from tests.leads.crm.conftest import wait_for_log

pytestmark = pytest.mark.django_db

AUTH = {"x-api-token": "pd-secret"}
SEARCH_QUERY = {"term": "ada@example.com", "fields": "email", "exact_match": "true", "limit": "1"}
PERSON = {
    "name": "Ada Lovelace",
    "email": [{"value": "ada@example.com", "primary": True, "label": "work"}],
    "phone": [{"value": "+44 20 7946 0000", "primary": True, "label": "work"}],
}
NO_ITEMS = {"success": True, "data": {"items": []}}


@pytest.fixture
def pipedrive(connect, monkeypatch):
    monkeypatch.setenv("PIPEDRIVE_TEST_TOKEN", "pd-secret")
    return connect("pipedrive", credentials={"token_env": "PIPEDRIVE_TEST_TOKEN"})


def test_creates_a_person_when_the_search_finds_none(httpserver, pipedrive, lead):
    httpserver.expect_ordered_request(
        "/v1/persons/search", method="GET", headers=AUTH, query_string=SEARCH_QUERY
    ).respond_with_json(NO_ITEMS)
    httpserver.expect_ordered_request(
        "/v1/persons", method="POST", headers=AUTH, json=PERSON
    ).respond_with_json({"success": True, "data": {"id": 42, "name": "Ada Lovelace"}}, status=201)

    assert get_connector(pipedrive).upsert(lead) == Upsert("42", created=True)
    # The token travels in the header, never in a URL.
    assert all("api_token" not in req.url for req, _ in httpserver.log)


def test_updates_the_person_the_search_finds(httpserver, pipedrive, lead):
    httpserver.expect_ordered_request(
        "/v1/persons/search", method="GET", query_string=SEARCH_QUERY
    ).respond_with_json(
        {"success": True, "data": {"items": [{"result_score": 1.0, "item": {"id": 7}}]}}
    )
    httpserver.expect_ordered_request(
        "/v1/persons/7", method="PUT", headers=AUTH, json=PERSON
    ).respond_with_json({"success": True, "data": {"id": 7}})
    assert get_connector(pipedrive).upsert(lead) == Upsert("7", created=False)


def test_a_custom_field_mapping(httpserver, pipedrive, lead):
    pipedrive.field_mapping = {
        "name": "name",
        "company": "4f9c0e1a2b3c4d5e6f708192a3b4c5d6e7f80912",
    }
    httpserver.expect_request(
        "/v1/persons/7",
        method="PUT",
        json={
            "name": "Ada Lovelace",
            "4f9c0e1a2b3c4d5e6f708192a3b4c5d6e7f80912": "Analytical Engines",
            "email": [{"value": "ada@example.com", "primary": True, "label": "work"}],
        },
    ).respond_with_json({"success": True, "data": {"id": 7}})
    get_connector(pipedrive).update("7", lead)


def test_429_honours_retry_after_and_a_400_is_permanent(httpserver, pipedrive, lead, waits):
    httpserver.expect_oneshot_request("/v1/persons/search").respond_with_json(
        {"success": False, "error": "Rate limit exceeded"}, status=429, headers={"Retry-After": "2"}
    )
    httpserver.expect_request("/v1/persons/search").respond_with_json(NO_ITEMS)
    httpserver.expect_request("/v1/persons", method="POST").respond_with_json(
        {"success": False, "error": "Name must be given.", "error_info": "Please check..."},
        status=400,
    )
    with pytest.raises(CrmError, match="Name must be given") as info:
        get_connector(pipedrive).upsert(lead)
    assert info.value.permanent
    assert waits == [2.0]


def test_a_retried_create_does_not_duplicate_the_person(httpserver, pipedrive, lead):
    persons: dict[int, dict] = {}

    def search(request: Request) -> Response:
        term = request.args["term"]
        items = [
            {"item": {"id": pid}}
            for pid, p in persons.items()
            if any(e["value"] == term for e in p["email"])
        ]
        return Response(json.dumps({"success": True, "data": {"items": items}}), 200)

    def create(request: Request) -> Response:
        pid = len(persons) + 1
        persons[pid] = request.json
        if pid == 1:
            time.sleep(1.0)  # created; the answer comes too late
        return Response(json.dumps({"success": True, "data": {"id": pid}}), 201)

    httpserver.expect_request("/v1/persons/search").respond_with_handler(search)
    httpserver.expect_request("/v1/persons", method="POST").respond_with_handler(create)
    httpserver.expect_request("/v1/persons/1", method="PUT").respond_with_json(
        {"success": True, "data": {"id": 1}}
    )
    assert get_connector(pipedrive).upsert(lead) == Upsert("1", created=True)
    wait_for_log(httpserver, 4)
    assert len(persons) == 1
