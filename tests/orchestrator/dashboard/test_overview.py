"""The overview page: KPI cards with changes, lead volume, errors with spikes, recent items."""

import re
from datetime import UTC, datetime, timedelta
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.core.cache import cache
from django.http import QueryDict
from django.urls import reverse

from audit.integrity import seal_all
from audit.models import AuditEvent
from audit.services import record_event
from core.periods import period_from_query
from leads.followups.models import Enrollment, OutboundEmail, Sequence, SequenceStep
from leads.models import Lead, LeadSource
from leads.workflows.models import Workflow, WorkflowRun
from orchestrator.dashboard.charts import SPIKE_COLOUR
from orchestrator.dashboard.selectors import overview as overview_selectors
from tests.conftest import HTMX

NOW = datetime(2026, 6, 10, 12, 30, tzinfo=UTC)
WIDGETS = ["kpis", "volume-chart", "error-chart", "recent-errors", "recent-runs"]
URL = reverse("overview")


@pytest.fixture(autouse=True)
def clock(db):
    # The aggregates are cached for a minute; each test starts with none.
    cache.clear()
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller
    cache.clear()


def event(event_type: str, at: datetime, **kwargs) -> AuditEvent:
    if event_type == "error":
        kwargs.setdefault("error_type", "CrmError")
        kwargs.setdefault("error_message", "boom")
    return record_event(event_type=event_type, timestamp=at, **kwargs)


def lead(source: LeadSource, at: datetime, status: str = "new") -> Lead:
    n = Lead.objects.count() + 1
    return Lead.objects.create(
        source=source, email=f"p{n}@acme.example", status=status, created_at=at
    )


def sent_email(at: datetime) -> OutboundEmail:
    """A follow-up email sent at `at`, to a lead created long before either period."""
    sequence, _ = Sequence.objects.get_or_create(slug="welcome", defaults={"name": "Welcome"})
    step, _ = SequenceStep.objects.get_or_create(
        sequence=sequence, position=1, defaults={"subject_template": "s", "text_template": "t"}
    )
    source, _ = LeadSource.objects.get_or_create(
        slug="old", defaults={"name": "Old", "kind": "csv"}
    )
    old = lead(source, NOW - timedelta(days=100))
    enrollment = Enrollment.objects.create(lead=old, sequence=sequence, status="completed")
    return OutboundEmail.objects.create(
        enrollment=enrollment,
        step=step,
        message_id=f"<{old.pk}@x>",
        recipient=old.email,
        status="sent",
        due_at=at,
        sent_at=at,
    )


def fragment(client, target: str, query: str = "range=7d") -> str:
    response = client.get(f"{URL}?{query}", HTTP_HX_TARGET=target, **HTMX)
    assert response.status_code == 200
    return response.content.decode()


def links(html: str) -> list[str]:
    return [unescape(href) for href in re.findall(r'xlink:href="([^"]+)"', html)]


# --- the page and its fragments ---------------------------------------------------------


def test_the_full_page_has_every_widget(auditor_client):
    response = auditor_client.get(URL)
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" in html
    for widget in WIDGETS:
        assert f'<section id="{widget}"' in html
    assert html.count('hx-trigger="every 60s"') == len(WIDGETS)
    for key in ["leads", "qualification_rate", "crm_success", "emails_sent", "replies", "errors"]:
        assert f'data-kpi="{key}"' in html
    assert "HX-Request" in response["Vary"]


@pytest.mark.parametrize("widget", WIDGETS)
def test_each_widget_refreshes_alone(auditor_client, widget):
    html = fragment(auditor_client, widget, "range=24h")
    assert "<html" not in html
    assert html.lstrip().startswith(f'<section id="{widget}"')
    # It polls with the same period it was drawn for.
    assert f'hx-get="{URL}?range=24h"' in html
    for other in set(WIDGETS) - {widget}:
        assert f'id="{other}"' not in html


def test_an_htmx_request_for_something_else_gets_the_page(auditor_client):
    response = auditor_client.get(URL, HTTP_HX_TARGET="main", **HTMX)
    assert "<html" in response.content.decode()


def test_a_history_restore_gets_the_whole_page(auditor_client):
    response = auditor_client.get(
        URL, HTTP_HX_TARGET="kpis", HTTP_HX_HISTORY_RESTORE_REQUEST="true", **HTMX
    )
    html = response.content.decode()
    assert "<html" in html
    assert all(f'id="{w}"' in html for w in WIDGETS)


