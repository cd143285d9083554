import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import BROWSER_DB, submit_login

pytestmark = [pytest.mark.browser, BROWSER_DB]


def test_login_through_the_form_returns_to_the_page_asked_for(page, live_server, auditor):
    page.goto(f"{live_server.url}/events/?range=24h")
    # Not logged in: the dashboard sends the browser to the login form first.
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next="))

    submit_login(page, "audrey", "pw-audrey")

    expect(page).to_have_url(re.compile(r"/events/\?range=24h$"))
    expect(page.locator("header.topbar .user")).to_contain_text("audrey")


def test_a_wrong_password_is_refused(page, live_server, auditor):
    page.goto(f"{live_server.url}/accounts/login/")
    submit_login(page, "audrey", "not-the-password")

    expect(page.get_by_role("alert")).to_contain_text("didn't match")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    expect(page.locator("header.topbar")).to_have_count(0)


def test_logging_out_ends_the_session(logged_in_page, live_server):
    page = logged_in_page
    page.get_by_role("button", name="Log out").click()

    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/"))
