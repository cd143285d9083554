"""The error pages: errors grouped by fingerprint, and one group with its occurrences."""

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.urls import reverse

from audit import error_selectors
from audit.models import AuditEvent
from audit.selectors import EVENTS
from audit.services import record_event
from core.paging import encode_cursor
from tests.conftest import HTMX

NOW = datetime(2026, 6, 10, 14, 30, tzinfo=UTC)
GROUP_ROW = re.compile(r'<tr class="error-group" data-fingerprint="([0-9a-f]{16})"')


class CrmTimeout(Exception):
    pass


def crm_call(message: str) -> None:
    raise CrmTimeout(message)


def parse_row(message: str) -> None:
    raise ValueError(message)


def record_error(raiser, message: str, *, at: datetime, lead: str = "", workflow: str = "sales"):
    """An error event with a real traceback: the raising function decides the group."""
    try:
        raiser(message)
    except (CrmTimeout, ValueError) as exc:
        return record_event(
            event_type="error", exc=exc, lead_id=lead, workflow=workflow, timestamp=at
        )


@pytest.fixture
def errors(db):
    """Group A (crm_call): three in the last 7 days on two leads, one 10 days ago.
    Group B (parse_row): one, newer than every A."""
    a_old = record_error(crm_call, "timeout after 30s", at=NOW - timedelta(days=10), lead="LEAD-9")
    a = [
        record_error(crm_call, "timeout after 31s", at=NOW - timedelta(days=3), lead="LEAD-1"),
        record_error(crm_call, "timeout after 32s", at=NOW - timedelta(days=2), lead="LEAD-2"),
        record_error(crm_call, "timeout after 33s", at=NOW - timedelta(hours=5), lead="LEAD-1"),
        record_error(crm_call, "timeout after 34s", at=NOW - timedelta(hours=4)),
    ]
    b = record_error(parse_row, "bad row 7", at=NOW - timedelta(hours=1), lead="LEAD-3")
    # Not an error: never grouped.
    record_event(event_type="lead_ingested", lead_id="LEAD-1", timestamp=NOW - timedelta(hours=2))
    return {"a_old": a_old, "a": a, "b": b}


def errors_by_pk(pk: str) -> AuditEvent:
    return AuditEvent.objects.get(pk=pk)


@pytest.fixture(autouse=True)
def _fresh_cache(fresh_cache):
    pass


@pytest.fixture
def now():
    with time_machine.travel(NOW, tick=False):
        yield NOW


def test_same_fingerprint_is_one_group_with_counts_first_and_last_seen(errors, now):
    a, b = errors["a"], errors["b"]
    assert len({e.fingerprint for e in a} | {errors["a_old"].fingerprint}) == 1
    assert b.fingerprint != a[0].fingerprint
    period_start = NOW - timedelta(days=7)

    groups = error_selectors.error_groups(since=period_start, until=NOW)

    assert [g.fingerprint for g in groups] == [a[0].fingerprint, b.fingerprint]
    ga, gb = groups
    assert (ga.count, ga.leads) == (4, 2)
    # First seen ever (before the period), last seen in the period.
    assert ga.first_seen == errors["a_old"].timestamp
    assert ga.last_seen == a[-1].timestamp
    assert not ga.is_new(period_start)
    assert ga.latest_id == a[-1].pk
    assert ga.title == "CrmTimeout: timeout after <n>s"
    assert (gb.count, gb.leads, gb.first_seen, gb.is_new(period_start)) == (
        1,
        1,
        b.timestamp,
        True,
    )


def test_groups_sort_by_last_seen_and_count_per_bucket(errors, now):
    since = NOW - timedelta(days=3, hours=1)
    buckets = [since + timedelta(days=i) for i in range(4)]

    groups = error_selectors.error_groups(since=since, until=NOW, buckets=buckets, sort="last_seen")

    assert [g.fingerprint for g in groups] == [errors["b"].fingerprint, errors["a"][0].fingerprint]
    # Buckets start 3 d 1 h, 2 d 1 h, 1 d 1 h and 1 h ago. A: 3 days ago, 2 days
    # ago, 5 h and 4 h ago; B: 1 h ago.
    assert groups[1].counts == [1, 1, 2, 0]
    assert groups[0].counts == [0, 0, 0, 1]


def test_workflow_filter_and_limit(errors, now):
    record_error(parse_row, "bad row 8", at=NOW - timedelta(hours=2), workflow="other")
    since = NOW - timedelta(days=7)
    groups = error_selectors.error_groups(since=since, until=NOW, workflow="other")
    assert [(g.fingerprint, g.count) for g in groups] == [(errors["b"].fingerprint, 1)]
    assert len(error_selectors.error_groups(since=since, until=NOW, limit=1)) == 1


def test_first_seen_is_the_earliest_occurrence_ever(errors):
    assert error_selectors.first_seen(errors["a"][0].fingerprint) == errors["a_old"].timestamp
    assert error_selectors.first_seen("0123456789abcdef") is None


def test_error_list_page_and_fragment(auditor_client, errors, now):
    url = reverse("error-list") + "?range=7d"
    page = auditor_client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "<html" in html and 'id="error-groups"' in html
    assert GROUP_ROW.findall(html) == [errors["a"][0].fingerprint, errors["b"].fingerprint]
    rows = page.context["rows"]
    assert [r["group"].count for r in rows] == [4, 1]
    # A sparkline per group: one bar per day of the period.
    assert html.count('<svg class="spark"') == 2
    assert html.count("<rect ") == 2 * len(page.context["period"].buckets())
    assert f'href="{reverse("error-detail", args=[errors["b"].fingerprint])}?range=7d"' in html

    fragment = auditor_client.get(url + "&sort=last_seen", **HTMX)
    body = fragment.content.decode()
    assert fragment.status_code == 200
    assert "<html" not in body and body.lstrip().startswith('<section id="error-groups"')
    assert GROUP_ROW.findall(body) == [errors["b"].fingerprint, errors["a"][0].fingerprint]


