"""The event browser: filters, histogram, keyset pages, live tail, export, details."""

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
import time_machine
from django.urls import reverse

from audit.integrity import seal_all
from audit.models import AuditEvent
from audit.services import record_event
from tests.conftest import HTMX

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
URL = "/dashboard/events/"


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def url():
    return reverse("event-list")


def event(ago: timedelta = timedelta(hours=1), **kwargs) -> AuditEvent:
    kwargs.setdefault("event_type", "lead_ingested")
    kwargs.setdefault("workflow", "sales")
    return record_event(timestamp=NOW - ago, **kwargs)


def row_ids(content: bytes) -> list[int]:
    return [int(i) for i in re.findall(rb'class="event-row[^"]*" data-event-id="(\d+)"', content)]


def facet_count(content: bytes, name: str) -> int:
    match = re.search(
        rb'value="'
        + name.encode()
        + rb'"[^>]*>\s*'
        + name.encode()
        + rb' <span class="count">(\d+)',
        content,
    )
    assert match, name
    return int(match.group(1))


def bar_links(content: bytes) -> list[str]:
    section = content.split(b'id="event-histogram"')[1].split(b"</section>")[0].decode()
    return [unescape(h) for h in re.findall(r'<a [^>]*href="([^"]+)"', section)]


# --- page and fragments ---------------------------------------------------------------


def test_full_page_has_filters_histogram_and_rows_newest_first(auditor_client, url):
    old = event(timedelta(hours=3))
    new = event(timedelta(minutes=5), event_type="lead_qualified")
    response = auditor_client.get(url)
    assert response.status_code == 200
    body = response.content
    assert b"<html" in body
    for marker in (
        b'<form id="event-filters"',
        b'id="event-histogram"',
        b'id="event-table"',
        b'id="export-csv"',
        b'id="export-jsonl"',
        b'id="live-tail"',
    ):
        assert marker in body
    assert row_ids(body) == [new.id, old.id]
    assert facet_count(body, "lead_ingested") == 1
    assert facet_count(body, "lead_qualified") == 1
    assert facet_count(body, "error") == 0


def test_table_fragment_refreshes_histogram_and_type_counts_out_of_band(auditor_client, url):
    first = event()
    response = auditor_client.get(url, **HTMX)
    body = response.content
    assert response.status_code == 200
    assert b"<html" not in body
    assert body.lstrip().startswith(b'<section id="event-table"')
    assert row_ids(body) == [first.id]
    assert b'<section id="event-histogram" class="panel" hx-swap-oob="true"' in body
    assert b'<fieldset id="event-types" class="event-types" hx-swap-oob="true"' in body
    assert "HX-Request" in response["Vary"]


def test_histogram_fragment_alone(auditor_client, url):
    event()
    response = auditor_client.get(url, HTTP_HX_TARGET="event-histogram", **HTMX)
    body = response.content
    assert body.lstrip().startswith(b'<section id="event-histogram"')
    assert b"<svg" in body
    assert b"event-row" not in body
    assert b"hx-swap-oob" not in body


def test_history_restore_gets_the_full_page(auditor_client, url):
    response = auditor_client.get(url, HTTP_HX_HISTORY_RESTORE_REQUEST="true", **HTMX)
    assert b"<html" in response.content


def test_the_form_swaps_the_table_and_pushes_the_url(auditor_client, url):
    body = auditor_client.get(url).content.decode()
    form = re.search(r'<form id="event-filters"[^>]*>', body, re.S).group(0)
    assert 'method="get"' in form
    assert 'hx-target="#event-table"' in form
    assert 'hx-push-url="true"' in form
    assert "change" in form and "keyup changed delay:400ms" in form
    for name in ("lead", "workflow", "actor", "correlation", "q"):
        assert f'type="text" name="{name}"' in body
    assert 'type="checkbox" name="type" value="error"' in body


# --- filters --------------------------------------------------------------------------


