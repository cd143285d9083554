import os
import signal
import sys
import time
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count

from audit.models import AuditEvent
from leads.models import Lead
from leads.services import ingest_lead
from leads.workflows.models import WorkflowRun
from leads.workflows.runner import MAX_ATTEMPTS, run_pass
from leads.workflows.steps import register_step

ROOT = Path(__file__).resolve().parents[3]


def add_leads(pipeline, n, **fields):
    for i in range(n):
        ingest_lead(
            source=pipeline["source"],
            payload={"email": f"lead{i}@acme.example", "title": "CTO", "country": "DE", **fields},
        )


@pytest.mark.django_db
def test_a_pass_qualifies_and_routes_and_records_the_run(pipeline):
    add_leads(pipeline, 3)
    ingest_lead(source=pipeline["source"], payload={"email": "kid@gmail.com"})
    run = run_pass(workflow=pipeline["workflow"])
    assert run.status == WorkflowRun.Status.SUCCEEDED
    assert run.counts == {"processed": 4, "qualified": 3, "routed": 3, "disqualified": 1}
    assert run.finished_at >= run.started_at
    leads = Lead.objects.filter(email__startswith="lead")
    assert all(lead.status == "qualified" and lead.owner for lead in leads)
    assert all(lead.processed_at for lead in Lead.objects.all())
    assert Lead.objects.get(email="kid@gmail.com").owner is None
    lead = leads.first()
    history = list(
        AuditEvent.objects.filter(lead_public_id=lead.public_id)
        .order_by("timestamp", "id")
        .values_list("event_type", flat=True)
    )
    assert history == ["lead_ingested", "lead_qualified", "lead_routed"]
    started = AuditEvent.objects.get(event_type="workflow_started")
    stopped = AuditEvent.objects.get(event_type="workflow_stopped")
    assert started.correlation_id == stopped.correlation_id == run.correlation_id
    assert stopped.details["counts"] == run.counts
    assert stopped.details["duration_seconds"] >= 0
    routed = AuditEvent.objects.filter(event_type="lead_routed")
    assert {e.correlation_id for e in routed} == {run.correlation_id}
    # A second pass finds nothing new.
    assert run_pass(workflow=pipeline["workflow"]).counts == {}


@pytest.mark.django_db
def test_one_bad_lead_is_an_error_event_and_the_pass_goes_on(pipeline, monkeypatch):
    add_leads(pipeline, 3)
    bad = Lead.objects.order_by("id")[1]
    from leads.workflows import runner

    real = runner.lead_qualify

    def flaky(*, lead, config):
        if lead.pk == bad.pk:
            raise ZeroDivisionError("rule blew up")
        return real(lead=lead, config=config)

    monkeypatch.setattr(runner, "lead_qualify", flaky)
    run = run_pass(workflow=pipeline["workflow"])
    assert run.counts["errors"] == 1
    assert run.counts["qualified"] == 2
    error = AuditEvent.objects.get(event_type="error")
    assert error.lead_public_id == bad.public_id
    assert error.error_type == "ZeroDivisionError"
    assert "rule blew up" in error.traceback
    bad.refresh_from_db()
    assert (bad.status, bad.attempts) == ("new", 1)
    # The failed lead's own changes were rolled back: no qualified event for it.
    assert not AuditEvent.objects.filter(event_type="lead_qualified", lead_public_id=bad.public_id)
    for _ in range(MAX_ATTEMPTS - 1):
        run_pass(workflow=pipeline["workflow"])
    bad.refresh_from_db()
    assert (bad.status, bad.attempts) == ("failed", MAX_ATTEMPTS)
    assert run_pass(workflow=pipeline["workflow"]).counts == {}


@pytest.mark.django_db
def test_dry_run_changes_nothing(pipeline):
    add_leads(pipeline, 2)
    before = AuditEvent.objects.count()
    out = StringIO()
    call_command("run_workflow", "sales", "--dry-run", stdout=out)
    assert "Dry run: sales run" in out.getvalue()
    assert "qualified 2" in out.getvalue()
    assert set(Lead.objects.values_list("status", flat=True)) == {"new"}
    assert not Lead.objects.filter(owner__isnull=False).exists()
    new_types = set(AuditEvent.objects.order_by("id")[before:].values_list("event_type", flat=True))
    assert new_types == {"workflow_started", "workflow_stopped"}


@pytest.mark.django_db
def test_limit_and_unknown_workflow(pipeline):
    add_leads(pipeline, 5)
    out = StringIO()
    call_command("run_workflow", "sales", "--limit", "2", stdout=out)
    assert Lead.objects.filter(status="qualified").count() == 2
    with pytest.raises(CommandError, match="no workflow named 'nope'"):
        call_command("run_workflow", "nope")
    with pytest.raises(CommandError, match="--limit"):
        call_command("run_workflow", "sales", "--limit", "0")


