"""audit_bench runs end to end on a small fill; timings are printed, never asserted."""

import io
import json

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


def test_reuse_skips_the_fill_and_json_has_the_results():
    bench(
        "--events", "300", "--writes", "0", "--writers", "0", "--reads", "3", "--legacy-runs", "0"
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
        )
    )

    assert data["fill"]["inserted"] == 0
    assert data["events_in_database"] == 305
    assert data["write_latency"]["landed"] == 5
    # page_next is there only if a drawn type had a first page; with 300 events, maybe not.
    assert {"write_latency", "lead_history", "page", "statistics"} <= data["passed"].keys()
    assert data["concurrent"] == {}
    assert data["legacy"] == {}


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
    )
    assert AuditEvent.objects.count() == 51
