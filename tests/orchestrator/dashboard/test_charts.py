"""Server-side charts are safe under the CSP: no script, no <style>, no style attributes."""

import itertools
from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree as ET

from orchestrator.dashboard.charts import (
    CSS_MARKER,
    CSS_PATH,
    LABEL_WIDTHS,
    SPIKE_COLOUR,
    SVG_NS,
    Series,
    bar_chart,
    bucket_label,
    bucket_range,
    chart_css,
    label_widths,
    ticks,
)

XLINK = "{http://www.w3.org/1999/xlink}href"


def chart(**kwargs):
    defaults = {
        "labels": ["Mon", "Tue", "Wed"],
        "series": [
            Series(
                "Errors",
                [1, 9, 2],
                links=["/events/?type=error&since=1", '/events/?q=<b>&x="y"', "/events/?3"],
                marked={1},
            )
        ],
        "title": "Errors <per day>",
    }
    return bar_chart(**{**defaults, **kwargs})


def parse(html: str) -> ET.Element:
    """The chart's <svg>, inside the box its label queries measure."""
    box = ET.fromstring(html)
    assert box.tag == "div" and box.get("class") == "chart-box"
    return box.find(f"{{{SVG_NS}}}svg")


def bars(root: ET.Element) -> list[ET.Element]:
    return [a for a in root.iter(f"{{{SVG_NS}}}a") if a.get(XLINK)]


def test_the_svg_has_no_script_no_style_element_and_no_style_attributes():
    for svg in (chart(), chart(stacked=False)):
        root = parse(svg)
        assert "<script" not in svg and "<style" not in svg
        assert not [e for e in root.iter() if e.tag.endswith(("script", "style"))]
        assert not [e.tag for e in root.iter() if "style" in e.attrib]
        assert " style=" not in svg
        assert root.get("class") == "chart"


def test_the_static_chart_stylesheet_is_up_to_date():
    # Regenerate with orchestrator.dashboard.charts.write_chart_css() after changing STYLE or pygal.
    generated, marker, ours = CSS_PATH.read_text().partition(CSS_MARKER)
    assert generated == chart_css()
    assert marker and "svg.chart" in ours
    assert "svg.chart .axis text" in chart_css()
    assert "#chart-" not in chart_css()


def test_bars_are_links_in_order_and_escaped():
    svg = chart()
    hrefs = [a.get(XLINK) for a in bars(parse(svg))]
    assert hrefs == ["/events/?type=error&since=1", '/events/?q=<b>&x="y"', "/events/?3"]
    # In the markup the URL is escaped, so it cannot close the attribute or open a tag.
    assert 'xlink:href="/events/?q=&lt;b&gt;&amp;x=&quot;y&quot;"' in svg
    assert "<b>" not in svg


def test_the_title_is_the_accessible_name_and_escaped():
    svg = chart()
    assert parse(svg).get("aria-label") == "Errors <per day>"
    assert "Errors <per day>" not in svg
    # Not pygal's "Pygal" title: the chart's own, as the first child.
    root = parse(svg)
    assert root[0].tag == f"{{{SVG_NS}}}title" and root[0].text == "Errors <per day>"
    assert "pygal" not in svg.lower()


def test_marked_bars_use_the_spike_colour_and_others_do_not():
    shapes = [[e for e in a if e.tag == f"{{{SVG_NS}}}rect"] for a in bars(parse(chart()))]
    fills = [rect.get("fill") for group in shapes for rect in group]
    assert fills == [None, SPIKE_COLOUR, None]


def test_a_stacked_chart_links_every_series():
    svg = chart(
        series=[
            Series("web", [1, 2], links=["/a?1", "/a?2"]),
            Series("csv", [3, 4], links=["/a?1", "/a?2"]),
        ],
        labels=["x", "y"],
    )
    assert [a.get(XLINK) for a in bars(parse(svg))] == ["/a?1", "/a?2", "/a?1", "/a?2"]
    assert SPIKE_COLOUR not in svg


