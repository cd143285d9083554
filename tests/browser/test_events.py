"""The event browser in a real browser: filters, history, details, histogram, export."""

import csv
import re
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from audit.models import AuditEvent
from tests.browser.conftest import BROWSER_DB, db_ids, query, shown_ids

pytestmark = [pytest.mark.browser, BROWSER_DB]


def apply_filters(page) -> None:
    page.locator("form#event-filters").get_by_role("button", name="Apply").click()


def test_filtering_by_type_and_lead_changes_the_table_and_the_url(
    logged_in_page, live_server, seeded
):
    page = logged_in_page
    ann = seeded["ann"]
    page.goto(f"{live_server.url}/events/?range=7d")
    everything = db_ids()
    expect(page.locator("tr.event-row")).to_have_count(len(everything))
    assert shown_ids(page) == everything

    form = page.locator("form#event-filters")
    form.locator("input[name=type][value=error]").check()
    form.locator("input[name=lead]").fill(ann.public_id)
    apply_filters(page)

    expected = db_ids(event_type="error", lead_public_id=ann.public_id)
    assert expected == [seeded["error"].pk]
    expect(page.locator("tr.event-row")).to_have_count(1)
    assert shown_ids(page) == expected
    expect(page).to_have_url(re.compile(r"type=error"))
    params = query(page)
    assert params["type"] == ["error"]
    assert params["lead"] == [ann.public_id]
    assert params["range"] == ["7d"]

    # The URL reproduces the view: opened afresh it shows the same rows and filters.
    page.goto(page.url)
    expect(page.locator("tr.event-row")).to_have_count(1)
    assert shown_ids(page) == expected
    expect(form.locator("input[name=type][value=error]")).to_be_checked()
    expect(form.locator("input[name=lead]")).to_have_value(ann.public_id)


def test_the_back_button_restores_the_table_before_each_filter(logged_in_page, live_server, seeded):
    page = logged_in_page
    bob = seeded["bob"].public_id
    page.goto(f"{live_server.url}/events/?range=7d")
    everything = db_ids()
    rows = page.locator("tr.event-row")
    expect(rows).to_have_count(len(everything))
    form = page.locator("form#event-filters")

    # Ticking a type filters at once (and adds a history entry).
    form.locator("input[name=type][value=lead_ingested]").check()
    ingested = db_ids(event_type="lead_ingested")
    expect(rows).to_have_count(len(ingested))
    expect(page).to_have_url(re.compile(r"type=lead_ingested"))
    typed_url = page.url

    page.goto(f"{live_server.url}/events/?range=7d&type=lead_ingested&lead={bob}")
    expect(rows).to_have_count(1)

    page.go_back()
    expect(page).to_have_url(typed_url)
    expect(rows).to_have_count(len(ingested))
    assert shown_ids(page) == ingested
    expect(form.locator("input[name=lead]")).to_have_value("")

    page.go_back()
    expect(page).to_have_url(re.compile(r"/events/\?range=7d$"))
    expect(rows).to_have_count(len(everything))
    assert shown_ids(page) == everything
    # The form shows what the table shows, not the filter that was left behind.
    expect(form.locator("input[name=type][value=lead_ingested]")).not_to_be_checked()

    page.go_forward()
    expect(rows).to_have_count(len(ingested))
    expect(form.locator("input[name=type][value=lead_ingested]")).to_be_checked()


def test_typing_a_lead_id_is_one_history_entry_and_back_and_forward_restore_the_form(
    logged_in_page, live_server, seeded
):
    page = logged_in_page
    ann = seeded["ann"].public_id
    page.goto(f"{live_server.url}/events/?range=7d")
    everything = db_ids()
    rows = page.locator("tr.event-row")
    expect(rows).to_have_count(len(everything))
    entries = page.evaluate("history.length")
    lead_box = page.locator("form#event-filters input[name=lead]")

    # Typing fires keyup, then leaving the box fires change: one edit, one entry.
    lead_box.press_sequentially(ann.lower(), delay=20)
    expect(page).to_have_url(re.compile(rf"lead={ann.lower()}"))
    lead_box.blur()
    page.locator("form#event-filters").get_by_role("button", name="Apply").click()
    mine = db_ids(lead_public_id=ann)
    expect(rows).to_have_count(len(mine))  # the id matched whatever its case
    page.wait_for_timeout(500)
    assert page.evaluate("history.length") == entries + 1

    page.go_back()
    expect(page).to_have_url(re.compile(r"/events/\?range=7d$"))
    expect(rows).to_have_count(len(everything))
    expect(lead_box).to_have_value("")

    page.go_forward()
    expect(rows).to_have_count(len(mine))
    expect(lead_box).to_have_value(ann.lower())


