import hashlib
import io
from datetime import timedelta

import pytest
import time_machine
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from leads.intake.apikeys import (
    KEY_RE,
    ApiKeyError,
    api_key_create,
    api_key_revoke,
    authenticate,
    hash_key,
)
from leads.models import ApiKey, Lead

API_URL = reverse("leads:api-leads")
LEADS_WRITE = ApiKey.Scope.LEADS_WRITE


@pytest.fixture(autouse=True)
def _clear_cache(db):
    # Rate-limit counters live in the database cache, which no test rollback empties.
    cache.clear()


def all_database_text() -> str:
    """Every row of every table, as text: where a leaked key would show up."""
    rows = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            rows.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(rows)


def create_key_by_command(*args: str) -> tuple[str, list[str]]:
    out = io.StringIO()
    call_command("create_api_key", *args, stdout=out, stderr=io.StringIO())
    lines = out.getvalue().splitlines()
    return lines[-1], lines


def test_create_stores_only_a_hash(web_source):
    key, raw = api_key_create(source=web_source, name="site form")
    match = KEY_RE.match(raw)
    assert match is not None
    key.refresh_from_db()
    assert key.prefix == match["prefix"]
    assert key.key_hash == hashlib.sha256(raw.encode()).hexdigest() == hash_key(raw)
    assert key.name == "site form"
    assert key.revoked_at is None and key.last_used_at is None
    text = all_database_text()
    assert key.key_hash in text  # the scan does see the row
    assert raw not in text
    assert match["secret"] not in text


def test_default_name_and_distinct_keys(web_source):
    first, raw1 = api_key_create(source=web_source)
    second, raw2 = api_key_create(source=web_source)
    assert first.name == f"website-{first.prefix}"
    assert raw1 != raw2 and first.prefix != second.prefix


@pytest.mark.parametrize("name", ["two\nlines", "bell\x07", "x" * 101, "tab\there"])
def test_names_that_cannot_name_an_audit_actor_are_refused(web_source, name):
    with pytest.raises(ValueError, match="API key name"):
        api_key_create(source=web_source, name=name)
    assert not ApiKey.objects.exists()


def test_authenticate(web_source):
    key, raw = api_key_create(source=web_source, name="k")
    assert authenticate(f"Bearer {raw}", scope=LEADS_WRITE) == key
    assert authenticate(f"bearer   {raw}  ", scope=LEADS_WRITE) == key
    prefix = KEY_RE.match(raw)["prefix"]
    cases = {
        "": "Authentication required",
        f"Basic {raw}": "Malformed",
        "Bearer": "Malformed",
        "Bearer not-a-key": "Malformed",
        f"Bearer lo_{prefix}_{'A' * 43}": "Unknown API key",  # right prefix, wrong secret
        f"Bearer {raw.replace(prefix, '00000000')}": "Unknown API key",
    }
    for header, message in cases.items():
        with pytest.raises(ApiKeyError, match=message) as exc_info:
            authenticate(header, scope=LEADS_WRITE)
        assert exc_info.value.status == 401, header


def test_revoked_key_is_refused_with_403(web_source):
    key, raw = api_key_create(source=web_source, name="k")
    assert api_key_revoke(key=key, actor="user:admin") is True
    first_revocation = ApiKey.objects.get().revoked_at
    assert first_revocation is not None
    # A second revocation changes nothing.
    assert api_key_revoke(key=key, actor="user:admin") is False
    assert ApiKey.objects.get().revoked_at == first_revocation
    with pytest.raises(ApiKeyError) as exc_info:
        authenticate(f"Bearer {raw}", scope=LEADS_WRITE)
    assert exc_info.value.status == 403