def test_filter_by_several_types(auditor_client, url):
    a = event(event_type="lead_ingested")
    b = event(timedelta(minutes=30), event_type="lead_routed")
    event(timedelta(minutes=20), event_type="email_sent")
    response = auditor_client.get(url, {"type": ["lead_ingested", "lead_routed"]})
    assert row_ids(response.content) == [b.id, a.id]
    # Each type's count ignores the type filter itself, so other types can be added.
    assert facet_count(response.content, "email_sent") == 1
    assert b'value="lead_routed" checked' in response.content


@pytest.mark.parametrize(
    ("param", "field", "value", "other"),
    [
        ("lead", "lead_id", "LEAD-000042", "LEAD-000043"),
        ("workflow", "workflow", "sales", "support"),
        ("actor", "actor", "user:ann", "system"),
        ("correlation", "correlation_id", "c0ffee", "beef"),
    ],
)
def test_exact_filters(auditor_client, url, param, field, value, other):
    wanted = event(**{field: value})
    event(timedelta(minutes=10), **{field: other})
    event(timedelta(minutes=20), **{field: value + "x"})
    response = auditor_client.get(url, {param: value})
    assert row_ids(response.content) == [wanted.id]
    assert facet_count(response.content, "lead_ingested") == 1


def test_filter_by_error_group(auditor_client, url):
    def fail(message):
        try:
            raise KeyError(message)
        except KeyError as exc:
            return exc

    first = event(event_type="error", exc=fail("a"))
    second = event(timedelta(minutes=10), event_type="error", exc=fail("b"))
    event(timedelta(minutes=20), event_type="error", error_type="Other", error_message="x")
    assert first.fingerprint == second.fingerprint != ""
    response = auditor_client.get(url, {"fingerprint": first.fingerprint})
    assert row_ids(response.content) == [second.id, first.id]
    assert b'name="fingerprint" value="' + first.fingerprint.encode() in response.content
    # Each error row links to its group (over the same range); other rows do not.
    html = auditor_client.get(url, {"range": "30d"}).content.decode()
    group_url = reverse("error-detail", args=[first.fingerprint]) + "?range=30d"
    assert html.count(f'class="error-group-link" href="{group_url}"') == 2
    assert html.count('class="error-group-link"') == 3


def test_text_search_in_details_ignores_case_and_finds_quotes_and_accents(auditor_client, url):
    plain = event(details={"note": "Called the CTO"})
    quoted = event(timedelta(minutes=10), details={"note": 'said "yes"'})
    accented = event(timedelta(minutes=20), details={"city": "Zürich"})
    event(timedelta(minutes=30), details={"note": "nothing here"})
    assert row_ids(auditor_client.get(url, {"q": "the cto"}).content) == [plain.id]
    assert row_ids(auditor_client.get(url, {"q": '"yes"'}).content) == [quoted.id]
    assert row_ids(auditor_client.get(url, {"q": "zürich"}).content) == [accented.id]


def test_text_search_of_three_characters_or_more_covers_any_range(auditor_client, url):
    old = event(timedelta(days=80), details={"email": "ann.Needle@example.com"})
    event(timedelta(days=70), details={"email": "bob@example.com"})
    recent = event(timedelta(hours=2), details={"note": "haystack NEEDLES"})
    # Anywhere in a word, any case, over 90 days without a narrowing filter.
    response = auditor_client.get(url, {"q": "needle", "range": "90d"})
    assert response.status_code == 200
    assert row_ids(response.content) == [recent.id, old.id]
    assert row_ids(auditor_client.get(url, {"q": "eedl", "range": "90d"}).content) == [
        recent.id,
        old.id,
    ]
    # Keys are part of the JSON searched, as before.
    assert row_ids(auditor_client.get(url, {"q": "note", "range": "90d"}).content) == [recent.id]
    assert row_ids(auditor_client.get(url, {"q": "nothing-like-it", "range": "90d"}).content) == []
    # Three characters is a trigram: indexed, so no range limit either.
    assert auditor_client.get(url, {"q": "ann", "range": "90d"}).status_code == 200


