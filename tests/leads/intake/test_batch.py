"""POST /api/v1/leads/batch: many leads in one request, a result per lead."""

import json
import threading
from datetime import UTC, datetime

import pytest
import requests
import time_machine
from django.core.cache import cache
from django.db import DatabaseError
from django.urls import reverse

from audit.integrity import seal_all, verify
from audit.models import AuditEvent
from leads.intake.apikeys import api_key_create, api_key_revoke
from leads.models import IdempotencyRecord, Lead

BATCH_URL = reverse("leads:api-leads-batch")
API_URL = reverse("leads:api-leads")
KEY_NAME = "crm import"
START = datetime(2026, 5, 4, 10, 0, 17, tzinfo=UTC)
NOT_AN_ADDRESS = "'not an address' is not a valid email address."


@pytest.fixture(autouse=True)
def _clear_cache(db):
    cache.clear()  # rate-limit counters live in the database cache


@pytest.fixture
def api_key(web_source):
    return api_key_create(source=web_source, name=KEY_NAME)


@pytest.fixture
def raw_key(api_key):
    return api_key[1]


def post_batch(client, body, raw_key, *, content_type="application/json"):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(
        BATCH_URL, data, content_type=content_type, headers={"Authorization": f"Bearer {raw_key}"}
    )


def items(*leads, keys=None):
    out = []
    for i, lead in enumerate(leads):
        item = {"lead": lead}
        if keys and keys[i] is not None:
            item["idempotency_key"] = keys[i]
        out.append(item)
    return {"leads": out}


def ingested():
    return list(AuditEvent.objects.filter(event_type="lead_ingested").order_by("id"))


def test_a_batch_stores_each_lead_with_its_event_and_answers_per_item(client, raw_key):
    earlier = client.post(
        API_URL,
        json.dumps({"email": "old@example.com"}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw_key}"},
    ).json()["lead_id"]
    response = post_batch(
        client,
        items(
            {"email": " Ann@Example.com ", "name": "Ann", "budget": 5},
            {"email": "bob@example.com"},
            {"email": "not an address", "name": "Nobody"},
            {"email": "ann@example.com", "company": "Acme"},  # repeats item 0
            {"email": "old@example.com", "name": "Olga"},  # repeats a stored lead
        ),
        raw_key,
    )
    assert response.status_code == 200
    body = response.json()
    ann = Lead.objects.get(email="ann@example.com")
    bob = Lead.objects.get(email="bob@example.com")
    assert body["results"] == [
        {"index": 0, "status": 201, "lead_id": ann.public_id, "duplicate": False},
        {"index": 1, "status": 201, "lead_id": bob.public_id, "duplicate": False},
        {"index": 2, "status": 400, "errors": {"email": [NOT_AN_ADDRESS]}},
        {"index": 3, "status": 200, "lead_id": ann.public_id, "duplicate": True},
        {"index": 4, "status": 200, "lead_id": earlier, "duplicate": True},
    ]  # fmt: skip
    assert (body["created"], body["duplicates"], body["failed"]) == (2, 2, 1)
    # The repeat filled what the first copy left empty; the stored lead got its name.
    assert (ann.name, ann.company, ann.extra) == ("Ann", "Acme", {"budget": 5})
    assert Lead.objects.get(public_id=earlier).name == "Olga"
    assert Lead.objects.count() == 3
    events = ingested()[1:]  # after the single request's
    assert [(e.lead_public_id, e.details["duplicate"]) for e in events] == [
        (ann.public_id, False),
        (bob.public_id, False),
        (ann.public_id, True),
        (earlier, True),
    ]
    assert events[2].details["merged_fields"] == ["company"]
    assert events[3].details["merged_fields"] == ["name"]
    assert all(e.actor == f"api:{KEY_NAME}" for e in events)
    # One request, one correlation id; the events are MAC'd like any other.
    assert len({e.correlation_id for e in events}) == 1
    seal_all()
    assert verify(anchors=False).ok