def test_a_bad_range_is_a_400_that_says_why(auditor_client):
    response = auditor_client.get(f"{URL}?range=custom&since=2026-06-05&until=2026-06-01")
    assert response.status_code == 400
    assert "until must be after since" in response.content.decode()


# --- KPIs ---------------------------------------------------------------------------------


@pytest.fixture
def seeded(web_source):
    """This period (the last 7 days) and the 7 days before, with known figures."""
    now, before = NOW - timedelta(days=2), NOW - timedelta(days=9)
    for status in ["qualified", "qualified", "nurture", "disqualified"]:
        lead(web_source, now, status)
    for status in ["qualified", "new"]:
        lead(web_source, before, status)
    # Emails sent are the email rows sent in the period (not email_sent events).
    for _ in range(3):
        sent_email(now)
    for _ in range(2):
        sent_email(before)
    # Replies are leads that replied: the second reply of LEAD-000001 adds nothing.
    event("email_replied", now, lead_id="LEAD-000001")
    event("email_replied", now, lead_id="LEAD-000001")
    event("crm_create", now)
    event("crm_create", now)
    event("crm_update", now)
    event("crm_create", before)
    event("error", now, details={"stage": "crm_sync"})
    event("error", before, details={"stage": "crm_sync"})
    for _ in range(3):
        event("error", before, details={"stage": "qualify_route"})
    # Most of it sealed into the rollups, the rest still in the unsealed tail.
    seal_all()
    event("error", now - timedelta(hours=1), details={"stage": "qualify_route"})
    sent_email(now + timedelta(minutes=5))
    # Outside both periods: must not count.
    sent_email(NOW - timedelta(days=15))
    event("error", NOW - timedelta(days=15))


def kpi_map(response) -> dict:
    return {k.key: k for k in response.context["kpis"]}


def test_kpi_values_and_changes(auditor_client, seeded):
    kpis = kpi_map(auditor_client.get(URL, {"range": "7d"}))
    assert (kpis["leads"].value, kpis["leads"].previous) == (4, 2)
    assert kpis["leads"].change_shown == "▲ +100%"
    assert (kpis["qualification_rate"].value, kpis["qualification_rate"].previous) == (0.5, 0.5)
    assert kpis["qualification_rate"].change_shown == "→ ±0 pp"
    # 3 synced, 1 failed now; 1 synced, 1 failed before.
    assert (kpis["crm_success"].value, kpis["crm_success"].previous) == (0.75, 0.5)
    assert kpis["crm_success"].change_shown == "▲ +25.0 pp"
    assert (kpis["emails_sent"].value, kpis["emails_sent"].previous) == (4, 2)
    assert (kpis["replies"].value, kpis["replies"].previous) == (1, 0)
    assert kpis["replies"].change_shown == "▲ new"
    assert (kpis["errors"].value, kpis["errors"].previous) == (2, 4)
    assert kpis["errors"].change_shown == "▼ -50%"


def test_kpi_cards_render_values_and_colour_errors_bad_when_up(auditor_client, seeded):
    html = fragment(auditor_client, "kpis")
    cards = dict(re.findall(r'data-kpi="(\w+)">(.*?)</div>\s*</div>', html, re.S))
    assert re.search(r'class="value">4<', cards["leads"])
    assert re.search(r'class="value">75.0%<', cards["crm_success"])
    assert 'class="delta up"' in cards["leads"]
    # Fewer errors is good news: "down" with the bad-when-up class turns it green.
    assert 'class="delta down bad-when-up"' in cards["errors"]
    assert "-50%" in cards["errors"]
    assert 'title="previous period: 4"' in cards["errors"]


def test_more_errors_is_up_and_bad(auditor_client, web_source):
    event("error", NOW - timedelta(hours=2))
    html = fragment(auditor_client, "kpis", "range=24h")
    assert re.search(r'data-kpi="errors">.*?class="delta up bad-when-up"', html, re.S)


def test_rates_without_a_denominator_show_a_dash(auditor_client):
    kpis = kpi_map(auditor_client.get(URL))
    assert kpis["qualification_rate"].value is None
    assert kpis["qualification_rate"].shown == overview_selectors.NO_VALUE
    assert kpis["crm_success"].change_shown == overview_selectors.NO_VALUE
    assert kpis["errors"].change_shown == "→ ±0%"


def test_aggregates_are_cached_for_a_minute(auditor_client, web_source, clock):
    assert kpi_map(auditor_client.get(URL))["emails_sent"].value == 0
    sent_email(NOW - timedelta(hours=1))
    assert kpi_map(auditor_client.get(URL))["emails_sent"].value == 0
    clock.shift(timedelta(seconds=61))
    assert kpi_map(auditor_client.get(URL))["emails_sent"].value == 1