def test_text_search_over_a_long_range_is_refused_unless_narrowed(auditor_client, url, settings):
    settings.DASHBOARD_TEXT_SEARCH_MAX_DAYS = 7
    response = auditor_client.get(url, {"q": "x", "range": "30d"})
    assert response.status_code == 400
    assert b"Text search for fewer than 3 characters covers at most 7 days" in response.content
    fragment = auditor_client.get(url, {"q": "x", "range": "30d"}, **HTMX)
    assert fragment.status_code == 400
    assert b"<html" not in fragment.content
    target = event(timedelta(days=20), lead_id="LEAD-000001", details={"x": "needle"})
    narrowed = auditor_client.get(url, {"q": "needle", "range": "30d", "lead": "LEAD-000001"})
    assert narrowed.status_code == 200
    assert row_ids(narrowed.content) == [target.id]
    assert auditor_client.get(url, {"q": "x", "range": "7d"}).status_code == 200


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"type": "no_such_type"}, b"Event types: Select a valid choice"),
        # Old cursors (an event id) are refused like any other.
        ({"cursor": "abc"}, b"cursor &#x27;abc&#x27; is not a position in this list"),
        ({"cursor": "999999"}, b"cursor &#x27;999999&#x27; is not a position in this list"),
        ({"after": "-1"}, b"after: Ensure this value is greater than or equal to 0"),
        ({"lead": "L" * 33}, b"Lead id: Ensure this value has at most 32 characters"),
        ({"q": "a\x00b"}, b"Null characters are not allowed"),
        ({"range": "forever"}, b"range must be one of"),
        ({"range": "custom", "since": "2026-03-01T10:00", "until": "x"}, b"until must be"),
    ],
)
def test_bad_values_are_a_400_with_a_message(auditor_client, url, params, message):
    response = auditor_client.get(url, params)
    assert response.status_code == 400
    assert message in response.content


# --- keyset pages ---------------------------------------------------------------------


@pytest.mark.parametrize("types", [[], ["lead_ingested", "lead_routed", "email_sent"]])
def test_keyset_pages_have_no_duplicates_or_gaps_with_equal_timestamps(auditor_client, url, types):
    kinds = ["lead_ingested", "lead_routed", "email_sent"]
    # Three timestamps shared by many events: ties are broken by id.
    expected = []
    for i in range(130):
        ago = timedelta(minutes=10 * (i % 3) + 1)
        expected.append(event(ago, event_type=kinds[i % 3]))
    expected.sort(key=lambda e: (e.timestamp, e.id), reverse=True)

    seen, params, pages = [], {"type": types}, 0
    while True:
        response = auditor_client.get(url, params, **(HTMX if pages else {}))
        assert response.status_code == 200
        ids = row_ids(response.content)
        assert 0 < len(ids) <= 50
        seen.extend(ids)
        pages += 1
        match = re.search(rb'<a id="next-page" href="([^"]+)" hx-get="([^"]+)"', response.content)
        if not match:
            break
        assert match.group(1) == match.group(2)
        next_url = unescape(match.group(1).decode())
        assert "cursor=" in next_url
        params = next_url.split("?", 1)[1]
        params = {k: v for k, v in [p.split("=", 1) for p in params.split("&")]}
        params["type"] = types
        if pages > 1:
            # A next-page click keeps the histogram and the type counts.
            assert b"hx-swap-oob" not in response.content
    assert seen == [e.id for e in expected]
    assert pages == 3


# --- histogram ------------------------------------------------------------------------


