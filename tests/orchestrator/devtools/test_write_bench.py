"""write_bench (`make bench-write`): the write path's figures, beside targets and the
legacy design, from a real gunicorn on the test database."""

import io
import json

import pytest
from django.core.management import call_command

from audit.integrity import seal_all, verify
from audit.models import AuditEvent
from leads.models import IdempotencyRecord, Lead
from orchestrator.devtools.bench_intake import SOURCE_SLUG

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def table_rows(text: str) -> dict[str, list[str]]:
    return {
        cells[0]: cells[1:]
        for line in text.splitlines()
        if " | " in line
        for cells in [[cell.strip() for cell in line.split(" | ")]]
    }


def test_every_figure_is_measured_next_to_its_target_and_the_legacy_design(audit_mirror_path):
    out = io.StringIO()
    call_command(
        "write_bench",
        "--events=1500",
        "--writes=30",
        "--writers=2",
        "--per-writer=20",
        "--api-leads=60",
        "--batch-leads=1200",
        "--workers=2",
        stdout=out,
        stderr=io.StringIO(),
    )
    rows = table_rows(out.getvalue())
    latency = rows["audit write p50 / p99 (ms), mirror on"]
    assert latency[1] == "p50 <= 0.5" and latency[2] in {"PASS", "FAIL"}
    legacy_p50, legacy_p99 = (float(x) for x in latency[3].split(" / "))
    assert 0 < legacy_p50 <= legacy_p99
    assert int(rows["2 writer processes (events/s)"][0]) > 0
    assert int(rows["2 writer processes (events/s)"][3]) > 0  # the legacy writers
    storage = rows["bytes per event at 1,500 (table + indexes)"]
    assert float(storage[0]) > 0 and float(storage[3].split()[0]) > 0
    assert "benchmark fill, 10M events projected (min, fill + seal)" in rows
    api = rows["lead API via gunicorn, 16 clients (leads/s; p99 ms)"]
    assert api[1] == ">= 300; <= 250"
    assert int(api[0].split(";")[0]) > 0
    assert int(rows["batch API, 500 a request (leads/s)"][0]) > 0
    # Every dashboard page through gunicorn, logged in, none failing; then its workers.
    [walk] = [row for metric, row in rows.items() if metric.startswith("dashboard walk, ")]
    assert walk[1:3] == ["no failure", "PASS"], walk
    pages = int(next(m for m in rows if m.startswith("dashboard walk, ")).split()[2])
    assert pages > 30
    rss = rows["largest gunicorn worker after it, RSS (MB)"]
    assert float(rss[0]) > 20 and rss[1] == "<= 150"
    assert 0 < float(rows["the same without mapped database pages (MB)"][0]) <= float(rss[0])
    # What gunicorn acknowledged is stored: the bench checked it, and so do we.
    bench_leads = Lead.objects.filter(source__slug=SOURCE_SLUG)
    # 60 one at a time (6 repeat an address), 1200 batched (120 repeat), warm-ups.
    assert bench_leads.filter(email__contains="@intake-bench.example").count() >= 54 + 1080
    assert IdempotencyRecord.objects.filter(source__slug=SOURCE_SLUG).count() >= 60 + 1200
    # Every event written, by the fill, the writers or gunicorn, is MAC'd and seals.
    seal_all()
    report = verify(anchors=False)
    assert report.ok, report.problems[:3]
    assert report.events_checked == AuditEvent.objects.count()


def test_json_holds_the_figures_and_zero_skips_a_phase():
    out = io.StringIO()
    call_command(
        "write_bench",
        "--events=300",
        "--writes=0",
        "--writers=0",
        "--api-leads=0",
        "--batch-leads=0",
        "--no-walk",
        "--json",
        stdout=out,
        stderr=io.StringIO(),
    )
    data = json.loads(out.getvalue())
    assert data["figures"]["storage"]["events"] == 300
    assert not {"api", "concurrent", "walk"} & set(data["figures"])
    assert data["figures"]["legacy"]["concurrent_events_per_s"] > 0
    assert {row["metric"] for row in data["rows"]} >= {
        "bytes per event at 300 (table + indexes)",
        "benchmark fill, 10M events projected (min, fill + seal)",
    }


def test_a_second_run_knows_the_first_runs_events_as_its_own():
    args = [
        "--events=200",
        "--writes=5",
        "--writers=0",
        "--api-leads=8",
        "--batch-leads=0",
        "--no-walk",
    ]
    for _ in range(2):  # the second would refuse "events that are not benchmark events"
        call_command("write_bench", *args, stdout=io.StringIO(), stderr=io.StringIO())
    assert not AuditEvent.objects.exclude(workflow__startswith="bench-").exclude(
        event_type="api_key_created"
    )
