"""Every page on a phone and a desktop, in the light and the dark theme, by keyboard.

What staff reported: at 390 px every page scrolled sideways, there was no dark
theme and no skip link, and a disabled lead action said why only on hover.
The colour pairs themselves are checked in tests/orchestrator/dashboard/test_theme.py;
here the pages are measured as Chromium draws them, text element by text element.
"""

import pytest
from playwright.sync_api import expect

from audit.models import AuditEvent
from tests.browser.conftest import BROWSER_DB

pytestmark = [pytest.mark.browser, BROWSER_DB]

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def every_page(seeded) -> list[str]:
    error = AuditEvent.objects.get(pk=seeded["error"].pk)
    day = seeded["earlier"].date().isoformat()
    return [
        "/?range=7d",
        "/events/?range=7d",
        f"/events/{error.pk}/",
        "/events/exports/",
        "/leads/?range=7d",
        f"/leads/{seeded['ann'].public_id}/",
        "/errors/?range=7d",
        f"/errors/{error.fingerprint}/?range=7d",
        "/analytics/?range=7d",
        "/workflows/?range=7d",
        "/reports/",
        f"/reports/daily/{day}/",
    ]


def sideways_overflow(page) -> int:
    return page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )


# Each visible text element's colour against the background it is painted on
# (the nearest opaque ancestor background, with translucent ones composited over
# it). WCAG's thresholds: 4.5:1, or 3:1 for large text (24 px, or 18.66 px bold).
# Left out: disabled controls (WCAG exempts inactive components), aria-hidden
# icons, and SVG charts (charts.css, styled separately).
CONTRAST_FAILURES = """
() => {
  const rgba = (css) => {
    const m = css.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, bottom) => {
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + bottom[i] * (1 - a)).concat(1);
  };
  const luminance = (c) => {
    const f = (v) => { v /= 255; return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const backdrop = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let colour = [255, 255, 255, 1];
    for (const layer of layers.reverse()) colour = over(layer, colour);
    return colour;
  };
  const failures = [];
  for (const el of document.body.querySelectorAll("*")) {
    if (el.closest("svg, select, datalist, [aria-hidden=true], :disabled, script, style")) continue;
    const text = [...el.childNodes]
      .filter((n) => n.nodeType === Node.TEXT_NODE)
      .map((n) => n.textContent.trim()).join(" ").trim();
    if (!text || !el.checkVisibility({ visibilityProperty: true })) continue;
    const style = getComputedStyle(el);
    const bg = backdrop(el);
    const fg = over(rgba(style.color), bg);
    const [hi, lo] = [luminance(fg), luminance(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) {
      failures.push(`${el.tagName.toLowerCase()}.${el.className} "${text.slice(0, 40)}": ` +
        `${ratio.toFixed(2)}:1 (${style.color} on rgb(${bg.slice(0, 3).map(Math.round)}))`);
    }
  }
  return failures;
}
"""


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390px", "1280px"])
def test_no_page_scrolls_sideways(logged_in_page, live_server, seeded, viewport):
    page = logged_in_page
    page.set_viewport_size(viewport)
    wide = {}
    for path in every_page(seeded):
        page.goto(f"{live_server.url}{path}")
        expect(page.locator("main#main")).to_be_visible()
        # Opened, the event rows' details (JSON, tracebacks) are the widest content.
        for summary in page.locator(".panel details:not([open]) > summary").all()[:5]:
            if summary.is_visible():
                summary.click()
        if overflow := sideways_overflow(page):
            wide[path] = overflow
    assert wide == {}, f"pages wider than {viewport['width']} px (by px): {wide}"


def test_on_a_phone_tables_scroll_inside_their_panel(logged_in_page, live_server, seeded):
    page = logged_in_page
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server.url}/leads/?range=7d")
    panel = page.locator("section#lead-table")
    expect(panel.locator("tr.lead-row")).to_have_count(3)
    widths = panel.evaluate("p => [p.scrollWidth, p.clientWidth]")
    assert widths[0] > widths[1], "the nine-column table should be wider than a phone"
    panel.evaluate("p => { p.scrollLeft = p.scrollWidth; }")
    assert panel.evaluate("p => p.scrollLeft") > 0
    assert sideways_overflow(page) == 0


def test_on_a_phone_the_navigation_and_filters_wrap_within_the_screen(
    logged_in_page, live_server, seeded
):
    page = logged_in_page
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server.url}/events/?range=7d")
    for selector in ("nav.mainnav a", "form#event-filters label", "form.rangebar a.range"):
        boxes = page.locator(selector).evaluate_all(
            "els => els.map(e => e.getBoundingClientRect()).map(r => [r.left, r.right])"
        )
        assert boxes, selector
        assert all(left >= 0 and right <= PHONE["width"] for left, right in boxes), selector
    # Every link of the navigation is on screen without a menu to open.
    for link in page.locator("nav.mainnav a").all():
        expect(link).to_be_in_viewport()


