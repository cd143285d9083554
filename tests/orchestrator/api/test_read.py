"""GET /api/v1/events and GET /api/v1/leads/<id>/history."""

from urllib.parse import parse_qs, quote, urlsplit

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from leads.intake.apikeys import api_key_create
from tests.orchestrator.api.conftest import (
    EVENTS_URL,
    READER,
    auth,
    event,
    jsonl,
    post_events,
)


def history_url(lead_id: str) -> str:
    return reverse("api:lead-history", kwargs={"lead_id": lead_id})


def read_events(client, raw, **params):
    return client.get(EVENTS_URL, params, headers=auth(raw))


def only_error(response) -> str:
    [message] = response.json()["errors"]["non_field_errors"]
    return message


def test_posted_events_are_read_back_through_a_filter_page_by_page(
    client, writer, reader, settings
):
    settings.EVENTS_API_PAGE_SIZE = 2
    # Five events of one workflow, and others around them the filter must leave out.
    ours = [event(i, workflow="billing", lead_id=f"LEAD-{i}") for i in range(5)]
    others = [event(10 + i, workflow="sales") for i in range(3)]
    posted = post_events(client, jsonl(*ours, *others), writer, content_type="application/jsonl")
    ids = posted.json()["accepted"]
    assert len(ids) == 8

    url = f"{EVENTS_URL}?workflow=billing&type=lead_ingested"
    pages = []
    while url is not None:
        response = client.get(url, headers=auth(reader))
        assert response.status_code == 200, response.content
        body = response.json()
        pages.append(body["events"])
        url = body["next"]
        if url is not None:
            # An absolute URL carrying the filters and the cursor.
            parts = urlsplit(url)
            assert parts.scheme == "http" and parts.path == EVENTS_URL
            query = parse_qs(parts.query)
            assert query["workflow"] == ["billing"] and query["cursor"]
    assert [len(p) for p in pages] == [2, 2, 1]
    seen = [e for page in pages for e in page]
    # Newest first, every one of ours once, in the legacy format.
    assert [e["lead_id"] for e in seen] == ["LEAD-4", "LEAD-3", "LEAD-2", "LEAD-1", "LEAD-0"]
    assert {e["event_id"] for e in seen} == set(ids[:5])
    assert seen[0]["details"] == {"n": 4} and seen[0]["workflow"] == "billing"
    assert seen[0]["timestamp"].endswith("Z")
    # Each page read is audited, with the filters it used.
    reads = list(AuditEvent.objects.filter(event_type="api_events_read").order_by("id"))
    assert len(reads) == 3
    assert {r.actor for r in reads} == {f"api:{READER}"}
    assert reads[0].details["filters"] == {"type": ["lead_ingested"], "workflow": "billing"}
    assert [r.details["returned"] for r in reads] == [2, 2, 1]
    assert reads[0].details["cursor"] is None and reads[1].details["cursor"]


def test_the_read_audit_event_is_not_in_the_page_it_audits(client, reader):
    only_reads = {"type": "api_events_read"}
    assert read_events(client, reader, **only_reads).json() == {"events": [], "next": None}
    [first] = read_events(client, reader, **only_reads).json()["events"]
    assert first["event_type"] == "api_events_read" and first["actor"] == f"api:{READER}"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"cursor": "not-a-cursor"}, "cursor 'not-a-cursor' is not a position in this list"),
        # Valid base64 of a list, but not of this list's keys.
        ({"cursor": "WzEsMl0"}, "cursor 'WzEsMl0' is not a position in this list"),
        ({"type": "no_such_type"}, "Event types: Select a valid choice."),
        ({"range": "1y"}, "range must be one of 24h, 7d, 30d, 90d, custom, not '1y'"),
        ({"range": "custom", "since": "2026-01-01"}, "a custom range needs both"),
        ({"lead": "a\x00b"}, "Lead id: contains characters that cannot be searched"),
        # Django's message quotes the value: the audit event must still be storable.
        ({"type": "a\x00"}, "Event types: Select a valid choice."),
        ({"after": "5"}, None),
        ({"live": "1"}, None),
    ],
)
def test_bad_filters_and_cursors_are_400_with_the_reason(client, reader, params, message):
    response = read_events(client, reader, **params)
    assert response.status_code == 400
    errors = response.json()["errors"]
    if message is None:
        assert errors == {next(iter(params)): ["Not supported here; page with `next`."]}
    else:
        assert message in only_error(response)
    refused = AuditEvent.objects.get(event_type="api_request_refused")
    assert refused.actor == f"api:{READER}" and refused.details["status"] == 400


