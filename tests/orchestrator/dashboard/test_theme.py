"""The dashboard's colours meet WCAG AA in the light and the dark theme.

dashboard.css keeps every colour in custom properties on :root and overrides
them for prefers-color-scheme: dark. Each pair below is a foreground the pages
draw on a background; its contrast is computed from the stylesheet itself, so
changing a colour in one theme cannot quietly break the other.
"""

import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders

TEXT = 4.5  # WCAG 1.4.3, normal text
UI = 3.0  # WCAG 1.4.11, borders and focus rings a control is recognised by

# (foreground, background, minimum, where the pair appears)
PAIRS = [
    ("fg", "bg", TEXT, "body text"),
    ("fg", "panel", TEXT, "text in panels, tables, the range bar"),
    ("muted", "bg", TEXT, "muted text on the page"),
    ("muted", "panel", TEXT, "muted text in panels, table headings, the range label"),
    ("muted", "row-alert", TEXT, "muted text in an error row"),
    ("link", "bg", TEXT, "links on the page"),
    ("link", "panel", TEXT, "links in panels"),
    ("link", "row-alert", TEXT, "links in an error row"),
    ("fg", "row-alert", TEXT, "text in an error row"),
    ("bad", "row-alert", TEXT, "an error message in an error row"),
    ("ok", "panel", TEXT, "a KPI going the good way"),
    ("bad", "panel", TEXT, "error text, a KPI going the bad way"),
    ("bad", "bg", TEXT, "error text on the page"),
    ("warn", "panel", TEXT, "warning text"),
    ("on-accent", "accent", TEXT, "buttons, the active range preset, the skip link"),
    ("on-danger", "danger", TEXT, "the cancel-sequence button"),
    ("fg", "input-bg", TEXT, "inputs and selects"),
    ("code-fg", "code-bg", TEXT, "code and pre blocks"),
    ("topbar-fg", "topbar-bg", TEXT, "the top bar"),
    ("topbar-link", "topbar-bg", TEXT, "Log out"),
    ("badge-fg", "badge-bg", TEXT, "a plain badge"),
    ("ok-fg", "ok-bg", TEXT, "badge ok, qualified, success message"),
    ("bad-fg", "bad-bg", TEXT, "badge bad, disqualified, error message"),
    ("warn-fg", "warn-bg", TEXT, "badge warn, failed"),
    ("info-fg", "info-bg", TEXT, "badge info, nurture, info message"),
    ("control-border", "panel", UI, "input, select and preset borders"),
    ("control-border", "bg", UI, "borders of controls on the page"),
    ("accent", "panel", UI, "the active preset and buttons against their panel"),
    ("focus", "bg", UI, "the focus ring on the page"),
    ("focus", "panel", UI, "the focus ring in panels"),
    ("topbar-current", "topbar-bg", UI, "the current page's underline"),
    ("topbar-current-fg", "topbar-bg", TEXT, "the current page in the nav"),
]


def stylesheet() -> str:
    return Path(finders.find("dashboard/dashboard.css")).read_text()


def declarations(block: str) -> dict[str, str]:
    return dict(re.findall(r"--([\w-]+)\s*:\s*(#[0-9a-fA-F]{3,6})\b", block))


def themes() -> dict[str, dict[str, str]]:
    css = stylesheet()
    # The first :root block is the light theme; the one inside the media query
    # overrides it. Both are flat (no nested braces), so a brace match suffices.
    light = re.search(r"^:root\s*\{([^}]*)\}", css, re.M)
    dark = re.search(r"@media\s*\(prefers-color-scheme:\s*dark\)\s*\{\s*:root\s*\{([^}]*)\}", css)
    assert light and dark, "dashboard.css lost its :root theme blocks"
    light_vars = declarations(light.group(1))
    return {"light": light_vars, "dark": {**light_vars, **declarations(dark.group(1))}}


def luminance(hex_colour: str) -> float:
    h = hex_colour.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    channels = []
    for i in (0, 2, 4):
        c = int(h[i : i + 2], 16) / 255
        channels.append(c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4)
    r, g, b = channels
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_the_contrast_formula_matches_wcag_reference_values():
    assert contrast("#000", "#fff") == pytest.approx(21)
    assert contrast("#767676", "#fff") == pytest.approx(4.54, abs=0.01)


def test_the_dark_theme_overrides_every_colour_of_the_light_one():
    css = stylesheet()
    dark = re.search(r"prefers-color-scheme:\s*dark\)\s*\{\s*:root\s*\{([^}]*)\}", css)
    light = themes()["light"]
    assert set(declarations(dark.group(1))) == set(light)


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize(("fg", "bg", "minimum", "where"), PAIRS, ids=[p[3] for p in PAIRS])
def test_colour_pairs_meet_wcag_aa(theme, fg, bg, minimum, where):
    colours = themes()[theme]
    ratio = contrast(colours[fg], colours[bg])
    assert ratio >= minimum, (
        f"{theme}: --{fg} {colours[fg]} on --{bg} {colours[bg]} is {ratio:.2f}:1 ({where})"
    )


def test_no_rule_outside_the_themes_names_a_colour_of_its_own():
    # A literal colour in a rule would look the same in both themes.
    css = stylesheet()
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    rules = re.sub(r"^:root\s*\{[^}]*\}", "", css, count=1, flags=re.M)
    rules = re.sub(
        r"@media\s*\(prefers-color-scheme:\s*dark\)\s*\{\s*:root\s*\{[^}]*\}\s*\}", "", rules
    )
    assert re.findall(r"#[0-9a-fA-F]{3,6}\b", rules) == []
