"""POST /api/v1/events, as a sender and as an attacker would use it."""

import json
import threading
import uuid
from datetime import UTC, datetime

import pytest
import requests
import time_machine
from django.db import DatabaseError

from audit.models import AuditEvent
from audit.services import insert_events
from leads.intake.apikeys import api_key_create, api_key_revoke
from leads.models import ApiKey
from orchestrator.api import views
from tests.orchestrator.api.conftest import (
    EVENTS_URL,
    WRITER,
    auth,
    event,
    jsonl,
    post_events,
)


def stored(**filters):
    return AuditEvent.objects.filter(event_type="lead_ingested", **filters)


def audit_of_requests():
    return list(
        AuditEvent.objects.filter(event_type__startswith="api_")
        .exclude(event_type__startswith="api_key")
        .order_by("id")
    )


def only_error(response) -> str:
    [message] = response.json()["errors"]["non_field_errors"]
    return message


# --- Accepted ---------------------------------------------------------------------------------


def test_json_array_is_stored_and_the_request_audited(client, writer):
    body = [event(1), event(2, event_id="0b6f3c3e-2f7a-4a4e-9d0e-5c1a3b2d4e6f")]
    response = post_events(client, body, writer)
    assert response.status_code == 200
    data = response.json()
    assert data["already_present"] == [] and data["rejected"] == []
    assert data["accepted"][1] == "0b6f3c3e-2f7a-4a4e-9d0e-5c1a3b2d4e6f"
    rows = {str(e.uuid): e for e in stored()}
    assert set(rows) == set(data["accepted"])
    first = rows[data["accepted"][0]]
    assert first.lead_public_id == "LEAD-000001" and first.details == {"n": 1}
    [audit] = audit_of_requests()
    assert audit.event_type == "api_events_written"
    assert audit.actor == f"api:{WRITER}"
    assert audit.details["accepted"] == data["accepted"]
    assert (audit.details["already_present"], audit.details["rejected"]) == (0, 0)
    # Events that bring no correlation id get the request's: found with its audit event.
    assert first.correlation_id == audit.correlation_id


@pytest.mark.parametrize("content_type", ["application/x-ndjson", "application/jsonl"])
def test_json_lines_with_blank_lines_and_crlf(client, writer, content_type):
    body = jsonl(event(1), b"", b"   ", event(2)).replace(b"\n", b"\r\n") + b"\r\n"
    response = post_events(client, body, writer, content_type=content_type)
    assert response.status_code == 200, response.content
    assert len(response.json()["accepted"]) == 2
    assert stored().count() == 2