def test_histogram_bars_link_to_the_same_filters_narrowed_to_their_bucket(auditor_client, url):
    in_bucket = event(timedelta(hours=30), actor="user:ann")  # 2026-03-09 06:30
    event(timedelta(hours=30), actor="system")
    other_day = event(timedelta(days=3), actor="user:ann")
    response = auditor_client.get(url, {"actor": "user:ann", "range": "7d", "cursor": ""})
    links = bar_links(response.content)
    assert len(links) == 8  # 7 days from 12:30 touch 8 UTC days
    day_link = next(link for link in links if "since=2026-03-09T00%3A00%2B00%3A00" in link)
    assert "actor=user%3Aann" in day_link
    assert "range=custom" in day_link and "until=2026-03-10T00%3A00%2B00%3A00" in day_link
    assert "cursor" not in day_link
    narrowed = auditor_client.get(day_link)
    assert narrowed.status_code == 200
    assert row_ids(narrowed.content) == [in_bucket.id]
    # The first bucket starts at the period's start (whole minutes), not midnight.
    assert "since=2026-03-03T12%3A30%2B00%3A00" in links[0]
    assert other_day.id not in row_ids(narrowed.content)


def histogram_total(content: bytes) -> int:
    return int(re.search(rb"Events per \w+ <span class=\"muted\">\S+ (\d+)", content).group(1))


def test_counts_come_from_rollups_once_sealed_and_add_the_unsealed_tail(auditor_client, url):
    for i in range(5):
        event(timedelta(hours=20 + i), event_type="email_sent")
    event(timedelta(days=2, minutes=7), event_type="error", error_type="Boom")
    event(timedelta(days=9), event_type="email_sent")  # outside the 7 days
    seal_all()
    event(timedelta(minutes=3), event_type="email_sent")  # not sealed yet
    response = auditor_client.get(url, {"type": "email_sent"})
    assert facet_count(response.content, "email_sent") == 6
    assert facet_count(response.content, "error") == 1
    assert histogram_total(response.content) == 6
    # The same figures as counting the events.
    counted = auditor_client.get(url, {"type": "email_sent", "actor": "system"})
    assert facet_count(counted.content, "email_sent") == 6
    assert histogram_total(counted.content) == 6


@pytest.mark.parametrize("typed", ["LEAD-000042", "lead-000042", " Lead-000042 "])
def test_the_lead_filter_ignores_case(auditor_client, url, typed):
    wanted = event(lead_id="LEAD-000042")
    legacy = event(timedelta(minutes=5), lead_id="lead-000042")  # imported as written
    event(timedelta(minutes=10), lead_id="LEAD-000043")
    response = auditor_client.get(url, {"lead": typed})
    assert row_ids(response.content) == [legacy.id, wanted.id]


def test_the_table_header_gives_the_total_with_thousands_separators(
    auditor_client, url, monkeypatch
):
    for i in range(3):
        event(timedelta(minutes=i + 1), actor="user:ann")
    event(timedelta(minutes=9), actor="system")
    html = auditor_client.get(url, {"actor": "user:ann"}).content.decode()
    assert '<span class="total">3 events</span> in' in html
    # Counted from the events up to the scan limit: the total says it stopped.
    monkeypatch.setattr("orchestrator.dashboard.views.events.SCAN_LIMIT", 2)
    html = auditor_client.get(url, {"actor": "user:ann", "range": "30d"}).content.decode()
    assert '<span class="total">2+ events</span>' in html
    # Rollups count exactly, however many.
    monkeypatch.setattr(
        "orchestrator.dashboard.views.events._volume",
        lambda filterset, period: _volume_of(period, 12480),
    )
    html = auditor_client.get(url, {"range": "7d"}).content.decode()
    assert '<span class="total">12,480 events</span>' in html


def _volume_of(period, n):
    from audit.selectors import EventVolume

    bucket = period.start
    volume = EventVolume(buckets=[bucket])
    volume.add(bucket, "lead_ingested", n)
    return volume


def test_counts_from_events_say_when_they_stop_at_the_scan_limit(auditor_client, url, monkeypatch):
    monkeypatch.setattr("orchestrator.dashboard.views.events.SCAN_LIMIT", 3)
    for i in range(5):
        event(timedelta(minutes=i + 1), actor="user:ann")
    response = auditor_client.get(url, {"actor": "user:ann"})
    assert b"Counted from the newest 3 matching events" in response.content
    assert histogram_total(response.content) == 3
    assert len(row_ids(response.content)) == 5