def test_error_list_period_excludes_older_errors(auditor_client, errors, now):
    html = auditor_client.get(reverse("error-list") + "?range=24h").content.decode()
    assert GROUP_ROW.findall(html) == [errors["a"][0].fingerprint, errors["b"].fingerprint]
    assert [
        r["group"].count
        for r in auditor_client.get(reverse("error-list") + "?range=24h").context["rows"]
    ] == [2, 1]


def test_error_list_empty_and_bad_sort(auditor_client, db, now):
    html = auditor_client.get(reverse("error-list")).content.decode()
    assert "No unresolved errors in the last 7d" in html
    response = auditor_client.get(reverse("error-list") + "?sort=bogus")
    assert response.status_code == 400
    assert "sort must be one of count, last_seen" in response.content.decode()


def test_error_messages_are_escaped(auditor_client, db, now):
    event = record_error(
        parse_row, "<script>alert(1)</script>", at=NOW - timedelta(hours=1), lead="LEAD-1"
    )
    for url in (reverse("error-list"), reverse("error-detail", args=[event.fingerprint])):
        html = auditor_client.get(url).content.decode()
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(" in html


def test_group_page_shows_the_latest_traceback_occurrences_and_leads(auditor_client, errors, now):
    fp = errors["a"][0].fingerprint
    response = auditor_client.get(reverse("error-detail", args=[fp]) + "?range=7d")
    assert response.status_code == 200
    html = response.content.decode()
    latest = errors["a"][-1]
    traceback = re.search(
        r'<section id="latest-traceback".*?<pre class="traceback">(.*?)</pre>', html, re.S
    )
    assert traceback is not None
    assert "in crm_call" in traceback.group(1) and "timeout after 34s" in traceback.group(1)
    assert f'href="{reverse("event-detail", args=[latest.pk])}"' in html
    occurrences = re.findall(r'<tr class="occurrence" data-event-id="(\d+)"', html)
    assert occurrences == [str(e.pk) for e in reversed(errors["a"])]
    assert f'href="{reverse("lead-detail", args=["LEAD-1"])}"' in html
    assert [(r["lead_public_id"], r["count"]) for r in response.context["leads"]] == [
        ("LEAD-1", 2),
        ("LEAD-2", 1),
    ]
    group = response.context["group"]
    assert (group.count, group.leads, group.first_seen) == (4, 2, errors["a_old"].timestamp)
    events_link = re.search(r'id="group-events" class="button secondary" href="([^"]+)"', html)
    assert events_link is not None
    assert f"fingerprint={fp}" in events_link.group(1)
    assert "type=error" in events_link.group(1)


def test_group_page_pages_occurrences_by_keyset(auditor_client, errors, now, monkeypatch):
    from orchestrator.dashboard.views import errors as views

    monkeypatch.setattr(views, "PAGE_SIZE", 3)
    fp = errors["a"][0].fingerprint
    url = reverse("error-detail", args=[fp]) + "?range=30d"
    first = auditor_client.get(url).content.decode()
    ids = re.findall(r'data-event-id="(\d+)"', first)
    expected = [str(e.pk) for e in [*reversed(errors["a"]), errors["a_old"]]]
    assert ids == expected[:3]
    href = re.search(r'id="next-page" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert href.startswith(reverse("error-detail", args=[fp]) + "?")
    # The cursor names the last row shown (core.paging's one format).
    assert f"cursor={encode_cursor(EVENTS.position(errors_by_pk(expected[2])))}" in href

    second = auditor_client.get(href, **HTMX)
    body = second.content.decode()
    assert "<html" not in body and body.lstrip().startswith('<section id="occurrences"')
    assert re.findall(r'data-event-id="(\d+)"', body) == expected[3:]
    assert 'id="next-page"' not in body


def test_group_page_without_occurrences_in_the_period_shows_the_latest_ever(
    auditor_client, db, now
):
    old = record_error(crm_call, "timeout", at=NOW - timedelta(days=20), lead="LEAD-5")
    html = auditor_client.get(reverse("error-detail", args=[old.fingerprint])).content.decode()
    assert "before this period" in html
    assert "No occurrences in the last 7d" in html


@pytest.mark.parametrize("fingerprint", ["0123456789abcdef", "not-a-fingerprint", "ABCDEF"])
def test_unknown_fingerprint_is_404(auditor_client, errors, fingerprint):
    assert auditor_client.get(reverse("error-detail", args=[fingerprint])).status_code == 404


# Old cursors (an event id) are refused like any other: the page says to start again.
@pytest.mark.parametrize("cursor", ["abc", "999999"])
def test_bad_cursor_is_400(auditor_client, errors, now, cursor):
    fp = errors["a"][0].fingerprint
    response = auditor_client.get(reverse("error-detail", args=[fp]) + f"?cursor={cursor}")
    assert response.status_code == 400
    assert "is not a position in this list" in response.content.decode()


def test_events_without_errors_have_no_fingerprint(errors):
    assert (
        not AuditEvent.objects.filter(event_type="lead_ingested").exclude(fingerprint="").exists()
    )
