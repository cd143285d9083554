"""prune_audit --retention: the configured retention, archived first, locked, audited."""

import gzip
import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from audit.integrity import seal_all, verify
from audit.models import AuditEvent, AuditPrune
from audit.retention import retention_archive_path, retention_cutoff
from audit.services import record_event
from core import locks
from core.models import CommandLock
from tests.audit.test_transfer import run_command

# 2024 is a leap year: 366 days before 2025-01-01 10:00 is 2024-01-01 10:00,
# and the cut-off is the start of that UTC day.
TODAY = datetime(2025, 1, 1, 10, 0, tzinfo=UTC)
CUT_OFF = datetime(2024, 1, 1, tzinfo=UTC)


def ts(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def archive_dir(settings, tmp_path):
    settings.AUDIT_RETENTION_DAYS = 366
    settings.AUDIT_ARCHIVE_DIR = str(tmp_path / "archive")
    return tmp_path / "archive"


@pytest.fixture
def history(settings):
    settings.AUDIT_SEAL_BATCH = 2
    old = [
        record_event(event_type="lead_ingested", lead_id="LEAD-000001", timestamp=ts(2023, 5, 1)),
        record_event(
            event_type="lead_qualified", lead_id="LEAD-000001", timestamp=ts(2023, 12, 31, 23, 59)
        ),
    ]
    kept = [
        record_event(event_type="lead_routed", lead_id="LEAD-000001", timestamp=CUT_OFF),
        # Older than 366 days at the run's time of day, but on the cut-off day:
        # whole days are kept.
        record_event(event_type="email_sent", lead_id="LEAD-000001", timestamp=ts(2024, 1, 1, 9)),
    ]
    seal_all()
    return old, kept


def test_the_cutoff_is_the_start_of_the_utc_day():
    assert retention_cutoff(now=TODAY, days=366) == CUT_OFF
    assert retention_cutoff(now=ts(2025, 1, 1, 0, 30), days=1) == ts(2024, 12, 31)
    # A local midnight that is still the previous day in UTC.
    berlin = datetime.fromisoformat("2025-01-02T00:30:00+01:00")
    assert retention_cutoff(now=berlin, days=1) == ts(2024, 12, 31)


def test_archive_names_carry_the_cutoff_date_and_never_collide(tmp_path):
    first = retention_archive_path(tmp_path, before=CUT_OFF)
    assert first == tmp_path / "audit-before-2024-01-01.jsonl.gz"
    first.write_bytes(b"")
    second = retention_archive_path(tmp_path, before=CUT_OFF)
    assert second == tmp_path / "audit-before-2024-01-01-2.jsonl.gz"
    # A crashed run's half-written file also keeps its name taken.
    (tmp_path / "audit-before-2024-01-01-2.jsonl.gz.partial").write_bytes(b"")
    assert retention_archive_path(tmp_path, before=CUT_OFF).name == (
        "audit-before-2024-01-01-3.jsonl.gz"
    )


@pytest.mark.django_db
def test_retention_archives_then_deletes_and_records_it(archive_dir, history):
    _old, kept = history
    with time_machine.travel(TODAY, tick=False):
        run = run_command("prune_audit", "--retention")

    archive = archive_dir / "audit-before-2024-01-01.jsonl.gz"
    assert run.error is None, run.err
    assert run.out == (
        f"Deleted 2 events before 2024-01-01 00:00 from 1 seals, archived to {archive}.\n"
    )
    remaining = set(
        AuditEvent.objects.exclude(event_type="audit_pruned").values_list("id", flat=True)
    )
    assert remaining == {e.pk for e in kept}

    lines = [json.loads(line) for line in gzip.decompress(archive.read_bytes()).splitlines()]
    assert [line["event_type"] for line in lines] == ["lead_ingested", "lead_qualified"]
    assert [line["timestamp"] for line in lines] == [
        "2023-05-01T00:00:00.000000Z",
        "2023-12-31T23:59:00.000000Z",
    ]

    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    marker = AuditEvent.objects.get(event_type="audit_pruned")
    assert marker.actor == "system"
    assert marker.timestamp == TODAY
    assert marker.details["before"] == "2024-01-01T00:00:00+00:00"
    assert marker.details["deleted"] == 2
    assert marker.details["archive"] == str(archive)
    assert marker.details["archive_sha256"] == digest
    assert AuditPrune.objects.get().archive_sha256 == digest
    assert verify().ok
    assert not CommandLock.objects.exists()


@pytest.mark.django_db
def test_a_second_run_the_same_day_deletes_nothing_and_writes_no_archive(archive_dir, history):
    with time_machine.travel(TODAY, tick=False):
        assert run_command("prune_audit", "--retention").error is None
    with time_machine.travel(TODAY + timedelta(hours=1), tick=False):
        run = run_command("prune_audit", "--retention")
    assert run.error is None
    assert run.out == "Deleted 0 events before 2024-01-01 00:00 from 0 seals.\n"
    assert [p.name for p in archive_dir.iterdir()] == ["audit-before-2024-01-01.jsonl.gz"]
    assert AuditEvent.objects.filter(event_type="audit_pruned").count() == 1


@pytest.mark.django_db
def test_late_old_events_the_same_day_go_to_a_second_archive(archive_dir, history):
    with time_machine.travel(TODAY, tick=False):
        assert run_command("prune_audit", "--retention").error is None
        # History imported later that is already past retention.
        record_event(event_type="lead_ingested", lead_id="LEAD-000009", timestamp=ts(2023, 7, 1))
        seal_all()
        run = run_command("prune_audit", "--retention")
    assert run.error is None
    assert "Deleted 1 events" in run.out
    assert sorted(p.name for p in archive_dir.iterdir()) == [
        "audit-before-2024-01-01-2.jsonl.gz",
        "audit-before-2024-01-01.jsonl.gz",
    ]
    assert verify().ok


@pytest.mark.django_db
def test_dry_run_with_retention_counts_only(archive_dir, history):
    with time_machine.travel(TODAY, tick=False):
        run = run_command("prune_audit", "--retention", "--dry-run")
    assert run.out == "Dry run: 2 events before 2024-01-01 00:00 would be deleted.\n"
    assert AuditEvent.objects.count() == 4
    assert not archive_dir.exists()


@pytest.mark.django_db
def test_an_overlapping_retention_run_skips(archive_dir, history):
    holder = locks.acquire("prune_audit", ttl=timedelta(hours=1))
    with time_machine.travel(TODAY, tick=False):
        run = run_command("prune_audit", "--retention")
    assert run.error is None
    assert run.out == "prune_audit: another run holds the lock; skipping this one.\n"
    assert AuditEvent.objects.count() == 4
    assert not archive_dir.exists()
    assert CommandLock.objects.get().holder == holder


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "setting", "message"),
    [
        (["--archive", "x.jsonl.gz"], {}, "--retention archives under AUDIT_ARCHIVE_DIR"),
        ([], {"AUDIT_ARCHIVE_DIR": ""}, "set AUDIT_ARCHIVE_DIR"),
        ([], {"AUDIT_RETENTION_DAYS": 0}, "AUDIT_RETENTION_DAYS must be at least 1"),
        (["--before", "2024-01-01"], {}, "not allowed with argument --retention"),
    ],
)
def test_misconfiguration_fails_loudly_and_deletes_nothing(
    settings, archive_dir, history, args, setting, message
):
    for name, value in setting.items():
        setattr(settings, name, value)
    with time_machine.travel(TODAY, tick=False):
        run = run_command("prune_audit", "--retention", *args)
    assert run.error is not None
    assert message in str(run.error)
    assert AuditEvent.objects.count() == 4
    assert not CommandLock.objects.exists()