def test_a_range_preset_keeps_the_filters_chosen_after_the_page_loaded(
    logged_in_page, live_server, seeded
):
    page = logged_in_page
    page.goto(f"{live_server.url}/events/?range=7d")
    form = page.locator("form#event-filters")
    form.locator("input[name=type][value=error]").check()
    expect(page).to_have_url(re.compile(r"type=error"))

    page.locator("form.rangebar").get_by_role("link", name="30d").click()
    expect(page).to_have_url(re.compile(r"range=30d"))
    assert query(page)["type"] == ["error"]
    expect(form.locator("input[name=type][value=error]")).to_be_checked()
    expect(page.locator("tr.event-row")).to_have_count(len(db_ids(event_type="error")))

    # And the custom range, applied after another filter change, keeps both.
    form.locator("input[name=type][value=lead_ingested]").check()
    expect(page).to_have_url(re.compile(r"type=lead_ingested"))
    custom = page.locator("form.rangebar details.custom-range")
    custom.locator("summary").click()
    custom.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"range=custom"))
    assert sorted(query(page)["type"]) == ["error", "lead_ingested"]


def details_of(page, event_id: int):
    row = f'tr.event-row[data-event-id="{event_id}"]'
    # Inside the row, or in a row of its own right after it.
    return page.locator(
        f"{row} details.event-details, {row} + tr:not(.event-row) details.event-details"
    )


def test_expanding_an_error_row_shows_its_details_and_traceback(
    logged_in_page, live_server, seeded
):
    page = logged_in_page
    page.goto(f"{live_server.url}/events/?range=7d&type=error")
    details = details_of(page, seeded["error"].pk)
    expect(details).to_have_count(1)
    traceback = details.locator("pre.traceback")
    expect(traceback).to_be_hidden()

    details.locator("summary").click()

    expect(traceback).to_be_visible()
    expect(traceback).to_contain_text("Traceback (most recent call last)")
    expect(traceback).to_contain_text("ConnectionError: CRM timed out after 30 s")
    expect(details.locator("pre.details-json")).to_contain_text("hubspot")
    # Only the row clicked opens.
    expect(details_of(page, seeded["other_error"].pk).locator("pre.traceback")).to_be_hidden()


def bar_links(page) -> list[str]:
    return page.locator("section#event-histogram svg a").evaluate_all(
        "links => links.map(a => a.getAttribute('href') || a.getAttribute('xlink:href'))"
    )


def test_clicking_a_histogram_bar_narrows_the_range_to_its_bucket(
    logged_in_page, live_server, seeded
):
    page = logged_in_page
    page.goto(f"{live_server.url}/events/?range=7d")
    day = seeded["earlier"].date().isoformat()
    links = bar_links(page)
    wanted = [
        i
        for i, link in enumerate(links)
        if parse_qs(urlsplit(link).query).get("since", [""])[0].startswith(day)
    ]
    assert wanted, f"no bar links to {day} in {links}"
    bar = page.locator("section#event-histogram svg a").nth(wanted[0])

    bar.click()

    expect(page).to_have_url(re.compile(r"range=custom"))
    params = query(page)
    since = datetime.fromisoformat(params["since"][0])
    until = datetime.fromisoformat(params["until"][0])
    assert since.date().isoformat() == day
    expected = db_ids(timestamp__gte=since, timestamp__lt=until)
    # That day holds the two ingested leads and the two errors, nothing from today.
    assert len(expected) == 4
    expect(page.locator("tr.event-row")).to_have_count(4)
    assert shown_ids(page) == expected


def test_csv_export_holds_exactly_the_filtered_rows(logged_in_page, live_server, seeded):
    page = logged_in_page
    page.goto(f"{live_server.url}/events/?range=7d&type=lead_ingested&type=error")
    expected = AuditEvent.objects.filter(event_type__in=["lead_ingested", "error"])
    expect(page.locator("tr.event-row")).to_have_count(expected.count())

    with page.expect_download() as info:
        page.locator("a#export-csv").click()
    download = info.value
    assert download.suggested_filename.endswith(".csv")
    with open(download.path(), newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))

    assert sorted(r["event_id"] for r in rows) == sorted(str(e.uuid) for e in expected)
    by_id = {r["event_id"]: r for r in rows}
    error = by_id[str(seeded["error"].uuid)]
    assert error["event_type"] == "error"
    assert error["lead_id"] == seeded["ann"].public_id
    assert "ConnectionError: CRM timed out after 30 s" in error["traceback"]


