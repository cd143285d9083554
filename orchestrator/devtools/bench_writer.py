"""The writer processes of the benchmark's throughput phase (orchestrator/devtools/bench.py).

Each writer is a spawned process: it imports this module to find its entry
point (and unpickle its WriterSpec) before Django is set up, so this module
imports nothing that needs the app registry or the settings at import time;
the audit services are imported once _writer_process has run django.setup().
"""

import os
import random
import traceback
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import django
from django.conf import settings
from django.db import connection, connections

from orchestrator.devtools.synthetic import random_write

# Spawned writers import Django first; on a loaded 2-core machine that takes a
# while, so the start barrier waits minutes rather than failing spuriously.
BARRIER_TIMEOUT = 300.0


@dataclass(frozen=True)
class WriterSpec:
    index: int
    count: int
    leads: list[str]
    seed: int
    correlation_id: str
    settings_module: str
    # The parent's effective database and mirror: under tests (or any override)
    # they differ from what the environment would give a fresh process.
    db_name: str
    jsonl_path: str


def writer_process(spec: WriterSpec, barrier: Any, results: Any) -> None:
    """Entry point of a spawned writer: set Django up, wait for the start, write."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", spec.settings_module)
    try:
        django.setup()
        # Only now: a spawned child imports this module before django.setup().
        from audit.mirror import mirror
        from audit.services import record_event

        # Nothing is inherited under spawn, but close anyway before switching
        # the database name: a connection opened by setup would keep the old one.
        connections.close_all()
        settings.DATABASES["default"]["NAME"] = spec.db_name
        connection.settings_dict["NAME"] = spec.db_name
        settings.AUDIT_JSONL_PATH = spec.jsonl_path
        rng = random.Random(spec.seed)
        calls = [
            random_write(rng, lead_id=rng.choice(spec.leads), correlation_id=spec.correlation_id)
            for _ in range(spec.count)
        ]
        connection.ensure_connection()
        barrier.wait(BARRIER_TIMEOUT)
        started = perf_counter()
        for kwargs in calls:
            record_event(**kwargs)
        mirror.flush()  # the mirror's lines count toward the throughput
        results.put((spec.index, "ok", perf_counter() - started))
    except BaseException:
        barrier.abort()
        results.put((spec.index, "error", traceback.format_exc()))
        raise
    finally:
        connections.close_all()
