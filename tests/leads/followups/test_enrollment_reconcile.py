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
