"""audit_bench runs end to end on a small fill; timings are printed, never asserted."""

import io
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from audit.integrity import verify
from audit.models import AuditEvent
from audit.services import record_event

pytestmark = pytest.mark.django_db(transaction=True)

LATENCY_ROWS = [
    "write latency p50 / p99 (ms), mirror on",
    "lead history p50 / p95 (ms)",
    "filtered page p50 / p95 (ms)",
    "keyset 2nd page p50 / p95 (ms)",
    "30-day statistics p50 / p95 (ms)",
]
OTHER_ROWS = [
    "fill rate (events/s, build + sign + insert)",
    "seal + rollups (events/s)",
    "2 writers throughput (events/s)",
    "legacy scan lead history / page / stats p50 (s)",
    "speed-up lead history / page / stats (x)",
    "same answers as the legacy scan",
]


def bench(*args: str) -> str:
    out = io.StringIO()
    call_command("audit_bench", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def table_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        if " | " in line:
            cells = [cell.strip() for cell in line.split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.slow
def test_bench_prints_every_row_and_its_writes_land(audit_mirror_path):
    text = bench(
        "--events",
        "2000",
        "--writes",
        "40",
        "--writers",
        "2",
        "--per-writer",
        "30",
        "--reads",
        "10",
        "--legacy-runs",
        "1",
        "--no-views",
    )

    rows = table_rows(text)
    assert set(LATENCY_ROWS + OTHER_ROWS) <= rows.keys()
    for name in LATENCY_ROWS:
        result, target, status = rows[name]
        p50, p_high = (float(x) for x in result.split(" / "))
        assert 0 < p50 <= p_high
        assert target.endswith("ms")
        assert status in {"PASS", "FAIL"}
    assert float(rows["fill rate (events/s, build + sign + insert)"][0]) > 0
    assert "dashboard views" not in text  # --no-views
    assert rows["2 writers throughput (events/s)"][0].endswith("(60/60 landed)")
    assert all(float(x) > 0 for x in rows["speed-up lead history / page / stats (x)"][0].split("/"))
    assert rows["same answers as the legacy scan"][0] == "yes"

    total = 2000 + 40 + 60
    assert f"events requested (N): 2000; events in database: {total}" in text
    assert AuditEvent.objects.count() == total
    assert not AuditEvent.objects.exclude(workflow__startswith="bench-").exists()
    assert AuditEvent.objects.filter(event_type="error").exclude(traceback="").exists()
    # The writes went through the mirror, the children's included.
    assert len(audit_mirror_path.read_text().splitlines()) == 40 + 60
    # The fill was signed and everything got sealed before the reads.
    report = verify()
    assert report.ok
    assert report.events_checked == total
    assert report.unsealed == 0


@pytest.mark.django_db(transaction=False)
def test_the_writer_entry_point_imports_before_django_is_set_up():
    # A spawned writer unpickles its entry point before django.setup(): importing
    # its module must not import a model (AppRegistryNotReady would kill every writer).
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = "import orchestrator.devtools.bench_writer"
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_reuse_skips_the_fill_and_json_has_the_results():
    bench(
        "--events",
        "300",
        "--writes",
        "0",
        "--writers",
        "0",
        "--reads",
        "3",
        "--legacy-runs",
        "0",
        "--no-views",
    )

    data = json.loads(
        bench(
            "--events",
            "300",
            "--reuse",
            "--json",
            "--writes",
            "5",
            "--writers",
            "0",
            "--reads",
            "3",
            "--legacy-runs",
            "0",
            "--no-views",
        )
    )

    assert data["fill"]["inserted"] == 0
    assert data["events_in_database"] == 305
    assert data["write_latency"]["landed"] == 5
    # page_next is there only if a drawn type had a first page; with 300 events, maybe not.
    assert {"write_latency", "lead_history", "page", "statistics"} <= data["passed"].keys()
    assert data["concurrent"] == {}
    assert data["legacy"] == {}
    assert data["views"] == []
    assert "views_passed" not in data


def test_refuses_a_database_with_other_events_unless_forced():
    record_event(event_type="workflow_started", workflow="inbound")

    with pytest.raises(CommandError, match="not benchmark events"):
        bench("--events", "50")
    assert AuditEvent.objects.count() == 1

    bench(
        "--events",
        "50",
        "--force",
        "--writes",
        "0",
        "--writers",
        "0",
        "--reads",
        "3",
        "--legacy-runs",
        "0",
        "--no-views",
    )
    assert AuditEvent.objects.count() == 51


# --- dashboard views ----------------------------------------------------------------------

# URL arguments the bench finds in the data itself; a route needing anything
# else is timed only if a page links to it.
SAMPLED_ARGS = {"pk", "public_id", "fingerprint"}


def view_rows(text: str) -> dict[str, list[str]]:
    """The rows of the view table: label -> the other cells."""
    _, _, views = text.partition("\ndashboard views: ")
    return {label: cells for label, cells in table_rows(views).items() if label != "view"}


@pytest.fixture
def few_runs(monkeypatch):
    """A workflow run a day instead of every 15 minutes: 360 rows rather than 34,560."""
    from orchestrator.devtools import bench_views

    monkeypatch.setattr(bench_views, "RUN_EVERY", timedelta(days=1))


@pytest.mark.slow
def test_views_time_every_dashboard_route(few_runs):
    from orchestrator.devtools.bench_views import dashboard_routes, is_action

    text = bench(
        "--events",
        "600",
        "--writes",
        "0",
        "--writers",
        "0",
        "--reads",
        "2",
        "--legacy-runs",
        "0",
        "--leads",
        "80",
        "--view-reps",
        "3",
    )

    rows = view_rows(text)
    assert "80 bench leads (80 added now)" in text
    for route in dashboard_routes():
        mine = {label: cells for label, cells in rows.items() if label.split()[0] == route.name}
        assert mine, f"{route.name} is missing from the view table"
        statuses = [cells[3] for cells in mine.values()]
        if is_action(route):
            assert statuses == ["not timed: POST action, not timed"]
            continue
        if set(route.pattern.regex.groupindex) - SAMPLED_ARGS and statuses[0].startswith(
            "not timed: no sample value"
        ):
            continue
        for label, cells in mine.items():
            # "FAIL: <exception>": the view is broken, not slow; it shows here too.
            assert cells[3] in {"PASS", "FAIL"}, f"{label}: {cells[3]}"
            p50, p95, target, status, cpu, cold, queries, sql = cells
            assert 0 < float(p50) <= float(p95), label
            assert target == "p95 <= 150 ms"
            assert (status == "PASS") == (float(p95) <= 150)
            assert float(cpu) > 0 and float(cold) > 0 and float(sql) >= 0
            assert int(queries) > 0  # at least the session and the user
    # The realistic parameter sets of the issue.
    assert {"overview", "overview ?range=30d", "overview ?range=90d"} <= rows.keys()
    assert "event-list ?type=email_sent" in rows
    assert any(label.startswith("event-list ?lead=LEAD-") for label in rows)
    assert any(label.startswith("lead-detail LEAD-") for label in rows)
    assert any(label.startswith("error-detail ") for label in rows)
    assert text.rstrip().splitlines()[-1].startswith("views: ")


def test_view_json_reuses_the_leads(few_runs, monkeypatch):
    from orchestrator.devtools import bench_views

    monkeypatch.setattr(bench_views, "VIEW_PARAMS", {})
    monkeypatch.setattr(bench_views, "DEFAULT_PARAMS", [{}])
    args = ["--events", "300", "--writes", "0", "--writers", "0", "--reads", "2"]
    args += ["--legacy-runs", "0", "--leads", "40", "--view-reps", "4"]
    bench(*args)

    data = json.loads(bench(*args, "--reuse", "--json"))

    assert data["lead_fill"]["inserted"] == 0
    assert data["lead_fill"]["existing"] == 40
    assert data["lead_fill"]["workflow_runs"] == 0  # already there
    timed = [v for v in data["views"] if "p95_ms" in v]
    assert timed
    assert {v["url_name"] for v in data["views"]} >= {"overview", "event-list", "lead-detail"}
    for view in timed:
        assert view["n"] == 4
        assert view["p50_ms"] <= view["p95_ms"] <= view["max_ms"]
        assert view["passed"] == (view["p95_ms"] <= 150 and view["status_code"] == 200)
    assert data["views_passed"] == all(v["passed"] for v in data["views"] if "passed" in v)


def test_lead_fill_follows_the_events_and_tops_up(monkeypatch):
    from leads.crm.models import CrmRecord
    from leads.followups.models import Enrollment, OutboundEmail
    from leads.models import Lead
    from leads.workflows.models import WorkflowRun
    from orchestrator.devtools import bench_views
    from orchestrator.devtools.bench_views import fill_leads

    bench(
        "--events",
        "800",
        "--writes",
        "0",
        "--writers",
        "0",
        "--reads",
        "2",
        "--legacy-runs",
        "0",
        "--no-views",
    )
    quiet = io.StringIO()
    monkeypatch.setattr(bench_views, "RUN_EVERY", timedelta(hours=6))
    # The write phases send random events to existing leads, a second send of a step included.
    first_send = AuditEvent.objects.filter(event_type="email_sent").order_by("id").first()
    record_event(
        event_type="email_sent",
        lead_id=first_send.lead_public_id,
        workflow=first_send.workflow,
        details=first_send.details,
    )

    info = fill_leads(120, seed=1, stream=quiet, log=lambda _: None)

    assert info["inserted"] == 120
    ids = set(Lead.objects.values_list("public_id", flat=True))
    assert ids == {f"LEAD-{n:06d}" for n in range(1, 121)}
    events = AuditEvent.objects.exclude(lead_public_id="")
    # Every lead of the events has its row, so its page has a timeline.
    assert set(events.values_list("lead_public_id", flat=True)) <= ids
    for lead in Lead.objects.filter(public_id__in=events.values("lead_public_id")):
        first = events.filter(lead_public_id=lead.public_id).order_by("timestamp").first()
        assert lead.created_at == first.timestamp
    qualified = events.filter(event_type="lead_qualified", details__qualified=True)
    assert set(qualified.values_list("lead_public_id", flat=True)) == set(
        Lead.objects.filter(status=Lead.Status.QUALIFIED).values_list("public_id", flat=True)
    )
    assert Lead.objects.filter(status=Lead.Status.QUALIFIED, score__gte=60).count() == (
        qualified.count()
    )
    assert CrmRecord.objects.count() == events.filter(event_type="crm_create").count()
    assert Enrollment.objects.count() == events.filter(event_type="email_scheduled").count()
    assert OutboundEmail.objects.filter(status="sent").count() == (
        events.filter(event_type="email_sent").count() - 1  # one email per step
    )
    runs = WorkflowRun.objects.count()
    assert runs == 4 * 90 * 4  # four workflows, every 6 hours for 90 days

    again = fill_leads(120, seed=1, stream=quiet, log=lambda _: None)
    more = fill_leads(150, seed=1, stream=quiet, log=lambda _: None)

    assert (again["inserted"], again["workflow_runs"]) == (0, 0)
    assert more["inserted"] == 30
    assert Lead.objects.count() == 150
    assert WorkflowRun.objects.count() == runs


def _index_names():
    from django.db import connection

    with connection.cursor() as cursor:
        return set(connection.introspection.get_constraints(cursor, AuditEvent._meta.db_table))


def test_a_big_fill_builds_in_processes_and_indexes_after_and_stays_verifiable(monkeypatch):
    from orchestrator.devtools import bench as bench_module

    # Small numbers for the same paths a 10M fill takes.
    monkeypatch.setattr(bench_module, "FILL_CHUNK", 400)
    monkeypatch.setattr(bench_module, "DEFER_INDEXES_FROM", 1000)
    monkeypatch.setattr(bench_module, "fill_jobs", lambda todo: 2)
    data = json.loads(
        bench(
            "--events=3000",
            "--json",
            "--writes=0",
            "--writers=0",
            "--reads=2",
            "--legacy-runs=0",
            "--no-views",
        )
    )
    assert data["fill"]["inserted"] == 3000 and data["fill"]["jobs"] == 2
    assert data["fill"]["index_seconds"] >= 0
    assert {index.name for index in AuditEvent._meta.indexes} <= _index_names()
    assert AuditEvent.objects.count() == 3000
    assert AuditEvent.objects.values("uuid").distinct().count() == 3000
    report = verify()
    assert report.ok and report.events_checked == 3000 and report.unsealed == 0


def test_a_fill_killed_without_its_indexes_gets_them_back():
    from django.db import connection

    from orchestrator.devtools.bench import restore_missing_indexes

    index = AuditEvent._meta.indexes[0]
    with connection.schema_editor() as editor:
        editor.remove_index(AuditEvent, index)
    assert index.name not in _index_names()
    bench("--events=50", "--writes=0", "--writers=0", "--reads=1", "--legacy-runs=0", "--no-views")
    assert index.name in _index_names()
    assert restore_missing_indexes() == []