@pytest.mark.django_db(transaction=True)
def test_steps_are_enqueued_on_commit_and_run_by_the_worker(pipeline):
    register_step("mark", "tests.leads.workflows.steps.MarkStep")
    workflow = pipeline["workflow"]
    workflow.config = {**workflow.config, "steps": [{"kind": "mark", "note": "hi"}]}
    workflow.save()
    add_leads(pipeline, 2)
    from django_tasks_db.models import DBTaskResult

    run = run_pass(workflow=workflow)
    tasks = list(DBTaskResult.objects.all())
    assert len(tasks) == 2
    assert {t.task_path for t in tasks} == {"leads.workflows.steps.run_step"}
    call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)
    marks = AuditEvent.objects.filter(event_type="crm_update")
    assert marks.count() == 2
    assert {m.details["note"] for m in marks} == {"hi"}
    # The step's events join the run's correlation id.
    assert {m.correlation_id for m in marks} == {run.correlation_id}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_runners_never_handle_a_lead_twice(pipeline, run_python):
    add_leads(pipeline, 500)
    code = (
        "from leads.workflows.models import Workflow\n"
        "from leads.workflows.runner import run_pass\n"
        "run = run_pass(workflow=Workflow.objects.get(name='sales'))\n"
        "print(run.counts.get('processed', 0))\n"
    )
    procs = [run_python(code) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for proc, (_out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
    processed = [int(out.strip().splitlines()[-1]) for out, _ in outs]
    assert sum(processed) == 500
    per_lead = (
        AuditEvent.objects.filter(event_type="lead_qualified")
        .values("lead_public_id")
        .annotate(n=Count("id"))
    )
    assert len(per_lead) == 500
    assert {row["n"] for row in per_lead} == {1}
    assert AuditEvent.objects.filter(event_type="lead_routed").count() == 500
    assert not Lead.objects.filter(status="new").exists()


def _start_runner(env_url, *extra):
    import subprocess

    return subprocess.Popen(
        [sys.executable, "manage.py", "run_workflow", "sales", "--parallel", *extra],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": env_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_progress(min_done, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Lead.objects.exclude(status="new").count() >= min_done:
            return
        time.sleep(0.05)
    raise AssertionError("the runner made no progress")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_runner_killed_mid_pass_loses_nothing(pipeline):
    from tests.conftest import database_url

    add_leads(pipeline, 400)
    proc = _start_runner(database_url())
    _wait_for_progress(20)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = Lead.objects.exclude(status="new").count()
    assert 0 < done_before < 400, "kill the runner mid-pass"
    # Every lead is either fully processed or untouched.
    for lead in Lead.objects.exclude(status="new"):
        assert lead.owner_id and lead.processed_at
    run = run_pass(workflow=pipeline["workflow"])
    assert run.counts["processed"] == 400 - done_before
    per_lead = (
        AuditEvent.objects.filter(event_type="lead_qualified")
        .values("lead_public_id")
        .annotate(n=Count("id"))
    )
    assert len(per_lead) == 400
    assert {row["n"] for row in per_lead} == {1}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sigterm_finishes_the_current_lead_and_exits_cleanly(pipeline):
    from tests.conftest import database_url

    add_leads(pipeline, 400)
    proc = _start_runner(database_url())
    _wait_for_progress(10)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "interrupted" in out
    run = WorkflowRun.objects.get()
    assert run.status == WorkflowRun.Status.INTERRUPTED
    stopped = AuditEvent.objects.get(event_type="workflow_stopped")
    assert stopped.details["reason"] == "signal"
    done = Lead.objects.exclude(status="new").count()
    assert done == run.counts["processed"] < 400
    for lead in Lead.objects.exclude(status="new"):
        assert lead.owner_id and lead.processed_at


@pytest.mark.django_db(transaction=True)
def test_a_failed_enqueue_rolls_the_lead_back_and_the_next_pass_enrolls_it(pipeline, monkeypatch):
    """The steps' task rows are written in the lead's transaction: a lead is
    never routed with its steps missing."""
    from django.db import DatabaseError
    from django_tasks_db.models import DBTaskResult

    from leads.workflows import steps

    register_step("mark", "tests.leads.workflows.steps.MarkStep")
    workflow = pipeline["workflow"]
    workflow.config = {**workflow.config, "steps": [{"kind": "mark", "note": "hi"}]}
    workflow.save()
    add_leads(pipeline, 1)
    lead = Lead.objects.get()
    real = steps.run_step

    def broken(*args, **kwargs):
        raise DatabaseError("the queue's table is locked")

    monkeypatch.setattr(steps, "run_step", SimpleNamespace(enqueue=broken, backend=real.backend))
    run = run_pass(workflow=workflow)
    assert run.counts["errors"] == 1
    lead.refresh_from_db()
    assert (lead.status, lead.owner_id, lead.attempts) == ("new", None, 1)
    assert not DBTaskResult.objects.exists()
    assert AuditEvent.objects.get(event_type="error").details["stage"] == "qualify_route"

    monkeypatch.setattr(steps, "run_step", real)
    run_pass(workflow=workflow)
    lead.refresh_from_db()
    assert lead.owner_id is not None
    (task,) = DBTaskResult.objects.all()
    assert task.args_kwargs["args"][:2] == ["mark", lead.pk]


@pytest.mark.django_db
def test_a_lead_rolled_back_after_routing_leaves_no_step_behind(pipeline):
    from django.db import transaction
    from django_tasks_db.models import DBTaskResult

    from leads.workflows.steps import enqueue_steps

    register_step("mark", "tests.leads.workflows.steps.MarkStep")
    add_leads(pipeline, 1)
    lead = Lead.objects.get()

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        enqueue_steps(lead_id=lead.pk, steps=[{"kind": "mark"}], correlation_id="c")
        assert DBTaskResult.objects.count() == 1  # written inside the transaction
        raise Abort
    assert not DBTaskResult.objects.exists()