def test_the_skip_link_is_the_first_tab_stop_and_moves_focus_to_main(
    logged_in_page, live_server, seeded
):
    page = logged_in_page
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server.url}/leads/?range=7d")
    skip = page.locator("a.skip-link")
    box = skip.bounding_box()
    assert box["y"] + box["height"] <= 0, "hidden above the page until focused"

    page.keyboard.press("Tab")

    expect(skip).to_be_focused()
    expect(skip).to_have_text("Skip to content")
    expect(skip).to_be_in_viewport(ratio=1)
    box = skip.bounding_box()
    assert box["y"] >= 0 and box["height"] > 10 and box["width"] > 50

    page.keyboard.press("Enter")

    expect(page.locator("main#main")).to_be_focused()
    # The next Tab goes on from the content, not from the top bar.
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.getElementById('main').contains(document.activeElement)")


def test_the_dark_theme_is_dark(logged_in_page, live_server, seeded):
    page = logged_in_page
    page.emulate_media(color_scheme="dark")
    page.goto(f"{live_server.url}/events/?range=7d")
    luminance = page.evaluate(
        """() => {
          const [r, g, b] = getComputedStyle(document.body).backgroundColor
            .match(/\\d+(\\.\\d+)?/g).map(Number);
          return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
        }"""
    )
    assert luminance < 0.1
    for selector in ("section#event-table", "form.rangebar", "input[name=workflow]"):
        background = page.locator(selector).evaluate("e => getComputedStyle(e).backgroundColor")
        assert background not in ("rgb(255, 255, 255)", "rgba(0, 0, 0, 0)"), selector
    page.emulate_media(color_scheme="light")
    assert page.evaluate("() => getComputedStyle(document.body).backgroundColor") == (
        "rgb(248, 250, 252)"
    )


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_contrast_meets_wcag_aa_on_every_page(logged_in_page, live_server, seeded, scheme):
    page = logged_in_page
    page.emulate_media(color_scheme=scheme)
    page.set_viewport_size(PHONE)
    failures = {}
    for path in every_page(seeded):
        page.goto(f"{live_server.url}{path}")
        for summary in page.locator(".panel details:not([open]) > summary").all()[:5]:
            if summary.is_visible():
                summary.click()
        if found := page.evaluate(CONTRAST_FAILURES):
            failures[path] = found
    assert failures == {}


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_a_disabled_action_says_why_beside_it(page, live_server, login, seeded, operator, scheme):
    page.emulate_media(color_scheme=scheme)
    page.set_viewport_size(PHONE)
    login(page, operator)
    cara = seeded["cara"]  # arrived today: the workflow runner has not qualified her yet
    page.goto(f"{live_server.url}/leads/{cara.public_id}/")

    requalify = page.locator("form#action-requalify button")
    expect(requalify).to_be_disabled()
    reason = page.locator("#" + requalify.get_attribute("aria-describedby"))
    expect(reason).to_be_visible()
    expect(reason).to_contain_text("has not been processed yet")
    expect(requalify).to_have_accessible_description(reason.inner_text())
    # Beside the button, on the screen, not below the fold of a tooltip.
    button_box, reason_box = requalify.bounding_box(), reason.bounding_box()
    assert reason_box["y"] < button_box["y"] + 3 * button_box["height"]
    expect(reason).to_be_in_viewport()

    disabled = page.locator("#lead-actions button:disabled")
    assert disabled.count() >= 1
    for button in disabled.all():
        described_by = button.get_attribute("aria-describedby")
        assert described_by, button.inner_text()
        expect(page.locator(f"#{described_by}")).to_be_visible()
        assert page.locator(f"#{described_by}").inner_text().strip()
        assert button.get_attribute("title") is None
    assert sideways_overflow(page) == 0
    assert page.evaluate(CONTRAST_FAILURES) == []


def test_an_enabled_action_has_no_reason(page, live_server, login, seeded, operator):
    login(page, operator)
    ann = seeded["ann"]  # qualified by the workflow: she can be re-qualified
    page.goto(f"{live_server.url}/leads/{ann.public_id}/")
    requalify = page.locator("form#action-requalify button")
    expect(requalify).to_be_enabled()
    assert requalify.get_attribute("aria-describedby") is None
    expect(page.locator("#requalify-reason")).to_have_count(0)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_login_page_fits_a_phone(page, live_server, scheme):
    page.emulate_media(color_scheme=scheme)
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server.url}/accounts/login/")
    expect(page.get_by_role("button", name="Log in")).to_be_in_viewport()
    assert sideways_overflow(page) == 0
    assert page.evaluate(CONTRAST_FAILURES) == []
