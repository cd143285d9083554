"""Every scheduled command takes its lock: an overlapping run skips instead of doubling work."""

import os
import queue
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command, get_commands, load_command_class

from audit.integrity import seal_pending
from audit.models import AuditEvent, AuditSeal
from audit.services import record_event
from core import locks
from core.models import CommandLock
from core.scheduled import ScheduledCommand
from leads.workflows.models import Workflow

ROOT = Path(__file__).resolve().parents[2]
SKIPPED = "another run holds the lock; skipping this one."

# Positional arguments a command needs to run at all.
ARGS = {"run_workflow": ["sales"], "send_report": ["daily"]}


def scheduled_commands() -> list[str]:
    names = []
    for name, app in sorted(get_commands().items()):
        if app == "django.core":
            continue
        if isinstance(load_command_class(app, name), ScheduledCommand):
            names.append(name)
    return names


def test_the_scheduled_commands_are_the_known_ones():
    # A new scheduled command belongs in deploy/ too (tests/orchestrator/test_deploy.py).
    assert set(scheduled_commands()) >= {
        "check_alerts",
        "poll_inbox",
        "prune_audit",
        "run_workflow",
        "seal_audit",
        "send_followups",
        "send_report",
        "sync_crm",
    }


@pytest.mark.django_db
@pytest.mark.parametrize("name", scheduled_commands())
def test_each_scheduled_command_skips_while_its_lock_is_held(name):
    Workflow.objects.create(name="sales")
    command = load_command_class(get_commands()[name], name)
    args = ARGS.get(name, [])
    options = vars(command.create_parser("manage.py", name).parse_args(args))
    lock_name = command.get_lock_name(**options)
    assert lock_name, f"{name} runs without a lock by default"
    holder = locks.acquire(lock_name, ttl=timedelta(minutes=5))
    events = AuditEvent.objects.count()

    out = StringIO()
    call_command(name, *args, stdout=out, stderr=StringIO())

    assert out.getvalue() == f"{lock_name}: {SKIPPED}\n"
    assert AuditEvent.objects.count() == events
    assert CommandLock.objects.get(name=lock_name).holder == holder


def _lines(stream) -> "queue.Queue[str]":
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _manage(*args: str) -> subprocess.Popen:
    from tests.conftest import database_url

    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url(), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_real_processes_the_second_skips_without_working():
    first = _manage("seal_audit", "--loop", "--interval=3600")
    try:
        out = _lines(first.stdout)
        # The first pass is done and the first process now waits, lock held.
        assert out.get(timeout=60) == "Sealed 0 events.\n"
        assert CommandLock.objects.filter(name="seal_audit").exists()
        record_event(event_type="lead_ingested", lead_id="LEAD-000001")

        second = _manage("seal_audit")
        stdout, stderr = second.communicate(timeout=60)
        assert second.returncode == 0, stderr
        assert stdout == f"seal_audit: {SKIPPED}\n"
        assert not AuditSeal.objects.exists()  # the second did no work

        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    # The first released its lock on the way out; the event was there to seal.
    assert not CommandLock.objects.exists()
    assert seal_pending().event_count == 1
