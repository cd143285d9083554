"""Every dashboard page renders in Chromium with the parts the DOM contract names.

The `page` fixture fails a test on any CSP violation or script error, so this
is also the check that no page needs an inline style or script the policy forbids.
"""

import re
from datetime import datetime

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import BROWSER_DB, db_ids, query, shown_ids

pytestmark = [pytest.mark.browser, BROWSER_DB]

PAGES = {
    "overview": (
        "/",
        [
            "section#kpis",
            "section#volume-chart",
            "section#error-chart",
            "section#recent-errors",
            "section#recent-runs",
        ],
    ),
    "events": (
        "/events/",
        ["form#event-filters", "section#event-histogram", "section#event-table"],
    ),
    "leads": ("/leads/", ["form#lead-filters", "section#lead-table"]),
    "errors": ("/errors/", ["section#error-groups"]),
    "analytics": (
        "/analytics/",
        ["section#funnel", "section#sources", "section#email-steps", "section#crm-performance"],
    ),
    "workflows": ("/workflows/", ["section#workflow-runs"]),
}


@pytest.mark.parametrize("name", list(PAGES))
def test_each_page_renders_its_sections(logged_in_page, live_server, seeded, name):
    page = logged_in_page
    path, sections = PAGES[name]
    page.goto(f"{live_server.url}{path}?range=7d")
    for selector in sections:
        expect(page.locator(selector)).to_be_visible()
    expect(page.locator('nav.mainnav a[aria-current="page"]')).to_have_count(1)


def test_the_overview_kpis_and_error_chart_lead_to_the_event_browser(
    logged_in_page, live_server, seeded
):
    page = logged_in_page
    page.goto(f"{live_server.url}/?range=7d")
    for kpi in ("leads", "qualification_rate", "crm_success", "emails_sent", "replies", "errors"):
        expect(page.locator(f'section#kpis .card[data-kpi="{kpi}"]')).to_be_visible()
    expect(page.locator('section#kpis .card[data-kpi="leads"]')).to_contain_text("3")

    bars = page.locator("section#error-chart svg a")
    heights = bars.evaluate_all("links => links.map(a => a.getBoundingClientRect().height)")
    tallest = max(range(len(heights)), key=heights.__getitem__)
    bars.nth(tallest).click()

    expect(page).to_have_url(re.compile(r"/events/\?.*range=custom"))
    params = query(page)
    assert params["type"] == ["error"]
    since = datetime.fromisoformat(params["since"][0])
    until = datetime.fromisoformat(params["until"][0])
    expected = db_ids(event_type="error", timestamp__gte=since, timestamp__lt=until)
    # The tallest bar is the morning of the two errors.
    assert expected == [seeded["other_error"].pk, seeded["error"].pk]
    expect(page.locator("tr.event-row")).to_have_count(2)
    assert shown_ids(page) == expected


def test_an_error_group_opens_with_its_latest_traceback(logged_in_page, live_server, seeded):
    page = logged_in_page
    error = seeded["error"]
    page.goto(f"{live_server.url}/errors/?range=7d")
    group = page.locator(f'tr.error-group[data-fingerprint="{error.fingerprint}"]')
    expect(group).to_contain_text("ConnectionError")
    group.get_by_role("link").first.click()

    expect(page).to_have_url(re.compile(rf"/errors/{error.fingerprint}/"))
    expect(page.locator("section#latest-traceback")).to_contain_text("CRM timed out after 30 s")
    expect(page.locator("section#occurrences")).to_contain_text(seeded["ann"].public_id)
