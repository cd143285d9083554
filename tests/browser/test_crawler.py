"""Crawl the whole dashboard as an auditor and as an operator (tests/browser/crawl.py).

From every page of the navigation, and from the same page with filters applied, the
crawler clicks every range preset and the custom range, every pager and sort link,
every filter control, every link and chart bar, one level deep; then from each
preset's page, the links, bars and pagers again (they follow the range). It fails on
any HTTP status >= 400, console error or CSP violation, lost filter, or junk in a
URL, and lists every problem it saw.

Not clicked: POST forms (the operator's lead actions and the logout; they change
data or end the session), downloads (exports, report zips), Admin, external links.
"""

from datetime import timedelta
from time import monotonic

import pytest
from django.core.cache import cache
from django.utils import timezone

from tests.browser.conftest import BROWSER_DB
from tests.browser.crawl import Crawler

pytestmark = [pytest.mark.browser, BROWSER_DB]

# The same pages with filters applied (each view's filter form names these keys),
# each with a range other than the default so that losing it shows.
FILTERED = [
    "/?range=24h",
    "/events/?range=24h&type=error&workflow=sales",
    "/leads/?range=30d&status=qualified&source=site&score_min=50",
    "/errors/?range=30d&sort=last_seen",
    "/analytics/?range=90d",
    "/workflows/?range=30d&workflow=sales&status=succeeded",
]
# Leads, events, runs and error occurrences are listed 50 a page: more make pagers.
MORE_THAN_A_PAGE = 56


def crm_timeout() -> None:
    # One frame raises every time: one error group (audit.fingerprints).
    raise ConnectionError("CRM timed out after 30 s")


def bad_payload(n: int) -> None:
    raise ValueError(f"field 'country' is not a country code: {n}")


@pytest.fixture
def crawl_data(seeded):
    """`seeded`, and enough more that every list has a second page and the error
    pages have groups: leads over the last days run through the workflow, many
    passes of it, and errors of two kinds in the last day."""
    from audit.services import record_event
    from leads.models import Lead
    from leads.services import ingest_lead
    from leads.workflows.runner import run_pass

    now = timezone.now()
    workflow, source = seeded["workflow"], seeded["source"]
    for i in range(MORE_THAN_A_PAGE):
        ingest_lead(
            source=source,
            payload={
                "email": f"buyer{i}@corp{i}.example",
                "full_name": f"Buyer {i}",
                "title": "VP Sales",
                "country": "DE" if i % 2 else "US",
            },
            at=now - timedelta(days=1 + i % 5, minutes=7 * i),
        )
    for _ in range(MORE_THAN_A_PAGE):
        run_pass(workflow=workflow, poll=False)
    leads = list(Lead.objects.order_by("pk")[:12])
    for i in range(MORE_THAN_A_PAGE):
        for raise_it, every in ((crm_timeout, 1), (lambda i=i: bad_payload(i), 7)):
            if i % every:
                continue
            try:
                raise_it()
            except (ConnectionError, ValueError) as exc:
                error = record_event(
                    event_type="error",
                    lead=leads[i % len(leads)],
                    workflow=workflow.name,
                    details={"step": "crm_sync", "connection": "hubspot"},
                    exc=exc,
                    timestamp=now - timedelta(minutes=5 + 20 * i),
                )
                if raise_it is crm_timeout:
                    crm_error = error
    cache.clear()
    return {**seeded, "crm_error": crm_error, "run": workflow.runs.order_by("-pk").first()}


@pytest.mark.parametrize("role", ["auditor", "operator"])
def test_crawl_the_dashboard(page, login, live_server, crawl_data, role, request):
    user = request.getfixturevalue(role)
    login(page, user)
    today = timezone.now().date()
    crawler = Crawler(
        page,
        live_server.url,
        role=role,
        staff=user.is_staff,
        typed={
            ("/events/", "workflow"): "sales",
            ("/events/", "lead"): crawl_data["ann"].public_id,
            ("/events/", "actor"): "system",
            ("/events/", "correlation"): crawl_data["run"].correlation_id,
            ("/events/", "fingerprint"): crawl_data["crm_error"].fingerprint,
            ("/events/", "q"): "crm_sync",
            ("/leads/", "q"): "buyer",
            ("/leads/", "score_min"): "60",
            ("/leads/", "score_max"): "90",
        },
        custom_range=((today - timedelta(days=10)).isoformat(), today.isoformat()),
    )
    started = monotonic()
    page.goto(f"{live_server.url}/")
    navigation = page.locator("nav.mainnav a").evaluate_all(
        "links => links.map(a => a.getAttribute('href'))"
    )
    assert len(navigation) >= 7, navigation
    error_group = f"/errors/{crawl_data['crm_error'].fingerprint}/?range=24h"
    for url in [*navigation, *FILTERED, error_group]:
        if not url.startswith("/admin/"):
            crawler.crawl(url)
    # Every preset's (and the custom range's) page of every start page.
    for url in crawler.variants:
        crawler.crawl(url, full=False)
    stats = dict(crawler.stats)
    print(f"\n{role}: {monotonic() - started:.0f} s, {stats}")

    # The crawl reached what it is for (a changed page could leave it nothing to do).
    for kind in ("range", "custom", "pager", "sort", "checkbox", "select", "text", "bar", "link"):
        assert stats.get(kind), f"the crawl clicked no {kind}: {stats}"
    assert not crawler.problems, crawler.report()
