"""Salesforce against a loopback server playing its REST API and OAuth token endpoint."""

from urllib.parse import parse_qs

import pytest

from leads.crm.base import CrmConfigError, CrmError, Upsert
from leads.crm.models import CrmCall
from leads.crm.registry import get_connector

pytestmark = pytest.mark.django_db

UPSERT = "/services/data/v62.0/sobjects/Lead/Orchestrator_Id__c/LEAD-{pk:06d}"
TOKEN = "/services/oauth2/token"
FIELDS = {
    "FirstName": "Ada",
    "LastName": "Lovelace",
    "Email": "ada@example.com",
    "Company": "Analytical Engines",
    "Phone": "+44 20 7946 0000",
    "Title": "CTO",
    "Country": "GB",
}
CREDENTIALS = {
    "client_id_env": "SALESFORCE_TEST_CLIENT_ID",
    "client_secret_env": "SALESFORCE_TEST_CLIENT_SECRET",
    "refresh_token_env": "SALESFORCE_TEST_REFRESH_TOKEN",
    "access_token_env": "SALESFORCE_TEST_ACCESS_TOKEN",
}


@pytest.fixture
def salesforce(connect, monkeypatch):
    monkeypatch.setenv("SALESFORCE_TEST_CLIENT_ID", "3MVG9-client")
    monkeypatch.setenv("SALESFORCE_TEST_CLIENT_SECRET", "client-secret")
    monkeypatch.setenv("SALESFORCE_TEST_REFRESH_TOKEN", "5Aep-refresh")
    monkeypatch.setenv("SALESFORCE_TEST_ACCESS_TOKEN", "00D-old")
    return connect("salesforce", credentials=CREDENTIALS)


def token_response(httpserver, token="00D-new"):
    return {
        "access_token": token,
        "instance_url": httpserver.url_for("").rstrip("/"),
        "token_type": "Bearer",
        "issued_at": "1700000000000",
    }


def test_upsert_by_external_id_creates_the_lead(httpserver, salesforce, lead):
    httpserver.expect_request(
        UPSERT.format(pk=lead.pk),
        method="PATCH",
        headers={"Authorization": "Bearer 00D-old", "Content-Type": "application/json"},
        json=FIELDS,
    ).respond_with_json(
        {"id": "00Q5e000001AbCd", "success": True, "errors": [], "created": True}, status=201
    )
    assert get_connector(salesforce).upsert(lead) == Upsert("00Q5e000001AbCd", created=True)


def test_upsert_of_an_existing_lead_is_an_update(httpserver, salesforce, lead):
    httpserver.expect_request(UPSERT.format(pk=lead.pk), method="PATCH").respond_with_json(
        {"id": "00Q5e000001AbCd", "success": True, "errors": [], "created": False}
    )
    assert get_connector(salesforce).upsert(lead) == Upsert("00Q5e000001AbCd", created=False)


def test_a_204_upsert_reads_the_id_back(httpserver, salesforce, lead):
    path = UPSERT.format(pk=lead.pk)
    httpserver.expect_ordered_request(path, method="PATCH").respond_with_data("", status=204)
    httpserver.expect_ordered_request(
        path, method="GET", query_string={"fields": "Id"}
    ).respond_with_json({"attributes": {"type": "Lead"}, "Id": "00Q1"})
    assert get_connector(salesforce).upsert(lead) == Upsert("00Q1", created=False)


def test_update_patches_the_record_id(httpserver, salesforce, lead):
    httpserver.expect_request(
        "/services/data/v62.0/sobjects/Lead/00Q1",
        method="PATCH",
        headers={"Authorization": "Bearer 00D-old"},
        json=FIELDS,
    ).respond_with_data("", status=204)
    get_connector(salesforce).update("00Q1", lead)