# --- event counts against the rows ----------------------------------------------------------


def test_event_counts_equal_a_count_over_rows():
    # Edges inside hours, whole hours, whole days; sealed and unsealed events.
    start = datetime(2026, 6, 1, 22, 17, tzinfo=UTC)
    stamps = [start + timedelta(minutes=37 * i) for i in range(-10, 200)]
    for i, at in enumerate(stamps):
        event("error" if i % 3 else "email_sent", at)
        if i == 150:
            seal_all()
    since, until = start + timedelta(minutes=5), start + timedelta(days=4, minutes=11)
    for by_day in (True, False):
        counts = overview_selectors.event_counts(
            event_types=["error", "email_sent"], since=since, until=until, by_day=by_day
        )
        rows = AuditEvent.objects.filter(timestamp__gte=since, timestamp__lt=until)
        for etype in ("error", "email_sent"):
            assert (
                sum(n for (t, _at), n in counts.items() if t == etype)
                == rows.filter(event_type=etype).count()
            )
        if not by_day:
            # Hour keys: bucketing by hour is exact.
            by_hour = {}
            for ts in rows.filter(event_type="error").values_list("timestamp", flat=True):
                hour = ts.replace(minute=0, second=0, microsecond=0)
                by_hour[hour] = by_hour.get(hour, 0) + 1
            assert {at: n for (t, at), n in counts.items() if t == "error"} == by_hour


# --- lead volume ------------------------------------------------------------------------------


def test_lead_volume_is_stacked_by_source_with_bars_linking_to_their_day(
    auditor_client, web_source
):
    csv = LeadSource.objects.create(name="CSV import", slug="csv", kind="csv")
    day = datetime(2026, 6, 8, 9, tzinfo=UTC)
    for _ in range(3):
        lead(web_source, day)
    lead(csv, day + timedelta(hours=3))
    lead(csv, NOW - timedelta(minutes=10))
    lead(csv, NOW - timedelta(days=8))  # before the period
    response = auditor_client.get(URL, {"range": "7d"}, HTTP_HX_TARGET="volume-chart", **HTMX)
    volume = response.context["volume"]
    assert [s.name for s in volume.series] == ["Website", "CSV import"]
    buckets = [start for start, _end in volume.buckets]
    i = buckets.index(day.replace(hour=0))
    assert volume.series[0].values[i] == 3
    assert volume.series[1].values[i] == 1
    assert volume.series[1].values[-1] == 1
    assert volume.total == 5
    html = response.content.decode()
    assert "5 in all" in html
    hrefs = links(html)
    assert len(hrefs) == 2 * len(buckets)
    url = urlsplit(hrefs[i])
    assert url.path == reverse("event-list")
    params = parse_qs(url.query)
    assert params["type"] == ["lead_ingested"]
    narrowed = period_from_query(QueryDict(url.query))
    assert (narrowed.start, narrowed.end) == (
        day.replace(hour=0),
        day.replace(hour=0) + timedelta(days=1),
    )
    # The first and last days are clipped to the period (to whole minutes).
    first = period_from_query(QueryDict(urlsplit(hrefs[0]).query))
    assert (first.start, first.end) == (NOW - timedelta(days=7), datetime(2026, 6, 4, tzinfo=UTC))
    last = period_from_query(QueryDict(urlsplit(hrefs[len(buckets) - 1]).query))
    assert (last.start, last.end) == (datetime(2026, 6, 10, tzinfo=UTC), NOW)


def test_lead_volume_by_hour_for_a_day(auditor_client, web_source):
    lead(web_source, NOW - timedelta(minutes=95))  # 10:55
    response = auditor_client.get(URL, {"range": "24h"}, HTTP_HX_TARGET="volume-chart", **HTMX)
    volume = response.context["volume"]
    starts = [start for start, _end in volume.buckets]
    assert volume.series[0].values[starts.index(datetime(2026, 6, 10, 10, tzinfo=UTC))] == 1
    assert sum(volume.series[0].values) == 1


# --- errors and spikes ------------------------------------------------------------------------


