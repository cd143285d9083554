"""Saved views in a real browser: saving the filters a page shows after htmx changed
them, opening a view from the menu, and a shared view seen by another user."""

import re

import pytest
from playwright.sync_api import expect

from orchestrator.models import SavedView
from tests.browser.conftest import BROWSER_DB, db_ids, query, shown_ids

pytestmark = [pytest.mark.browser, BROWSER_DB]


def save_view(page, name: str, *, shared: bool = False) -> None:
    block = page.locator("#saved-views")
    block.locator("details.save-view > summary").click()
    form = block.locator("form.save-view-form")
    form.get_by_label("Name").fill(name)
    if shared:
        form.get_by_label("Shared with all staff").check()
    form.get_by_role("button", name="Save").click()
    expect(page.locator("#saved-views .saved-note")).to_contain_text(f"Saved “{name}”")


def open_view(page, name: str) -> None:
    menu = page.locator("#saved-views details.saved-views-menu")
    menu.locator("summary").click()
    menu.get_by_role("link", name=name, exact=True).click()


def test_a_view_saved_after_an_htmx_filter_change_opens_with_those_filters(
    logged_in_page, live_server, seeded
):
    page = logged_in_page
    ann = seeded["ann"].public_id
    # A page that already has filters (a type and a range)...
    page.goto(f"{live_server.url}/events/?range=7d&type=error")
    errors = db_ids(event_type="error")
    expect(page.locator("tr.event-row")).to_have_count(len(errors))
    menu_summary = page.locator("#saved-views details.saved-views-menu summary")
    expect(menu_summary).to_have_text("Saved views")

    # ...then one more through the htmx form: the table swaps and the URL is pushed,
    # the "Save view" block (outside the table) is not re-rendered with the page.
    form = page.locator("form#event-filters")
    form.locator("input[name=lead]").press_sequentially(ann)
    expected = db_ids(event_type="error", lead_public_id=ann)
    assert expected == [seeded["error"].pk]
    expect(page).to_have_url(re.compile(rf"lead={ann}"))
    expect(page.locator("tr.event-row")).to_have_count(1)
    # The block follows the pushed URL: its no-JavaScript fallback is current too.
    expect(page.locator("#saved-views input[name=query]")).to_have_value(
        f"range=7d&type=error&lead={ann}"
    )

    save_view(page, "Ann's errors")
    view = SavedView.objects.get()
    assert view.query == f"range=7d&type=error&lead={ann}"
    # Saving leaves the page as it was (no reload, no new history entry) and marks it.
    expect(page).to_have_url(re.compile(rf"lead={ann}"))
    assert shown_ids(page) == expected
    expect(menu_summary).to_have_text("View: Ann's errors")

    # Another filter change: the page no longer shows the view.
    form.locator("input[name=type][value=error]").uncheck()
    expect(page).not_to_have_url(re.compile(r"type=error"))
    expect(menu_summary).to_have_text("Saved views")

    # Away, and back through the menu.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Leads").click()
    page.wait_for_url(re.compile(r"/leads/"))
    page.goto(f"{live_server.url}/events/?range=24h")
    open_view(page, "Ann's errors")
    page.wait_for_url(re.compile(rf"lead={ann}"))
    assert query(page) == {"range": ["7d"], "type": ["error"], "lead": [ann]}
    expect(page.locator("tr.event-row")).to_have_count(1)
    assert shown_ids(page) == expected
    expect(form.locator("input[name=type][value=error]")).to_be_checked()
    expect(form.locator("input[name=type][value=lead_ingested]")).not_to_be_checked()
    expect(form.locator("input[name=lead]")).to_have_value(ann)
    expect(menu_summary).to_have_text("View: Ann's errors")
    # Its link is the full URL, to copy and send.
    link = page.locator("#saved-views .saved-views-panel a.active")
    expect(link).to_have_text("Ann's errors")
    assert link.get_attribute("href") == f"{live_server.url}/events/?range=7d&type=error&lead={ann}"


def test_a_name_taken_shows_in_the_form_and_the_page_stays(logged_in_page, live_server, seeded):
    page = logged_in_page
    page.goto(f"{live_server.url}/events/?range=7d&type=error")
    save_view(page, "Errors")
    page.locator("form#event-filters input[name=type][value=error]").uncheck()
    expect(page).not_to_have_url(re.compile(r"type=error"))

    block = page.locator("#saved-views")
    block.locator("details.save-view > summary").click()
    block.get_by_label("Name").fill("errors")
    block.get_by_role("button", name="Save").click()
    expect(block.get_by_role("alert")).to_have_text(
        "You already have a view named “errors”: choose another name."
    )
    expect(block.get_by_label("Name")).to_have_value("errors")
    assert SavedView.objects.count() == 1
    expect(page).not_to_have_url(re.compile(r"type=error"))


