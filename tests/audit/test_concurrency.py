"""Many writers at once: every event stored once, sealed once, and verified."""

import threading

import pytest
from django.db import connection, connections

from audit.integrity import seal_all, seal_pending, verify
from audit.models import AuditEvent, AuditSeal
from audit.selectors import statistics
from audit.services import record_event

WRITER = """
import sys
from django.db import transaction
from audit.services import record_event
from leads.models import LeadSource
from leads.services import lead_create
source = LeadSource.objects.get(slug="website")
w = int(sys.argv[1]) if len(sys.argv) > 1 else 0
for i in range({n}):
    # Every other event rides along with a business write, as in the pipeline.
    if i % 2:
        with transaction.atomic():
            lead = lead_create(source=source, email=f"p{worker}-{{i}}@example.com")
            record_event(event_type="lead_qualified", lead=lead, details={{"i": i}})
    else:
        record_event(event_type="email_sent", workflow="w{worker}", details={{"i": i}})
print("done")
"""


def _sealer(stop: threading.Event, errors: list) -> None:
    try:
        # A pause between passes, as seal_audit --loop has, lets writers in.
        while not stop.wait(0.02):
            seal_pending()
    except Exception as exc:  # noqa: BLE001 (reported to the test thread)
        errors.append(exc)
    finally:
        connection.close()


def _assert_all_sealed_and_verified(expected: int) -> None:
    seal_all()
    report = verify()
    assert report.ok, report.problems[:5]
    assert report.events_checked == expected
    assert report.unsealed == 0
    covered = sum(s.event_count for s in AuditSeal.objects.all())
    assert covered == expected
    assert statistics().total_events == expected


@pytest.mark.django_db(transaction=True)
def test_eight_threads_by_500_events_with_a_sealer_running():
    errors: list[Exception] = []

    def writer(n: int) -> None:
        try:
            for i in range(500):
                record_event(event_type="lead_routed", workflow=f"t{n}", details={"i": i})
        except Exception as exc:  # noqa: BLE001 (reported to the test thread)
            errors.append(exc)
        finally:
            connections.close_all()

    stop = threading.Event()
    sealer = threading.Thread(target=_sealer, args=(stop, errors))
    sealer.start()
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    sealer.join()
    assert errors == []
    assert AuditEvent.objects.count() == 4000
    for n in range(8):
        assert AuditEvent.objects.filter(workflow=f"t{n}").count() == 500
    _assert_all_sealed_and_verified(4000)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_four_processes_by_500_events_with_a_sealer_running(run_python, web_source):
    errors: list[Exception] = []
    stop = threading.Event()
    sealer = threading.Thread(target=_sealer, args=(stop, errors))
    sealer.start()
    procs = [run_python(WRITER.format(n=500, worker=w)) for w in range(4)]
    results = [p.communicate(timeout=300) for p in procs]
    stop.set()
    sealer.join()
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == "done"
    assert errors == []
    # Per process: 250 plain events, and 250 leads with two events each.
    assert AuditEvent.objects.count() == 3000
    assert AuditEvent.objects.filter(event_type="lead_ingested").count() == 1000
    assert AuditEvent.objects.filter(event_type="email_sent").count() == 1000
    _assert_all_sealed_and_verified(3000)


KILLED_WRITER = """
from django.db import transaction
from audit.services import record_event
for i in range(100000):
    # Every other one in a transaction, the rest in autocommit mode: both commit
    # paths (on SQLite, both places the backend syncs the WAL before returning).
    if i % 2:
        with transaction.atomic():
            event = record_event(event_type="email_sent", workflow="killed", details={"i": i})
    else:
        event = record_event(event_type="email_sent", workflow="killed", details={"i": i})
    print(event.id, flush=True)  # acknowledged: record_event (and its commit) returned
"""


@pytest.mark.django_db(transaction=True)
def test_two_writers_killed_mid_stream_lose_no_acknowledged_event(run_python):
    """A writer killed with SIGKILL between any two instructions: every event it
    was told was committed is stored, MAC'd and sealable; the trail verifies."""
    procs = [run_python(KILLED_WRITER) for _ in range(2)]
    acknowledged: list[int] = []
    try:
        for proc in procs:
            # Some hundreds written first, so the kill lands mid-stream.
            for _ in range(300):
                line = proc.stdout.readline()
                assert line, proc.stderr.read()
                acknowledged.append(int(line))
        for proc in procs:
            proc.kill()
        for proc in procs:
            out, _err = proc.communicate(timeout=60)
            acknowledged += [int(x) for x in out.split()]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert all(p.returncode == -9 for p in procs)
    stored = set(AuditEvent.objects.filter(workflow="killed").values_list("id", flat=True))
    assert set(acknowledged) <= stored
    # A killed writer leaves no half-written row either: everything stored verifies.
    _assert_all_sealed_and_verified(len(stored))
