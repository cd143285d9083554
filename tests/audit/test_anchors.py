"""The anchor log: what an attacker with SQL access does, and how verify_audit names it.

The attacker works with raw SQL, as a database client would; on PostgreSQL
as a superuser that turns the append-only triggers off (or uses TRUNCATE,
which they never covered).
"""

import json
import logging
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from werkzeug import Request, Response

from audit.anchors import anchor_path, witness_state_path
from audit.integrity import ranges_q, seal_all, verify
from audit.models import AuditAnchorMark, AuditEvent, AuditSeal, IntegrityCheck
from audit.retention import prune
from audit.services import record_event
from audit.signing import mac_of
from core import signing

AUDIT_TABLES = ("audit_auditevent", "audit_auditseal", "audit_auditprune", "audit_auditanchormark")


@pytest.fixture
def raw_sql():
    """Run SQL as an attacker with database access would (triggers off on PostgreSQL)."""

    def run(sql, params=()):
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                for table in AUDIT_TABLES:
                    cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            cursor.execute(sql, params)
            if connection.vendor == "postgresql":
                for table in AUDIT_TABLES:
                    cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")

    return run


def make_events(n, **kwargs):
    return [
        record_event(
            event_type="lead_ingested", lead_id=f"LEAD-{i:06d}", details={"i": i}, **kwargs
        )
        for i in range(n)
    ]


def seal(*args):
    """The scheduled sealer: seals, then anchors what the anchor log lacks."""
    out = StringIO()
    call_command("seal_audit", *args, stdout=out)
    return out.getvalue()


def verify_command(*args):
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return False, out.getvalue(), err.getvalue() + str(exc)
    return True, out.getvalue(), err.getvalue()


def anchor_lines():
    return [json.loads(line) for line in anchor_path().read_text().splitlines()]


def delete_seal_and_events(raw_sql, number):
    doomed = AuditSeal.objects.get(number=number)
    ids = list(AuditEvent.objects.filter(ranges_q(doomed.ranges)).values_list("id", flat=True))
    raw_sql(f"DELETE FROM audit_auditevent WHERE id IN ({', '.join(['%s'] * len(ids))})", ids)
    raw_sql("DELETE FROM audit_auditseal WHERE number = %s", [number])


@pytest.fixture
def three_anchored_seals(settings):
    settings.AUDIT_SEAL_BATCH = 2
    make_events(6)
    seal()
    assert [a["number"] for a in anchor_lines()] == [1, 2, 3]
    return list(AuditSeal.objects.order_by("number"))


@pytest.mark.django_db
def test_clean_trail_is_anchored_and_verifies(audit_mirror_path, three_anchored_seals):
    # Beside the JSON Lines mirror by default, one line per seal with its digest.
    assert anchor_path() == audit_mirror_path.parent / "audit-anchors.log"
    first = anchor_lines()[0]
    assert set(first) == {
        "number",
        "high_water",
        "event_count",
        "digest",
        "prev_digest",
        "created_at",
    }
    assert first["digest"] == three_anchored_seals[0].digest
    assert AuditAnchorMark.objects.count() == 1
    ok, out, _ = verify_command()
    assert ok, out
    assert "Compared with 3 anchors" in out
    assert "WARNING" not in out
    assert "Audit trail verified." in out


@pytest.mark.django_db
def test_each_seal_is_anchored_when_its_transaction_commits(
    settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.AUDIT_ANCHOR_PATH = str(tmp_path / "elsewhere" / "anchors.log")
    make_events(3)
    with django_capture_on_commit_callbacks(execute=True):
        seals = seal_all()
    assert [(a["number"], a["digest"]) for a in anchor_lines()] == [(1, seals[0].digest)]
    assert verify().ok


@pytest.mark.django_db
def test_tail_truncation_is_detected(raw_sql, three_anchored_seals):
    delete_seal_and_events(raw_sql, 3)
    # The chain on its own is consistent: only the anchor log shows the loss.
    assert verify(anchors=False).ok
    ok, _, err = verify_command()
    assert not ok
    assert "tail truncated: the anchor log records seal 3, the database's newest seal is 2" in err
    check = IntegrityCheck.objects.order_by("-id").first()
    assert not check.ok and check.first_problem.startswith("tail truncated")


@pytest.mark.django_db
def test_wipe_is_detected(raw_sql, three_anchored_seals):
    raw_sql("DELETE FROM audit_auditevent")
    raw_sql("DELETE FROM audit_auditseal")
    raw_sql("DELETE FROM audit_auditanchormark")
    ok, _, err = verify_command()
    assert not ok
    assert "audit trail wiped: the anchor log records seals 1 to 3" in err


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="TRUNCATE of the audit tables is a PostgreSQL superuser's move; .ci/run runs it there",
)
@pytest.mark.django_db
def test_truncate_is_detected(three_anchored_seals):
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(AUDIT_TABLES)}")
    assert not AuditEvent.objects.exists()
    ok, _, err = verify_command()
    assert not ok
    assert "audit trail wiped" in err


