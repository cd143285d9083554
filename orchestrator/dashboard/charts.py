"""Server-side SVG charts (pygal), made safe for our Content-Security-Policy.

SVG rendered on the server shows without JavaScript, and a bar is an SVG link,
so clicking it works everywhere. pygal embeds a <style> and a config <script>
for its optional tooltips; we drop the script, turn the inline style
attributes into presentation attributes (the CSP forbids both), and serve its
stylesheet as a static file scoped to svg.chart (charts.css), so a chart in a
fragment swapped in by htmx needs no nonce of its own.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

import pygal
from django.utils.safestring import SafeString, mark_safe
from pygal.style import Style

SVG_NS = "http://www.w3.org/2000/svg"
ET.register_namespace("", SVG_NS)
ET.register_namespace("xlink", "http://www.w3.org/1999/xlink")

PALETTE = (
    "#2563eb",
    "#16a34a",
    "#f59e0b",
    "#9333ea",
    "#0891b2",
    "#db2777",
    "#65a30d",
    "#ea580c",
    "#475569",
)
SPIKE_COLOUR = "#dc2626"

STYLE = Style(
    background="transparent",
    plot_background="transparent",
    foreground="#334155",
    foreground_strong="#0f172a",
    foreground_subtle="#cbd5e1",
    colors=PALETTE,
    font_family="system-ui, sans-serif",
    label_font_size=11,
    major_label_font_size=11,
    legend_font_size=12,
    value_font_size=11,
)


@dataclass
class Series:
    name: str
    values: Sequence[int | float | None]
    # One URL per value (a bar opens the event browser for its bucket), or none.
    links: Sequence[str] | None = None
    # Indexes of values to draw in the alarm colour (error spikes).
    marked: set[int] = field(default_factory=set)


def _point(series: Series, i: int, value: int | float | None) -> dict | None:
    if value is None:
        return None
    point: dict = {"value": value}
    if series.links:
        point["xlink"] = {"href": series.links[i], "target": "_self"}
    if i in series.marked:
        point["color"] = SPIKE_COLOUR
        point["label"] = "spike"
    return point


# Properties pygal writes into style="" that SVG also takes as attributes, which
# the CSP allows (a marked bar's colour, the hidden tooltip's opacity).
PRESENTATION = ("fill", "stroke", "opacity")
SHAPES = {name for tag in ("rect", "path", "circle") for name in (tag, f"{{{SVG_NS}}}{tag}")}


def _presentation(style: str) -> dict[str, str]:
    out = {}
    for declaration in style.split(";"):
        name, _, value = declaration.partition(":")
        if name.strip() in PRESENTATION and value.strip():
            out[name.strip()] = value.strip()
    return out


DROPPED = {name for tag in ("script", "style") for name in (tag, f"{{{SVG_NS}}}{tag}")}


def _finish(chart: pygal.graph.graph.Graph, title: str) -> SafeString:
    root = chart.render_tree()
    # Its <style> lives in static/dashboard/charts.css instead (chart_css()): a
    # nonce in a fragment swapped in by htmx would be the fragment's, not the
    # page's, and the browser would refuse the styles.
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag in DROPPED:
                parent.remove(child)
    for element in root.iter():
        style = _presentation(element.attrib.pop("style", ""))
        if "opacity" in style:
            element.set("opacity", style.pop("opacity"))
        # On the shapes themselves: the stylesheet colours the series' <a>
        # links, and a colour inherited from further up would lose to it.
        for shape in element.iter():
            if shape.tag in SHAPES:
                for name, value in style.items():
                    shape.set(name, value)
    root.set("role", "img")
    root.set("aria-label", title)
    root.set("class", "chart")
    return mark_safe(ET.tostring(root, encoding="unicode"))


def bar_chart(
    *,
    labels: Sequence[str],
    series: Sequence[Series],
    title: str,
    stacked: bool = True,
    height: int = 220,
) -> SafeString:
    """A (stacked) bar chart; `labels` name the buckets, one value per label per series."""
    cls = pygal.StackedBar if stacked else pygal.Bar
    chart = cls(
        style=STYLE,
        width=900,
        height=height,
        js=[],
        disable_xml_declaration=True,
        show_legend=len(series) > 1,
        legend_at_bottom=True,
        legend_at_bottom_columns=min(len(series), 6) or 1,
        x_label_rotation=0,
        show_minor_x_labels=False,
        x_labels_major_every=max(1, len(labels) // 8),
        truncate_label=-1,
        print_values=False,
        margin=8,
        spacing=6,
        min_scale=2,
        max_scale=6,
        no_data_text="No events in this range",
    )
    chart.x_labels = list(labels)
    for s in series:
        chart.add(s.name, [_point(s, i, v) for i, v in enumerate(s.values)])
    return _finish(chart, title)


CSS_PATH = Path(__file__).parent.parent / "static" / "dashboard" / "charts.css"


def chart_css() -> str:
    """pygal's stylesheet for our STYLE, scoped to svg.chart instead of one chart's id.

    Kept as a static file (CSS_PATH); a test fails when it is out of date.
    Regenerate with: python manage.py shell -c "from orchestrator.dashboard.charts import
    write_chart_css; write_chart_css()"
    """
    chart = pygal.StackedBar(style=STYLE, js=[], disable_xml_declaration=True)
    chart.add("a", [1])
    root = chart.render_tree()
    chart_id = root.get("id")
    css = "".join(el.text or "" for el in root.iter() if el.tag in (f"{{{SVG_NS}}}style", "style"))
    return (
        "/* Generated by orchestrator.dashboard.charts.chart_css() from pygal's styles: "
        "do not edit. */\n" + css.replace(f"#{chart_id}", "svg.chart").strip() + "\n"
    )


def write_chart_css() -> None:
    CSS_PATH.write_text(chart_css())
