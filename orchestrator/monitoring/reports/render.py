"""Turn a Report into what people receive: CSV files, PNG charts, an HTML email."""

import csv
import io
import zipfile
from email.message import MIMEPart

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from audit.transfer import csv_safe
from orchestrator.monitoring.reports.builders import Chart, Report, Table

COLOURS = ["#2563eb", "#94a3b8", "#16a34a", "#f59e0b", "#dc2626"]


def table_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(table.headers)
    # Values come from leads and errors (outside input): keep spreadsheet
    # formulas from running when someone opens the file.
    writer.writerows(
        [[csv_safe(v) if isinstance(v, str) else v for v in row] for row in table.rows]
    )
    return out.getvalue()


def csv_filename(report: Report, table: Table) -> str:
    return f"{report.kind}-{report.start:%Y-%m-%d}-{table.key}.csv"


def chart_png(chart: Chart) -> bytes:
    """A bar chart as PNG: mail clients show images, not SVG or scripts."""
    fig = Figure(figsize=(8, 2.6), dpi=100)
    ax = fig.subplots()
    n = len(chart.series)
    width = 0.8 / max(n, 1)
    positions = range(len(chart.labels))
    for i, (name, values) in enumerate(chart.series.items()):
        ax.bar(
            [p + (i - (n - 1) / 2) * width for p in positions],
            values,
            width=width,
            label=name,
            color=COLOURS[i % len(COLOURS)],
        )
    step = max(1, len(chart.labels) // 12)
    ax.set_xticks(list(positions)[::step], chart.labels[::step], fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(chart.title, fontsize=10, loc="left")
    if n > 1:
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close("all")
    return out.getvalue()


def chart_part(chart: Chart) -> MIMEPart:
    part = MIMEPart()
    part.set_content(
        chart_png(chart),
        maintype="image",
        subtype="png",
        disposition="inline",
        filename=f"{chart.key}.png",
        cid=f"<{chart.key}@report>",
    )
    return part


def report_zip(report: Report) -> bytes:
    """Every table of a report as CSV files in one zip (the dashboard's download)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for table in report.tables:
            zf.writestr(csv_filename(report, table), table_csv(table))
    return out.getvalue()