def test_older_on_a_filtered_page_swaps_the_next_rows_in_and_keeps_the_filters(
    logged_in_page, live_server, seeded, monkeypatch
):
    """The pager's links carry no htmx attributes of their own: they inherit the table
    section's (htmx 2), so a click swaps the table in place and pushes its URL."""
    monkeypatch.setattr("orchestrator.dashboard.views.events.PAGE_SIZE", 2)
    page = logged_in_page
    expected = db_ids(workflow="sales")
    assert len(expected) > 2
    page.goto(f"{live_server.url}/events/?range=7d&workflow=sales")
    assert shown_ids(page) == expected[:2]
    # A marker on the document: a full navigation would lose it, a swap keeps it.
    page.evaluate("window.notReloaded = true")
    page.locator("#next-page").click()
    expect(page).to_have_url(re.compile(r"cursor="))
    expect(page.locator("#first-page")).to_be_visible()
    assert shown_ids(page) == expected[2:4]
    assert page.evaluate("window.notReloaded") is True
    params = query(page)
    assert params["workflow"] == ["sales"] and params["range"] == ["7d"]
    expect(page.locator("form#event-filters input[name=workflow]")).to_have_value("sales")


def test_a_range_preset_clicked_on_a_filtered_page_keeps_the_filters(
    logged_in_page, live_server, seeded
):
    page = logged_in_page
    page.goto(f"{live_server.url}/events/?range=7d&type=error")
    expect(page.locator("tr.event-row")).to_have_count(len(db_ids(event_type="error")))
    page.locator("a.range", has_text="30d").click()
    expect(page).to_have_url(re.compile(r"range=30d"))
    params = query(page)
    assert params == {"range": ["30d"], "type": ["error"]}
    assert "??" not in page.url
    # Still filtered: the table holds errors only.
    assert shown_ids(page) == db_ids(event_type="error")
    # And again, from the page the first click led to (no junk piles up).
    page.locator("a.range", has_text="24h").click()
    expect(page).to_have_url(re.compile(r"range=24h"))
    assert query(page) == {"range": ["24h"], "type": ["error"]}


def test_typing_in_a_text_filter_updates_the_table_without_apply(
    logged_in_page, live_server, seeded
):
    page = logged_in_page
    ann = seeded["ann"].public_id
    page.goto(f"{live_server.url}/events/?range=7d")
    expect(page.locator("tr.event-row")).to_have_count(len(db_ids()))
    page.locator("form#event-filters input[name=lead]").press_sequentially(ann)
    expected = db_ids(lead_public_id=ann)
    expect(page.locator("tr.event-row")).to_have_count(len(expected))
    assert shown_ids(page) == expected
    expect(page).to_have_url(re.compile(rf"lead={ann}"))


def test_a_refused_swap_shows_its_message_inline_and_keeps_the_form_and_table(
    logged_in_page, live_server, seeded
):
    page = logged_in_page
    # Text search over a range longer than DASHBOARD_TEXT_SEARCH_MAX_DAYS is refused.
    page.goto(f"{live_server.url}/events/?range=30d")
    rows = page.locator("tr.event-row")
    expect(rows).not_to_have_count(0)
    before = shown_ids(page)
    url = page.url
    form = page.locator("form#event-filters")
    form.locator("input[name=q]").fill("bo")
    apply_filters(page)
    alert = page.locator("#request-error [role=alert]")
    expect(alert).to_contain_text("That request could not be shown")
    # The page around it is the same page: styled, the form with what was typed,
    # the table as it was, and the URL of the last good view.
    expect(page.locator("header.topbar")).to_be_visible()
    expect(form.locator("input[name=q]")).to_have_value("bo")
    assert shown_ids(page) == before
    assert page.url == url
    # The next good request clears the message.
    form.locator("input[name=q]").fill("")
    apply_filters(page)
    expect(alert).to_have_count(0)


def test_text_search_on_a_filtered_page_over_90_days_keeps_the_filters(
    logged_in_page, live_server, seeded
):
    page = logged_in_page
    # A page already narrowed to errors over 90 days, as a user arrives at it.
    page.goto(f"{live_server.url}/events/?range=90d&type=error")
    errors = db_ids(event_type="error")
    expect(page.locator("tr.event-row")).to_have_count(len(errors))
    form = page.locator("form#event-filters")
    # Three letters or more go through the index: no 7-day limit, no refusal.
    form.locator("input[name=q]").fill("hubspot")
    apply_filters(page)
    expected = [seeded["error"].id]
    expect(page.locator("tr.event-row")).to_have_count(len(expected))
    assert shown_ids(page) == expected
    assert query(page)["type"] == ["error"] and query(page)["range"] == ["90d"]
    assert query(page)["q"] == ["hubspot"]
    expect(page.locator("#request-error [role=alert]")).to_have_count(0)
    # Text that other events hold, but no error: the type filter still applies.
    assert db_ids(event_type="lead_ingested", details__icontains="acme")
    form.locator("input[name=q]").fill("acme")
    apply_filters(page)
    expect(page.locator("tr.event-row")).to_have_count(0)
    assert query(page)["type"] == ["error"] and query(page)["q"] == ["acme"]