def test_a_shared_view_is_listed_for_another_user_with_its_owner(
    page, login, live_server, seeded, auditor, operator
):
    login(page, auditor)
    page.goto(f"{live_server.url}/events/?range=7d&type=lead_routed")
    save_view(page, "Routed", shared=True)
    save_view(page, "Private")
    page.get_by_role("button", name="Log out").click()

    login(page, operator)
    page.goto(f"{live_server.url}/events/?range=24h")
    menu = page.locator("#saved-views details.saved-views-menu")
    menu.locator("summary").click()
    expect(menu.locator("li", has_text="Routed")).to_contain_text("by audrey")
    expect(menu.get_by_role("link", name="Private")).to_have_count(0)
    menu.get_by_role("link", name="Routed").click()
    page.wait_for_url(re.compile(r"type=lead_routed"))
    routed = db_ids(event_type="lead_routed")
    expect(page.locator("tr.event-row")).to_have_count(len(routed))
    assert shown_ids(page) == routed


def test_a_filter_changed_while_naming_the_view_is_saved_and_the_name_kept(
    logged_in_page, live_server, seeded
):
    page = logged_in_page
    page.goto(f"{live_server.url}/events/?range=7d&type=lead_ingested")
    block = page.locator("#saved-views")
    block.locator("details.save-view > summary").click()
    name = block.get_by_label("Name")
    name.fill("Ingested and routed")

    # A filter changes while the form is open: the menu reloads, the typing stays.
    form = page.locator("form#event-filters")
    form.locator("input[name=type][value=lead_routed]").check()
    expect(page).to_have_url(re.compile(r"type=lead_routed"))
    expect(block.locator("input[name=query]")).to_have_value(
        "range=7d&type=lead_ingested&type=lead_routed"
    )
    expect(name).to_be_visible()
    expect(name).to_have_value("Ingested and routed")

    block.get_by_role("button", name="Save").click()
    expect(block.locator(".saved-note")).to_contain_text("Saved “Ingested and routed”")
    assert SavedView.objects.get().query == "range=7d&type=lead_ingested&type=lead_routed"
    expect(page.locator("#saved-views-menu > summary")).to_have_text("View: Ingested and routed")


def test_without_javascript_views_are_saved_opened_renamed_and_deleted(
    browser, login, live_server, seeded, auditor
):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        login(page, auditor)
        page.goto(f"{live_server.url}/events/?range=7d&type=error&cursor=")
        block = page.locator("#saved-views")
        block.locator("details.save-view > summary").click()
        block.get_by_label("Name").fill("Errors")
        block.get_by_role("button", name="Save").click()
        # The form posts, and the answer is the view itself.
        page.wait_for_url(f"{live_server.url}/events/?range=7d&type=error")
        expect(page.locator("#saved-views-menu > summary")).to_have_text("View: Errors")

        # A taken name: the message, on a page with the form as it was filled in.
        block.locator("details.save-view > summary").click()
        block.get_by_label("Name").fill("ERRORS")
        block.get_by_role("button", name="Save").click()
        expect(page.get_by_role("alert")).to_contain_text("You already have a view named “ERRORS”")
        save_form = page.locator("section.panel").filter(
            has=page.get_by_role("heading", name="Save view")
        )
        expect(save_form.get_by_label("Name", exact=True)).to_have_value("ERRORS")

        page.goto(f"{live_server.url}/events/?range=24h")
        menu = page.locator("#saved-views-menu")
        menu.locator("summary").click()
        menu.get_by_role("link", name="Errors").click()
        page.wait_for_url(f"{live_server.url}/events/?range=7d&type=error")
        expect(page.locator("tr.event-row")).to_have_count(len(db_ids(event_type="error")))

        menu.locator("summary").click()
        menu.get_by_role("link", name="Manage saved views").click()
        row = page.locator("#own-views tr", has_text="range=7d&type=error")
        row.get_by_label("Name").fill("All errors")
        row.get_by_label("Shared").check()
        row.get_by_role("button", name="Save").click()
        expect(page.get_by_role("status")).to_have_text("Saved “All errors”.")
        view = SavedView.objects.get()
        assert (view.name, view.shared) == ("All errors", True)

        page.locator("#own-views").get_by_role("link", name="Delete…").click()
        expect(page.get_by_role("heading", level=1)).to_have_text(
            "Delete the saved view “All errors”?"
        )
        assert SavedView.objects.exists()
        page.get_by_role("button", name="Delete").click()
        expect(page.get_by_role("status")).to_have_text("Deleted “All errors”.")
        assert not SavedView.objects.exists()
    finally:
        context.close()