def test_resending_a_batch_replays_each_item_and_stores_nothing_new(client, raw_key):
    batch = items({"email": "a@example.com"}, {"email": "b@example.com"}, keys=["k-a", "k-b"])
    first = post_batch(client, batch, raw_key).json()
    again = post_batch(client, batch, raw_key).json()
    assert [r | {"replayed": True} for r in first["results"]] == again["results"]
    assert (again["created"], again["replayed"]) == (0, 2)
    assert Lead.objects.count() == 2
    assert len(ingested()) == 2
    assert IdempotencyRecord.objects.count() == 2


def test_a_key_reused_with_another_lead_is_refused_for_that_item_only(client, raw_key):
    post_batch(client, items({"email": "a@example.com"}, keys=["k-a"]), raw_key)
    response = post_batch(
        client,
        items({"email": "other@example.com"}, {"email": "c@example.com"}, keys=["k-a", "k-c"]),
        raw_key,
    )
    results = response.json()["results"]
    assert results[0]["status"] == 422
    assert "different lead" in results[0]["errors"]["idempotency_key"][0]
    assert results[1]["status"] == 201
    assert not Lead.objects.filter(email="other@example.com").exists()


def test_one_key_twice_in_a_batch_is_one_lead(client, raw_key):
    same = {"email": "a@example.com", "name": "A"}
    response = post_batch(
        client, items(same, same, {"email": "z@example.com"}, keys=["k", "k", "k"]), raw_key
    )
    results = response.json()["results"]
    assert results[0]["status"] == 201
    assert results[1] == {**results[0], "index": 1, "replayed": True}
    assert results[2]["status"] == 422  # the same key with another lead
    assert Lead.objects.count() == 1
    assert len(ingested()) == 1


def test_keys_are_shared_with_the_one_lead_endpoint(client, raw_key):
    single = client.post(
        API_URL,
        json.dumps({"email": "a@example.com"}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw_key}", "Idempotency-Key": "shared"},
    )
    response = post_batch(client, items({"email": "a@example.com"}, keys=["shared"]), raw_key)
    [result] = response.json()["results"]
    assert result == {"index": 0, "status": 201, **single.json(), "replayed": True}
    assert len(ingested()) == 1


@pytest.mark.parametrize(
    ("body", "status", "where"),
    [
        ("{not json", 400, "non_field_errors"),
        ([], 400, "non_field_errors"),
        ({}, 400, "leads"),
        ({"leads": []}, 400, "leads"),
        ({"leads": "a@example.com"}, 400, "leads"),
        ({"leads": [{"email": "a@example.com"}]}, 400, "leads[0]"),
        ({"leads": [{"lead": {"email": "a@example.com"}, "extra": 1}]}, 400, "leads[0]"),
        ({"leads": [{"lead": {"email": "a@example.com"}}], "dry_run": True}, 400, "dry_run"),
        (
            {"leads": [{"lead": {"email": "a@example.com"}, "idempotency_key": "x" * 256}]},
            400,
            "leads[0].idempotency_key",
        ),
        ({"leads": [{"lead": {"email": "a@example.com"}}] * 501}, 400, "leads"),
    ],
)
def test_a_malformed_batch_is_refused_whole_and_says_where(client, raw_key, body, status, where):
    response = post_batch(client, body, raw_key)
    assert response.status_code == status
    assert where in response.json()["errors"]
    assert Lead.objects.count() == 0
    assert ingested() == []


def test_a_well_formed_item_in_a_malformed_batch_is_not_stored(client, raw_key):
    body = {"leads": [{"lead": {"email": "good@example.com"}}, {"lead": "bad"}]}
    response = post_batch(client, body, raw_key)
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["leads[1]"]
    assert Lead.objects.count() == 0


def test_only_json_and_only_post(client, raw_key):
    form = client.post(BATCH_URL, {"leads": "x"}, headers={"Authorization": f"Bearer {raw_key}"})
    assert form.status_code == 415
    get = client.get(BATCH_URL, headers={"Authorization": f"Bearer {raw_key}"})
    assert get.status_code == 405
    assert get.headers["Allow"] == "POST"


