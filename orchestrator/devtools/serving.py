"""The processes `make demo` runs while it serves: the pipeline and the web server.

Each is a child process of `manage.py serve_demo` with the same environment,
started in order and stopped when serve_demo stops (Ctrl+C, SIGTERM, or one
of them dying), so none outlives it.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from django.conf import settings

from orchestrator.devtools.demo import WORKFLOW


@dataclass(frozen=True)
class Child:
    name: str
    argv: list[str]
    quiet: bool = True  # output to the log file, not the terminal


def manage(*args: str) -> list[str]:
    return [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), *args]


def pipeline_children(*, interval: float = 2.0) -> list[Child]:
    """What production runs from cron or systemd, as loops a few seconds apart,
    so a lead posted to the API is routed, synced and mailed within seconds."""
    every = f"--interval={interval:g}"
    return [
        Child(
            "task worker",
            manage(
                "run_worker",
                "--no-reload",
                "--no-startup-delay",
                "--worker-id=demo-worker",
                "--interval=0.5",
            ),
        ),
        Child("workflow runner", manage("run_workflow", WORKFLOW, "--loop", every)),
        # The worker syncs each routed lead; this retries the failed ones when due.
        Child("CRM sync", manage("sync_crm", "--loop", "--interval=10")),
        Child("follow-up sender", manage("send_followups", "--loop", every)),
    ]


def web_child(*, port: int) -> Child:
    # No autoreload: its file watcher would be a parent whose SIGTERM leaves the
    # serving grandchild behind.
    return Child("web server", manage("runserver", "--noreload", f"127.0.0.1:{port}"), quiet=False)


class ChildDied(Exception):
    pass


def supervise(
    children: list[Child],
    *,
    env: Mapping[str, str],
    log: IO[str],
    started: threading.Event | None = None,
    grace: float = 10.0,
) -> None:
    """Run `children` until SIGINT/SIGTERM or until one exits; then stop them all.

    Ctrl+C reaches the children too (one process group); they get `grace`
    seconds to finish their unit of work after SIGTERM, then are killed.
    ChildDied if one exited on its own (a port taken, a bad database URL).
    """
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    running: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for child in children:
            running[child.name] = subprocess.Popen(
                child.argv,
                cwd=settings.BASE_DIR,
                env=dict(env),
                stdout=log if child.quiet else None,
                stderr=log if child.quiet else None,
            )
        if started is not None:
            started.set()
        while not stop.wait(0.5):
            for name, proc in running.items():
                if proc.poll() is not None:
                    raise ChildDied(f"the {name} stopped (exit code {proc.returncode})")
    except KeyboardInterrupt:
        # Ctrl+C in a terminal reached the children as well (one process group):
        # let them finish first. Another signal now would make the task worker
        # abandon the task it is running.
        _wait(running.values(), timeout=3)
    finally:
        for proc in running.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in _wait(running.values(), timeout=grace):
            proc.kill()
            proc.wait()
        signal.signal(signal.SIGTERM, previous)


def _wait(
    procs: Iterable[subprocess.Popen[bytes]], *, timeout: float
) -> list[subprocess.Popen[bytes]]:
    """Wait up to `timeout` seconds in all for `procs` to exit; returns those still alive."""
    deadline = time.monotonic() + timeout
    alive = []
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            alive.append(proc)
    return alive


def child_env(*, port: int) -> dict[str, str]:
    """The children's environment: this one, with the demo's settings."""
    env = dict(os.environ)
    env.update(
        DEBUG="true",
        PYTHONUNBUFFERED="1",
        # Follow-ups go to each sender process's in-memory mailbox, as in load_demo:
        # nothing leaves the machine.
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
    )
    # Tracking links in the emails point at the server the demo runs.
    env.setdefault("FOLLOWUPS_BASE_URL", f"http://127.0.0.1:{port}")
    return env