def test_reading_needs_the_read_scope(client, writer, web_source):
    _, leads_key = api_key_create(source=web_source, name="form")
    for raw in (writer, leads_key):
        response = read_events(client, raw)
        assert response.status_code == 403
        assert only_error(response) == "This API key does not have the 'events:read' scope."
        assert client.get(history_url("LEAD-1"), headers=auth(raw)).status_code == 403
    assert client.get(EVENTS_URL).status_code == 401
    assert client.get(history_url("LEAD-1")).status_code == 401
    assert not AuditEvent.objects.filter(event_type__startswith="api_events").exists()


# --- A lead's history ----------------------------------------------------------------------


@pytest.mark.parametrize("lead_id", ["acme/ä-1", "a//b/", "漢字/../x?#%20", "with space"])
def test_history_of_a_lead_id_with_slashes_and_unicode(client, writer, reader, lead_id):
    posted = post_events(
        client,
        [event(3, lead_id=lead_id), event(1, lead_id=lead_id), event(2, lead_id="other")],
        writer,
    ).json()
    assert posted["rejected"] == []
    url = history_url(lead_id)
    assert "/history" in url and "?" not in url and "#" not in url
    response = client.get(url, headers=auth(reader))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["lead_id"] == lead_id and body["next"] is None
    # Oldest first.
    assert [e["details"]["n"] for e in body["events"]] == [1, 3]
    read = AuditEvent.objects.get(event_type="api_events_read")
    assert read.actor == f"api:{READER}"
    assert read.details == {
        "view": "lead_history",
        "lead_id": lead_id,
        "cursor": None,
        "returned": 2,
    }
    # Kept off the lead: a lead's history does not grow by being read.
    assert client.get(url, headers=auth(reader)).json()["events"] == body["events"]


def test_history_pages_forward_to_the_end(client, writer, reader, settings):
    settings.EVENTS_API_PAGE_SIZE = 2
    post_events(client, [event(i, lead_id="L/1") for i in range(5)], writer)
    url, seen = history_url("L/1"), []
    while url:
        body = client.get(url, headers=auth(reader)).json()
        seen += [e["details"]["n"] for e in body["events"]]
        url = body["next"]
    assert seen == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("lead_id", ["LEAD-404", "x" * 33, "nul\x00"])
def test_history_of_an_unknown_lead_is_404(client, reader, lead_id):
    response = client.get("/api/v1/leads/" + quote(lead_id) + "/history", headers=auth(reader))
    assert response.status_code == 404
    assert only_error(response) == f"No events for lead {lead_id!r}."
    assert not AuditEvent.objects.filter(event_type="api_events_read").exists()
    assert AuditEvent.objects.get(event_type="api_request_refused").details["status"] == 404


def test_history_with_a_bad_cursor_is_400(client, writer, reader):
    post_events(client, [event(1, lead_id="L-1")], writer)
    response = client.get(history_url("L-1"), {"cursor": "%%%"}, headers=auth(reader))
    assert response.status_code == 400
    assert "is not a position in this list" in only_error(response)


def test_history_only_answers_get(client, reader):
    response = client.post(history_url("L-1"), headers=auth(reader))
    assert response.status_code == 405 and response.headers["Allow"] == "GET"
