"""core.db.bulk.insert_all stores exactly what bulk_create would, faster."""

from datetime import UTC, datetime

import pytest
from django.db import IntegrityError, connection, transaction
from django.forms.models import model_to_dict

from core.db.bulk import insert_all
from leads.models import IdempotencyRecord, Lead

pytestmark = pytest.mark.django_db

AT = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


def _leads(source, tag):
    return [
        Lead(
            email=f"{tag}{i}@example.com",
            source=source,
            name=f"Ünïcode {i} 'quoted' \"too\"",
            company="" if i % 2 else "Acme",
            extra={"utm": ["a", i], "nested": {"ok": True, "none": None}},
            created_at=AT,
        )
        for i in range(120)  # more than one statement's worth on SQLite
    ]


def _stored(pks):
    rows = {lead.pk: model_to_dict(lead) for lead in Lead.objects.filter(pk__in=pks)}
    out = []
    for pk in pks:
        row = rows[pk]
        for varying in ("id", "email"):
            row.pop(varying)
        out.append(row)
    return out


def test_rows_match_bulk_create_and_every_instance_gets_its_key(web_source):
    ours, django = _leads(web_source, "ours"), _leads(web_source, "orm")
    insert_all(ours)
    Lead.objects.bulk_create(django)
    assert [o.pk for o in ours] == sorted(o.pk for o in ours)  # in order, all set
    assert all(not o._state.adding and o._state.db == "default" for o in ours)
    assert _stored([o.pk for o in ours]) == _stored([o.pk for o in django])
    # auto_now/auto_now_add fields were filled as bulk_create fills them.
    assert all(o.updated_at is not None for o in ours)
    assert Lead.objects.get(pk=ours[3].pk).extra == {
        "utm": ["a", 3],
        "nested": {"ok": True, "none": None},
    }


def test_a_conflict_raises_and_inserts_nothing_of_its_statement(web_source):
    first = IdempotencyRecord(
        source=web_source, key="k1", request_hash="h", status_code=201, response={"a": 1}
    )
    insert_all([first])
    again = [
        IdempotencyRecord(source=web_source, key=k, request_hash="h", status_code=201, response={})
        for k in ("k2", "k1")
    ]
    with pytest.raises(IntegrityError), transaction.atomic():
        insert_all(again)
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["k1"]
    assert IdempotencyRecord.objects.get(key="k1").response == {"a": 1}


def test_nothing_to_insert_runs_no_statement():
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        insert_all([])
    assert len(queries) == 0
