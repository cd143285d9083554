"""The JSON Lines mirror: after commit, rotated, gzip'd, and never in the way."""

import gzip
import json
import logging
import os
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from audit.mirror import mirror
from audit.models import AuditEvent
from audit.services import record_event


def read_lines(path):
    assert mirror.flush(), "the mirror writer did not drain its queue"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.django_db(transaction=True)
def test_mirror_line_has_the_legacy_format(audit_mirror_path):
    record_event(
        event_type="lead_ingested",
        lead_id="LEAD-000001",
        workflow="sales",
        details={"source": "web_form", "fields": ["email"], "email": "a@example.com"},
    )
    (line,) = read_lines(audit_mirror_path)
    assert set(line) >= {"timestamp", "event_type", "actor", "lead_id", "workflow", "details"}
    assert line["timestamp"].endswith("Z")
    assert datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).tzinfo is not None
    assert line["lead_id"] == "LEAD-000001"
    assert line["actor"] == "system"


@pytest.mark.django_db(transaction=True)
def test_mirror_can_be_turned_off(settings, audit_mirror_path):
    settings.AUDIT_JSONL_PATH = ""
    record_event(event_type="lead_ingested")
    assert AuditEvent.objects.count() == 1
    assert not audit_mirror_path.exists()


@pytest.mark.django_db(transaction=True)
def test_unwritable_mirror_is_logged_and_the_event_is_kept(settings, tmp_path, caplog):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be")
    settings.AUDIT_JSONL_PATH = str(blocked / "audit.log")
    with caplog.at_level(logging.ERROR, logger="audit.mirror"):
        event = record_event(event_type="lead_ingested", details={"kept": True})
        second = record_event(event_type="lead_qualified")
        mirror.flush()
    assert AuditEvent.objects.filter(pk__in=[event.pk, second.pk]).count() == 2
    assert "audit JSON Lines mirror" in caplog.text
    # It recovers by itself once the path works again.
    settings.AUDIT_JSONL_PATH = str(tmp_path / "ok" / "audit.log")
    record_event(event_type="lead_routed")
    assert [x["event_type"] for x in read_lines(tmp_path / "ok" / "audit.log")] == ["lead_routed"]


@pytest.mark.django_db(transaction=True)
def test_full_disk_is_logged_and_the_event_is_kept(audit_mirror_path, caplog, monkeypatch):
    record_event(event_type="lead_ingested")  # opens the file
    mirror.flush()

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mirror._handler.clh, "do_write", full)
    with caplog.at_level(logging.ERROR, logger="audit.mirror"):
        record_event(event_type="lead_qualified")
        mirror.flush()
    assert AuditEvent.objects.count() == 2
    assert "No space left on device" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_rotates_at_max_bytes_with_gzip_and_a_count_limit(settings, audit_mirror_path):
    settings.AUDIT_JSONL_MAX_BYTES = 2000
    settings.AUDIT_JSONL_BACKUP_COUNT = 3
    for i in range(60):
        record_event(event_type="lead_routed", details={"i": i, "pad": "x" * 100})
    mirror.close()
    folder = audit_mirror_path.parent
    rotated = sorted(
        p for p in folder.iterdir() if p.name.startswith("audit.log.") and p.suffix == ".gz"
    )
    # More rotations happened than files are kept: exactly the backup count remains.
    assert len(rotated) == 3
    assert audit_mirror_path.stat().st_size <= 2000 + 400
    kept = []
    for path in rotated:
        with gzip.open(path, "rt") as fh:
            kept.extend(json.loads(line)["details"]["i"] for line in fh)
    kept.extend(x["details"]["i"] for x in read_lines(audit_mirror_path))
    # The newest events are all there, in order; only the oldest files were dropped.
    assert sorted(kept) == list(range(60 - len(kept), 60))


@pytest.mark.django_db(transaction=True)
def test_rotates_daily(audit_mirror_path):
    day1 = datetime(2026, 11, 2, 23, 59, tzinfo=UTC)
    with time_machine.travel(day1, tick=False):
        record_event(event_type="lead_ingested")
        mirror.flush()  # the file rotates by the time of writing
    with time_machine.travel(day1 + timedelta(minutes=2), tick=False):
        record_event(event_type="lead_qualified")
        mirror.flush()
    mirror.close()
    folder = audit_mirror_path.parent
    rotated = [
        p for p in folder.iterdir() if p.name.startswith("audit.log.") and p.name.endswith(".gz")
    ]
    assert len(rotated) == 1
    with gzip.open(rotated[0], "rt") as fh:
        assert [json.loads(line)["event_type"] for line in fh] == ["lead_ingested"]
    assert [x["event_type"] for x in read_lines(audit_mirror_path)] == ["lead_qualified"]
    assert os.path.exists(audit_mirror_path)


@pytest.mark.django_db(transaction=True)
def test_the_caller_does_not_wait_for_the_file(audit_mirror_path, monkeypatch):
    import threading

    release = threading.Event()
    original = mirror.write_lines

    def slow(lines, **kwargs):
        release.wait(10)
        original(lines, **kwargs)

    monkeypatch.setattr(mirror, "write_lines", slow)
    record_event(event_type="lead_ingested")  # returns although the file write is held
    assert not mirror.flush(timeout=0.05)
    release.set()
    assert [x["event_type"] for x in read_lines(audit_mirror_path)] == ["lead_ingested"]


def test_a_process_writes_its_queued_lines_before_it_exits(run_python, tmp_path):
    path = tmp_path / "sub" / "audit.log"
    proc = run_python(
        "from audit.services import record_event\n"
        "for i in range(200):\n"
        "    record_event(event_type='lead_routed', details={'i': i})\n",
        env={"AUDIT_JSONL_PATH": str(path)},
    )
    assert proc.wait() == 0, proc.stderr.read() if proc.stderr else ""
    assert [json.loads(x)["details"]["i"] for x in path.read_text().splitlines()] == list(
        range(200)
    )


@pytest.mark.django_db(transaction=True)
def test_events_committed_together_reach_the_file_in_few_writes(audit_mirror_path, monkeypatch):
    # Each write takes the handler's cross-process lock and reads its rollover
    # state: lines committed within the coalescing window share one.
    from audit.mirror import _MirrorHandler

    writes = []
    original = _MirrorHandler.handle
    monkeypatch.setattr(
        _MirrorHandler, "handle", lambda self, record: writes.append(1) or original(self, record)
    )
    for i in range(40):
        record_event(event_type="lead_routed", details={"i": i})  # 40 commits
    mirror.flush()
    assert [x["details"]["i"] for x in read_lines(audit_mirror_path)] == list(range(40))
    assert len(writes) < 10
