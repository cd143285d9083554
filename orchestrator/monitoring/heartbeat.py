"""Worker heartbeats: a task worker says it is alive, /healthz reads it.

db_worker leaves no trace while the queue is empty, so `run_worker` runs it
with a thread that touches a WorkerHeartbeat row every few seconds. The row
says the process lives; /healthz pairs it with the wait of the next task in
line, which shows a worker that lives but is stuck.
"""

import logging
import os
import socket
import threading
from datetime import datetime, timedelta

from django.db import DatabaseError, IntegrityError, close_old_connections, connection, transaction
from django.utils import timezone

from orchestrator.models import WorkerHeartbeat

log = logging.getLogger(__name__)

# Rows of workers that vanished without saying goodbye (kill -9, a lost
# machine) are dropped after this long; they no longer tell anything.
FORGET_AFTER = timedelta(days=1)


def beat(*, worker_id: str, started_at: datetime) -> None:
    """Record that `worker_id` is alive now."""
    now = timezone.now()
    if WorkerHeartbeat.objects.filter(worker_id=worker_id).update(seen_at=now):
        return
    try:
        with transaction.atomic():
            WorkerHeartbeat.objects.create(
                worker_id=worker_id,
                hostname=socket.gethostname()[:255],
                pid=os.getpid(),
                started_at=started_at,
                seen_at=now,
            )
    except IntegrityError:
        # Created between our UPDATE and INSERT: only by ourselves, after a retry.
        WorkerHeartbeat.objects.filter(worker_id=worker_id).update(seen_at=now)
    # Tidy up when a worker starts (the only time a row is created), not on
    # every beat.
    WorkerHeartbeat.objects.filter(seen_at__lt=now - FORGET_AFTER).delete()


class AbandonedTask(Exception):
    """The class path a task gets when its workers kept dying while running it."""


def reclaim_abandoned(*, now: datetime | None = None) -> list[str]:
    """Hand back to the queue the tasks left RUNNING by workers that are gone.

    A worker killed with SIGKILL (or a lost machine) leaves its task RUNNING
    forever: db_worker only picks READY ones. A task whose last worker has not
    beaten for HEALTHZ_WORKER_MAX_AGE_SECONDS is READY again, for any worker;
    after TASK_MAX_ATTEMPTS workers died on it, it is FAILED with that reason,
    visible, not retried for ever. Every task here may run twice (a step
    enrolls or syncs idempotently, an export claims its job), which is what
    makes handing one back safe. Returns the ids handed back or failed.
    """
    from django.conf import settings
    from django_tasks_db.models import DBTaskResult

    now = now or timezone.now()
    max_age = timedelta(seconds=settings.HEALTHZ_WORKER_MAX_AGE_SECONDS)
    alive = set(
        WorkerHeartbeat.objects.filter(seen_at__gte=now - max_age).values_list(
            "worker_id", flat=True
        )
    )
    touched: list[str] = []
    running = DBTaskResult.objects.filter(status="RUNNING").values_list(
        "id", "worker_ids", "started_at", "task_path"
    )
    for task_id, workers, started_at, task_path in running:
        last = workers[-1] if workers else None
        if last in alive or (started_at and started_at > now - max_age):
            continue  # its worker lives, or it started too recently to judge
        # Conditional on started_at: a task claimed again meanwhile is left alone.
        same = DBTaskResult.objects.filter(id=task_id, status="RUNNING", started_at=started_at)
        if len(workers) >= settings.TASK_MAX_ATTEMPTS:
            done = same.update(
                status="FAILED",
                finished_at=now,
                exception_class_path=f"{__name__}.AbandonedTask",
                traceback=(
                    f"{AbandonedTask.__name__}: {len(workers)} workers stopped while running "
                    f"it ({', '.join(workers)})"
                ),
            )
            verb = "failed"
        else:
            done = same.update(status="READY", started_at=None)
            verb = "handed back"
        if done:
            log.warning("task %s (%s) %s: worker %s is gone", task_id, task_path, verb, last)
            touched.append(str(task_id))
    return touched


def forget(*, worker_id: str) -> None:
    """A worker stopping on purpose removes its row: it is down, not late."""
    WorkerHeartbeat.objects.filter(worker_id=worker_id).delete()


class HeartbeatThread(threading.Thread):
    """Beats every `interval` seconds until stop(); a database outage only logs."""

    def __init__(self, *, worker_id: str, interval: float) -> None:
        super().__init__(name=f"heartbeat-{worker_id}", daemon=True)
        self.worker_id = worker_id
        self.interval = interval
        self.started_at = timezone.now()
        self._stop_event = threading.Event()

    def run(self) -> None:
        first = True
        try:
            while True:
                # The thread has its own connection; drop it if the database
                # went away so the next beat reconnects.
                close_old_connections()
                try:
                    beat(worker_id=self.worker_id, started_at=self.started_at)
                except DatabaseError as exc:
                    log.warning("worker %s: heartbeat not recorded: %s", self.worker_id, exc)
                else:
                    if first:
                        log.info(
                            "worker %s: alive, heartbeat every %ss", self.worker_id, self.interval
                        )
                        first = False
                    try:
                        reclaim_abandoned()
                    except DatabaseError as exc:
                        log.warning(
                            "worker %s: abandoned tasks not reclaimed: %s", self.worker_id, exc
                        )
                if self._stop_event.wait(self.interval):
                    break
        finally:
            connection.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=max(self.interval, 5))
