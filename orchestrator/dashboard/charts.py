"""Server-side SVG charts (pygal), made safe for our Content-Security-Policy and
readable at any width.

SVG rendered on the server shows without JavaScript, and a bar is an SVG link,
so clicking it works everywhere. pygal embeds a <style> and a config <script>
for its optional tooltips; we drop the script, turn the inline style
attributes into presentation attributes (the CSP forbids both), and serve its
stylesheet as a static file scoped to svg.chart (charts.css), so a chart in a
fragment swapped in by htmx needs no nonce of its own.

pygal draws at a fixed size, and a scaled SVG scales its text with it: a chart
drawn 900 wide and shown 580 wide has 7 px labels. So the drawing is split in
two: pygal's bars and grid go into a nested <svg> that stretches to the width
shown (preserveAspectRatio="none"), and the text moves to the outer <svg>,
which has no viewBox, so its font sizes are CSS pixels at every width. Axis
labels sit at percentages of the width; which of them show is decided by a
container query on the chart's width (charts.css), so they never collide.

Buckets of time are labelled by bucket_label/axis_labels and described by
bucket_range, the one place those formats live.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree as ET

import pygal
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from pygal.style import Style

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
ET.register_namespace("", SVG_NS)
ET.register_namespace("xlink", XLINK_NS)

# Dark enough on white for the 3:1 WCAG asks of graphics (the lightest, green
# and orange, are 5:1); charts.css swaps in light ones on a dark background.
PALETTE = (
    "#2563eb",
    "#15803d",
    "#b45309",
    "#9333ea",
    "#0e7490",
    "#be185d",
    "#4d7c0f",
    "#c2410c",
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
    label_font_size=12,
    major_label_font_size=12,
    legend_font_size=12,
    value_font_size=12,
)

# The width pygal lays out at; only proportions survive, as the bars stretch.
DRAW_WIDTH = 900
# Chart widths (CSS px) at which more axis labels fit; charts.css has a container
# query for each. The first is the narrowest a chart is shown (a 320 px phone).
LABEL_WIDTHS = (280, 400, 560, 720, 960, 1200)
# A rough width of one character of a 12 px system-ui label, and the gap between labels.
CHAR_PX, LABEL_GAP_PX = 7.0, 10.0
UNITS = ("hour", "day", "week")
# Every how many buckets a label may go, each step dividing the next so that a
# label shown on a narrow chart is shown on every wider one. Hours step to the
# midnight label, days to Mondays.
STEPS = {
    "hour": (1, 3, 6, 12, 24),
    "day": (1, 7, 14, 28),
    "week": (1, 2, 4, 8, 16, 32),
    None: (1, 2, 4, 8, 16, 32, 64),
}
DASH = "\u2013"  # an en dash, between the ends of a range
# A Monday, from which day and week steps are counted.
EPOCH_MONDAY = date(2001, 1, 1)


@dataclass
class Series:
    name: str
    values: Sequence[int | float | None]
    # One URL per value (a bar opens the event browser for its bucket), or none.
    links: Sequence[str] | None = None
    # Indexes of values to draw in the alarm colour (error spikes).
    marked: set[int] = field(default_factory=set)


# --- Bucket labels: one format per unit ------------------------------------------------


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _day(moment: datetime) -> str:
    return f"{moment:%b} {moment.day}"


def bucket_label(start: datetime, unit: str) -> str:
    """The axis label of a bucket: hours "14:00" (the hour starting a day reads
    "Dec 7"), days and weeks "Dec 7" (a week by its Monday). Buckets are UTC."""
    start = _utc(start)
    if unit == "hour" and (start.hour or start.minute):
        return f"{start:%H:%M}"
    return _day(start)


def axis_labels(starts: Sequence[datetime], unit: str) -> list[str]:
    return [bucket_label(start, unit) for start in starts]


def bucket_range(start: datetime, end: datetime) -> str:
    """A bucket's exact range, for a bar's name (en dashes where "-" stands here):
    "2026-12-07 14:00-15:00 UTC", "2026-12-07 UTC" (a day), "2026-12-07 - 2026-12-13
    UTC" (a week), or clipped to the period's edge "2026-12-07 14:23-15:00 UTC"."""
    start, end = _utc(start), _utc(end)
    if start.time() == end.time() == datetime.min.time():
        last = end.date() - timedelta(days=1)
        if last == start.date():
            return f"{start:%Y-%m-%d} UTC"
        return f"{start:%Y-%m-%d} {DASH} {last:%Y-%m-%d} UTC"
    if end.date() == start.date():
        return f"{start:%Y-%m-%d %H:%M}{DASH}{end:%H:%M} UTC"
    if end == datetime.combine(start.date() + timedelta(days=1), datetime.min.time(), UTC):
        # The end of the day, not the start of the next one.
        return f"{start:%Y-%m-%d %H:%M}{DASH}24:00 UTC"
    return f"{start:%Y-%m-%d %H:%M} {DASH} {end:%Y-%m-%d %H:%M} UTC"


