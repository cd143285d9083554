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
                if self._stop_event.wait(self.interval):
                    break
        finally:
            connection.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=max(self.interval, 5))