@pytest.mark.django_db
def test_chain_rewritten_and_resealed_with_the_stolen_key_is_detected(
    raw_sql, three_anchored_seals
):
    # The attacker has the key: alters one event and re-MACs it, deletes
    # another, throws the seals away and reseals with the project's own code.
    victim, gone = AuditEvent.objects.order_by("id")[:2]
    victim.actor = "user:mallory"
    raw_sql(
        "UPDATE audit_auditevent SET actor = %s, mac = %s WHERE id = %s",
        [victim.actor, mac_of(victim), victim.pk],
    )
    raw_sql("DELETE FROM audit_auditevent WHERE id = %s", [gone.pk])
    raw_sql("DELETE FROM audit_auditseal")
    resealed = seal_all()
    assert len(resealed) == 3
    # The sealer's catch-up appends nothing for seal numbers already anchored.
    seal()
    assert len(anchor_lines()) == 3
    assert verify(anchors=False).ok
    ok, _, err = verify_command()
    assert not ok
    assert "seal 1 differs from the anchor log" in err
    assert "the chain was rewritten and re-sealed" in err


@pytest.mark.django_db
def test_edited_anchor_log_is_reported(three_anchored_seals):
    lines = anchor_path().read_text().splitlines()
    anchor_path().write_text(lines[0] + "\n" + lines[2] + "\n")
    ok, _, err = verify_command()
    assert not ok
    assert "anchor log: seal 2 is missing or out of order" in err


@pytest.mark.django_db
def test_deleted_anchor_log_is_detected_and_not_silently_recreated(three_anchored_seals, caplog):
    anchor_path().unlink()
    ok, _, err = verify_command()
    assert not ok and "anchor log missing" in err
    # The sealer refuses to start a new log from a database that may be the forgery.
    make_events(1)
    with caplog.at_level(logging.ERROR, logger="audit.anchors"):
        seal()
    assert not anchor_path().exists()
    assert "missing or empty although anchors were written" in caplog.text
    # Skipping the anchors is a deliberate choice...
    ok, out, _ = verify_command("--no-anchors")
    assert ok and "Anchor log not checked (--no-anchors)." in out
    # ...and so is starting over, after an investigation.
    assert "Anchored 4 seals" in seal("--new-anchor-log")
    assert verify_command()[0]


@pytest.mark.django_db
def test_existing_chain_without_anchors_warns_then_is_anchored_by_the_sealer():
    # The first verification after the upgrade: seals, no anchor log, no marker.
    make_events(3)
    seal_all()  # the test's transaction never commits, so nothing is anchored
    ok, out, _ = verify_command()
    assert ok
    assert "WARNING: no anchors yet" in out and "run seal_audit once" in out
    assert "Anchored 1 seals" in seal()
    ok, out, _ = verify_command()
    assert ok and "WARNING" not in out


@pytest.mark.django_db
def test_anchor_write_failure_keeps_the_seal_and_the_next_run_catches_up(
    settings, tmp_path, caplog
):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the directory should be")
    settings.AUDIT_ANCHOR_PATH = str(blocker / "anchors.log")
    make_events(2)
    with caplog.at_level(logging.ERROR, logger="audit.anchors"):
        seal()
    assert "could not write" in caplog.text
    assert AuditSeal.objects.count() == 1
    make_events(2)
    with caplog.at_level(logging.ERROR, logger="audit.anchors"):
        seal()
    assert AuditSeal.objects.count() == 2
    # Nothing was ever anchored: a warning, not a failure.
    ok, out, _ = verify_command()
    assert ok and "no anchors yet" in out

    blocker.unlink()
    assert "Anchored 2 seals" in seal()
    seal()
    assert [a["number"] for a in anchor_lines()] == [1, 2]
    assert verify_command()[0]