def _aligned(start: datetime | None, index: int, unit: str | None, step: int) -> bool:
    """Whether a label every `step` buckets falls on this one (whole hours, Mondays)."""
    if start is None or unit not in UNITS:
        return index % step == 0
    start = _utc(start)
    if unit == "hour":
        return start.hour % step == 0
    days = (start.date() - EPOCH_MONDAY).days
    return days % step == 0 if unit == "day" else (days // 7) % step == 0


def label_widths(
    labels: Sequence[str], *, starts: Sequence[datetime] | None = None, unit: str | None = None
) -> list[int | None]:
    """The narrowest chart width (of LABEL_WIDTHS) at which each label shows, None for never.

    At each width, labels go every k buckets for the smallest k of STEPS whose
    labels do not overlap there.
    """
    n = len(labels)
    if not n:
        return []
    widest = max(len(label) for label in labels) * CHAR_PX + LABEL_GAP_PX

    def step_at(width: int, steps: Sequence[int]) -> int:
        # Bars take ~95% of the width.
        slot = width * 0.95 / n
        return next((k for k in steps if slot * k >= widest), steps[-1])

    steps = STEPS[unit if unit in UNITS else None]
    narrowest = step_at(LABEL_WIDTHS[0], steps)
    shown = sum(_aligned(starts[i] if starts else None, i, unit, narrowest) for i in range(n))
    if shown < min(2, n):
        # Aligned labels would leave a narrow chart with one date or none (seven
        # days hold one Monday): count buckets instead, at every width, so that
        # each width still shows what the narrower ones show.
        unit, steps = None, STEPS[None]
    out: list[int | None] = [None] * n
    for width in reversed(LABEL_WIDTHS):
        step = step_at(width, steps)
        for i in range(n):
            if _aligned(starts[i] if starts else None, i, unit, step):
                out[i] = width
    return out


# --- Ticks ---------------------------------------------------------------------------


def ticks(top: float, *, integer: bool = True, most: int = 5) -> list[float]:
    """Round y-axis ticks from 0 to at least `top`, at most `most` intervals; whole
    numbers only for counts (no 0.5 errors)."""
    if top <= 0:
        return [0, 1] if integer else [0, 1.0]
    raw = top / most
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1, round(step))
    count = math.ceil(top / step - 1e-9)
    values = [i * step for i in range(count + 1)]
    return [int(v) for v in values] if integer else [round(v, 10) for v in values]


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"


# --- Drawing -------------------------------------------------------------------------


def _point(series: Series, i: int, value: int | float | None) -> dict:
    # A missing value is drawn as an empty bar, so every series has a bar per label.
    point: dict = {"value": 0 if value is None else value}
    if series.links and value is not None:
        point["xlink"] = {"href": series.links[i], "target": "_self"}
    if i in series.marked:
        point["color"] = SPIKE_COLOUR
    return point


