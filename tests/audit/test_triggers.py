"""The database itself refuses changes to audit rows (PostgreSQL)."""

import json
import uuid

import psycopg
import pytest
from django.db import DatabaseError, connection, transaction

from audit.models import AuditEvent
from audit.services import record_event

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="triggers exist on PostgreSQL only; .ci/run runs this file there",
)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditevent SET details = '{}'::jsonb",
        "DELETE FROM audit_auditevent",
        "UPDATE audit_auditseal SET digest = 'x'",
        "DELETE FROM audit_auditseal",
    ],
)
def test_raw_update_and_delete_are_rejected(sql):
    from audit.integrity import seal_all

    record_event(event_type="lead_ingested", details={"a": 1})
    seal_all()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql)
    assert AuditEvent.objects.get().details == {"a": 1}


@pytest.mark.django_db
def test_the_old_prune_variable_no_longer_allows_delete():
    # As the tables' owner (here a superuser) `audit.pruning` would do: the owner can
    # disable the trigger anyway. Non-owners: test_a_second_role_cannot_delete_...
    record_event(event_type="lead_ingested")
    for sql in ["UPDATE audit_auditevent SET actor = 'user:x'", "DELETE FROM audit_auditevent"]:
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute("SET LOCAL audit.allow_prune = 'on'")
            cursor.execute(sql)
    assert AuditEvent.objects.count() == 1


@pytest.fixture
def attacker(transactional_db):
    """A second login role with the privileges an application role has on the audit
    tables (read, insert, update, delete), but not their owner."""
    name = f"attacker_{uuid.uuid4().hex[:8]}"
    tables = "audit_auditevent, audit_auditseal, audit_auditprune"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {name} LOGIN")
        cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {name}")
        cursor.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {name}")
    db = connection.settings_dict
    conn = psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, dbname=db["NAME"], user=name
    )
    yield conn
    conn.close()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP OWNED BY {name}")
        cursor.execute(f"DROP ROLE {name}")


def attack(conn, *statements):
    with conn.transaction(), conn.cursor() as cursor:
        for sql, *params in statements:
            cursor.execute(sql, *params)


@pytest.mark.parametrize(
    "statements",
    [
        [("SET LOCAL audit.allow_prune = 'on'",), ("DELETE FROM audit_auditevent",)],
        [("SET LOCAL audit.pruning = '1'",), ("DELETE FROM audit_auditevent",)],
        [("SELECT set_config('audit.pruning', '1', true)",), ("DELETE FROM audit_auditevent",)],
        [("UPDATE audit_auditevent SET actor = 'user:x'",)],
    ],
)
def test_a_second_role_cannot_delete_events_by_setting_a_variable(attacker, statements):
    sealed = record_event(event_type="lead_ingested")
    from audit.integrity import seal_all

    seal_all()
    unsealed = record_event(event_type="lead_qualified")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        attack(attacker, *statements)
    assert set(AuditEvent.objects.values_list("id", flat=True)) == {sealed.pk, unsealed.pk}


def test_the_prune_function_deletes_no_unsealed_event_and_a_forged_record_shows(attacker):
    from audit.integrity import seal_all, verify

    sealed = record_event(event_type="lead_ingested")
    seal_all()
    unsealed = record_event(event_type="lead_qualified")
    forge = (
        "INSERT INTO audit_auditprune (run, created_at, before, actor, seal_number, emptied,"
        " pruned, deleted_count, archive_path, archive_sha256, digest) VALUES"
        " (gen_random_uuid(), now(), now(), 'x', 1, false, %s, 1, '', '', 'bogus')"
        " RETURNING id"
    )
    # An unsealed event is in no seal's ranges: the function finds nothing to delete.
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="names 1 events, 0 matched"),
        attacker.transaction(),
        attacker.cursor() as cursor,
    ):
        cursor.execute(forge, [json.dumps([[unsealed.pk, unsealed.mac]])])
        cursor.execute("SELECT audit_prune_seal(%s)", [cursor.fetchone()[0]])
    assert AuditEvent.objects.count() == 2
    # A sealed one can go, but only with a prune record, whose MAC the attacker cannot make.
    with attacker.transaction(), attacker.cursor() as cursor:
        cursor.execute(forge, [json.dumps([[sealed.pk, sealed.mac]])])
        cursor.execute("SELECT audit_prune_seal(%s)", [cursor.fetchone()[0]])
    assert list(AuditEvent.objects.values_list("id", flat=True)) == [unsealed.pk]
    assert "was modified" in verify(anchors=False).first_problem().message
