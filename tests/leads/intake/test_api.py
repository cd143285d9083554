import json
import threading
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
import requests
import time_machine
from django.core.cache import cache
from django.db import connection, transaction
from django.urls import reverse

from audit.models import AuditEvent
from leads.intake.apikeys import api_key_create, api_key_revoke
from leads.models import IdempotencyRecord, Lead, LeadSource
from leads.services import ingest_lead

# A fixed instant, so the rate-limit window (and so Retry-After) is the same every run.
START = datetime(2026, 5, 4, 10, 0, 17, tzinfo=UTC)


def assert_retry_after_is_honest(clock, response, send):
    """Retry-After says when the next request gets through: not a second earlier."""
    wait = int(response.headers["Retry-After"])
    assert f"retry in {wait} seconds" in response.json()["errors"]["non_field_errors"][0]
    clock.shift(wait - 1)
    assert send().status_code == 429
    clock.shift(1)
    assert send().status_code in (200, 201)


API_URL = reverse("leads:api-leads")
FORM_URL = reverse("leads:public-form", args=["website"])
KEY_NAME = "website form"


@pytest.fixture(autouse=True)
def _clear_cache(db):
    # Rate-limit counters live in the database cache, which no test rollback empties.
    cache.clear()


@pytest.fixture
def api_key(web_source):
    return api_key_create(source=web_source, name=KEY_NAME)


@pytest.fixture
def raw_key(api_key):
    return api_key[1]


def post_api(client, body, raw_key=None, *, content_type="application/json", **headers):
    if raw_key:
        headers["Authorization"] = f"Bearer {raw_key}"
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(API_URL, data, content_type=content_type, headers=headers)


def ingested_events():
    return list(AuditEvent.objects.filter(event_type="lead_ingested").order_by("id"))


# --- 201 and 200 -------------------------------------------------------------------


def test_json_lead_is_created_with_its_event(client, raw_key):
    response = post_api(
        client,
        {"email": " Ann@Example.com ", "name": "Ann", "country": "de", "budget": 5000},
        raw_key,
    )
    assert response.status_code == 201
    # Lead and event are in the database as the response arrives.
    lead = Lead.objects.get()
    assert response.json() == {"lead_id": lead.public_id, "duplicate": False}
    assert (lead.email, lead.name, lead.country) == ("ann@example.com", "Ann", "DE")
    assert lead.extra == {"budget": 5000}
    [event] = ingested_events()
    assert event.actor == f"api:{KEY_NAME}"
    assert event.lead_public_id == lead.public_id
    assert event.details["duplicate"] is False
    assert event.details["source"] == "website"


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart"])
def test_form_encoded_bodies(client, raw_key, content_type):
    fields = {"email": "bob@example.com", "name": "Bob", "interests": ["a", "b"]}
    headers = {"Authorization": f"Bearer {raw_key}"}
    if content_type == "multipart":
        response = client.post(API_URL, fields, headers=headers)
    else:
        body = urlencode(fields, doseq=True)
        response = client.post(API_URL, body, content_type=content_type, headers=headers)
    assert response.status_code == 201, response.content
    lead = Lead.objects.get()
    assert (lead.email, lead.name) == ("bob@example.com", "Bob")
    assert lead.extra == {"interests": ["a", "b"]}
    assert ingested_events()[0].actor == f"api:{KEY_NAME}"


def test_duplicate_merges_new_fields_and_says_so(client, raw_key):
    first = post_api(client, {"email": "Ann@Example.com", "name": "Ann"}, raw_key)
    assert first.status_code == 201
    second = post_api(
        client,
        {"email": "ann@example.COM", "name": "Someone Else", "company": "Acme", "plan": "pro"},
        raw_key,
    )
    assert second.status_code == 200
    assert second.json() == {"lead_id": first.json()["lead_id"], "duplicate": True}
    lead = Lead.objects.get()
    # Empty fields are filled, what was there is kept.
    assert (lead.name, lead.company, lead.extra) == ("Ann", "Acme", {"plan": "pro"})
    events = ingested_events()
    assert len(events) == 2
    assert events[1].details["duplicate"] is True
    assert events[1].details["merged_fields"] == ["company", "plan"]
    assert events[1].actor == f"api:{KEY_NAME}"


def test_duplicate_window_is_the_sources(client, raw_key, web_source):
    web_source.dedupe_window_hours = 0
    web_source.save()
    assert post_api(client, {"email": "a@example.com"}, raw_key).status_code == 201
    assert post_api(client, {"email": "a@example.com"}, raw_key).status_code == 201
    assert Lead.objects.count() == 2