def test_last_used_is_written_at_most_once_a_minute(web_source):
    _, raw = api_key_create(source=web_source, name="k")
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        authenticate(f"Bearer {raw}", scope=LEADS_WRITE)
    assert ApiKey.objects.get().last_used_at == start
    with time_machine.travel(start + timedelta(seconds=50), tick=False):
        authenticate(f"Bearer {raw}", scope=LEADS_WRITE)
    assert ApiKey.objects.get().last_used_at == start
    with time_machine.travel(start + timedelta(seconds=61), tick=False):
        authenticate(f"Bearer {raw}", scope=LEADS_WRITE)
    assert ApiKey.objects.get().last_used_at == start + timedelta(seconds=61)


def test_command_prints_the_key_last_and_the_key_works(client, web_source):
    raw, lines = create_key_by_command("--source", "website", "--name", "landing page")
    assert KEY_RE.match(raw)
    assert "only once" in lines[-2]
    key = ApiKey.objects.get()
    assert key.name == "landing page" and key.source == web_source
    response = client.post(
        API_URL,
        {"email": "ann@example.com"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw}"},
    )
    assert response.status_code == 201
    event = AuditEvent.objects.get(event_type="lead_ingested")
    assert event.actor == "api:landing page"
    assert event.lead_public_id == Lead.objects.get().public_id == response.json()["lead_id"]
    # Neither creating nor using the key left it anywhere in the database.
    text = all_database_text()
    assert raw not in text
    assert raw.split("_", 2)[2] not in text


def test_command_rejects_an_unknown_source(web_source):
    with pytest.raises(CommandError, match=r"'nope'.*website"):
        call_command("create_api_key", "--source", "nope", stdout=io.StringIO())
    assert not ApiKey.objects.exists()


def test_command_needs_a_source():
    with pytest.raises(CommandError, match="--source"):
        call_command("create_api_key", stdout=io.StringIO())


def test_admin_lists_keys_without_hashes_and_revokes(admin_client, web_source):
    key, raw = api_key_create(source=web_source, name="k1")
    other, _ = api_key_create(source=web_source, name="k2")
    changelist = reverse("admin:leads_apikey_changelist")
    page = admin_client.get(changelist).content.decode()
    assert "k1" in page and key.prefix in page
    assert key.key_hash not in page
    detail = admin_client.get(reverse("admin:leads_apikey_change", args=[key.pk]))
    assert detail.status_code == 200
    assert key.key_hash not in detail.content.decode()
    # Keys are made by the command, the only place one is ever shown.
    assert admin_client.get(reverse("admin:leads_apikey_add")).status_code == 403
    response = admin_client.post(
        changelist, {"action": "revoke", "_selected_action": [key.pk]}, follow=True
    )
    assert "Revoked 1 key(s)." in response.content.decode()
    key.refresh_from_db()
    other.refresh_from_db()
    assert key.revoked_at is not None and other.revoked_at is None
    with pytest.raises(ApiKeyError):
        authenticate(f"Bearer {raw}", scope=LEADS_WRITE)


def test_other_lead_admin_pages_still_load(admin_client, web_source):
    Lead.objects.create(email="a@example.com", source=web_source)
    assert admin_client.get(reverse("admin:leads_lead_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:leads_leadsource_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:leads_leadsource_add")).status_code == 200


@pytest.mark.django_db
def test_key_creation_and_revocation_are_audited(web_source):
    from leads.intake.apikeys import api_key_create, api_key_revoke

    key, raw = api_key_create(source=web_source, name="site")
    created = AuditEvent.objects.get(event_type="api_key_created")
    assert created.details == {
        "key": "site",
        "prefix": key.prefix,
        "source": web_source.slug,
        "scopes": ["leads:write"],
    }
    assert raw not in str(created.details)
    assert api_key_revoke(key=key, actor="user:admin")
    revoked = AuditEvent.objects.get(event_type="api_key_revoked")
    assert revoked.actor == "user:admin"
    assert not api_key_revoke(key=key, actor="user:admin")
    assert AuditEvent.objects.filter(event_type="api_key_revoked").count() == 1


# --- Scopes ------------------------------------------------------------------------------