def test_a_mix_of_good_and_bad_lines_says_which_and_why(client, writer):
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    body = jsonl(
        event(0),  # 0
        b"",  # 1: blank, skipped but counted
        b"{nope",  # 2
        event(3, event_type="nope_type"),  # 3
        {"event_type": "lead_ingested"},  # 4
        event(5, timestamp="2026-12-01T10:00:00"),  # 5
        event(6, details={"a": "\x00"}),  # 6
        b'{"timestamp": "\xff"}',  # 7
        b"[1]",  # 8
        event(9, timestamp="0001-01-01T00:00:00+05:00"),  # 9
        event(10, details={"a": deep}),  # 10
        event(11, lead_id="x\ud800"),  # 11
        event(12, event_id="-" * 36),  # 12
        event(13, actor="root"),  # 13
        b'{"timestamp": "2026-12-01T10:00:00Z", "event_type": "x1", "details": {"n": NaN}}',  # 14
        event(15, lead_id="L" * 33),  # 15
        event(16, details={"k\x00": 1}),  # 16: a NUL in a key, quoted in the reason
        event(17),  # 17
    )
    response = post_events(client, body, writer, content_type="application/x-ndjson")
    assert response.status_code == 200
    data = response.json()
    reasons = {r["index"]: r["reason"] for r in data["rejected"]}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    assert reasons[2].startswith("not valid JSON (Expecting property name")
    assert reasons[3].startswith("unknown audit event type 'nope_type'")
    assert reasons[4] == "line: 'timestamp' is a required property"
    assert reasons[5] == "timestamp: timestamp '2026-12-01T10:00:00' has no time zone"
    assert reasons[6] == "details/a: contains a NUL character or invalid Unicode"
    assert reasons[7] == "not UTF-8 (invalid start byte)"
    assert reasons[8] == "line: list is not an object"
    assert reasons[9] == "timestamp: out of range"
    assert reasons[10].endswith("nested more than 32 levels deep")
    assert reasons[11] == "lead_id: contains a NUL character or invalid Unicode"
    assert reasons[12] == "event_id: badly formed hexadecimal UUID string"
    assert reasons[13].startswith("actor 'root' must be")
    assert reasons[14] == "not valid JSON (NaN is not valid JSON)"
    assert reasons[15] == "lead_id: '" + "L" * 33 + "' is too long"
    assert reasons[16] == "details/k\\x00: contains a NUL character or invalid Unicode"
    # The good lines, and only they, are stored.
    assert len(data["accepted"]) == 2
    assert sorted(stored().values_list("lead_public_id", flat=True)) == [
        "LEAD-000000",
        "LEAD-000017",
    ]
    [audit] = audit_of_requests()
    assert audit.details["rejected"] == 15
    assert audit.details["rejections"][0] == data["rejected"][0]


def test_a_huge_value_is_quoted_short(client, writer):
    response = post_events(client, [event(1, lead_id="L" * 100_000)], writer)
    [rejected] = response.json()["rejected"]
    assert rejected["reason"].startswith("lead_id: 'LLL") and len(rejected["reason"]) == 500
    assert audit_of_requests()[0].details["rejections"] == [rejected]


def test_array_indexes_are_positions(client, writer):
    response = post_events(client, [event(0), "text", event(2, event_type="??")], writer)
    assert response.status_code == 200
    assert [r["index"] for r in response.json()["rejected"]] == [1, 2]


def test_a_repeated_post_stores_nothing_twice(client, writer):
    body = jsonl(event(1), {k: v for k, v in event(2).items() if k != "actor"})
    first = post_events(client, body, writer, content_type="application/x-ndjson").json()
    second = post_events(client, body, writer, content_type="application/x-ndjson").json()
    assert len(first["accepted"]) == 2
    # Lines without event_id get the same id from the same content.
    assert second == {"accepted": [], "already_present": first["accepted"], "rejected": []}
    assert stored().count() == 2
    assert [a.details["already_present"] for a in audit_of_requests()] == [0, 2]


def test_an_id_twice_in_one_request_is_stored_once(client, writer):
    same = event(1, event_id=str(uuid.uuid4()))
    response = post_events(client, [same, same, {**same, "details": {"other": 1}}], writer)
    assert response.json() == {
        "accepted": [same["event_id"]],
        "already_present": [same["event_id"]] * 2,
        "rejected": [],
    }
    assert stored().count() == 1


def test_an_empty_batch_is_answered_and_audited(client, writer):
    response = post_events(client, [], writer)
    assert response.json() == {"accepted": [], "already_present": [], "rejected": []}
    assert [a.event_type for a in audit_of_requests()] == ["api_events_written"]


# --- Refused ----------------------------------------------------------------------------------


