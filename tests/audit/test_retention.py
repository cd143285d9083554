"""Retention: prune_audit archives, deletes, records the deletion and leaves a verifiable trail."""

import gzip
import hashlib
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import DatabaseError, connection, transaction

from audit.integrity import prune_fields, seal_all, verify
from audit.jsonl import event_to_legacy
from audit.models import AuditEvent, AuditLeadDay, AuditPrune, AuditRollup, AuditSeal
from audit.selectors import statistics
from audit.services import build_event, record_event
from audit.signing import record_mac
from core import locks
from core.models import CommandLock
from tests.audit.test_transfer import empty_audit_tables, run_command

CUT_OFF = datetime(2024, 1, 1, tzinfo=UTC)
DONE = "Deleted 5 events before 2024-01-01 00:00 from 2 seals"


def ts(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def history(settings):
    """Five events before the cut-off and three from it on, in seals of three.

    Seal 1 holds only old events, seal 2 old and new, seal 3 only new.
    """
    settings.AUDIT_SEAL_BATCH = 3
    old = [
        record_event(
            event_type="lead_ingested",
            lead_id="LEAD-000001",
            workflow="sales",
            timestamp=ts(2023, 3, 1, 9),
            details={"source": "web_form", "name": "Zoë"},
        ),
        record_event(
            event_type="lead_qualified",
            lead_id="LEAD-000001",
            workflow="sales",
            timestamp=ts(2023, 3, 1, 9, 30),
            details={"qualified": True},
        ),
        record_event(
            event_type="error",
            lead_id="LEAD-000002",
            workflow="support",
            timestamp=ts(2023, 6, 15),
            error_type="TimeoutError",
            error_message="CRM did not answer",
        ),
        record_event(
            event_type="email_sent",
            lead_id="LEAD-000002",
            workflow="support",
            timestamp=ts(2023, 12, 31, 23, 59, 59, 999999),
        ),
        record_event(event_type="workflow_started", workflow="sales", timestamp=ts(2023, 11, 1)),
    ]
    recent = [
        # Exactly at the cut-off: kept (--before is exclusive).
        record_event(
            event_type="lead_ingested",
            lead_id="LEAD-000003",
            workflow="sales",
            timestamp=CUT_OFF,
        ),
        record_event(
            event_type="crm_create",
            lead_id="LEAD-000001",
            workflow="sales",
            timestamp=ts(2024, 3, 1),
        ),
        record_event(
            event_type="lead_routed",
            lead_id="LEAD-000003",
            workflow="support",
            timestamp=ts(2024, 6, 1),
        ),
    ]
    assert [s.event_count for s in seal_all()] == [3, 3, 2]
    return old, recent


def refetched(events):
    return [AuditEvent.objects.get(pk=e.pk) for e in events]


def remaining_ids():
    return set(AuditEvent.objects.exclude(event_type="audit_pruned").values_list("id", flat=True))


def raw_delete(event_id):
    """Delete as someone with database access would (triggers off on PostgreSQL)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
        cursor.execute("DELETE FROM audit_auditevent WHERE id = %s", [event_id])
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")


def assert_verifies():
    report = verify()
    assert report.ok, [p.message for p in report.problems]
    run = run_command("verify_audit")
    assert run.error is None, run.err
    assert "Audit trail verified." in run.out


@pytest.mark.django_db
def test_prune_archives_deletes_and_records_it(tmp_path, history):
    old, recent = history
    old_lines = [event_to_legacy(e) for e in refetched(old)]
    archive = tmp_path / "archive" / "x.jsonl.gz"

    run = run_command("prune_audit", "--before", "2024-01-01", "--archive", str(archive))

    assert run.error is None
    assert f"{DONE}, archived to {archive}." in run.out
    assert remaining_ids() == {e.pk for e in recent}

    # The archive: gzip JSON Lines with exactly the old events, and no leftover.
    data = archive.read_bytes()
    assert data[:2] == b"\x1f\x8b"
    lines = [json.loads(line) for line in gzip.decompress(data).decode().splitlines()]
    assert lines == old_lines
    assert not archive.with_name("x.jsonl.gz.partial").exists()
    sha256 = hashlib.sha256(data).hexdigest()

    # One AuditPrune per seal touched: seal 1 emptied, seal 2 naming what went.
    prunes = list(AuditPrune.objects.order_by("seal_number"))
    assert [(p.seal_number, p.emptied, p.deleted_count) for p in prunes] == [
        (1, True, 3),
        (2, False, 2),
    ]
    assert prunes[0].pruned == []
    assert prunes[1].pruned == [[e.pk, e.mac] for e in old[3:]]
    assert prunes[0].run == prunes[1].run
    for p in prunes:
        assert p.before == CUT_OFF
        assert p.actor == "system"
        assert (p.archive_path, p.archive_sha256) == (str(archive), sha256)
        assert p.digest == record_mac(prune_fields(p))

    marker = AuditEvent.objects.get(event_type="audit_pruned")
    assert marker.details == {
        "before": "2024-01-01T00:00:00+00:00",
        "deleted": 5,
        "seals": 2,
        "archive": str(archive),
        "archive_sha256": sha256,
        "run": str(prunes[0].run),
    }

    assert_verifies()
    seal_all()
    assert_verifies()


@pytest.mark.django_db
def test_the_archive_imports_back_into_an_empty_store(tmp_path, history):
    old, _ = history
    old_lines = {str(e.uuid): event_to_legacy(e) for e in refetched(old)}
    archive = tmp_path / "x.jsonl.gz"
    assert (
        run_command("prune_audit", "--before", "2024-01-01", "--archive", str(archive)).error
        is None
    )

    empty_audit_tables()
    run = run_command("import_audit_log", str(archive), "--no-progress")
    assert run.error is None
    assert "5 imported, 0 already present, 0 bad." in run.out
    restored = {
        str(e.uuid): event_to_legacy(e)
        for e in AuditEvent.objects.exclude(event_type="audit_imported")
    }
    assert restored == old_lines
    seal_all()
    assert_verifies()


@pytest.mark.django_db
def test_a_partly_pruned_seal_verifies_and_still_catches_a_deletion():
    # One seal, old and new events interleaved.
    events = [
        record_event(event_type="lead_routed", lead_id=f"LEAD-{i:06d}", timestamp=when)
        for i, when in enumerate(
            [ts(2023, 1, 1), ts(2024, 2, 1), ts(2023, 2, 1), ts(2024, 3, 1), ts(2023, 3, 1)]
        )
    ]
    (seal,) = seal_all()
    old, new = events[0::2], events[1::2]

    run = run_command("prune_audit", "--before", "2024-01-01")
    assert run.error is None
    assert "Deleted 3 events before 2024-01-01 00:00 from 1 seals." in run.out
    (prune,) = AuditPrune.objects.all()
    assert (prune.seal_number, prune.emptied) == (seal.number, False)
    assert prune.pruned == [[e.pk, e.mac] for e in old]
    assert remaining_ids() == {e.pk for e in new}
    assert_verifies()

    # A deletion that no prune record covers is still found and named.
    raw_delete(new[0].pk)
    report = verify()
    assert not report.ok
    problem = report.first_problem()
    assert problem.event_id == new[0].pk
    assert problem.message == f"event #{new[0].pk} was deleted (it was sealed in seal 1)"
    run = run_command("verify_audit")
    assert run.error is not None
    assert f"event #{new[0].pk} was deleted" in run.err


@pytest.mark.django_db
def test_an_event_slipped_into_an_emptied_seal_is_found(history):
    old, _ = history
    assert run_command("prune_audit", "--before", "2024-01-01").error is None
    assert_verifies()
    # Even with a valid MAC (made with the key), an event reusing a pruned id is out of band.
    forged = build_event(event_type="lead_ingested", timestamp=ts(2023, 3, 1, 9))
    forged.id = old[1].pk
    forged.save()
    problems = [p.message for p in verify().problems]
    assert problems == [f"event #{old[1].pk} was inserted into a pruned range"]


@pytest.mark.django_db
def test_dry_run_counts_and_deletes_nothing(tmp_path, history):
    archive = tmp_path / "x.jsonl.gz"
    before = set(AuditEvent.objects.values_list("id", flat=True))

    run = run_command(
        "prune_audit", "--before", "2024-01-01", "--dry-run", "--archive", str(archive)
    )

    assert run.error is None
    assert run.out == "Dry run: 5 events before 2024-01-01 00:00 would be deleted.\n"
    assert set(AuditEvent.objects.values_list("id", flat=True)) == before
    assert not AuditPrune.objects.exists()
    assert not archive.exists()
    assert_verifies()


@pytest.mark.django_db
def test_statistics_after_prune_count_only_what_remains(history):
    assert statistics().total_events == 8
    assert statistics(with_leads=True).leads_processed == 3

    assert run_command("prune_audit", "--before", "2024-01-01").error is None

    def expected():
        events = list(AuditEvent.objects.all())
        return (
            Counter(e.event_type for e in events),
            Counter(e.workflow for e in events),
            Counter(e.timestamp.astimezone(UTC).date().isoformat() for e in events),
        )

    stats = statistics(with_leads=True)
    assert stats.total_events == AuditEvent.objects.count() == 4  # 3 kept + audit_pruned
    assert (stats.by_type, stats.by_workflow, stats.by_day) == expected()
    assert stats.errors == 0
    # LEAD-000001 and LEAD-000003 still have events; LEAD-000002 is gone.
    assert stats.leads_processed == 2
    # The rollups were decremented, not just bypassed.
    assert sum(AuditRollup.objects.values_list("count", flat=True)) == 3
    assert not AuditRollup.objects.filter(hour__lt=CUT_OFF).exists()
    assert not AuditLeadDay.objects.filter(day__lt=CUT_OFF.date()).exists()

    seal_all()
    stats = statistics()
    assert stats.total_events == 4
    assert (stats.by_type, stats.by_workflow, stats.by_day) == expected()
    assert sum(AuditRollup.objects.values_list("count", flat=True)) == 4


@pytest.mark.django_db
def test_leads_processed_after_a_prune_cutting_through_a_day():
    record_event(event_type="lead_ingested", lead_id="LEAD-A", timestamp=ts(2024, 1, 1, 8))
    record_event(event_type="lead_ingested", lead_id="LEAD-B", timestamp=ts(2024, 1, 1, 15))
    seal_all()
    assert statistics(with_leads=True).leads_processed == 2
    run = run_command("prune_audit", "--before", "2024-01-01T12:00:00Z")
    assert "Deleted 1 events" in run.out
    assert statistics(with_leads=True).leads_processed == 1


@pytest.mark.django_db
def test_an_existing_archive_is_never_overwritten(tmp_path, history):
    archive = tmp_path / "x.jsonl.gz"
    archive.write_bytes(b"last month's archive")
    before = set(AuditEvent.objects.values_list("id", flat=True))

    run = run_command("prune_audit", "--before", "2024-01-01", "--archive", str(archive))

    assert run.error is not None
    assert f"--archive: {archive} exists already; refusing to overwrite it" in str(run.error)
    assert archive.read_bytes() == b"last month's archive"
    assert set(AuditEvent.objects.values_list("id", flat=True)) == before
    assert not AuditPrune.objects.exists()
    assert not CommandLock.objects.exists()  # released on the way out


@pytest.mark.django_db
def test_a_second_prune_with_the_same_cut_off_deletes_nothing_more(history):
    _, recent = history
    assert DONE in run_command("prune_audit", "--before", "2024-01-01").out
    prunes = AuditPrune.objects.count()
    marker = AuditEvent.objects.get(event_type="audit_pruned")

    run = run_command("prune_audit", "--before", "2024-01-01")

    assert run.error is None
    assert "Deleted 0 events before 2024-01-01 00:00 from 0 seals." in run.out
    assert remaining_ids() == {e.pk for e in recent}
    assert AuditEvent.objects.filter(event_type="audit_pruned").get() == marker
    assert AuditPrune.objects.count() == prunes
    assert_verifies()


@pytest.mark.django_db
def test_without_before_the_retention_setting_decides(settings, history):
    _, recent = history
    settings.AUDIT_RETENTION_DAYS = 366  # 2024 is a leap year
    with time_machine.travel(ts(2025, 1, 1), tick=False):
        run = run_command("prune_audit")
    assert run.error is None
    assert DONE in run.out
    assert remaining_ids() == {e.pk for e in recent}
    marker = AuditEvent.objects.get(event_type="audit_pruned")
    assert marker.timestamp == ts(2025, 1, 1)
    assert marker.details["before"] == "2024-01-01T00:00:00+00:00"


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["last year", "2024-02-30", "01/01/2024"])
def test_a_bad_before_is_a_command_error(history, value):
    count = AuditEvent.objects.count()
    run = run_command("prune_audit", "--before", value)
    assert run.error is not None
    assert f"--before: {value!r} is not a date" in str(run.error)
    assert AuditEvent.objects.count() == count
    assert not CommandLock.objects.exists()


@pytest.mark.django_db
def test_an_overlapping_run_skips(history):
    count = AuditEvent.objects.count()
    holder = locks.acquire("prune_audit", ttl=timedelta(hours=1))
    assert holder is not None

    run = run_command("prune_audit", "--before", "2024-01-01")

    assert run.error is None
    assert run.out == "prune_audit: another run holds the lock; skipping this one.\n"
    assert AuditEvent.objects.count() == count
    assert not AuditPrune.objects.exists()
    assert CommandLock.objects.get(name="prune_audit").holder == holder

    locks.release("prune_audit", holder)
    assert DONE in run_command("prune_audit", "--before", "2024-01-01").out
    assert not CommandLock.objects.exists()


@pytest.mark.django_db
def test_an_expired_lock_of_a_crashed_run_is_taken_over(history):
    assert locks.acquire("prune_audit", ttl=timedelta(seconds=-1)) is not None
    assert DONE in run_command("prune_audit", "--before", "2024-01-01").out


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_permission_to_delete_ends_with_the_prune_transaction(history):
    _, recent = history
    assert DONE in run_command("prune_audit", "--before", "2024-01-01").out
    assert AuditSeal.objects.exists()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM audit_auditevent WHERE id = %s", [recent[0].pk])
    assert remaining_ids() == {e.pk for e in recent}


@pytest.mark.django_db
def test_a_prune_does_not_hide_an_earlier_deletion():
    old = [record_event(event_type="lead_routed", timestamp=ts(2023, 1, d)) for d in (1, 2)]
    new = record_event(event_type="lead_routed", timestamp=ts(2024, 6, 1))
    seal_all()
    raw_delete(new.pk)
    assert verify().first_problem().event_id == new.pk

    run = run_command("prune_audit", "--before", "2024-01-01")
    # Pruning the seal now would erase the evidence: the run refuses, deletes nothing.
    assert "seal 1 does not verify" in str(run.error)
    assert f"event #{new.pk} was deleted" in str(run.error)
    assert AuditEvent.objects.filter(pk__in=[e.pk for e in old]).count() == 2
    assert [p.event_id for p in verify().problems] == [new.pk]


@pytest.mark.django_db
def test_a_prune_does_not_launder_a_modified_event(tmp_path):
    old = [record_event(event_type="lead_routed", timestamp=ts(2023, 1, d)) for d in (1, 2)]
    record_event(event_type="lead_routed", timestamp=ts(2024, 6, 1))
    seal_all()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
        cursor.execute(
            "UPDATE audit_auditevent SET actor = 'user:mallory' WHERE id = %s", [old[0].pk]
        )
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")
    assert verify().first_problem().event_id == old[0].pk

    archive = tmp_path / "x.jsonl.gz"
    run = run_command("prune_audit", "--before", "2024-01-01", "--archive", str(archive))
    assert "does not verify" in str(run.error)
    assert "modified or forged" in str(run.error)
    assert not archive.exists()
    assert AuditEvent.objects.filter(pk=old[0].pk).exists()
    assert verify().first_problem().event_id == old[0].pk


@pytest.mark.django_db
def test_dry_run_seals_nothing_and_counts_unsealed_events_a_real_run_would_delete(settings):
    settings.AUDIT_SEAL_BATCH = 2
    for month in (1, 2, 3):
        record_event(event_type="lead_ingested", timestamp=ts(2023, month, 1))
    seal_all()  # three events sealed; the two below are not
    late = [record_event(event_type="lead_ingested", timestamp=ts(2023, 4, d)) for d in (1, 2)]
    seals = list(AuditSeal.objects.values_list("number", flat=True))

    run = run_command("prune_audit", "--before", "2024-01-01", "--dry-run")

    assert run.out == "Dry run: 5 events before 2024-01-01 00:00 would be deleted.\n"
    assert list(AuditSeal.objects.values_list("number", flat=True)) == seals
    assert AuditEvent.objects.filter(pk__in=[e.pk for e in late]).count() == 2
    # The real run agrees with the count.
    assert "Deleted 5 events" in run_command("prune_audit", "--before", "2024-01-01").out
