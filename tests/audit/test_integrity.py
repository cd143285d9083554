"""Tamper evidence: each kind of tampering is found and named."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from audit.integrity import seal_all, seal_pending, verify
from audit.models import AuditEvent, AuditSeal
from audit.services import build_event, record_event


@pytest.fixture
def raw_sql():
    """Run SQL as an attacker with database access would (triggers off on PostgreSQL)."""

    def run(sql, params=()):
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                for table in ("audit_auditevent", "audit_auditseal"):
                    cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            cursor.execute(sql, params)
            if connection.vendor == "postgresql":
                for table in ("audit_auditevent", "audit_auditseal"):
                    cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")

    return run


def make_events(n, **kwargs):
    return [
        record_event(
            event_type="lead_ingested", lead_id=f"LEAD-{i:06d}", details={"i": i}, **kwargs
        )
        for i in range(n)
    ]


def verify_command():
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit", stdout=out, stderr=err)
    except CommandError as exc:
        return False, out.getvalue(), err.getvalue() + str(exc)
    return True, out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_clean_trail_verifies_and_reports_unsealed_events():
    make_events(5)
    seal_all()
    make_events(2)
    report = verify()
    assert report.ok
    assert report.events_checked == 7
    assert report.unsealed == 2
    ok, out, _ = verify_command()
    assert ok
    assert "2 events are not sealed yet" in out
    assert "Audit trail verified." in out


@pytest.mark.django_db
def test_seals_chain_and_cover_each_event_once(settings):
    settings.AUDIT_SEAL_BATCH = 3
    make_events(7)
    seals = seal_all()
    assert [s.number for s in seals] == [1, 2, 3]
    assert [s.event_count for s in seals] == [3, 3, 1]
    assert seals[1].prev_digest == seals[0].digest
    assert seal_pending() is None
    assert verify().ok


@pytest.mark.django_db
def test_modified_event_is_detected_and_named(raw_sql):
    events = make_events(4)
    seal_all()
    raw_sql("UPDATE audit_auditevent SET workflow = %s WHERE id = %s", ["tampered", events[2].pk])
    report = verify()
    assert not report.ok
    assert report.first_problem().event_id == events[2].pk
    ok, _, err = verify_command()
    assert not ok
    assert f"event #{events[2].pk}" in err and "modified or forged" in err


@pytest.mark.django_db
def test_modified_event_with_recomputed_plain_hash_is_still_detected(raw_sql):
    # Replacing the mac column with anything computable without the key fails.
    import hashlib

    event = make_events(1)[0]
    seal_all()
    fake = hashlib.sha256(b"forged").hexdigest()
    raw_sql(
        "UPDATE audit_auditevent SET actor = 'user:mallory', mac = %s WHERE id = %s",
        [fake, event.pk],
    )
    problems = [p.message for p in verify().problems]
    assert any("modified or forged" in m for m in problems)
    assert any("no longer match its digest" in m for m in problems)


@pytest.mark.django_db
def test_deleted_event_is_detected(raw_sql):
    events = make_events(5)
    seal_all()
    raw_sql("DELETE FROM audit_auditevent WHERE id = %s", [events[1].pk])
    report = verify()
    assert report.first_problem().event_id == events[1].pk
    assert "was deleted" in report.first_problem().message
    ok, _, err = verify_command()
    assert not ok and f"event #{events[1].pk} was deleted" in err


@pytest.mark.django_db
def test_forged_event_without_the_key_is_detected(raw_sql):
    make_events(3)
    seal_all()
    template = AuditEvent.objects.order_by("id").first()
    raw_sql(
        "INSERT INTO audit_auditevent (uuid, timestamp, event_type, actor, lead_public_id, "
        "workflow, correlation_id, details, error_type, error_message, traceback, mac) "
        "SELECT %s, timestamp, event_type, actor, lead_public_id, workflow, correlation_id, "
        "details, error_type, error_message, traceback, mac FROM audit_auditevent WHERE id = %s",
        ["0e6f5b8e-0000-4000-8000-000000000001", template.pk],
    )
    forged = AuditEvent.objects.order_by("-id").first()
    report = verify()
    assert [p.event_id for p in report.problems] == [forged.pk]
    assert "modified or forged" in report.problems[0].message


def save_with_id(event_type, event_id):
    # Explicit ids stand in for the order in which PostgreSQL hands them out.
    event = build_event(event_type=event_type)
    event.id = event_id
    event.save()
    return event


def gap_starting(seal, first_id):
    return [g[:2] for g in seal.open_gaps if g[0] == first_id]


@pytest.mark.django_db
def test_event_inserted_out_of_band_below_the_seals_is_detected(settings):
    base = make_events(2)[-1].pk
    # Leave a gap: base+1 .. base+7 are never used, base+8 is.
    save_with_id("lead_routed", base + 8)
    seal = seal_pending()
    assert gap_starting(seal, base + 1) == [[base + 1, base + 7]]
    # Once the grace period is over the gap is closed for good...
    later = timezone.now() + timedelta(seconds=settings.AUDIT_SEAL_GRACE_SECONDS + 1)
    save_with_id("lead_routed", base + 9)
    assert seal_pending(now=later).open_gaps == []
    # ...so an event with a valid MAC appearing there later was inserted out of band.
    save_with_id("crm_update", base + 3)
    report = verify()
    assert report.first_problem().event_id == base + 3
    assert "inserted out of band" in report.first_problem().message


@pytest.mark.django_db
def test_late_commit_into_an_open_gap_is_sealed_next_time():
    base = make_events(2)[-1].pk
    save_with_id("lead_routed", base + 3)
    seal_pending()
    # base+1 was handed out before the seal and commits afterwards (PostgreSQL does this).
    save_with_id("lead_qualified", base + 1)
    report = verify()
    assert report.ok
    assert report.unsealed == 1
    second = seal_pending()
    assert second.ranges == [[base + 1, base + 1]]
    assert gap_starting(second, base + 2) == [[base + 2, base + 2]]
    assert verify().ok


@pytest.mark.django_db
def test_modified_seal_and_broken_chain_are_detected(raw_sql, settings):
    settings.AUDIT_SEAL_BATCH = 2
    make_events(6)
    seals = seal_all()
    raw_sql("UPDATE audit_auditseal SET event_count = 1 WHERE id = %s", [seals[0].pk])
    assert any("seal 1 was modified" in p.message for p in verify().problems)
    raw_sql("DELETE FROM audit_auditseal WHERE id = %s", [seals[1].pk])
    messages = [p.message for p in verify().problems]
    assert any("seal 2 is missing" in m for m in messages)
    # The events of the vanished seal are now in no seal, below the high-water mark.
    assert any("inserted out of band" in m for m in messages)


@pytest.mark.django_db
def test_racing_sealers_never_fork_the_chain():
    make_events(3)
    first = seal_pending()
    # A second sealer that read the same head tries to write seal 1 again.
    dup = AuditSeal(
        number=1,
        created_at=first.created_at,
        high_water=first.high_water,
        ranges=first.ranges,
        event_count=first.event_count,
        events_digest=first.events_digest,
        prev_digest=first.prev_digest,
        digest=first.digest,
    )
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        dup.save()
    assert AuditSeal.objects.count() == 1


@pytest.mark.django_db
def test_seal_command_skips_when_another_run_holds_the_lock():
    from datetime import timedelta

    from core import locks

    make_events(2)
    holder = locks.acquire("seal_audit", ttl=timedelta(minutes=5))
    out = StringIO()
    call_command("seal_audit", stdout=out)
    assert "another run holds the lock" in out.getvalue()
    assert AuditSeal.objects.count() == 0
    locks.release("seal_audit", holder)
    call_command("seal_audit", stdout=out)
    assert "Sealed 2 events" in out.getvalue()
    assert AuditSeal.objects.count() == 1
