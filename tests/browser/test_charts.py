"""Charts as people see them: legible labels at a desktop's and a phone's width,
bars that say what they count, and a click on one that opens its events."""

import re
from datetime import datetime
from itertools import pairwise

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import BROWSER_DB, db_ids, query, shown_ids

pytestmark = [pytest.mark.browser, BROWSER_DB]

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

# Each shown axis label: its font size on screen (the computed size times the
# scale from its user units to screen pixels), the height of its box, and the box.
LABELS = """
svg => [...svg.querySelectorAll("text")]
  .filter(t => getComputedStyle(t).display !== "none" && t.getBBox().width > 0)
  .map(t => {
    const m = t.getScreenCTM();
    const box = t.getBoundingClientRect();
    return {
      text: t.textContent,
      axis: t.classList.contains("x-label") ? "x" : "y",
      px: parseFloat(getComputedStyle(t).fontSize) * Math.min(Math.abs(m.a), Math.abs(m.d)),
      height: box.height, left: box.left, right: box.right,
    };
  })
"""

CHARTS = {
    "overview": ("/?range=24h", ["section#volume-chart", "section#error-chart"]),
    "overview-days": ("/?range=7d", ["section#volume-chart", "section#error-chart"]),
    "analytics": ("/analytics/?range=7d", ["section#funnel"]),
    "events": ("/events/?range=7d", ["section#event-histogram"]),
}


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280px", "390px"])
@pytest.mark.parametrize("name", list(CHARTS))
def test_axis_labels_are_at_least_11px_on_screen_and_do_not_overlap(
    logged_in_page, live_server, seeded, viewport, name
):
    page = logged_in_page
    page.set_viewport_size(viewport)
    path, sections = CHARTS[name]
    page.goto(f"{live_server.url}{path}")
    for section in sections:
        svg = page.locator(f"{section} svg.chart")
        expect(svg).to_be_visible()
        labels = svg.evaluate(LABELS)
        x_labels = [label for label in labels if label["axis"] == "x"]
        assert len(x_labels) >= 2, f"{section}: {labels}"
        assert [label for label in labels if label["axis"] == "y"], f"{section}: {labels}"
        for label in labels:
            assert label["px"] >= 11, f"{section} at {viewport['width']} px: {label}"
            assert label["height"] >= 11, f"{section} at {viewport['width']} px: {label}"
        # Fewer labels on a narrow chart, never one over another.
        ordered = sorted(x_labels, key=lambda label: label["left"])
        for before, after in pairwise(ordered):
            assert before["right"] <= after["left"], f"{section}: {before} overlaps {after}"
        # The chart fits its panel: no sideways scrolling on a phone.
        chart_box = svg.bounding_box()
        panel_box = page.locator(section).bounding_box()
        assert chart_box["width"] <= panel_box["width"]
    assert "pygal" not in page.content().lower()


def accessible_names(page, role: str) -> list[str]:
    """The names Chromium's accessibility tree (what a screen reader reads) gives
    nodes of a role. Playwright's get_by_role computes roles itself, and takes an
    SVG <a> with only xlink:href (pygal's) for no link; Chromium does not."""
    cdp = page.context.new_cdp_session(page)
    nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
    return [
        n.get("name", {}).get("value", "")
        for n in nodes
        if not n.get("ignored") and n.get("role", {}).get("value") == role
    ]


def bar(page, section: str, name: str):
    """The bar link in `section` whose <title> (its tooltip) is `name`."""
    titles = page.locator(f"{section} svg.chart a").evaluate_all(
        "links => links.map(a => a.firstElementChild.tagName === 'title'"
        " ? a.firstElementChild.textContent : null)"
    )
    assert name in titles, titles
    return page.locator(f"{section} svg.chart a").nth(titles.index(name))


def test_a_bar_is_a_focusable_link_named_by_its_value_and_range(
    logged_in_page, live_server, seeded
):
    page = logged_in_page
    page.goto(f"{live_server.url}/?range=7d")
    day = seeded["earlier"].date().isoformat()
    chart = page.locator("section#error-chart svg.chart")
    expect(chart).to_have_attribute("aria-label", "Errors per day")
    expect(chart.locator("> title")).to_have_text("Errors per day")

    # The tooltip: the link's first child is a <title> with its value and range.
    errors = bar(page, "section#error-chart", f"2 errors, {day} UTC")
    errors.hover()
    # The same words are its name for a screen reader, as a link.
    links = accessible_names(page, "link")
    assert f"2 errors, {day} UTC" in links
    assert [name for name in links if re.fullmatch(rf"(.+: )?2 new leads, {day} UTC", name)]
    assert "Errors per day" in accessible_names(page, "figure")
    # Reachable from the keyboard, like any link: Tab from the bar before it.
    previous = page.locator("section#error-chart svg.chart a").nth(
        errors.evaluate("a => [...a.closest('svg.chart').querySelectorAll('a')].indexOf(a)") - 1
    )
    previous.focus()
    page.keyboard.press("Tab")
    assert errors.evaluate("a => document.activeElement === a")

    # The funnel's bars are no links; each is an image with the same kind of name.
    page.goto(f"{live_server.url}/analytics/?range=7d")
    expect(page.locator("section#funnel svg.chart")).to_be_visible()
    assert "Ingested: 3 leads" in accessible_names(page, "image")


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280px", "390px"])
def test_clicking_a_bar_opens_the_events_of_its_bucket(
    logged_in_page, live_server, seeded, viewport
):
    page = logged_in_page
    page.set_viewport_size(viewport)
    page.goto(f"{live_server.url}/?range=7d")
    day = seeded["earlier"].date().isoformat()

    bar(page, "section#error-chart", f"2 errors, {day} UTC").click()

    expect(page).to_have_url(re.compile(r"/events/\?.*range=custom"))
    params = query(page)
    assert params["type"] == ["error"]
    since = datetime.fromisoformat(params["since"][0])
    until = datetime.fromisoformat(params["until"][0])
    assert since.date().isoformat() == day
    expected = db_ids(event_type="error", timestamp__gte=since, timestamp__lt=until)
    assert expected == [seeded["other_error"].pk, seeded["error"].pk]
    expect(page.locator("tr.event-row")).to_have_count(2)
    assert shown_ids(page) == expected


def _luminance(rgb: str) -> float:
    channels = [int(c) / 255 for c in re.findall(r"\d+", rgb)[:3]]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


COLOURS = """
section => {
  const svg = section.querySelector("svg.chart");
  const fill = el => getComputedStyle(el).fill;
  return {
    panel: getComputedStyle(section).backgroundColor,
    x: fill(svg.querySelector(".x-label")),
    y: fill(svg.querySelector(".y-label")),
    bars: [...svg.querySelectorAll(".bar rect")].map(fill),
  };
}
"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_chart_text_and_bars_stand_out_from_the_panel(logged_in_page, live_server, seeded, scheme):
    page = logged_in_page
    page.emulate_media(color_scheme=scheme)
    page.goto(f"{live_server.url}/?range=7d")
    for section in ("section#error-chart", "section#volume-chart"):
        colours = page.locator(section).evaluate(COLOURS)
        panel = colours["panel"]
        assert contrast(colours["x"], panel) >= 4.5, colours
        assert contrast(colours["y"], panel) >= 4.5, colours
        for bar in set(colours["bars"]):
            assert contrast(bar, panel) >= 3, colours