@pytest.fixture
def spiky(settings, web_source):
    """24 hours of history alternating 1 and 2 errors (threshold 1.5 + 3 * 0.5 = 3)."""
    settings.DASHBOARD_SPIKE_K = 3.0
    settings.DASHBOARD_SPIKE_MIN_COUNT = 2
    settings.DASHBOARD_SPIKE_WINDOW = 24
    first_bucket = datetime(2026, 6, 9, 12, tzinfo=UTC)  # range=24h starts at 12:30
    for h in range(24):
        hour = first_bucket - timedelta(hours=24 - h)
        for m in range(1 + h % 2):
            event("error", hour + timedelta(minutes=10 + m))
    seal_all()
    # The first bucket is a spike only against the history before the period.
    for m in range(4):
        event("error", first_bucket + timedelta(minutes=40 + m))
    for m in range(3):  # at the threshold: not a spike
        event("error", first_bucket + timedelta(hours=3, minutes=m))
    for m in range(9):
        event(
            "error",
            datetime(2026, 6, 10, 8, 5 + m, tzinfo=UTC),
            error_message="<script>alert('x')</script>" if m == 8 else "boom",
            lead_id="LEAD-000042",
        )
    return first_bucket


def test_spikes_are_marked_red_and_listed_with_links(auditor_client, spiky):
    response = auditor_client.get(URL, {"range": "24h"}, HTTP_HX_TARGET="error-chart", **HTMX)
    errors = response.context["errors"]
    starts = [start for start, _end in errors.buckets]
    spike_hour = starts.index(datetime(2026, 6, 10, 8, tzinfo=UTC))
    assert errors.counts[0] == 4
    assert errors.counts[3] == 3
    assert errors.counts[spike_hour] == 9
    assert errors.spikes == {0, spike_hour}
    html = response.content.decode()
    # The red bars are exactly the spikes.
    bars = re.findall(r'<a target="_self" xlink:href="([^"]+)">(.*?)</a>', html, re.S)
    red = [i for i, (_href, body) in enumerate(bars) if f'fill="{SPIKE_COLOUR}"' in body]
    assert red == [0, spike_hour]
    assert "2 spikes" in html
    listed = re.findall(
        r'<li class="spike"><a href="([^"]+)"><time [^>]*>([^<]+)</time></a>: (\d+) errors', html
    )
    assert [(label, n) for _href, label, n in listed] == [
        ("2026-06-09 12:30:00 UTC", "4"),
        ("2026-06-10 08:00:00 UTC", "9"),
    ]
    narrowed = period_from_query(QueryDict(urlsplit(unescape(listed[1][0])).query))
    assert (narrowed.start, narrowed.end) == (
        datetime(2026, 6, 10, 8, tzinfo=UTC),
        datetime(2026, 6, 10, 9, tzinfo=UTC),
    )


def test_error_bars_open_the_errors_of_their_bucket(auditor_client, spiky):
    hrefs = links(fragment(auditor_client, "error-chart", "range=24h"))
    assert len(hrefs) == 25
    url = urlsplit(hrefs[3])
    assert url.path == reverse("event-list")
    assert parse_qs(url.query)["type"] == ["error"]
    narrowed = period_from_query(QueryDict(url.query))
    start = datetime(2026, 6, 9, 15, tzinfo=UTC)
    assert (narrowed.start, narrowed.end) == (start, start + timedelta(hours=1))


def test_without_history_the_first_bucket_is_no_spike(auditor_client, settings, web_source):
    settings.DASHBOARD_SPIKE_MIN_COUNT = 2
    for m in range(6):
        event("error", NOW - timedelta(hours=23, minutes=50 - m))
    response = auditor_client.get(URL, {"range": "24h"}, HTTP_HX_TARGET="error-chart", **HTMX)
    # A quiet history (all zeros) makes 6 errors a spike.
    assert response.context["errors"].spikes == {0}
    settings.DASHBOARD_SPIKE_MIN_COUNT = 7
    cache.clear()
    response = auditor_client.get(URL, {"range": "24h"}, HTTP_HX_TARGET="error-chart", **HTMX)
    assert response.context["errors"].spikes == set()
    assert "No error spikes in this range." in response.content.decode()


# --- recent errors and runs --------------------------------------------------------------------


def test_recent_errors_are_the_last_ten_of_the_period_and_escaped(auditor_client, spiky):
    event("error", NOW - timedelta(days=2), error_message="too old for 24h")
    html = fragment(auditor_client, "recent-errors", "range=24h")
    rows = re.findall(r'<tr class="recent-error" data-event-id="(\d+)">(.*?)</tr>', html, re.S)
    newest = AuditEvent.objects.filter(event_type="error").order_by("-timestamp", "-id")[:10]
    assert [int(pk) for pk, _ in rows] == [e.pk for e in newest]
    assert "too old" not in html
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    first = rows[0][1]
    assert reverse("lead-detail", kwargs={"public_id": "LEAD-000042"}) in first
    assert reverse("error-detail", kwargs={"fingerprint": newest[0].fingerprint}) in first
    assert reverse("event-detail", kwargs={"pk": newest[0].pk}) in first