def test_keys_are_checked_as_for_one_lead(client, api_key, web_source):
    key, raw = api_key
    body = items({"email": "a@example.com"})
    assert post_batch(client, body, "lo_00000000_" + "x" * 43).status_code == 401
    nobody = client.post(BATCH_URL, json.dumps(body), content_type="application/json")
    assert nobody.status_code == 401
    assert nobody.headers["WWW-Authenticate"] == 'Bearer realm="leads"'
    web_source.active = False
    web_source.save()
    assert post_batch(client, body, raw).status_code == 403
    web_source.active = True
    web_source.save()
    api_key_revoke(key=key, actor="user:admin")
    assert post_batch(client, body, raw).status_code == 403
    assert Lead.objects.count() == 0


def test_a_batch_spends_the_keys_lead_budget_one_lead_at_a_time(client, raw_key, settings):
    settings.LEADS_API_RATE = "10/m"
    with time_machine.travel(START, tick=False) as clock:
        leads = [{"email": f"a{i}@example.com"} for i in range(12)]
        assert post_batch(client, items(*leads[:6]), raw_key).status_code == 200
        refused = post_batch(client, items(*leads[6:11]), raw_key)  # 6 + 5 > 10
        assert refused.status_code == 429
        assert "limit of 10" in refused.json()["errors"]["non_field_errors"][0]
        assert Lead.objects.count() == 6
        # The refused batch spent nothing: four more fit, then the budget is gone
        # for the one-lead endpoint as well.
        assert post_batch(client, items(*leads[6:10]), raw_key).status_code == 200
        single = client.post(
            API_URL,
            json.dumps(leads[11]),
            content_type="application/json",
            headers={"Authorization": f"Bearer {raw_key}"},
        )
        assert single.status_code == 429
        wait = int(refused.headers["Retry-After"])
        clock.shift(wait)
        assert post_batch(client, items(*leads[10:12]), raw_key).status_code == 200
    assert Lead.objects.count() == 12


def test_a_batch_larger_than_the_whole_budget_says_so(client, raw_key, settings):
    settings.LEADS_API_RATE = "3/m"
    response = post_batch(client, items(*[{"email": f"a{i}@x.com"} for i in range(4)]), raw_key)
    assert response.status_code == 400
    assert "at most 3 every 60 seconds" in response.json()["errors"]["non_field_errors"][0]


@pytest.mark.django_db(transaction=True)
def test_when_the_events_cannot_be_written_no_lead_is_kept(client, raw_key, monkeypatch):
    def refuse(calls):
        raise DatabaseError("disk full")

    monkeypatch.setattr("leads.services.record_events", refuse)
    response = post_batch(client, items({"email": "a@example.com"}, keys=["k"]), raw_key)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert Lead.objects.count() == 0
    assert IdempotencyRecord.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_sharing_keys_store_each_lead_once(live_server, web_source):
    _, raw = api_key_create(source=web_source, name=KEY_NAME)
    leads = [{"email": f"lead{i}@example.com"} for i in range(40)]
    keys = [f"k{i}" for i in range(40)]
    start = threading.Barrier(4)
    answers: list[dict] = []
    errors: list[BaseException] = []

    def send(offset: int) -> None:
        # Overlapping slices: every key is sent by two of the four requests.
        chosen = [(offset + i) % 40 for i in range(20)]
        body = items(*[leads[i] for i in chosen], keys=[keys[i] for i in chosen])
        try:
            start.wait(timeout=30)
            r = requests.post(
                live_server.url + BATCH_URL,
                json=body,
                headers={"Authorization": f"Bearer {raw}"},
                timeout=60,
            )
            assert r.status_code == 200, r.text
            answers.append(r.json())
        except BaseException as exc:  # noqa: BLE001 (reported to the test thread)
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(offset,)) for offset in (0, 10, 20, 30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Lead.objects.count() == 40
    assert IdempotencyRecord.objects.count() == 40
    # Each key made its lead once; its second sending was a replay of the first.
    assert sum(a["created"] for a in answers) == 40
    assert sum(a["replayed"] for a in answers) == 40
    results = [r for answer in answers for r in answer["results"]]
    assert all(r["status"] == 201 for r in results)
    assert len({r["lead_id"] for r in results}) == 40
    assert AuditEvent.objects.filter(event_type="lead_ingested").count() == 40
