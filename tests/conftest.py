import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection

from audit.mirror import mirror
from core import writes

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def audit_mirror_path(settings, tmp_path):
    """Each test writes its JSON Lines mirror into its own folder."""
    path = tmp_path / "logs" / "audit.log"
    settings.AUDIT_JSONL_PATH = str(path)
    yield path
    mirror.close()


@pytest.fixture(autouse=True)
def forget_write_refusals():
    """A refused write is remembered per process for /healthz (core.writes):
    one test's outage must not show in the next test's health check."""
    writes.note_accepted()
    yield
    writes.note_accepted()


def database_url() -> str:
    """A URL for the test database, for processes the tests start."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"postgresql://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


class WorkerProcess:
    """A `manage.py run_worker` process on the test database, and its stderr lines."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.put(line)
        self._lines.put("")

    def wait_for(self, text: str, timeout: float = 60) -> None:
        """Until the worker writes `text` to stderr; fails if it ends first."""
        while True:
            line = self._lines.get(timeout=timeout)
            self.seen.append(line)
            assert line, f"the worker ended before saying {text!r}:\n{''.join(self.seen)}"
            if text in line:
                return

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@contextmanager
def worker_process(worker_id: str, *, env: dict[str, str] | None = None) -> Iterator[WorkerProcess]:
    """A real task worker for tests marked django_db(transaction=True): it sees
    only committed rows. Killed on the way out if the test did not stop it."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_worker",
            "--no-reload",
            "--no-startup-delay",
            f"--worker-id={worker_id}",
            "--heartbeat-interval=1",
            "--interval=0.2",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": database_url(),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    worker = WorkerProcess(proc)
    try:
        worker.wait_for(f"worker {worker_id}: alive, heartbeat every 1.0s")
        yield worker
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def run_python():
    """Run a Python snippet in a fresh process with Django set up on the test database."""

    def run(
        code: str, *, env: dict[str, str] | None = None, timeout: int = 120
    ) -> subprocess.Popen:
        full_env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "orchestrator.settings",
            "DATABASE_URL": database_url(),
            **(env or {}),
        }
        prelude = "import django; django.setup()\n"
        return subprocess.Popen(
            [sys.executable, "-c", prelude + code],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    return run


@pytest.fixture
def web_source(db):
    from leads.models import LeadSource

    return LeadSource.objects.create(name="Website", slug="website", kind="web_form")


PIPELINE_CONFIG = {
    "qualification": {
        "base_score": 10,
        "rules": [
            {
                "name": "decision maker",
                "when": {"field": "title", "op": "regex", "value": r"\b(cto|vp|head)\b"},
                "points": 40,
            },
            {
                "name": "target country",
                "when": {"field": "country", "op": "in", "value": ["DE", "US"]},
                "points": 20,
            },
        ],
        "thresholds": {"qualified": 50, "nurture": 25},
        "disqualify": {"free_mail": True, "disposable": True, "blocked_domains": ["rival.example"]},
    },
    "routing": {
        "rules": [
            {
                "name": "territory DE",
                "when": {"field": "country", "op": "equals", "value": "DE"},
                "team": "emea",
            }
        ],
        "default_team": "americas",
        "fallback_owner": "fallback",
    },
}


@pytest.fixture
def pipeline(db, django_user_model):
    """A workflow with a web source, two teams of owners and a fallback owner."""
    from leads.models import LeadSource, Team, TeamMember
    from leads.workflows.models import Workflow

    workflow = Workflow.objects.create(name="sales", config=PIPELINE_CONFIG)
    source = LeadSource.objects.create(
        name="Website", slug="site", kind="web_form", workflow=workflow
    )
    users = {
        name: django_user_model.objects.create_user(name)
        for name in ["anna", "ben", "cara", "dan", "fallback"]
    }
    emea = Team.objects.create(slug="emea", name="EMEA")
    americas = Team.objects.create(slug="americas", name="Americas")
    for name in ["anna", "ben"]:
        TeamMember.objects.create(team=emea, user=users[name])
    for name in ["cara", "dan"]:
        TeamMember.objects.create(team=americas, user=users[name])
    return {
        "workflow": workflow,
        "source": source,
        "users": users,
        "emea": emea,
        "americas": americas,
    }


# --- dashboard users -----------------------------------------------------------------


def _user_with_role(django_user_model, username: str, role: str | None):
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user(username=username, password="pw-" + username)
    if role:
        # get_or_create: a transactional test before this one flushed the migration's rows.
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.fixture
def auditor(db, django_user_model):
    return _user_with_role(django_user_model, "audrey", "Auditor")


@pytest.fixture
def operator(db, django_user_model):
    return _user_with_role(django_user_model, "oscar", "Operator")


@pytest.fixture
def norole(db, django_user_model):
    return _user_with_role(django_user_model, "nobody", None)


@pytest.fixture
def auditor_client(client, auditor):
    client.force_login(auditor)
    return client


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


HTMX = {"HTTP_HX_REQUEST": "true"}
