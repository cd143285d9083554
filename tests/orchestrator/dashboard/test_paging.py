"""Every keyset-paged table, the way a person pages it: from a page that already carries
filters, follow "Older" (as a link and as htmx), and try an edited cursor."""

import html as htmllib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.core.cache import cache
from django.urls import reverse

from audit.services import record_event
from leads.models import LeadSource
from leads.services import lead_create
from leads.workflows.models import Workflow, WorkflowRun
from tests.conftest import HTMX

NOW = datetime(2026, 6, 10, 14, 30, tzinfo=UTC)
PAGE_SIZE = 2


@pytest.fixture(autouse=True)
def clock(db):
    cache.clear()
    with time_machine.travel(NOW, tick=False):
        yield
    cache.clear()


@dataclass
class Table:
    url: str  # the first page, with filters
    filters: dict[str, list[str]]  # what every page's links must keep
    section: str  # the id of the table's section, and its partial's name
    row: re.Pattern  # the id of each row shown
    expected: list[str]  # every matching row, in page order


def crash(message: str) -> None:
    raise TimeoutError(message)


def events_table(monkeypatch) -> Table:
    monkeypatch.setattr("orchestrator.dashboard.views.events.PAGE_SIZE", PAGE_SIZE)
    shown = []
    for i in range(5):
        # Two share an instant: the id breaks the tie.
        at = NOW - timedelta(hours=1 + i // 2 * 3)
        shown.append(record_event(event_type="email_sent", actor="user:ann", timestamp=at))
        record_event(event_type="email_sent", actor="user:bob", timestamp=at)
    shown.sort(key=lambda e: (e.timestamp, e.id), reverse=True)
    return Table(
        url=reverse("event-list") + "?range=30d&actor=user%3Aann&type=email_sent",
        filters={"range": ["30d"], "actor": ["user:ann"], "type": ["email_sent"]},
        section="event-table",
        row=re.compile(r'class="event-row[^"]*" data-event-id="(\d+)"'),
        expected=[str(e.id) for e in shown],
    )


def occurrences_table(monkeypatch) -> Table:
    monkeypatch.setattr("orchestrator.dashboard.views.errors.PAGE_SIZE", PAGE_SIZE)
    errors = []
    for i in range(5):
        try:
            crash(f"timeout after {i}s")
        except TimeoutError as exc:
            at = NOW - timedelta(days=2 + i // 2 * 5)  # some beyond the default 7 days
            errors.append(record_event(event_type="error", exc=exc, timestamp=at))
    errors.sort(key=lambda e: (e.timestamp, e.id), reverse=True)
    fingerprint = errors[0].fingerprint
    return Table(
        url=reverse("error-detail", args=[fingerprint]) + "?range=30d",
        filters={"range": ["30d"]},
        section="occurrences",
        row=re.compile(r'<tr class="occurrence" data-event-id="(\d+)"'),
        expected=[str(e.id) for e in errors],
    )


def leads_table(monkeypatch) -> Table:
    monkeypatch.setattr("orchestrator.dashboard.views.leads.PAGE_SIZE", PAGE_SIZE)
    source = LeadSource.objects.create(name="Website", slug="website", kind="web_form")
    wanted = []
    for i in range(5):
        at = NOW - timedelta(days=1 + i // 2 * 10)
        wanted.append(
            lead_create(source=source, email=f"n{i}@acme.example", at=at, status="nurture")
        )
        lead_create(source=source, email=f"q{i}@acme.example", at=at, status="qualified")
    wanted.sort(key=lambda lead: (lead.created_at, lead.id), reverse=True)
    return Table(
        url=reverse("lead-list") + "?range=30d&status=nurture",
        filters={"range": ["30d"], "status": ["nurture"]},
        section="lead-table",
        row=re.compile(r'class="lead-row" data-lead-id="([^"]+)"'),
        expected=[lead.public_id for lead in wanted],
    )


def runs_table(monkeypatch) -> Table:
    monkeypatch.setattr("orchestrator.dashboard.views.workflows.PAGE_SIZE", PAGE_SIZE)
    sales = Workflow.objects.create(name="sales")
    support = Workflow.objects.create(name="support")
    runs = []
    for i in range(5):
        started = NOW - timedelta(days=1 + i // 2 * 10)
        for workflow in (sales, support):
            run = WorkflowRun.objects.create(
                workflow=workflow,
                started_at=started,
                finished_at=started + timedelta(seconds=3),
                status="succeeded",
                correlation_id=f"corr-{workflow.name}-{i}",
            )
            if workflow == sales:
                runs.append(run)
    runs.sort(key=lambda run: (run.started_at, run.id), reverse=True)
    return Table(
        url=reverse("workflow-runs") + "?range=30d&workflow=sales&status=succeeded",
        filters={"range": ["30d"], "workflow": ["sales"], "status": ["succeeded"]},
        section="workflow-runs",
        row=re.compile(r'<tr class="run-row" data-run-id="(\d+)"'),
        expected=[str(run.pk) for run in runs],
    )


TABLES = {
    "events": events_table,
    "error occurrences": occurrences_table,
    "leads": leads_table,
    "workflow runs": runs_table,
}


@pytest.fixture(params=list(TABLES))
def table(request, monkeypatch, db) -> Table:
    return TABLES[request.param](monkeypatch)


def next_link(html: str) -> tuple[str, str] | None:
    """The "Older" link's (href, hx-get), or None on the last page."""
    match = re.search(r'<a id="next-page" href="([^"]+)" hx-get="([^"]+)"', html)
    return (htmllib.unescape(match[1]), htmllib.unescape(match[2])) if match else None


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def keeps_filters(url: str, table: Table) -> bool:
    params = query(url)
    return all(params.get(name) == values for name, values in table.filters.items())


def test_following_older_keeps_the_filters_and_shows_the_next_rows(auditor_client, table):
    assert len(table.expected) == 5
    pages, url = [], table.url
    while True:
        response = auditor_client.get(url)
        assert response.status_code == 200
        html = response.content.decode()
        assert "<html" in html
        pages.append(table.row.findall(html))
        link = next_link(html)
        if link is None:
            break
        href, hx_get = link
        # A real link, the same URL as htmx asks for, on the list's own path.
        assert href == hx_get and href.startswith(urlsplit(table.url).path + "?")
        assert keeps_filters(href, table) and query(href)["cursor"]
        url = href
    assert pages == [table.expected[0:2], table.expected[2:4], table.expected[4:5]]


def test_following_older_with_htmx_swaps_in_the_next_rows_with_the_filters(auditor_client, table):
    first = auditor_client.get(table.url).content.decode()
    # The section the pager's links swap: target, swap and history set once, on it.
    section = re.search(rf'<section id="{table.section}"[^>]*>', first)[0]
    assert f'hx-target="#{table.section}"' in section
    assert 'hx-swap="outerHTML"' in section and 'hx-push-url="true"' in section

    url, rows = next_link(first)[1], table.row.findall(first)
    while url:
        response = auditor_client.get(url, HTTP_HX_TARGET=table.section, **HTMX)
        assert response.status_code == 200
        fragment = response.content.decode()
        # Only the partial named after the id it replaces.
        assert "<html" not in fragment
        assert fragment.lstrip().startswith(f'<section id="{table.section}"')
        assert "Vary" in response and "HX-Request" in response["Vary"]
        rows += table.row.findall(fragment)
        # The first page's link back, and the next one, keep the filters too.
        first_page = re.search(r'<a id="first-page" href="([^"]+)"', fragment)
        assert first_page and keeps_filters(htmllib.unescape(first_page[1]), table)
        assert "cursor" not in query(htmllib.unescape(first_page[1]))
        link = next_link(fragment)
        if link:
            assert keeps_filters(link[1], table)
        url = link[1] if link else None
    assert rows == table.expected


def tampered(cursor: str) -> list[str]:
    flipped = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    return [flipped, cursor[:-4], cursor + "x", "1234", cursor.replace("-", "+")[:10] + "=="]


def test_a_tampered_cursor_is_a_400_that_says_so(auditor_client, table):
    first = auditor_client.get(table.url).content.decode()
    href = next_link(first)[0]
    cursor = query(href)["cursor"][0]
    for bad in tampered(cursor):
        params = {**query(href), "cursor": [bad]}
        response = auditor_client.get(urlsplit(href).path, params)
        assert response.status_code == 400, bad
        assert "is not a position in this list" in response.content.decode()
        fragment = auditor_client.get(
            urlsplit(href).path, params, HTTP_HX_TARGET=table.section, **HTMX
        )
        assert fragment.status_code == 400
        assert "is not a position in this list" in fragment.content.decode()
        assert fragment["HX-Retarget"] == "#request-error"