# --- live tail ------------------------------------------------------------------------


def test_live_tail_returns_only_newer_events_and_moves_its_cursor(auditor_client, url, clock):
    older = event(timedelta(minutes=10))
    shown = event(timedelta(minutes=5))
    page = auditor_client.get(url, {"live": "1"}).content.decode()
    poller = re.search(r'<span id="live-poller"[^>]*>', page).group(0)
    assert 'hx-trigger="every 5s"' in poller
    assert 'hx-target="#event-rows"' in poller and 'hx-swap="afterbegin"' in poller
    poll_url = unescape(re.search(r'hx-get="([^"]+)"', poller).group(1))
    assert f"after={shown.id}" in poll_url

    assert auditor_client.get(poll_url, **HTMX).status_code == 204
    clock.shift(timedelta(seconds=5))
    newer = [record_event(event_type="email_sent", workflow="sales") for _ in range(2)]
    record_event(event_type="email_sent", workflow="other")  # filtered out below
    clock.shift(timedelta(seconds=1))
    response = auditor_client.get(poll_url + "&workflow=sales", **HTMX)
    assert response.status_code == 200
    assert row_ids(response.content) == [newer[1].id, newer[0].id]
    assert older.id not in row_ids(response.content)
    assert b"<table" not in response.content
    oob = re.search(rb'<span id="live-poller"[^>]*>', response.content).group(0)
    assert b'hx-swap-oob="true"' in oob
    assert f"after={newer[1].id}".encode() in oob


def test_no_poller_without_live_or_on_older_pages(auditor_client, url):
    for i in range(55):
        event(timedelta(minutes=i + 1))
    assert b'id="live-poller"' not in auditor_client.get(url).content
    first = auditor_client.get(url, {"live": "1"}).content
    assert b'id="live-poller"' in first
    cursor = re.search(rb"cursor=([\w-]+)", first).group(1).decode()
    assert (
        b'id="live-poller"' not in auditor_client.get(url, {"live": "1", "cursor": cursor}).content
    )


# --- export ---------------------------------------------------------------------------


