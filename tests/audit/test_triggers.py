"""The database itself refuses changes to audit rows (PostgreSQL)."""

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
def test_retention_setting_allows_delete_but_never_update():
    record_event(event_type="lead_ingested")
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("SET LOCAL audit.allow_prune = 'on'")
        cursor.execute("UPDATE audit_auditevent SET actor = 'user:x'")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL audit.allow_prune = 'on'")
        cursor.execute("DELETE FROM audit_auditevent")
    assert AuditEvent.objects.count() == 0