@pytest.mark.django_db
def test_a_failed_append_is_caught_up_in_order_without_duplicates(
    three_anchored_seals, monkeypatch
):
    import audit.anchors

    def disk_full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(audit.anchors.os, "write", disk_full)
    make_events(3)  # seals 4 and 5 (batch of 2)
    seal()
    monkeypatch.undo()
    assert AuditSeal.objects.count() == 5
    ok, out, _ = verify_command()
    assert ok and "2 seals are not in the anchor log yet (from seal 4)" in out
    seal()
    seal()
    assert [a["number"] for a in anchor_lines()] == [1, 2, 3, 4, 5]
    ok, out, _ = verify_command()
    assert ok and "WARNING" not in out


@pytest.mark.django_db
def test_pruned_events_keep_their_anchors(three_anchored_seals):
    before = AuditEvent.objects.order_by("id")[2].timestamp
    result = prune(before=before)
    assert result.deleted == 2
    seal()
    numbers = [a["number"] for a in anchor_lines()]
    assert numbers == list(range(1, AuditSeal.objects.count() + 1))
    ok, out, _ = verify_command()
    assert ok, out


@pytest.mark.django_db
def test_an_event_waiting_too_long_for_its_seal_is_flagged(settings):
    settings.AUDIT_SEAL_MAX_AGE_SECONDS = 60
    record_event(event_type="lead_ingested", timestamp=datetime.now(UTC) - timedelta(minutes=5))
    ok, out, _ = verify_command()
    assert ok
    assert "1 events are not sealed yet" in out and "the oldest is 300s old" in out
    assert "WARNING: an event has waited 300s for its seal" in out


# --- the witness --------------------------------------------------------------------------

SECRET = "witness-secret"


@pytest.fixture
def witness(settings, httpserver):
    settings.AUDIT_ANCHOR_WEBHOOK_URL = httpserver.url_for("/anchors")
    settings.AUDIT_ANCHOR_WEBHOOK_SECRET = SECRET
    received = []

    def receive(request: Request) -> Response:
        body = request.get_data()
        stamp = request.headers["X-Audit-Timestamp"]
        if not signing.verify(SECRET, body, request.headers["X-Audit-Signature"], timestamp=stamp):
            return Response("bad signature", status=403)
        received.append(json.loads(body))
        return Response("ok")

    httpserver.expect_request("/anchors", method="POST").respond_with_handler(receive)
    return received


@pytest.mark.django_db
def test_the_witness_receives_each_anchor_line_signed(witness, three_anchored_seals):
    assert witness == anchor_lines()
    assert witness_state_path(anchor_path()).read_text().strip() == "3"
    make_events(1)
    assert "The witness acknowledged 1 seals." in seal()
    assert [w["number"] for w in witness] == [1, 2, 3, 4]


@pytest.mark.django_db
def test_a_witness_that_is_down_gets_the_lines_on_a_later_run(settings, httpserver, caplog):
    settings.AUDIT_ANCHOR_WEBHOOK_URL = httpserver.url_for("/anchors")
    settings.AUDIT_ANCHOR_WEBHOOK_SECRET = SECRET
    httpserver.expect_oneshot_request("/anchors", method="POST").respond_with_data(
        "unavailable", status=503
    )
    make_events(2)
    with caplog.at_level(logging.ERROR, logger="audit.anchors"):
        seal()
    assert "seal 1 not acknowledged" in caplog.text
    assert not witness_state_path(anchor_path()).exists()
    httpserver.expect_request("/anchors", method="POST").respond_with_data("ok")
    assert "The witness acknowledged 1 seals." in seal()
    bodies = [json.loads(request.get_data()) for request, _ in httpserver.log]
    assert [b["number"] for b in bodies] == [1, 1]
    assert bodies[-1] == anchor_lines()[0]
