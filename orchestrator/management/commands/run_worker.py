import contextlib
import os
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError
from django.db import DatabaseError
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV
from django_tasks_db.management.commands import db_worker

from orchestrator.monitoring.heartbeat import HeartbeatThread, forget


class Command(db_worker.Command):
    help = (
        "Run the database task worker (django_tasks_db's db_worker, same options) and record "
        "a heartbeat for /healthz. Start several, on one machine or many: tasks are claimed "
        "with SELECT ... FOR UPDATE SKIP LOCKED, so each runs once."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--heartbeat-interval",
            type=float,
            default=15.0,
            help="Seconds between heartbeats (default 15; keep it well under "
            "HEALTHZ_WORKER_MAX_AGE_SECONDS).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        interval = options.pop("heartbeat_interval")
        if not interval > 0:
            raise CommandError("--heartbeat-interval must be a positive number of seconds")
        # With --reload the first process only watches files and restarts the
        # second; only the one that runs tasks may say a worker is alive.
        runs_tasks = not options["reload"] or os.environ.get(DJANGO_AUTORELOAD_ENV) == "true"
        if not runs_tasks:
            super().handle(*args, **options)
            return
        heartbeat = HeartbeatThread(worker_id=options["worker_id"], interval=interval)
        heartbeat.start()
        try:
            super().handle(*args, **options)
        finally:
            heartbeat.stop()
            # If the database is gone the row goes stale instead; /healthz reads that alike.
            with contextlib.suppress(DatabaseError):
                forget(worker_id=options["worker_id"])