def test_long_error_messages_are_truncated(auditor_client, web_source):
    event("error", NOW - timedelta(hours=1), error_message="x" * 300)
    html = fragment(auditor_client, "recent-errors")
    # Shown cut to 120 characters; the whole message is in the cell's title.
    assert '">' + "x" * 119 + "…</td>" in html
    assert 'title="' + "x" * 300 + '"' in html


def test_recent_runs_link_to_their_events(auditor_client):
    sales = Workflow.objects.create(name="sales")
    support = Workflow.objects.create(name="support")
    done = WorkflowRun.objects.create(
        workflow=sales,
        started_at=NOW - timedelta(hours=2, seconds=30),
        finished_at=NOW - timedelta(hours=2) + timedelta(seconds=95),
        status="succeeded",
        counts={"errors": 1, "processed": 12},
        correlation_id="c0ffee",
    )
    running = WorkflowRun.objects.create(
        workflow=support, started_at=NOW - timedelta(minutes=5), correlation_id="beef"
    )
    WorkflowRun.objects.create(
        workflow=sales, started_at=NOW - timedelta(days=9), status="failed", correlation_id="old"
    )
    html = fragment(auditor_client, "recent-runs")
    rows = re.findall(r'<tr class="run-row" data-run-id="(\d+)">(.*?)</tr>', html, re.S)
    assert [int(pk) for pk, _ in rows] == [running.pk, done.pk]
    assert "5m 00s" in rows[0][1] and "so far" in rows[0][1]
    assert "2m 05s" in rows[1][1]
    assert "processed 12 · errors 1" in rows[1][1]
    href = unescape(re.search(r'href="([^"]+)">events<', rows[1][1]).group(1))
    url = urlsplit(href)
    assert url.path == reverse("event-list")
    assert parse_qs(url.query)["correlation"] == ["c0ffee"]
    narrowed = period_from_query(QueryDict(url.query))
    assert narrowed.start <= done.started_at and narrowed.end >= done.finished_at


def test_no_runs_and_no_errors_say_so(auditor_client):
    assert "No workflow runs started in this range." in fragment(auditor_client, "recent-runs")
    assert "No errors in this range." in fragment(auditor_client, "recent-errors")


def test_a_chart_fragment_needs_no_nonce_of_its_own(auditor_client, web_source):
    # A fragment swapped into the page cannot bring a <style> with its own nonce
    # (the page's nonce differs); chart styles come from the static stylesheet.
    lead(web_source, NOW - timedelta(hours=1))
    for _ in range(2):  # computed, then from the cache
        html = fragment(auditor_client, "volume-chart")
        assert "<svg" in html and "<style" not in html and "nonce" not in html
    page = auditor_client.get(URL).content.decode()
    assert "dashboard/charts.css" in page


def test_small_sources_share_one_series(auditor_client):
    for i in range(10):
        source = LeadSource.objects.create(name=f"S{i}", slug=f"s{i}", kind="web_form")
        for _ in range(10 - i):
            lead(source, NOW - timedelta(hours=1))
    LeadSource.objects.create(name="Quiet", slug="quiet", kind="csv")
    response = auditor_client.get(URL, HTTP_HX_TARGET="volume-chart", **HTMX)
    series = response.context["volume"].series
    assert [s.name for s in series] == [*(f"S{i}" for i in range(7)), "Other sources"]
    assert sum(series[-1].values) == 3 + 2 + 1
    assert response.context["volume"].total == 55


@pytest.mark.parametrize(
    "started",
    [NOW.replace(second=0, microsecond=0) - timedelta(hours=1), NOW - timedelta(minutes=7)],
)
def test_a_run_that_started_and_ended_in_the_same_second_links_to_its_events(
    auditor_client, started
):
    sales = Workflow.objects.create(name="sales")
    WorkflowRun.objects.create(
        workflow=sales,
        started_at=started,
        finished_at=started,  # on a whole minute, or anywhere within one
        status="succeeded",
        correlation_id="same-second",
    )
    html = fragment(auditor_client, "recent-runs")
    href = unescape(re.search(r'href="([^"]+)">events<', html).group(1))
    response = auditor_client.get(href)
    assert response.status_code == 200, response.content[:300]