# Properties pygal writes into style="" that SVG also takes as attributes, which
# the CSP allows (a marked bar's colour, the hidden tooltip's opacity).
PRESENTATION = ("fill", "stroke", "opacity")
SHAPES = {"rect", "path", "circle"}
DROPPED = {"script", "style", "desc"}


def _presentation(style: str) -> dict[str, str]:
    out = {}
    for declaration in style.split(";"):
        name, _, value = declaration.partition(":")
        if name.strip() in PRESENTATION and value.strip():
            out[name.strip()] = value.strip()
    return out


def _local(tag: object) -> str | None:
    return tag.rpartition("}")[2] if isinstance(tag, str) else None


def _classes(element: ET.Element) -> set[str]:
    return set((element.get("class") or "").split())


def _translate(element: ET.Element) -> tuple[float, float]:
    transform = element.get("transform") or ""
    if not transform.startswith("translate("):
        return (0.0, 0.0)
    x, _, y = transform[len("translate(") : -1].replace(",", " ").partition(" ")
    return (float(x), float(y or 0))


def _name(
    where: str, value: float | None, series: str, *, noun: tuple[str, str], many: bool, timed: bool
) -> str:
    """ "12 errors, 2026-12-07 14:00-15:00 UTC" for a bucket of time, "Qualified: 12
    leads" for a category; a stacked bar's series first, "web: 3 new leads, ..."."""
    if value is None:
        amount = "no data"
    else:
        amount = f"{_number(value)} {noun[0] if value == 1 else noun[1]}".strip()
    if timed:
        return f"{series}: {amount}, {where}" if many else f"{amount}, {where}"
    return f"{where}, {series}: {amount}" if many else f"{where}: {amount}"


def _finish(
    chart: pygal.graph.graph.Graph,
    *,
    title: str,
    height: int,
    names: list[list[str]],
    spikes: list[set[int]],
    label_at: list[int | None],
) -> ET.Element:
    tree = chart.render_tree()
    # pygal's comments credit pygal; its <title> says "Pygal"; its <desc>s are
    # tooltip data a screen reader would read out as noise.
    for parent in list(tree.iter()):
        for child in list(parent):
            if _local(child.tag) in {*DROPPED, "title", None}:
                parent.remove(child)
    for element in tree.iter():
        element.attrib.pop("id", None)
        style = _presentation(element.attrib.pop("style", ""))
        if "opacity" in style:
            element.set("opacity", style.pop("opacity"))
        # On the shapes themselves: the stylesheet colours the series' <a>
        # links, and a colour inherited from further up would lose to it.
        for shape in element.iter():
            if _local(shape.tag) in SHAPES:
                for name, value in style.items():
                    shape.set(name, value)

    # pygal's tags carry no namespace, its root declares it.
    root = ET.Element(
        "svg",
        {
            "xmlns": SVG_NS,
            "class": "chart",
            "width": "100%",
            "height": str(height),
        },
    )
    ET.SubElement(root, "title").text = title
    canvas = ET.SubElement(
        root,
        "svg",
        {
            "class": "canvas",
            "width": "100%",
            "height": str(height),
            "viewBox": f"0 0 {DRAW_WIDTH} {height}",
            "preserveAspectRatio": "none",
            # Chromium would expose a nested <svg> as an image, hiding the links in it.
            "role": "none",
        },
    )
    text_layer = ET.Element("g", {"class": "labels", "aria-hidden": "true"})
    graph = next(e for e in tree if "graph" in _classes(e))
    canvas.append(graph)

    # Move every text out of the stretched drawing, to where it lies in CSS px.
    parents = {child: parent for parent in graph.iter() for child in parent}
    x_labels = iter(label_at)
    for text in [e for e in graph.iter() if _local(e.tag) == "text"]:
        dx = dy = 0.0
        node = text
        while node in parents:
            node = parents[node]
            tx, ty = _translate(node)
            dx, dy = dx + tx, dy + ty
        x, y = float(text.get("x", 0)) + dx, float(text.get("y", 0)) + dy
        parents[text].remove(text)
        axis = next(
            (_classes(a) for a in _ancestors(text, parents) if "axis" in _classes(a)), set()
        )
        if "x" in axis:
            width = next(x_labels, None)
            if width is None:
                continue
            moved = ET.SubElement(
                text_layer,
                "text",
                {"x": f"{x / DRAW_WIDTH:.3%}", "y": f"{y:.1f}", "class": f"x-label min-{width}"},
            )
        elif "y" in axis:
            # Inside the plot, above its grid line, left-aligned: a label beside
            # the axis would need a margin fixed in px, which the stretched
            # drawing cannot keep.
            moved = ET.SubElement(
                text_layer, "text", {"x": "2", "y": f"{y - 8:.1f}", "class": "y-label"}
            )
        elif "no_data" in _classes(text):
            moved = ET.SubElement(
                text_layer, "text", {"x": "50%", "y": f"{height / 2:.1f}", "class": "no_data"}
            )
        else:
            continue
        moved.text = text.text

    # Each bar is named by its value and range in a <title>, its first child: the
    # browser shows it on hover and gives it as the accessible name of the link
    # (SVG-AAM), or of the bar as an image when it is no link.
    for s, series_names in enumerate(names):
        group = next(e for e in graph.iter() if f"serie-{s}" in _classes(e))
        bars = [e for e in group.iter() if "bar" in _classes(e)]
        for i, (bar, name) in enumerate(zip(bars, series_names, strict=False)):
            link = next((e for e in bar if _local(e.tag) == "a"), None)
            target = link if link is not None else bar
            if link is None:
                bar.set("role", "img")
            tip = ET.Element("title")
            tip.text = name
            target.insert(0, tip)
            if i in spikes[s]:
                bar.set("class", "bar spike")
    empty = any("no_data" in _classes(e) for e in text_layer)
    # pygal's empty overlays and tooltip (its script is gone), and with no data
    # the axis it draws anyway, from 0 to 1 in tenths.
    dropped = {"overlay", "text-overlay", "tooltip-overlay", "titles"} | (
        {"axis"} if empty else set()
    )
    for parent in [graph, *graph.iter()]:
        for child in list(parent):
            if _classes(child) & dropped:
                parent.remove(child)
    for label in [e for e in text_layer if empty and "y-label" in _classes(e)]:
        text_layer.remove(label)
    root.append(text_layer)
    return root


