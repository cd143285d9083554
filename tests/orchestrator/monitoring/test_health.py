"""GET /healthz: database, worker heartbeat and workflow runs, 200 or 503 with JSON."""

import json
import os
import socket
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine

from audit.models import AuditEvent
from leads.workflows.models import Workflow, WorkflowRun
from leads.workflows.steps import run_step
from orchestrator.models import WorkerHeartbeat
from orchestrator.monitoring.heartbeat import FORGET_AFTER, beat, forget

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


TOKEN = "monitor-token-for-tests"


@pytest.fixture(autouse=True)
def healthz_token(settings):
    settings.HEALTHZ_TOKEN = TOKEN


def healthz(client, query="", *, token=TOKEN):
    """The monitor's view: with the token, every check's details."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.get("/healthz" + query, headers=headers)
    assert response["Content-Type"] == "application/json"
    return response, response.json()


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def worker(db, frozen):
    beat(worker_id="w1", started_at=NOW)


@pytest.mark.django_db
def test_all_ok_is_200_without_login_and_writes_nothing(client, worker):
    events = AuditEvent.objects.count()

    response, body = healthz(client)

    assert response.status_code == 200
    assert body["status"] == "ok"
    assert body["time"] == NOW.isoformat()
    assert body["checks"]["database"] == {"ok": True, "writable": True}
    assert body["checks"]["worker"] == {
        "ok": True,
        "last_heartbeat_seconds_ago": 0.0,
        "max_age_seconds": 120,
        "workers_alive": 1,
        "next_task_waiting_seconds": None,
    }
    assert body["checks"]["workflows"] == {"ok": True, "workflows": {}}
    # Load balancers poll this: no audit events, no session, never cached.
    assert AuditEvent.objects.count() == events
    assert "sessionid" not in response.cookies
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_no_worker_ever_started_is_503(client, frozen):
    response, body = healthz(client)
    assert response.status_code == 503
    assert body["status"] == "fail"
    assert body["checks"]["database"]["ok"] is True
    worker = body["checks"]["worker"]
    assert worker["ok"] is False
    assert worker["last_heartbeat_seconds_ago"] is None
    assert worker["error"] == "no worker running (start manage.py run_worker)"


@pytest.mark.django_db
def test_a_stale_heartbeat_is_503(client, settings, worker, frozen):
    settings.HEALTHZ_WORKER_MAX_AGE_SECONDS = 60
    frozen.shift(60)
    response, body = healthz(client)
    assert response.status_code == 200
    assert body["checks"]["worker"]["last_heartbeat_seconds_ago"] == 60.0

    frozen.shift(1)
    response, body = healthz(client)
    assert response.status_code == 503
    assert body["checks"]["worker"]["ok"] is False
    assert body["checks"]["worker"]["workers_alive"] == 0
    assert body["checks"]["worker"]["error"] == (
        "worker heartbeat stale (worker down, or the database refusing its writes)"
    )


@pytest.mark.django_db
def test_one_live_worker_of_several_is_enough(client, worker, frozen):
    frozen.shift(600)  # w1 died without a goodbye
    beat(worker_id="w2", started_at=NOW)
    response, body = healthz(client)
    assert response.status_code == 200
    assert body["checks"]["worker"]["workers_alive"] == 1


@pytest.mark.django_db
def test_beats_update_one_row_and_old_rows_are_forgotten(frozen):
    beat(worker_id="w1", started_at=NOW)
    frozen.shift(30)
    beat(worker_id="w1", started_at=NOW)
    row = WorkerHeartbeat.objects.get()
    assert (row.started_at, row.seen_at, row.pid) == (NOW, NOW + timedelta(seconds=30), os.getpid())

    frozen.shift(FORGET_AFTER + timedelta(seconds=1))
    beat(worker_id="w2", started_at=NOW)
    assert list(WorkerHeartbeat.objects.values_list("worker_id", flat=True)) == ["w2"]
    forget(worker_id="w2")
    assert not WorkerHeartbeat.objects.exists()


@pytest.mark.django_db
def test_a_task_waiting_too_long_fails_the_worker_check(client, settings, frozen):
    settings.HEALTHZ_QUEUE_MAX_WAIT_SECONDS = 300
    run_step.enqueue("mark", 1, {}, "corr-1")
    frozen.shift(300)
    beat(worker_id="w1", started_at=NOW)
    response, body = healthz(client)
    assert response.status_code == 200
    assert body["checks"]["worker"]["next_task_waiting_seconds"] == 300.0

    frozen.shift(1)
    beat(worker_id="w1", started_at=NOW)
    response, body = healthz(client)
    assert response.status_code == 503
    assert body["checks"]["worker"]["error"] == "tasks waiting too long"
    assert body["checks"]["worker"]["last_heartbeat_seconds_ago"] == 0.0


@pytest.mark.django_db
def test_workflow_runs_are_reported_and_judged_when_configured(client, settings, worker, frozen):
    sales = Workflow.objects.create(name="sales")
    Workflow.objects.create(name="support")
    Workflow.objects.create(name="retired", enabled=False)
    WorkflowRun.objects.create(
        workflow=sales, started_at=NOW - timedelta(minutes=10), status="succeeded"
    )
    # A dry run is no proof the schedule runs.
    WorkflowRun.objects.create(workflow=sales, started_at=NOW, dry_run=True, status="succeeded")

    response, body = healthz(client)
    assert response.status_code == 200  # HEALTHZ_WORKFLOW_MAX_AGE_SECONDS=0: report only
    assert body["checks"]["workflows"]["workflows"] == {
        "sales": {"ok": True, "last_run_seconds_ago": 600.0, "last_status": "succeeded"},
        "support": {"ok": True, "last_run_seconds_ago": None, "last_status": None},
    }

    settings.HEALTHZ_WORKFLOW_MAX_AGE_SECONDS = 900
    response, body = healthz(client)
    assert response.status_code == 503
    workflows = body["checks"]["workflows"]
    assert workflows["ok"] is False
    assert workflows["max_age_seconds"] == 900
    assert workflows["workflows"]["sales"]["ok"] is True
    assert workflows["workflows"]["support"]["ok"] is False  # never ran

    WorkflowRun.objects.create(
        workflow=Workflow.objects.get(name="support"), started_at=NOW, status="running"
    )
    response, body = healthz(client)
    assert response.status_code == 200


@pytest.mark.django_db
def test_check_selects_a_subset(client, frozen):
    response, body = healthz(client, "?check=database")
    assert response.status_code == 200  # no worker, but not asked
    assert set(body["checks"]) == {"database"}

    response, body = healthz(client, "?check=worker,database")
    assert response.status_code == 503
    assert list(body["checks"]) == ["database", "worker"]


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["?check=cpu", "?check=,", "?check=database,bogus"])
def test_an_unknown_check_is_400(client, query):
    response, body = healthz(client, query)
    assert response.status_code == 400
    assert body["status"] == "error"
    assert "unknown check" in body["error"]
    assert "known: database, worker, workflows" in body["error"]


@pytest.mark.django_db
def test_only_get_and_head(client, worker):
    assert client.head("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405


@pytest.mark.django_db
def test_exempt_from_the_https_redirect(client, settings, worker):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz").status_code == 200
    assert client.get("/accounts/login/").status_code == 301


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


HEALTHZ_IN_A_PROCESS = """
from django.test import Client
response = Client(HTTP_HOST="localhost").get("/healthz", headers={"Authorization": "Bearer t"})
print(response.status_code)
print(response.content.decode())
"""


@pytest.mark.parametrize("engine", ["postgresql", "sqlite"])
def test_database_down_is_503(run_python, tmp_path, engine):
    # A real outage, in a process of its own: PostgreSQL on a port nobody
    # listens on, or an SQLite file in a folder that does not exist.
    port = _closed_port()
    url = {
        "postgresql": f"postgresql://orchestrator@127.0.0.1:{port}/orchestrator",
        "sqlite": f"sqlite:///{tmp_path}/missing/db.sqlite3",
    }[engine]
    proc = run_python(HEALTHZ_IN_A_PROCESS, env={"DATABASE_URL": url, "HEALTHZ_TOKEN": "t"})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    status, body = out.split("\n", 1)
    assert status == "503"
    report = json.loads(body)
    assert report["status"] == "fail"
    assert report["checks"] == {
        "database": {"ok": False, "error": "database unreachable"},
        "worker": {"ok": False, "error": "database unreachable"},
        "workflows": {"ok": False, "error": "database unreachable"},
    }
    # The driver's message (host, port, path) goes to the log, not to the public.
    assert str(port) not in body and "missing" not in body
    assert "healthz: database check failed" in err


@contextmanager
def read_only_session():
    """The connection the view uses refuses writes, as a read-only server would."""
    from django.db import connection

    statements = {
        "postgresql": (
            "SET default_transaction_read_only = on",
            "RESET default_transaction_read_only",
        ),
        "sqlite": ("PRAGMA query_only = ON", "PRAGMA query_only = OFF"),
    }[connection.vendor]
    with connection.cursor() as cursor:
        cursor.execute(statements[0])
    try:
        yield connection.vendor
    finally:
        with connection.cursor() as cursor:
            cursor.execute(statements[1])


@pytest.mark.django_db(transaction=True)
def test_a_read_only_database_is_503_and_the_other_checks_still_run(client, worker):
    with read_only_session() as vendor:
        response, body = healthz(client)
        assert response.status_code == 503
        reason = {"postgresql": "transaction_read_only", "sqlite": "query_only"}[vendor]
        assert body["checks"]["database"] == {
            "ok": False,
            "writable": False,
            "error": f"database refuses writes ({reason})",
        }
        # Reads still work: the worker's heartbeat is judged, not assumed down.
        assert body["checks"]["worker"]["ok"] is True
        anonymous, anonymous_body = healthz(client, token="")
        assert anonymous.status_code == 503 and anonymous_body == {"status": "fail"}

    response, body = healthz(client)
    assert response.status_code == 200
    assert body["checks"]["database"] == {"ok": True, "writable": True}


def test_an_sqlite_file_the_process_may_not_write_is_read_only(tmp_path, monkeypatch):
    from django.db import connection

    from orchestrator.monitoring import health

    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    path = tmp_path / "db.sqlite3"
    path.write_bytes(b"")
    monkeypatch.setitem(connection.settings_dict, "NAME", str(path))
    monkeypatch.setattr(health.os, "access", lambda p, mode: p != str(path))

    class Cursor:
        answers = {"PRAGMA query_only": 0, "PRAGMA page_count": 1, "PRAGMA max_page_count": 9}

        def execute(self, sql):
            self.value = self.answers[sql]

        def fetchone(self):
            return (self.value,)

    assert health._sqlite_read_only_reason(Cursor()) == "file not writable"
    monkeypatch.setattr(health.os, "access", lambda p, mode: True)
    assert health._sqlite_read_only_reason(Cursor()) is None


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_is_healthy_until_it_stops(client):
    from tests.conftest import worker_process

    with worker_process("healthz-test") as worker:
        response, body = healthz(client)
        assert response.status_code == 200, body
        assert body["checks"]["worker"]["workers_alive"] == 1
        assert worker.stop() == 0

    # A worker that stopped on purpose is gone at once, not after the max age.
    assert not WorkerHeartbeat.objects.exists()
    response, body = healthz(client)
    assert response.status_code == 503
    assert body["checks"]["worker"]["error"] == "no worker running (start manage.py run_worker)"


@pytest.mark.django_db
def test_anonymous_callers_get_ok_or_fail_only(client, worker):
    response, body = healthz(client, token="")
    assert response.status_code == 200 and body == {"status": "ok"}
    response, body = healthz(client, token="a-guess")
    assert response.status_code == 200 and body == {"status": "ok"}
    forget(worker_id="w1")
    response, body = healthz(client, token="")
    assert response.status_code == 503 and body == {"status": "fail"}


@pytest.mark.django_db
def test_a_dashboard_user_sees_the_details_and_a_user_without_a_role_does_not(
    client, auditor, norole, worker
):
    client.force_login(norole)
    assert healthz(client, token="")[1] == {"status": "ok"}
    client.force_login(auditor)
    body = healthz(client, token="")[1]
    assert body["checks"]["worker"]["workers_alive"] == 1


@pytest.mark.django_db
def test_without_a_token_configured_no_bearer_value_opens_the_details(client, settings, worker):
    settings.HEALTHZ_TOKEN = ""
    for token in ("", " ", "None"):
        assert healthz(client, token=token)[1] == {"status": "ok"}