def test_count_ticks_are_whole_numbers_and_reach_the_top():
    assert ticks(1) == [0, 1]
    assert ticks(3) == [0, 1, 2, 3]
    assert ticks(0) == [0, 1]
    assert ticks(47) == [0, 10, 20, 30, 40, 50]
    assert all(isinstance(t, int) for t in ticks(7))
    assert ticks(0.9, integer=False)[-1] >= 0.9


def test_a_count_chart_with_few_events_has_no_fractional_ticks():
    svg = chart(series=[Series("Errors", [0, 1, 0])])
    y_labels = [t.text for t in parse(svg).iter(f"{{{SVG_NS}}}text") if t.get("class") == "y-label"]
    assert y_labels and all("." not in label for label in y_labels), y_labels


def test_each_bar_is_named_by_its_value_and_range():
    start = datetime(2026, 12, 7, 13, 0, tzinfo=UTC)
    buckets = [(start + timedelta(hours=i), start + timedelta(hours=i + 1)) for i in range(3)]
    svg = bar_chart(
        title="Errors per hour",
        buckets=buckets,
        unit="hour",
        series=[Series("Errors", [1, 1234, 0], links=["/a", "/b", "/c"])],
        noun=("error", "errors"),
    )
    names = [a[0].text for a in bars(parse(svg))]
    assert names == [
        "1 error, 2026-12-07 13:00\u201314:00 UTC",
        "1,234 errors, 2026-12-07 14:00\u201315:00 UTC",
        "0 errors, 2026-12-07 15:00\u201316:00 UTC",
    ]


def test_bucket_labels_have_one_format_per_unit():
    monday = datetime(2026, 12, 7, tzinfo=UTC)
    assert bucket_label(monday, "day") == "Dec 7"
    assert bucket_label(monday, "week") == "Dec 7"
    assert bucket_label(monday, "hour") == "Dec 7"
    assert bucket_label(monday.replace(hour=14), "hour") == "14:00"
    assert bucket_range(monday, monday + timedelta(days=1)) == "2026-12-07 UTC"
    assert bucket_range(monday, monday + timedelta(days=7)) == "2026-12-07 \u2013 2026-12-13 UTC"


def _shown_at(widths: list[int | None], width: int) -> list[int]:
    return [i for i, w in enumerate(widths) if w is not None and w <= width]


def test_a_week_of_days_shows_two_dates_or_more_at_every_width_whatever_the_weekday():
    # Seven days and the partial eighth hold one Monday, or two when they start on one:
    # a phone must not be left with a single date on the axis either way.
    for weekday in range(7):
        first = datetime(2026, 11, 30, 14, 20, tzinfo=UTC) + timedelta(days=weekday)
        starts = [first.replace(hour=0, minute=0) + timedelta(days=i) for i in range(8)]
        labels = [bucket_label(s, "day") for s in starts]
        widths = label_widths(labels, starts=starts, unit="day")
        for width in LABEL_WIDTHS:
            shown = _shown_at(widths, width)
            assert len(shown) >= 2, (first, width, widths)
            # Never closer than a label's width: the layout's own rule.
            slot = width * 0.95 / len(starts)
            needed = max(len(label) for label in labels) * 7.0 + 10.0
            assert all(b - a >= needed / slot for a, b in itertools.pairwise(shown))
        # What a narrow chart shows, every wider one shows too.
        for narrow, wide in itertools.pairwise(LABEL_WIDTHS):
            assert set(_shown_at(widths, narrow)) <= set(_shown_at(widths, wide))


def test_labels_stay_on_mondays_when_a_narrow_chart_has_two_of_them():
    starts = [datetime(2026, 11, 2, tzinfo=UTC) + timedelta(days=i) for i in range(30)]
    labels = [bucket_label(s, "day") for s in starts]
    widths = label_widths(labels, starts=starts, unit="day")
    narrowest = _shown_at(widths, LABEL_WIDTHS[0])
    assert len(narrowest) >= 2
    assert all(starts[i].weekday() == 0 for i in narrowest)