def export_body(response) -> str:
    assert response.streaming
    return b"".join(response.streaming_content).decode()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_holds_exactly_the_filtered_rows_and_is_audited(auditor_client, fmt):
    wanted = [
        event(timedelta(minutes=m), event_type=t, details={"formula": "=1+1"})
        for m, t in [(5, "lead_routed"), (15, "lead_ingested"), (25, "lead_routed")]
    ]
    event(timedelta(minutes=7), event_type="email_sent")
    event(timedelta(minutes=9), event_type="lead_routed", workflow="support")
    event(timedelta(days=8), event_type="lead_routed")  # outside 7 days
    response = auditor_client.get(
        reverse("event-export"),
        {"format": fmt, "type": ["lead_routed", "lead_ingested"], "workflow": "sales"},
    )
    assert response.status_code == 200
    body = export_body(response)
    disposition = response["Content-Disposition"]
    assert disposition.startswith('attachment; filename="audit-events-20260310T123000Z.')
    assert disposition.endswith(f'.{fmt}"')
    if fmt == "csv":
        assert response["Content-Type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(body)))
        assert [r["event_id"] for r in rows] == [str(e.uuid) for e in wanted]
        assert json.loads(rows[0]["details"]) == {"formula": "=1+1"}
        assert {r["workflow"] for r in rows} == {"sales"}
    else:
        lines = [json.loads(line) for line in body.splitlines()]
        assert [line["event_id"] for line in lines] == [str(e.uuid) for e in wanted]
        assert lines[0]["details"] == {"formula": "=1+1"}

    audit = AuditEvent.objects.get(event_type="audit_exported")
    assert audit.actor == "user:audrey"
    assert audit.details["format"] == fmt
    assert audit.details["filters"] == {
        "type": ["lead_routed", "lead_ingested"],
        "workflow": "sales",
    }
    assert audit.details["up_to_event_id"] == audit.id - 1


def test_export_does_not_list_its_own_audit_event(auditor_client):
    event(timedelta(minutes=1), event_type="audit_viewed")
    body = export_body(auditor_client.get(reverse("event-export"), {"format": "jsonl"}))
    assert [json.loads(line)["event_type"] for line in body.splitlines()] == ["audit_viewed"]


def test_export_of_text_search_and_bad_format(auditor_client):
    hit = event(details={"note": "Needle"})
    event(details={"note": "hay"})
    body = export_body(auditor_client.get(reverse("event-export"), {"q": "needle"}))
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [r["event_id"] for r in rows] == [str(hit.uuid)]
    bad = auditor_client.get(reverse("event-export"), {"format": "xml"})
    assert bad.status_code == 400
    assert b"format must be one of csv, jsonl" in bad.content
    long = auditor_client.get(reverse("event-export"), {"q": "x", "range": "90d"})
    assert long.status_code == 400
    assert not AuditEvent.objects.filter(event_type="audit_exported", details__format="xml")


def test_export_links_carry_the_filters(auditor_client, url):
    body = auditor_client.get(url, {"workflow": "sales", "range": "24h", "live": "1"}).content
    href = unescape(re.search(rb'id="export-csv" [^>]*href="([^"]+)"', body).group(1).decode())
    assert href.startswith(reverse("event-export") + "?")
    assert "workflow=sales" in href and "range=24h" in href and "format=csv" in href
    assert "live" not in href


# --- details --------------------------------------------------------------------------


XSS = '<script>alert("x")</script>'


def test_rows_expand_to_escaped_details_and_traceback(auditor_client, url):
    record = event(
        event_type="error",
        details={"payload": XSS},
        error_type="ValueError",
        error_message="<img src=x onerror=alert(1)>",
        traceback=f"Traceback (most recent call last):\n  {XSS}\n",
    )
    body = auditor_client.get(url).content.decode()
    assert "<script>alert" not in body
    assert "<img src=x" not in body
    row = body.split(f'data-event-id="{record.id}"')[1].split("</tr>")[0]
    assert '<details class="event-details">' in row
    details = re.search(r'<pre class="details-json">(.*?)</pre>', row, re.S).group(1)
    assert json.loads(unescape(details)) == {"payload": XSS}
    assert "&lt;script&gt;" in details
    traceback = re.search(r'<pre class="traceback">(.*?)</pre>', row, re.S).group(1)
    assert unescape(traceback) == record.traceback


def test_detail_page_links_correlation_and_lead(auditor_client):
    record = event(
        lead_id="LEAD-000007",
        correlation_id="run-42",
        details={"payload": XSS},
        event_type="error",
        error_type="Boom",
        traceback=XSS,
    )
    response = auditor_client.get(reverse("event-detail", kwargs={"pk": record.id}))
    assert response.status_code == 200
    body = response.content.decode()
    assert "<html" in body and "<script>alert" not in body
    assert '<pre class="details-json">' in body and '<pre class="traceback">' in body
    correlation = unescape(re.search(r'id="correlation-link" href="([^"]+)"', body).group(1))
    assert "correlation=run-42" in correlation
    assert reverse("lead-detail", kwargs={"public_id": "LEAD-000007"}) in body
    lead_events = unescape(re.search(r'id="lead-events-link" href="([^"]+)"', body).group(1))
    same = event(timedelta(days=20), correlation_id="run-42")
    listed = auditor_client.get(correlation)
    assert row_ids(listed.content) == [record.id, same.id]
    assert row_ids(auditor_client.get(lead_events).content) == [record.id]

    fragment = auditor_client.get(reverse("event-detail", kwargs={"pk": record.id}), **HTMX)
    assert b"<html" not in fragment.content
    assert fragment.content.lstrip().startswith(b'<article id="event-detail"')


def test_detail_of_a_missing_event_is_404(auditor_client):
    assert auditor_client.get(reverse("event-detail", kwargs={"pk": 424242})).status_code == 404


def test_histogram_and_type_counts_are_shared_for_a_minute(auditor_client, url, clock):
    from django.core.cache import cache

    cache.clear()
    event(timedelta(hours=2), event_type="lead_routed")
    assert facet_count(auditor_client.get(url).content, "lead_routed") == 1
    event(timedelta(hours=1), event_type="lead_routed")
    # The same filters within the minute: the counts are the ones computed first ...
    assert facet_count(auditor_client.get(url).content, "lead_routed") == 1
    # ... other filters have their own.
    other = auditor_client.get(url, {"workflow": "sales"}).content
    assert facet_count(other, "lead_routed") == 2
    clock.shift(timedelta(seconds=61))
    assert facet_count(auditor_client.get(url).content, "lead_routed") == 2


def test_export_streams_newest_first_across_chunks_and_merged_types(db):
    from audit import selectors as audit_selectors

    made = [
        event(timedelta(minutes=m), event_type=t)
        for m, t in [
            (1, "lead_routed"),
            (2, "email_sent"),
            (3, "lead_ingested"),
            (4, "lead_routed"),
        ]
    ]
    made += [event(timedelta(minutes=5), event_type="lead_routed") for _ in range(3)]
    late = event(timedelta(minutes=6), event_type="lead_routed")
    up_to = late.id - 1  # the snapshot leaves out what came after it
    everything = AuditEvent.objects.all()
    newest_first = [e.id for e in sorted(made, key=lambda e: (e.timestamp, e.id), reverse=True)]
    streamed = audit_selectors.iter_matching(
        events=everything, up_to_id=up_to, chunk=2, first_chunk=1
    )
    assert [e.id for e in streamed] == newest_first
    types = ["lead_routed", "lead_ingested"]
    merged = audit_selectors.iter_matching(
        events=everything.filter(event_type__in=types),
        up_to_id=up_to,
        merge_types=types,
        chunk=2,
        first_chunk=1,
    )
    wanted = [i for i in newest_first if AuditEvent.objects.get(pk=i).event_type in types]
    assert [e.id for e in merged] == wanted


@pytest.mark.django_db
def test_range_preset_links_keep_the_filters_and_drop_the_position(auditor_client):
    from urllib.parse import parse_qs, urlsplit

    html = auditor_client.get(
        reverse("event-list"),
        {"type": "error", "workflow": "sales", "range": "7d"},
    ).content.decode()
    hrefs = re.findall(r'<a class="range[^"]*" href="([^"]+)"', html)
    assert len(hrefs) >= 4
    for href in hrefs:
        href = href.replace("&amp;", "&")
        assert href.startswith("?") and not href.startswith("??"), href
        query = parse_qs(urlsplit(href).query)
        assert query["type"] == ["error"] and query["workflow"] == ["sales"], href
        assert "cursor" not in query and "after" not in query and "since" not in query


@pytest.mark.django_db
def test_workflow_and_actor_filters_suggest_the_names_that_exist(auditor_client, auditor):
    from leads.workflows.models import Workflow

    Workflow.objects.create(name="sales_lead_management")
    page = auditor_client.get(reverse("event-list"), {"range": "7d"}).content.decode()
    assert 'list="workflow-names"' in page and 'list="actor-names"' in page
    workflows = re.search(r'<datalist id="workflow-names">(.*?)</datalist>', page).group(1)
    assert '<option value="sales_lead_management">' in workflows
    actors = re.search(r'<datalist id="actor-names">(.*?)</datalist>', page).group(1)
    assert '<option value="system">' in actors
    assert f'<option value="user:{auditor.username}">' in actors
    # A table fragment does not carry them again.
    fragment = auditor_client.get(
        reverse("event-list"), {"range": "7d"}, headers={"HX-Request": "true"}
    ).content.decode()
    assert "workflow-names" not in fragment
