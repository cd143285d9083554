"""Lead pages in a real browser: the timeline, an operator action, hostile lead data."""

import pytest
from playwright.sync_api import expect

from audit.models import AuditEvent
from audit.selectors import lead_history
from leads.services import lead_create
from tests.browser.conftest import BROWSER_DB

pytestmark = [pytest.mark.browser, BROWSER_DB]


def timeline(page) -> list[tuple[int, str]]:
    return [
        (int(i), t)
        for i, t in page.locator("ol#timeline li.timeline-item").evaluate_all(
            "items => items.map(li => [li.dataset.eventId, li.dataset.eventType])"
        )
    ]


def test_the_lead_timeline_lists_its_events_oldest_first(logged_in_page, live_server, seeded):
    page = logged_in_page
    ann = seeded["ann"]
    page.goto(f"{live_server.url}/leads/{ann.public_id}/")

    expect(page.locator("ol#timeline li.timeline-item").first).to_be_visible()
    # Read after the page: opening it records an audit_viewed event of its own.
    expected = [(e.pk, e.event_type) for e in lead_history(lead_id=ann.public_id)]
    # Ingested three days ago, then the CRM error that morning, qualified and routed today.
    assert [t for _, t in expected if t != "audit_viewed"] == [
        "lead_ingested",
        "error",
        "lead_qualified",
        "lead_routed",
    ]
    expect(page.locator("ol#timeline li.timeline-item")).to_have_count(len(expected))
    assert timeline(page) == expected
    expect(page.locator("section#lead-profile")).to_contain_text(ann.email)
    expect(page.locator("section#score-breakdown")).to_contain_text("decision maker")


def test_an_operator_requalify_appears_in_the_timeline(page, live_server, login, seeded, operator):
    ann = seeded["ann"]
    login(page, operator)
    page.goto(f"{live_server.url}/leads/{ann.public_id}/")
    items = page.locator("ol#timeline li.timeline-item")
    expect(items.first).to_be_visible()
    before = timeline(page)
    qualified = items.and_(page.locator('[data-event-type="lead_qualified"]'))
    expect(qualified).to_have_count(1)

    page.locator("form#action-requalify").get_by_role("button").click()

    expect(qualified).to_have_count(2)
    new = qualified.last
    expect(new).to_contain_text("user:oscar")
    event = AuditEvent.objects.get(pk=int(new.get_attribute("data-event-id")))
    assert event.actor == "user:oscar"
    assert event.event_type == "lead_qualified"
    assert event.lead_public_id == ann.public_id
    # What was there stays, in its order, and the new event comes after all of it.
    after = timeline(page)
    assert after[: len(before)] == before
    assert (event.pk, "lead_qualified") in after[len(before) :]


def test_an_auditor_cannot_press_the_operator_actions(logged_in_page, live_server, seeded):
    page = logged_in_page
    page.goto(f"{live_server.url}/leads/{seeded['ann'].public_id}/")
    expect(page.locator("ol#timeline li.timeline-item").first).to_be_visible()
    for action in ("requalify", "retry-crm", "cancel-sequence"):
        buttons = page.locator(f"form#action-{action} button")
        for i in range(buttons.count()):
            expect(buttons.nth(i)).to_be_disabled()


HOSTILE = "<script>alert(1)</script>"


def test_a_hostile_lead_name_is_shown_as_text(logged_in_page, live_server, seeded):
    page = logged_in_page
    lead = lead_create(
        source=seeded["source"], email="mallory@evil.example", name=HOSTILE, company=HOSTILE
    )
    dialogs: list[str] = []

    def on_dialog(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)

    page.goto(f"{live_server.url}/leads/?range=7d")
    row = page.locator(f'tr.lead-row[data-lead-id="{lead.public_id}"]')
    expect(row).to_contain_text(HOSTILE)
    expect(page.locator("script", has_text="alert(1)")).to_have_count(0)

    page.goto(f"{live_server.url}/leads/{lead.public_id}/")
    expect(page.locator("section#lead-profile")).to_contain_text(HOSTILE)
    expect(page.locator("script", has_text="alert(1)")).to_have_count(0)

    assert dialogs == []