def test_a_key_without_leads_write_is_refused_by_the_lead_api(client, web_source):
    _, raw = api_key_create(source=web_source, name="reader", scopes=["events:read"])
    response = client.post(
        API_URL,
        {"email": "ann@example.com"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw}"},
    )
    assert response.status_code == 403
    assert response.json() == {
        "errors": {"non_field_errors": ["This API key does not have the 'leads:write' scope."]}
    }
    assert not Lead.objects.exists()
    # Refused before it counts as used.
    assert ApiKey.objects.get().last_used_at is None


def test_scopes_are_stored_sorted_and_checked_exactly(web_source):
    key, raw = api_key_create(name="siem", scopes=["events:write", "events:read", "events:write"])
    key.refresh_from_db()
    assert key.scopes == "events:read,events:write" and key.source is None
    assert key.name == "siem"
    assert authenticate(f"Bearer {raw}", scope="events:read") == key
    for scope in ("leads:write", "events", "read"):
        with pytest.raises(ApiKeyError, match="scope") as exc_info:
            authenticate(f"Bearer {raw}", scope=scope)
        assert exc_info.value.status == 403


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scopes": []}, "at least one scope"),
        ({"scopes": ["events:delete"]}, "unknown API key scope 'events:delete'"),
        ({"scopes": ["leads:write"]}, "needs a source"),
        ({}, "needs a source"),  # leads:write is the default
    ],
)
def test_bad_scopes_are_refused(db, kwargs, message):
    with pytest.raises(ValueError, match=message):
        api_key_create(name="k", **kwargs)
    assert not ApiKey.objects.exists()


def test_the_database_refuses_a_leads_key_without_source(web_source):
    from django.db import IntegrityError, transaction

    key, _ = api_key_create(source=web_source, name="k")
    with pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.filter(pk=key.pk).update(source=None)
    events_key, _ = api_key_create(name="e", scopes=["events:read"])
    with pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.filter(pk=events_key.pk).update(scopes="events:read,leads:write")
    with pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.filter(pk=events_key.pk).update(scopes="")


def test_command_creates_an_events_key_without_source(db):
    raw, lines = create_key_by_command(
        "--scope", "events:read", "--scope", "events:write", "--name", "siem"
    )
    key = ApiKey.objects.get()
    assert key.source is None and key.scope_list == ["events:read", "events:write"]
    assert "events:read, events:write" in lines[-2]
    assert authenticate(f"Bearer {raw}", scope="events:write") == key
    created = AuditEvent.objects.get(event_type="api_key_created")
    assert created.details["scopes"] == ["events:read", "events:write"]
    assert created.details["source"] is None


def test_command_default_scope_is_leads_write(web_source):
    raw, _ = create_key_by_command("--source", "website")
    assert ApiKey.objects.get().scope_list == ["leads:write"]
    with pytest.raises(ApiKeyError):
        authenticate(f"Bearer {raw}", scope="events:read")


def test_command_refuses_an_unknown_scope_and_a_leads_key_without_source(db):
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("create_api_key", "--scope", "admin", stdout=io.StringIO())
    with pytest.raises(CommandError, match="--source"):
        call_command(
            "create_api_key",
            "--scope",
            "events:read",
            "--scope",
            "leads:write",
            stdout=io.StringIO(),
        )
    assert not ApiKey.objects.exists()


def test_admin_shows_scopes_of_a_key_without_source(admin_client):
    key, _ = api_key_create(name="siem", scopes=["events:read"])
    page = admin_client.get(reverse("admin:leads_apikey_changelist")).content.decode()
    assert "events:read" in page
    detail = admin_client.get(reverse("admin:leads_apikey_change", args=[key.pk]))
    assert detail.status_code == 200 and "events:read" in detail.content.decode()
    assert api_key_revoke(key=key, actor="user:admin")
    revoked = AuditEvent.objects.get(event_type="api_key_revoked")
    assert revoked.details["source"] is None
