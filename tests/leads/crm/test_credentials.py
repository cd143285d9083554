"""Issue 11: a connection cannot name the application's own secrets as its credentials."""

import json

import pytest
from django.core.exceptions import ValidationError
from django.db import connection as db
from django.utils import timezone

from audit.models import AuditEvent
from leads.crm.models import CrmCall, CrmConnection, CrmRecord
from leads.crm.services import crm_sync_lead

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "name", ["AUDIT_SIGNING_KEY", "SECRET_KEY", "DATABASE_URL", "PGPASSWORD", "DJANGO_X", "HOME"]
)
def test_a_connection_naming_a_refused_variable_does_not_validate(name):
    conn = CrmConnection(
        name="hs", kind="hubspot", base_url="https://evil.example", credentials={"token_env": name}
    )
    with pytest.raises(ValidationError) as info:
        conn.full_clean()
    message = info.value.message_dict["credentials"][0]
    assert message.startswith(
        f"credentials['token_env']: environment variable {name} may not be used as a credential"
    )
    assert "CREDENTIAL_ENV_PREFIXES" in message


def test_a_connection_naming_an_allowed_variable_validates():
    CrmConnection(
        name="hs", kind="hubspot", credentials={"token_env": "HUBSPOT_TOKEN"}
    ).full_clean()


def _plant(httpserver, name: str) -> CrmConnection:
    """A connection written past the validators, as an attacker with SQL access would."""
    with db.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {CrmConnection._meta.db_table} "
            "(name, kind, base_url, field_mapping, credentials, options, active, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                "planted",
                "hubspot",
                httpserver.url_for("").rstrip("/"),
                "{}",
                json.dumps({"token_env": name}),
                json.dumps({"max_attempts": 1}),
                True,
                timezone.now(),
            ],
        )
    return CrmConnection.objects.get(name="planted")


def test_a_planted_connection_cannot_send_the_audit_key(httpserver, lead, monkeypatch, settings):
    monkeypatch.setenv("AUDIT_SIGNING_KEY", "the-real-audit-key")
    settings.AUDIT_SIGNING_KEY = "the-real-audit-key"
    planted = _plant(httpserver, "AUDIT_SIGNING_KEY")

    record = crm_sync_lead(lead=lead, connection=planted)

    assert httpserver.log == []
    assert not CrmCall.objects.exists()
    assert record.status == CrmRecord.Status.NEEDS_ATTENTION
    assert record.last_error.startswith(
        "CrmConfigError: environment variable AUDIT_SIGNING_KEY may not be used as a credential "
        "(the audit trail's signing key); use a variable of its own: names starting with CRM_"
    )
    assert record.last_error.endswith(
        "(the HubSpot private app token for CRM connection 'planted', credentials.token_env)"
    )
    assert "the-real-audit-key" not in record.last_error
    error = AuditEvent.objects.get(event_type="error")
    assert error.error_type == "CrmConfigError"
    assert "the-real-audit-key" not in json.dumps(error.details)


def test_the_admin_shows_credential_names_and_refuses_a_denied_one(admin_client, lead):
    conn = CrmConnection.objects.create(
        name="hs", kind="hubspot", credentials={"token_env": "HUBSPOT_TOKEN"}
    )
    response = admin_client.post(
        f"/admin/crm/crmconnection/{conn.pk}/change/",
        {
            "name": "hs",
            "kind": "hubspot",
            "base_url": "https://evil.example",
            "field_mapping": "{}",
            "credentials": json.dumps({"token_env": "SECRET_KEY"}),
            "options": "{}",
            "active": "on",
            "created_at_0": "2026-01-01",
            "created_at_1": "00:00:00",
        },
    )
    assert response.status_code == 200
    assert b"environment variable SECRET_KEY may not be used as a credential" in response.content
    conn.refresh_from_db()
    assert conn.credentials == {"token_env": "HUBSPOT_TOKEN"}
