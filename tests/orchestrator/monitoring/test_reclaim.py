"""Tasks left RUNNING by a worker that died (SIGKILL, a lost machine) go back to
the queue; a task that keeps killing its workers fails with the reason."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from leads.workflows.steps import run_step
from orchestrator.monitoring.heartbeat import beat, reclaim_abandoned

pytestmark = pytest.mark.django_db


def running(*, workers: list[str], started_ago: timedelta) -> DBTaskResult:
    """A task as a worker leaves it when it dies mid-run."""
    result = run_step.enqueue("email_sequence", 1, {"kind": "email_sequence"}, "c")
    DBTaskResult.objects.filter(id=result.id).update(
        status="RUNNING", worker_ids=workers, started_at=timezone.now() - started_ago
    )
    return DBTaskResult.objects.get(id=result.id)


def test_a_dead_workers_task_is_ready_again_and_a_live_ones_is_left(settings):
    settings.HEALTHZ_WORKER_MAX_AGE_SECONDS = 120
    now = timezone.now()
    beat(worker_id="alive", started_at=now)
    orphan = running(workers=["ghost"], started_ago=timedelta(minutes=10))
    busy = running(workers=["alive"], started_ago=timedelta(minutes=10))
    fresh = running(workers=["ghost"], started_ago=timedelta(seconds=5))

    assert reclaim_abandoned() == [str(orphan.id)]

    orphan.refresh_from_db()
    assert (orphan.status, orphan.started_at) == ("READY", None)
    assert orphan.worker_ids == ["ghost"]  # the history of who tried stays
    assert DBTaskResult.objects.get(id=busy.id).status == "RUNNING"
    assert DBTaskResult.objects.get(id=fresh.id).status == "RUNNING"
    # The queue takes it again.
    assert DBTaskResult.objects.ready().filter(id=orphan.id).exists()


def test_a_task_that_outlived_its_workers_too_often_fails_with_the_reason(settings):
    settings.TASK_MAX_ATTEMPTS = 3
    task = running(workers=["w1", "w2", "w3"], started_ago=timedelta(minutes=10))
    assert reclaim_abandoned() == [str(task.id)]
    task.refresh_from_db()
    assert task.status == "FAILED"
    assert task.exception_class_path == "orchestrator.monitoring.heartbeat.AbandonedTask"
    assert "3 workers stopped while running it (w1, w2, w3)" in task.traceback
    assert reclaim_abandoned() == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_task_a_killed_worker_left_running(tmp_path, settings):
    from django.contrib.auth import get_user_model

    from orchestrator.dashboard.exports import write_export_file
    from orchestrator.models import ExportJob
    from tests.conftest import worker_process

    user = get_user_model().objects.create_user("auditor")
    job = ExportJob.objects.create(
        user=user,
        format="jsonl",
        filters={
            "query": "",
            "since": "2026-01-01T00:00:00+00:00",
            "until": "2026-02-01T00:00:00+00:00",
            "up_to_id": 0,
        },
    )
    result = write_export_file.enqueue(job.pk)
    DBTaskResult.objects.filter(id=result.id).update(
        status="RUNNING", worker_ids=["killed-9"], started_at=timezone.now() - timedelta(hours=1)
    )
    with worker_process("reclaimer", env={"EXPORT_DIR": str(tmp_path)}) as worker:
        deadline = timezone.now() + timedelta(seconds=60)
        while DBTaskResult.objects.get(id=result.id).status != "SUCCESSFUL":
            assert timezone.now() < deadline, DBTaskResult.objects.filter(id=result.id).values()
            time.sleep(0.2)
        assert worker.stop() == 0
    task = DBTaskResult.objects.get(id=result.id)
    assert task.worker_ids == ["killed-9", "reclaimer"]
    job.refresh_from_db()
    assert job.status == "done"