def _ancestors(element: ET.Element, parents: dict) -> list[ET.Element]:
    out = []
    while element in parents:
        element = parents[element]
        out.append(element)
    return out


def bar_chart(
    *,
    title: str,
    series: Sequence[Series],
    labels: Sequence[str] | None = None,
    buckets: Sequence[tuple[datetime, datetime]] | None = None,
    unit: str | None = None,
    noun: tuple[str, str] = ("", ""),
    stacked: bool = True,
    height: int = 220,
) -> SafeString:
    """A (stacked) bar chart, one value per bucket per series.

    Buckets of time: pass `buckets` ((start, end) each, clipped to the period)
    and their `unit`; the axis labels and each bar's range come from them. Other
    categories: pass `labels`. `noun` names what is counted, ("error", "errors"),
    in each bar's name: "12 errors, 2026-12-07 14:00-15:00 UTC" (an en dash).
    """
    if buckets is not None:
        starts = [_bucket_start(a, unit) for a, _b in buckets]
        labels = axis_labels(starts, unit) if labels is None else labels
        ranges = [bucket_range(a, b) for a, b in buckets]
    else:
        starts = None
        labels = list(labels or [])
        ranges = list(labels)
    n = len(labels)
    values = [[v for v in s.values] for s in series]
    if stacked:
        top = max((sum(v or 0 for v in column) for column in zip(*values, strict=False)), default=0)
    else:
        top = max((v or 0 for column in values for v in column), default=0)
    integer = all(isinstance(v, int) for column in values for v in column if v is not None)
    y_ticks = ticks(top, integer=integer)

    cls = pygal.StackedBar if stacked else pygal.Bar
    chart = cls(
        style=STYLE,
        width=DRAW_WIDTH,
        height=height,
        js=[],
        disable_xml_declaration=True,
        show_legend=False,
        x_label_rotation=0,
        show_minor_x_labels=True,
        truncate_label=-1,
        print_values=False,
        margin=8,
        margin_left=4,
        margin_right=4,
        spacing=6,
        no_data_text="No events in this range",
    )
    if series and n:
        # pygal's own ticks fall on 0.2 of an error; with nothing to draw it needs none.
        chart.config(range=(0, y_ticks[-1]), y_labels=y_ticks)
    chart.x_labels = list(labels)
    for s in series:
        chart.add(s.name, [_point(s, i, v) for i, v in enumerate(s.values)])
    many = len(series) > 1
    names = [
        [
            _name(ranges[i], v, s.name, noun=noun, many=many, timed=buckets is not None)
            for i, v in enumerate(s.values)
        ]
        for s in series
    ]
    if any(s.marked for s in series):
        names = [
            [f"{name} (spike)" if i in s.marked else name for i, name in enumerate(row)]
            for s, row in zip(series, names, strict=True)
        ]
    root = _finish(
        chart,
        title=title,
        height=height,
        names=names,
        spikes=[set(s.marked) for s in series],
        label_at=label_widths(labels, starts=starts, unit=unit) if n else [],
    )
    # A chart of links is a figure: role="img" would hide its links from screen readers.
    has_links = any(s.links for s in series)
    root.set("role", "figure" if has_links else "img")
    root.set("aria-label", title)
    svg = ET.tostring(root, encoding="unicode")
    legend = ""
    if many:
        legend = format_html(
            '<ul class="chart-legend" aria-hidden="true">{}</ul>',
            format_html_join(
                "",
                '<li><span class="swatch color-{}"></span>{}</li>',
                ((i % len(PALETTE), s.name) for i, s in enumerate(series)),
            ),
        )
    # The box is the container the label queries in charts.css measure.
    return mark_safe(f'<div class="chart-box">{svg}{legend}</div>')