# --- 400 -----------------------------------------------------------------------------

TOO_DEEP = {"email": "a@example.com", "x": json.loads("[" * 30 + "]" * 30)}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"email": "not-an-email"}, "email", "is not a valid email address"),
        ({"name": "Ann"}, "email", "This field is required."),
        ({"email": ""}, "email", "This field is required."),
        ({"email": "a@example.com", "name": "x" * 201}, "name", "at most 200 characters"),
        ({"email": "a@example.com", "country": "D1"}, "country", "two-letter"),
        ({"email": "a@example.com", "country": "Germany"}, "country", "at most 2 characters"),
        ({"email": "a@example.com", "name": {"first": "A"}}, "name", "Expected text."),
        ({"email": "a@example.com", "name": "A\x00B"}, "name", "NUL"),
        ('{"email": "a@example.com", "name": "\\ud800"}', "name", "invalid Unicode"),
        ({"email": "a@example.com", "notes": {"k\x00": 1}}, "notes", "NUL"),
        (TOO_DEEP, "x", "Nested more than"),
        ([{"email": "a@example.com"}], "non_field_errors", "Expected a JSON object"),
        ('"just a string"', "non_field_errors", "Expected a JSON object"),
        ('{"email": "a@example.com"', "non_field_errors", "Malformed JSON"),
        (" ", "non_field_errors", "Malformed JSON"),
        (b"\xff\xfe\x00{", "non_field_errors", "Malformed JSON"),
        ('{"email": "a@example.com", "n": NaN}', "non_field_errors", "NaN is not valid JSON"),
        ('{"email": "a@example.com", "n": 1e999}', "non_field_errors", "out of range"),
        ("[" * 60_000, "non_field_errors", "Malformed JSON"),
    ],
)
def test_bad_input_is_a_400_with_messages_per_field(client, raw_key, body, field, message):
    response = post_api(client, body, raw_key)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert field in errors, errors
    assert any(message in text for text in errors[field]), errors
    assert not Lead.objects.exists()
    assert not AuditEvent.objects.exclude(event_type="api_key_created").exists()


def test_several_bad_fields_are_reported_together(client, raw_key):
    response = post_api(client, {"email": "nope", "country": "XYZ", "title": "t" * 300}, raw_key)
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"email", "country", "title"}


def test_bad_form_bodies_are_400s_not_500s(client, raw_key, settings):
    headers = {"Authorization": f"Bearer {raw_key}"}
    # A multipart body without a boundary.
    response = client.post(API_URL, "x", content_type="multipart/form-data", headers=headers)
    assert response.status_code == 400
    assert "Malformed form body" in response.json()["errors"]["non_field_errors"][0]
    # Django's own field-count limit.
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    body = urlencode({f"f{i}": "v" for i in range(10)})
    response = client.post(
        API_URL, body, content_type="application/x-www-form-urlencoded", headers=headers
    )
    assert response.status_code == 400
    assert "errors" in response.json()


def test_file_uploads_are_refused(client, raw_key):
    upload = io_file(b"hello")
    response = client.post(
        API_URL,
        {"email": "a@example.com", "cv": upload},
        headers={"Authorization": f"Bearer {raw_key}"},
    )
    assert response.status_code == 400
    assert response.json()["errors"] == {"cv": ["File uploads are not accepted."]}