def test_no_key_or_a_bad_key_is_401(client, writer):
    for headers in ({}, {"Authorization": "Basic abc"}, auth("lo_00000000_" + "A" * 43)):
        response = post_events(client, [event(1)], **headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="events"'
        assert set(response.json()) == {"errors"}
    assert not stored().exists() and audit_of_requests() == []


def test_wrong_scope_is_403(client, reader, web_source):
    _, leads_key = api_key_create(source=web_source, name="form")
    for raw in (reader, leads_key):
        response = post_events(client, [event(1)], raw)
        assert response.status_code == 403
        assert only_error(response) == "This API key does not have the 'events:write' scope."
    assert not stored().exists()
    # Nothing was let in, so nothing is audited for the request.
    assert audit_of_requests() == []


def test_a_revoked_key_is_403(client, writer):
    api_key_revoke(key=ApiKey.objects.get(name=WRITER), actor="user:admin")
    response = post_events(client, [event(1)], writer)
    assert response.status_code == 403
    assert only_error(response) == "This API key has been revoked."
    assert not stored().exists()


def test_too_many_bytes_is_413_before_parsing(client, writer, settings):
    settings.EVENTS_API_MAX_BYTES = 300
    body = json.dumps([event(1)]).encode()
    padded = body[:-1] + b" " * (300 - len(body)) + b"]"
    assert len(padded) == 300
    assert post_events(client, padded, writer).status_code == 200
    response = post_events(client, padded + b" ", writer)
    assert response.status_code == 413
    assert only_error(response) == "The request body is larger than 300 bytes."
    # Not even its valid event is kept.
    assert stored().count() == 1
    assert audit_of_requests()[-1].event_type == "api_request_refused"
    assert audit_of_requests()[-1].details["status"] == 413


def test_more_than_the_body_says_is_never_read(client, writer, settings):
    # A Content-Length that understates the body: only that many bytes are read.
    settings.EVENTS_API_MAX_BYTES = 1000
    body = json.dumps([event(1)]).encode()
    response = client.generic(
        "POST",
        EVENTS_URL,
        body + b" " * 5000,
        content_type="application/json",
        headers=auth(writer),
        CONTENT_LENGTH=str(len(body)),
    )
    assert response.status_code == 200
    assert len(response.json()["accepted"]) == 1


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_too_many_events_is_413(client, writer, settings, content_type):
    settings.EVENTS_API_MAX_EVENTS = 3
    events = [event(i) for i in range(4)]
    body = json.dumps(events) if content_type == "application/json" else jsonl(*events)
    response = post_events(client, body, writer, content_type=content_type)
    assert response.status_code == 413
    assert only_error(response) == "4 events in one request; send at most 3."
    assert not stored().exists()
    # Blank lines are not events.
    ok = jsonl(*events[:3], b"", b"")
    assert post_events(client, ok, writer, content_type="application/x-ndjson").status_code == 200


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""]
)
def test_wrong_content_type_is_415(client, writer, content_type):
    response = post_events(client, json.dumps([event(1)]), writer, content_type=content_type)
    assert response.status_code == 415
    assert "application/x-ndjson" in only_error(response)
    assert not stored().exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b" ", "Malformed JSON: Expecting value: line 1 column 2 (char 1)"),
        (b"[1,", "Malformed JSON: Expecting value: line 1 column 4 (char 3)"),
        (b'{"events": []}', "Expected a JSON array of events, not dict."),
        (b"[NaN]", "Malformed JSON: NaN is not valid JSON"),
        (b"[1e999]", "Malformed JSON: number 1e999 is out of range"),
        (b"\xff\xfe[", None),
        (b"[" * 100_000 + b"]" * 100_000, "Malformed JSON: nested too deeply."),
    ],
)
def test_a_body_that_is_not_a_json_array_is_400(client, writer, body, message):
    response = post_events(client, body, writer)
    assert response.status_code == 400
    if message:
        assert only_error(response) == message
    assert not stored().exists()


def test_other_methods_are_405(client, writer):
    response = client.put(EVENTS_URL, "[]", content_type="application/json", headers=auth(writer))
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"
    assert set(response.json()) == {"errors"}


