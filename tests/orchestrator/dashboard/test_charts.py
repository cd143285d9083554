"""Server-side charts are safe under the CSP: no script, no <style>, no style attributes."""

from xml.etree import ElementTree as ET

from orchestrator.dashboard.charts import (
    CSS_PATH,
    SPIKE_COLOUR,
    SVG_NS,
    Series,
    bar_chart,
    chart_css,
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


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


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
    assert CSS_PATH.read_text() == chart_css()
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