def io_file(content: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("cv.txt", content, content_type="text/plain")


# --- 401 and 403 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer some-token",
        "Bearer lo_00000000_" + "A" * 43,
    ],
)
def test_missing_malformed_or_unknown_key_is_401(client, web_source, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = post_api(client, {"email": "a@example.com"}, **headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["errors"]["non_field_errors"]
    assert not Lead.objects.exists()


def test_wrong_secret_for_a_known_prefix_is_401(client, api_key):
    key, raw = api_key
    forged = f"lo_{key.prefix}_{'B' * 43}"
    assert forged != raw
    response = post_api(client, {"email": "a@example.com"}, forged)
    assert response.status_code == 401


def test_revoked_key_is_403(client, api_key):
    key, raw = api_key
    api_key_revoke(key=key, actor="user:admin")
    response = post_api(client, {"email": "a@example.com"}, raw)
    assert response.status_code == 403
    assert "revoked" in response.json()["errors"]["non_field_errors"][0]
    assert not Lead.objects.exists()


def test_inactive_source_is_403(client, raw_key, web_source):
    LeadSource.objects.filter(pk=web_source.pk).update(active=False)
    response = post_api(client, {"email": "a@example.com"}, raw_key)
    assert response.status_code == 403
    assert "not accepting leads" in response.json()["errors"]["non_field_errors"][0]
    assert not Lead.objects.exists()


# --- 405, 413, 415 --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_other_methods_are_405_with_allow(client, raw_key, method):
    response = getattr(client, method)(API_URL, headers={"Authorization": f"Bearer {raw_key}"})
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


def test_body_over_64_kb_is_413(client, raw_key):
    body = {"email": "a@example.com", "notes": "x" * (64 * 1024)}
    response = post_api(client, body, raw_key)
    assert response.status_code == 413
    assert "64 KB" in response.json()["errors"]["non_field_errors"][0]
    # Just under the limit is fine.
    body["notes"] = "x" * (64 * 1024 - 100)
    assert post_api(client, body, raw_key).status_code == 201


def test_djangos_own_upload_limit_is_a_413_not_a_500(client, raw_key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = {"email": "a@example.com", "notes": "x" * 4096}
    assert post_api(client, body, raw_key).status_code == 413
    form = urlencode(body)
    response = post_api(client, form, raw_key, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", ""])
def test_other_content_types_are_415(client, raw_key, content_type):
    response = post_api(client, {"email": "a@example.com"}, raw_key, content_type=content_type)
    assert response.status_code == 415
    message = response.json()["errors"]["non_field_errors"][0]
    for accepted in [
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ]:
        assert accepted in message
    assert not Lead.objects.exists()


def test_json_with_a_charset_is_accepted(client, raw_key):
    response = post_api(
        client, {"email": "a@example.com"}, raw_key, content_type="application/json; charset=utf-8"
    )
    assert response.status_code == 201


# --- Idempotency-Key ------------------------------------------------------------------------


def test_idempotency_key_replays_the_first_response(client, raw_key):
    body = {"email": "a@example.com", "name": "Ann"}
    first = post_api(client, body, raw_key, **{"Idempotency-Key": "order-1"})
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    # Same data, other key order and spacing: still the same request.
    again = post_api(
        client,
        '{ "name": "Ann",  "email": "a@example.com" }',
        raw_key,
        **{"Idempotency-Key": "order-1"},
    )
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert Lead.objects.count() == 1
    assert len(ingested_events()) == 1
    record = IdempotencyRecord.objects.get()
    assert (record.key, record.status_code, record.response) == ("order-1", 201, first.json())


def test_idempotency_key_with_another_body_is_422(client, raw_key):
    assert (
        post_api(
            client, {"email": "a@example.com"}, raw_key, **{"Idempotency-Key": "k"}
        ).status_code
        == 201
    )
    response = post_api(client, {"email": "b@example.com"}, raw_key, **{"Idempotency-Key": "k"})
    assert response.status_code == 422
    assert "different request body" in response.json()["errors"]["non_field_errors"][0]
    assert list(Lead.objects.values_list("email", flat=True)) == ["a@example.com"]


def test_failed_request_does_not_use_up_its_idempotency_key(client, raw_key):
    bad = post_api(client, {"email": "nope"}, raw_key, **{"Idempotency-Key": "k"})
    assert bad.status_code == 400
    assert not IdempotencyRecord.objects.exists()
    good = post_api(client, {"email": "a@example.com"}, raw_key, **{"Idempotency-Key": "k"})
    assert good.status_code == 201


def test_duplicate_is_replayed_as_a_duplicate(client, raw_key):
    post_api(client, {"email": "a@example.com"}, raw_key)
    first = post_api(client, {"email": "a@example.com"}, raw_key, **{"Idempotency-Key": "x"})
    again = post_api(client, {"email": "a@example.com"}, raw_key, **{"Idempotency-Key": "x"})
    assert first.status_code == again.status_code == 200
    assert (
        again.json() == first.json() == {"lead_id": Lead.objects.get().public_id, "duplicate": True}
    )
    assert len(ingested_events()) == 2


@pytest.mark.parametrize("key", ["k" * 256, "   ", "caf\u00e9"])
def test_bad_idempotency_key_is_400(client, raw_key, key):
    response = post_api(client, {"email": "a@example.com"}, raw_key, **{"Idempotency-Key": key})
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["errors"]
    assert not Lead.objects.exists()


def test_idempotency_key_of_255_characters_is_fine(client, raw_key):
    response = post_api(
        client, {"email": "a@example.com"}, raw_key, **{"Idempotency-Key": "k" * 255}
    )
    assert response.status_code == 201


# --- 429 ------------------------------------------------------------------------------------


def test_api_is_rate_limited_per_key_with_retry_after(client, web_source, settings):
    settings.LEADS_API_RATE = "3/m"
    _, raw = api_key_create(source=web_source, name="busy")
    _, other = api_key_create(source=web_source, name="quiet")
    with time_machine.travel(START, tick=False) as clock:
        for i in range(3):
            assert post_api(client, {"email": f"a{i}@example.com"}, raw).status_code == 201
        response = post_api(client, {"email": "late@example.com"}, raw)
        assert response.status_code == 429
        assert "Too many requests" in response.json()["errors"]["non_field_errors"][0]
        assert not Lead.objects.filter(email="late@example.com").exists()
        # Another key has its own allowance.
        assert post_api(client, {"email": "other@example.com"}, other).status_code == 201
        assert_retry_after_is_honest(
            clock, response, lambda: post_api(client, {"email": "late@example.com"}, raw)
        )


# --- The public form --------------------------------------------------------------------------


def test_public_form_takes_a_form_post(client, web_source):
    response = client.post(
        FORM_URL,
        {"email": "ann@example.com", "name": "Ann", "website": "", "next": "", "topic": "demo"},
    )
    assert response.status_code == 201
    # Nothing an anonymous sender could use to probe for addresses or count leads.
    assert response.json() == {"status": "received"}
    lead = Lead.objects.get()
    assert (lead.email, lead.name, lead.source) == ("ann@example.com", "Ann", web_source)
    assert lead.extra == {"topic": "demo"}
    [event] = ingested_events()
    assert event.actor == "system"
    assert event.lead_public_id == lead.public_id


def test_public_form_takes_json(client, web_source):
    response = client.post(FORM_URL, {"email": "ann@example.com"}, content_type="application/json")
    assert response.status_code == 201
    assert Lead.objects.filter(email="ann@example.com").exists()


def test_public_form_duplicate_looks_like_any_other_submission(client, web_source):
    assert client.post(FORM_URL, {"email": "ann@example.com"}).status_code == 201
    response = client.post(FORM_URL, {"email": "ann@example.com", "company": "Acme"})
    assert response.status_code == 201
    assert response.json() == {"status": "received"}
    assert Lead.objects.get().company == "Acme"


def test_honeypot_is_thanked_and_nothing_is_stored(client, web_source):
    response = client.post(FORM_URL, {"email": "bot@example.com", "website": "http://spam"})
    assert response.status_code == 201
    assert response.json() == {"status": "received"}
    assert not Lead.objects.exists()
    assert not AuditEvent.objects.exclude(event_type="api_key_created").exists()
    # Invalid data with the honeypot filled is still thanked: a bot learns nothing.
    response = client.post(FORM_URL, {"email": "nope", "website": "x"})
    assert response.status_code == 201
    assert not Lead.objects.exists()


def test_public_form_errors_per_field(client, web_source):
    response = client.post(FORM_URL, {"email": "nope", "country": "Narnia"})
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"email", "country"}
    html = client.post(FORM_URL, {"email": "nope"}, headers={"Accept": "text/html"})
    assert html.status_code == 400
    assert html["Content-Type"].startswith("text/html")
    assert "is not a valid email address" in html.content.decode()


def test_public_form_redirects_only_to_its_own_host(client, web_source):
    response = client.post(f"{FORM_URL}?next=/thanks/", {"email": "a@example.com"})
    assert response.status_code == 303
    assert response["Location"] == "/thanks/"
    response = client.post(FORM_URL, {"email": "b@example.com", "next": "/thanks/?x=1"})
    assert response.status_code == 303
    assert response["Location"] == "/thanks/?x=1"
    for target in ["https://evil.example/", "//evil.example/x", "javascript:alert(1)"]:
        response = client.post(FORM_URL, {"email": "c@example.com", "next": target})
        assert response.status_code == 201, target
        assert "Location" not in response
    # The honeypot redirects like a real submission.
    response = client.post(f"{FORM_URL}?next=/thanks/", {"email": "d@example.com", "website": "x"})
    assert response.status_code == 303
    assert Lead.objects.count() == 3


def test_public_form_thanks_browsers_in_html(client, web_source):
    response = client.post(
        FORM_URL,
        {"email": "<b>ann</b>@example.com"},
        headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
    )
    assert response.status_code == 400
    assert "<b>ann</b>" not in response.content.decode()  # escaped, not markup
    response = client.post(
        FORM_URL, {"email": "ann@example.com"}, headers={"Accept": "text/html,*/*;q=0.8"}
    )
    assert response.status_code == 201
    assert response["Content-Type"].startswith("text/html")
    assert "Thank you" in response.content.decode()


@pytest.mark.parametrize(
    ("slug", "kind", "active"),
    [("inbox", "email_inbox", True), ("off", "web_form", False), ("missing", None, True)],
)
def test_public_form_only_for_active_web_forms(client, slug, kind, active):
    if kind:
        LeadSource.objects.create(name=slug, slug=slug, kind=kind, active=active)
    url = reverse("leads:public-form", args=[slug])
    response = client.post(url, {"email": "a@example.com"})
    assert response.status_code == 404
    assert not Lead.objects.exists()


def test_public_form_needs_no_csrf_token(web_source):
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post(FORM_URL, {"email": "a@example.com"})
    assert response.status_code == 201


def test_public_form_refuses_other_methods_and_types(client, web_source):
    response = client.get(FORM_URL)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    response = client.post(FORM_URL, "email=a@example.com", content_type="text/plain")
    assert response.status_code == 415
    response = client.post(
        FORM_URL, {"email": "a@example.com", "x": "y" * 70_000}, content_type="application/json"
    )
    assert response.status_code == 413


def test_public_form_is_rate_limited_per_ip(client, web_source, settings):
    settings.LEADS_FORM_RATE = "2/m"

    def send(email, ip="10.0.0.1", **extra):
        return client.post(FORM_URL, {"email": email, **extra}, REMOTE_ADDR=ip)

    with time_machine.travel(START, tick=False) as clock:
        for i in range(2):
            assert send(f"a{i}@example.com").status_code == 201
        response = send("late@example.com")
        assert response.status_code == 429
        # The honeypot counts too, and another address has its own allowance.
        assert send("x@example.com", website="x").status_code == 429
        assert send("other@example.com", ip="10.0.0.2").status_code == 201
        assert Lead.objects.count() == 3
        assert_retry_after_is_honest(clock, response, lambda: send("late@example.com"))
    assert Lead.objects.filter(email="late@example.com").exists()


# --- Through a real server ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_lead_and_event_are_committed_before_the_response(live_server, web_source):
    _, raw = api_key_create(source=web_source, name=KEY_NAME)
    response = requests.post(
        live_server.url + API_URL,
        json={"email": "ann@example.com"},
        headers={"Authorization": f"Bearer {raw}"},
        timeout=30,
    )
    assert response.status_code == 201
    # Read on this thread's own connection: only committed rows are visible.
    lead = Lead.objects.get(public_id=response.json()["lead_id"])
    event = AuditEvent.objects.get(event_type="lead_ingested", lead_public_id=lead.public_id)
    assert event.actor == f"api:{KEY_NAME}"


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_identical_requests_make_one_lead(live_server, web_source):
    _, raw = api_key_create(source=web_source, name=KEY_NAME)
    headers = {"Authorization": f"Bearer {raw}", "Idempotency-Key": "signup-42"}
    body = {"email": "ann@example.com", "name": "Ann", "company": "Acme"}
    start = threading.Barrier(10)
    results: list[tuple[int, dict, str | None]] = []
    errors: list[BaseException] = []

    def send() -> None:
        try:
            start.wait(timeout=30)
            r = requests.post(live_server.url + API_URL, json=body, headers=headers, timeout=60)
            results.append((r.status_code, r.json(), r.headers.get("Idempotent-Replayed")))
        except BaseException as exc:  # noqa: BLE001 (reported to the test thread)
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 10
    lead = Lead.objects.get()
    expected = (201, {"lead_id": lead.public_id, "duplicate": False})
    assert all((status, data) == expected for status, data, _ in results), results
    # One request did the work; the other nine replayed it.
    assert sorted(str(replayed) for _, _, replayed in results) == ["None"] + ["true"] * 9
    assert len(ingested_events()) == 1
    assert IdempotencyRecord.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_copies_of_one_lead_without_a_key_make_one_lead(live_server, web_source):
    # No Idempotency-Key: only the dedupe (and the lock on source and address) stands
    # between ten copies arriving together and ten leads.
    _, raw = api_key_create(source=web_source, name=KEY_NAME)
    start = threading.Barrier(10)
    results: list[tuple[int, dict]] = []
    errors: list[BaseException] = []

    def send(n: int) -> None:
        try:
            start.wait(timeout=30)
            r = requests.post(
                live_server.url + API_URL,
                json={"email": "Ann@Example.com", "name": "Ann", "title": f"t{n}"},
                headers={"Authorization": f"Bearer {raw}"},
                timeout=60,
            )
            results.append((r.status_code, r.json()))
        except BaseException as exc:  # noqa: BLE001 (reported to the test thread)
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    lead = Lead.objects.get()
    assert sorted(status for status, _ in results) == [200] * 9 + [201]
    assert all(data["lead_id"] == lead.public_id for _, data in results)
    assert [data["duplicate"] for _, data in results].count(False) == 1
    assert len(ingested_events()) == 10


@pytest.mark.django_db(transaction=True)
def test_leads_of_one_source_are_not_serialized_behind_each_other(web_source):
    """A transaction ingesting one address does not hold up another address of the
    same source (PostgreSQL; SQLite lets one writer in at a time by design)."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serializes every write transaction; .ci/run runs this on PostgreSQL")
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_ingest() -> None:
        try:
            with transaction.atomic():
                ingest_lead(source=web_source, payload={"email": "slow@example.com"})
                holding.set()
                release.wait(timeout=30)
        except BaseException as exc:  # noqa: BLE001 (reported to the test thread)
            errors.append(exc)
        finally:
            connection.close()

    slow = threading.Thread(target=slow_ingest)
    slow.start()
    try:
        assert holding.wait(timeout=30)
        other = threading.Thread(
            target=lambda: (
                ingest_lead(source=web_source, payload={"email": "fast@example.com"}),
                connection.close(),
            )
        )
        other.start()
        other.join(timeout=10)
        assert not other.is_alive(), "a lead of another address waited for the open transaction"
        assert Lead.objects.filter(email="fast@example.com").exists()
        # The same address does wait, and then sees the first as its duplicate.
        same = threading.Thread(
            target=lambda: (
                results.append(
                    ingest_lead(source=web_source, payload={"email": "slow@example.com"})
                ),
                connection.close(),
            )
        )
        results: list = []
        same.start()
        same.join(timeout=1)
        assert same.is_alive(), "a copy of the same address did not wait for the first"
    finally:
        release.set()
        slow.join()
    same.join(timeout=30)
    assert errors == []
    assert results and results[0].duplicate
    assert Lead.objects.filter(email="slow@example.com").count() == 1


def test_a_literal_backslash_u0000_is_text_not_a_nul(client, raw_key):
    # Only a real NUL character is refused; the six characters \u0000 are fine.
    response = post_api(client, {"email": "a@example.com", "a\\u0000": 1}, raw_key)
    assert response.status_code == 201
    assert Lead.objects.get().extra == {"a\\u0000": 1}


def refuse_writes(on):
    """The database refuses writes, as on a full disk or a read-only replica: SQLite's
    query_only pragma, PostgreSQL's read-only default for new transactions."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"PRAGMA query_only = {'ON' if on else 'OFF'}")
        else:
            cursor.execute(f"SET default_transaction_read_only = {'on' if on else 'off'}")


@pytest.fixture
def read_only_database():
    refuse_writes(True)
    yield
    refuse_writes(False)


@pytest.mark.django_db(transaction=True)
def test_a_database_refusing_writes_gets_a_json_503_and_keeps_nothing(
    client, raw_key, web_source, read_only_database
):
    response = post_api(client, {"email": "ann@example.com"}, raw_key)
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response.headers["Retry-After"] == "30"
    assert "nothing was kept" in json.dumps(response.json())

    form = client.post(FORM_URL, {"email": "bob@example.com"}, headers={"Accept": "text/html"})
    assert form.status_code == 503
    assert "nothing was kept" in form.content.decode()


@pytest.mark.django_db(transaction=True)
def test_after_the_outage_the_retried_lead_is_stored_once(client, raw_key, web_source):
    refuse_writes(True)
    try:
        assert post_api(client, {"email": "ann@example.com"}, raw_key).status_code == 503
    finally:
        refuse_writes(False)
    assert not Lead.objects.exists() and not ingested_events()
    assert post_api(client, {"email": "ann@example.com"}, raw_key).status_code == 201
    assert Lead.objects.count() == 1 and len(ingested_events()) == 1