def test_a_401_refreshes_the_token_once_and_retries(httpserver, salesforce, lead, waits):
    path = UPSERT.format(pk=lead.pk)
    httpserver.expect_ordered_request(
        path, method="PATCH", headers={"Authorization": "Bearer 00D-old"}
    ).respond_with_json(
        [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], status=401
    )
    httpserver.expect_ordered_request(TOKEN, method="POST").respond_with_json(
        token_response(httpserver)
    )
    httpserver.expect_ordered_request(
        path, method="PATCH", headers={"Authorization": "Bearer 00D-new"}, json=FIELDS
    ).respond_with_json({"id": "00Q1", "success": True, "errors": [], "created": True}, 201)

    connector = get_connector(salesforce)
    assert connector.upsert(lead) == Upsert("00Q1", created=True)
    token_request = httpserver.log[1][0]
    assert token_request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "Authorization" not in token_request.headers
    assert parse_qs(token_request.get_data(as_text=True)) == {
        "grant_type": ["refresh_token"],
        "client_id": ["3MVG9-client"],
        "client_secret": ["client-secret"],
        "refresh_token": ["5Aep-refresh"],
    }
    assert waits == []  # a refresh is not a backoff
    assert list(CrmCall.objects.order_by("pk").values_list("operation", "outcome")) == [
        ("upsert", "retry"),
        ("token", "ok"),
        ("upsert", "ok"),
    ]
    # The next connector of this process starts with the new token.
    assert get_connector(salesforce).session.headers["Authorization"] == "Bearer 00D-new"


def test_without_an_access_token_it_refreshes_first(httpserver, salesforce, lead, monkeypatch):
    salesforce.credentials = {k: v for k, v in CREDENTIALS.items() if k != "access_token_env"}
    httpserver.expect_ordered_request(TOKEN, method="POST").respond_with_json(
        token_response(httpserver, "00D-first")
    )
    httpserver.expect_ordered_request(
        "/services/data/v62.0/sobjects/Lead/00Q1",
        method="PATCH",
        headers={"Authorization": "Bearer 00D-first"},
    ).respond_with_data("", status=204)
    get_connector(salesforce).update("00Q1", lead)


def test_a_rejected_refresh_token_is_permanent(httpserver, salesforce, lead):
    httpserver.expect_ordered_request(UPSERT.format(pk=lead.pk), method="PATCH").respond_with_json(
        [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], status=401
    )
    httpserver.expect_ordered_request(TOKEN, method="POST").respond_with_json(
        {"error": "invalid_grant", "error_description": "expired access/refresh token"}, status=400
    )
    with pytest.raises(CrmConfigError, match="invalid_grant") as info:
        get_connector(salesforce).upsert(lead)
    assert info.value.permanent


def test_a_400_validation_error_is_permanent(httpserver, salesforce, lead, waits):
    httpserver.expect_request(UPSERT.format(pk=lead.pk), method="PATCH").respond_with_json(
        [
            {
                "message": "Required fields are missing: [Company]",
                "errorCode": "REQUIRED_FIELD_MISSING",
                "fields": ["Company"],
            }
        ],
        status=400,
    )
    with pytest.raises(CrmError, match="REQUIRED_FIELD_MISSING") as info:
        get_connector(salesforce).upsert(lead)
    assert info.value.permanent and waits == []


def test_a_503_then_success_reuses_the_idempotent_upsert(httpserver, salesforce, lead, waits):
    path = UPSERT.format(pk=lead.pk)
    httpserver.expect_oneshot_request(path, method="PATCH").respond_with_json(
        [{"message": "Server unavailable", "errorCode": "SERVER_UNAVAILABLE"}],
        status=503,
        headers={"Retry-After": "1"},
    )
    httpserver.expect_request(path, method="PATCH").respond_with_json(
        {"id": "00Q1", "success": True, "errors": [], "created": False}
    )
    # The first attempt may have created it before failing: still "created".
    assert get_connector(salesforce).upsert(lead) == Upsert("00Q1", created=True)
    assert waits == [1.0]


def test_missing_client_secret_names_the_variable(salesforce, monkeypatch):
    monkeypatch.delenv("SALESFORCE_TEST_CLIENT_SECRET")
    with pytest.raises(CrmConfigError, match="SALESFORCE_TEST_CLIENT_SECRET is not set"):
        get_connector(salesforce)