def _bucket_start(start: datetime, unit: str | None) -> datetime:
    """A clipped bucket's own start (the first bucket starts at the period's)."""
    start = _utc(start)
    if unit == "hour":
        return start.replace(minute=0, second=0, microsecond=0)
    if unit in ("day", "week"):
        day = start.replace(hour=0, minute=0, second=0, microsecond=0)
        return day if unit == "day" else day - timedelta(days=day.weekday())
    return start


# --- The stylesheet ------------------------------------------------------------------

CSS_PATH = Path(__file__).parent.parent / "static" / "dashboard" / "charts.css"
# charts.css is pygal's rules (generated, above this line) and ours (below it).
CSS_MARKER = "/* Ours, after pygal's: */"


def chart_css() -> str:
    """pygal's stylesheet for our STYLE, scoped to svg.chart instead of one chart's id.

    Kept as the head of a static file (CSS_PATH); a test fails when it is out of
    date. Regenerate with: python manage.py shell -c "from orchestrator.dashboard.charts
    import write_chart_css; write_chart_css()"
    """
    chart = pygal.StackedBar(style=STYLE, js=[], disable_xml_declaration=True)
    for i in range(len(PALETTE)):
        chart.add(str(i), [1])
    root = chart.render_tree()
    chart_id = root.get("id")
    css = "".join(el.text or "" for el in root.iter() if _local(el.tag) == "style")
    return (
        "/* Generated by orchestrator.dashboard.charts.chart_css() from pygal's styles: "
        "do not edit. */\n" + css.replace(f"#{chart_id}", "svg.chart").strip() + "\n"
    )


def write_chart_css() -> None:
    """Rewrite the generated head of charts.css, keeping our rules below CSS_MARKER."""
    ours = CSS_PATH.read_text().partition(CSS_MARKER)[2] if CSS_PATH.exists() else "\n"
    CSS_PATH.write_text(chart_css() + CSS_MARKER + ours)
