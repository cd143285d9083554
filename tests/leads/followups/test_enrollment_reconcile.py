"""No routed lead silently misses its follow-up sequence: a failed enroll is an
error event, and the workflow runner's reconciliation enrolls it once it can,
exactly once."""

from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from audit.models import AuditEvent
from leads.followups.models import Enrollment, Sequence, SequenceStep
from leads.models import Lead
from leads.services import ingest_lead
from leads.workflows.runner import run_pass

pytestmark = pytest.mark.django_db(transaction=True)


def run_worker() -> None:
    call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)


def make_sequence() -> Sequence:
    sequence = Sequence.objects.create(name="Welcome", slug="welcome", sender="s@example.test")
    SequenceStep.objects.create(
        sequence=sequence,
        position=1,
        delay=timedelta(days=1),
        subject_template="Hi",
        text_template="Hello {{ unsubscribe_url }}",
    )
    return sequence


@pytest.fixture
def emailing(pipeline):
    workflow = pipeline["workflow"]
    workflow.config = {
        **workflow.config,
        "steps": [{"kind": "email_sequence", "sequence": "welcome"}],
    }
    workflow.save()
    for i in range(4):
        ingest_lead(
            source=pipeline["source"],
            payload={"email": f"lead{i}@acme.example", "title": "CTO", "country": "DE"},
        )
    return workflow


def test_a_sequence_created_late_still_gets_every_lead_enrolled_once(emailing):
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        run_pass(workflow=emailing)
        routed = list(Lead.objects.filter(owner__isnull=False).values_list("pk", flat=True))
        assert len(routed) == 4
        run_worker()
        # Each failure is visible: an error event with the stage, a FAILED task.
        errors = AuditEvent.objects.filter(event_type="error", details__stage="enroll")
        assert errors.count() == 4
        assert "no sequence 'welcome'" in errors.first().error_message
        assert DBTaskResult.objects.filter(status="FAILED").count() == 4
        assert not Enrollment.objects.exists()

        # Still no sequence: the runner does not retry into the same wall.
        clock.shift(timedelta(minutes=30))
        assert "steps_requeued" not in run_pass(workflow=emailing).counts

        make_sequence()
        clock.shift(timedelta(minutes=1))
        # Retried at most every FOLLOWUPS_RECONCILE_RETRY_MINUTES after a failure...
        assert run_pass(workflow=emailing).counts["steps_requeued"] == 4
        # ... and not again while those runs are queued.
        assert "steps_requeued" not in run_pass(workflow=emailing).counts
        run_worker()
        assert sorted(Enrollment.objects.values_list("lead_id", flat=True)) == sorted(routed)
        clock.shift(timedelta(hours=1))
        assert "steps_requeued" not in run_pass(workflow=emailing).counts
    assert Enrollment.objects.count() == 4
    assert AuditEvent.objects.filter(event_type="email_scheduled").count() == 4


def test_old_leads_are_not_swept_up_when_a_step_is_added_later(emailing, settings):
    make_sequence()
    workflow = emailing
    steps = workflow.config["steps"]
    workflow.config = {**workflow.config, "steps": []}
    workflow.save()
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        run_pass(workflow=workflow)  # routed, with no step configured then
        clock.shift(timedelta(days=settings.FOLLOWUPS_RECONCILE_DAYS, minutes=1))
        workflow.config = {**workflow.config, "steps": steps}
        workflow.save()
        assert "steps_requeued" not in run_pass(workflow=workflow).counts
    assert not DBTaskResult.objects.exists()


@pytest.mark.slow
def test_killed_workers_failed_enqueues_and_a_late_sequence_still_enroll_every_lead_once(
    pipeline, monkeypatch, settings
):
    import os
    import random
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from django.db import DatabaseError

    from tests.conftest import database_url

    settings.FOLLOWUPS_RECONCILE_RETRY_MINUTES = 0
    workflow = pipeline["workflow"]
    workflow.config = {
        **workflow.config,
        "steps": [{"kind": "email_sequence", "sequence": "welcome"}],
    }
    workflow.save()
    total = 500
    for i in range(total):
        ingest_lead(
            source=pipeline["source"],
            payload={"email": f"lead{i}@acme.example", "title": "CTO", "country": "DE"},
        )

    # One enqueue in seven fails: those leads roll back and wait for the next pass.
    from django_tasks_db.backend import DatabaseBackend

    real, calls = DatabaseBackend.enqueue, [0]

    def flaky(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] % 7 == 0:
            raise DatabaseError("queue unavailable")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DatabaseBackend, "enqueue", flaky)
    first = run_pass(workflow=workflow)
    assert first.counts["errors"] == total // 7
    monkeypatch.setattr(DatabaseBackend, "enqueue", real)

    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        # Dead workers are noticed after 3 s instead of 2 minutes.
        "HEALTHZ_WORKER_MAX_AGE_SECONDS": "3",
    }
    root = Path(__file__).resolve().parents[3]

    def worker(n: int) -> subprocess.Popen:
        return subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "run_worker",
                "--no-reload",
                "--no-startup-delay",
                f"--worker-id=w{n}",
                "--heartbeat-interval=0.5",
                "--interval=0.1",
            ],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    rng = random.Random(7)
    # Workers killed mid-queue, before the sequence exists and after.
    for n in range(6):
        if n == 3:
            make_sequence()
        proc = worker(n)
        time.sleep(rng.uniform(1.5, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        run_pass(workflow=workflow)  # routes the rolled-back leads, reconciles the rest

    proc = worker(99)
    try:
        deadline = time.monotonic() + 240
        while True:
            run_pass(workflow=workflow)
            pending = DBTaskResult.objects.filter(status__in=("READY", "RUNNING")).count()
            if not pending and Enrollment.objects.count() >= total:
                break
            assert time.monotonic() < deadline, (pending, Enrollment.objects.count())
            time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert Lead.objects.filter(owner__isnull=False).count() == total
    per_lead = Enrollment.objects.values_list("lead_id", flat=True)
    assert len(per_lead) == total and len(set(per_lead)) == total
    assert AuditEvent.objects.filter(event_type="email_scheduled").count() == total