def test_rate_limited_per_key_with_retry_after(client, writer, settings):
    settings.EVENTS_API_RATE = "2/m"
    with time_machine.travel(datetime(2026, 5, 4, 10, 0, 17, tzinfo=UTC), tick=False) as clock:
        assert post_events(client, [], writer).status_code == 200
        assert post_events(client, [], writer).status_code == 200
        response = post_events(client, [event(1)], writer)
        assert response.status_code == 429
        wait = int(response.headers["Retry-After"])
        assert f"retry in {wait} seconds" in only_error(response)
        assert not stored().exists()
        # A refusal for being too fast is not audited: that would be the flood itself.
        assert len(audit_of_requests()) == 2
        clock.shift(wait)
        assert post_events(client, [event(1)], writer).status_code == 200


# --- Transactions and concurrency ---------------------------------------------------------


def test_events_and_their_audit_event_commit_together(client, writer, monkeypatch):
    def refuse(**kwargs):
        raise DatabaseError("disk full")

    monkeypatch.setattr(views, "record_event", refuse)
    response = post_events(client, [event(1), event(2)], writer)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert "nothing was stored" in only_error(response)
    # The events were inserted before the audit event failed; none is kept.
    assert not stored().exists()


def test_a_conflicting_insert_is_retried_as_already_present(client, writer, monkeypatch):
    """Another request stores an event between this one's check and its insert."""
    first = post_events(client, [event(1)], writer).json()["accepted"]
    real_save_new = views.save_new
    calls = []

    def stale_check_then_insert(events):
        calls.append(len(events))
        if len(calls) == 1:
            # As if the existence check ran before the other request committed.
            return insert_events(events), set()
        return real_save_new(events)

    monkeypatch.setattr(views, "save_new", stale_check_then_insert)
    response = post_events(client, [event(1), event(2)], writer)
    assert response.status_code == 200
    data = response.json()
    assert data["already_present"] == first and len(data["accepted"]) == 1
    assert calls == [2, 2]
    assert stored().count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_posts_store_each_event_once(live_server):
    _, raw = api_key_create(name="siem", scopes=["events:write"])
    body = jsonl(*[event(i) for i in range(50)])
    start = threading.Barrier(8)
    results: list[tuple[int, dict]] = []
    errors: list[BaseException] = []

    def send() -> None:
        try:
            start.wait(timeout=30)
            r = requests.post(
                live_server.url + EVENTS_URL,
                data=body,
                headers={**auth(raw), "Content-Type": "application/x-ndjson"},
                timeout=60,
            )
            results.append((r.status_code, r.json()))
        except BaseException as exc:  # noqa: BLE001 (reported to the test thread)
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [status for status, _ in results] == [200] * 8, results
    accepted = [i for _, data in results for i in data["accepted"]]
    # Every event accepted by exactly one request, already present for the others.
    assert len(accepted) == len(set(accepted)) == 50
    for _, data in results:
        assert sorted(data["accepted"] + data["already_present"]) == sorted(accepted)
    assert stored().count() == 50
    assert AuditEvent.objects.filter(event_type="api_events_written").count() == 8


def refuse_writes(on: bool) -> None:
    """The database refuses writes, as on a full disk or a read-only replica."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"PRAGMA query_only = {'ON' if on else 'OFF'}")
        else:
            cursor.execute(f"SET default_transaction_read_only = {'on' if on else 'off'}")


@pytest.mark.django_db(transaction=True)
def test_a_database_refusing_writes_is_a_json_503_for_writes_and_reads(client):
    _, raw = api_key_create(name="siem", scopes=["events:write", "events:read"])
    # Used once, so authentication itself writes nothing for a minute.
    assert post_events(client, [], raw).status_code == 200
    refuse_writes(True)
    try:
        wrote = post_events(client, [event(1)], raw)
        read = client.get(EVENTS_URL, headers=auth(raw))
    finally:
        refuse_writes(False)
    assert wrote.status_code == 503 and wrote.headers["Retry-After"] == "30"
    assert only_error(wrote).endswith("; nothing was stored. Retry later.")
    # A read that cannot be audited is not answered either.
    assert read.status_code == 503 and "nothing was stored" not in only_error(read)
    assert not stored().exists()
    assert post_events(client, [event(1)], raw).json()["accepted"]
