"""Scaling out on PostgreSQL, against a real primary and hot standby started here on
loopback: web and worker processes that share nothing but the primary, and
dashboard reads from the standby as a read replica (DATABASE_REPLICA_URL).

The project runs in subprocesses with only those URLs, as separate machines
would (the suite's own database is not part of this). For the replica, the
standby's replay is paused to make it visibly behind: a page that reads the
replica then misses what the primary just stored, which is how the test tells
where each read went."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PGBIN = Path("/usr/lib/postgresql/15/bin")
ROOT = Path(__file__).resolve().parents[2]
HINT = "PostgreSQL 15 not installed: apt-get install postgresql-15"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(command: str) -> None:
    subprocess.run(["su", "postgres", "-c", command], check=True, capture_output=True, timeout=120)


def _psql(port: int, sql: str, db: str = "postgres") -> str:
    out = subprocess.run(
        [
            str(PGBIN / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "postgres",
            "-d",
            db,
            "-Atqc",
            sql,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout.strip()


@pytest.fixture(scope="module")
def pg_pair() -> Iterator[tuple[int, int]]:
    """(primary port, standby port): a primary and a hot standby streaming from it."""
    if not (PGBIN / "initdb").exists() or os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(HINT + " (and the tests run as root, to start it as postgres)")
        pytest.skip(HINT)
    root = Path(tempfile.mkdtemp(prefix="orchestrator-pgpair-"))
    primary, standby = root / "primary", root / "standby"
    ports = _free_port(), _free_port()
    shutil.chown(root, "postgres", "postgres")
    started: list[Path] = []
    try:
        _as_postgres(
            f"{PGBIN}/initdb -D {primary} -U postgres --auth=trust -E UTF8 --locale=C.UTF-8"
        )
        options = "-c listen_addresses=127.0.0.1 -c fsync=off -c unix_socket_directories="
        _as_postgres(
            f"{PGBIN}/pg_ctl -D {primary} -l {root}/primary.log -w start "
            f"-o '-p {ports[0]} {options}{root} -c wal_level=replica -c max_wal_senders=4'"
        )
        started.append(primary)
        # -R: standby.signal and primary_conninfo, so it starts as a streaming standby.
        _as_postgres(
            f"{PGBIN}/pg_basebackup -h 127.0.0.1 -p {ports[0]} -U postgres -D {standby} "
            "-R -X stream"
        )
        _as_postgres(
            f"{PGBIN}/pg_ctl -D {standby} -l {root}/standby.log -w start "
            f"-o '-p {ports[1]} {options}{root} -c hot_standby=on'"
        )
        started.append(standby)
        assert _psql(ports[1], "SELECT pg_is_in_recovery()") == "t"
        yield ports
    finally:
        for data in reversed(started):
            subprocess.run(
                ["su", "postgres", "-c", f"{PGBIN}/pg_ctl -D {data} -m immediate -w stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)


# Runs in the subprocess, with DATABASE_URL and DATABASE_REPLICA_URL set.
CLIENT = r"""
import json, time
import django
django.setup()
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import Client
from django.test.utils import override_settings
from django.urls import reverse

from audit.services import record_event


def caught_up():
    # The standby has replayed everything the primary has written so far.
    with connections["default"].cursor() as c:
        c.execute("SELECT pg_current_wal_lsn()")
        lsn = c.fetchone()[0]
    for _ in range(200):
        with connections["replica"].cursor() as c:
            c.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn])
            if c.fetchone()[0]:
                return
        time.sleep(0.05)
    raise SystemExit("the standby did not catch up")


def replay(paused):
    with connections["replica"].cursor() as c:
        c.execute("SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()")


out = {}
user = get_user_model().objects.create_superuser("replica-admin", "a@example.com", "pw")
caught_up()
with override_settings(ALLOWED_HOSTS=["testserver"], SECURE_SSL_REDIRECT=False):
    browser = Client()
    browser.force_login(user)
    events = reverse("event-list")

    replay(paused=True)
    # Stored on the primary while the standby stands still.
    event = record_event(event_type="lead_ingested", lead_id="LEAD-990001")
    marker = f'data-event-id="{event.id}"'.encode()
    page = browser.get(events, {"lead": "LEAD-990001"})
    out["replica_page_status"] = page.status_code
    out["replica_page_shows_new_event"] = marker in page.content
    out["logged_in_from_primary_session"] = b"replica-admin" in page.content

    # A write by this browser: a saved view, through the form.
    saved = browser.post(
        reverse("saved-view-create"),
        {"name": "mine", "path": events, "query": "lead=LEAD-990001"},
    )
    out["write_status"] = saved.status_code
    out["pin_cookie"] = "primary_until" in saved.cookies
    # Its next pages read the primary: its own write, and the event, are there.
    page = browser.get(events, {"lead": "LEAD-990001"})
    out["pinned_page_shows_new_event"] = marker in page.content

    # Another browser, not pinned, still reads the paused replica.
    other = Client()
    other.force_login(user)
    out["other_browser_shows_new_event"] = marker in other.get(
        events, {"lead": "LEAD-990001"}
    ).content

    replay(paused=False)
    caught_up()
    out["after_catch_up_shows_new_event"] = marker in other.get(
        events, {"lead": "LEAD-990001"}
    ).content
print("RESULT " + json.dumps(out))
"""


def test_pages_read_the_replica_and_a_browser_that_wrote_reads_the_primary(pg_pair, tmp_path):
    primary, standby = pg_pair
    _psql(primary, "CREATE DATABASE orchestrator")
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{primary}/orchestrator",
        "DATABASE_REPLICA_URL": f"postgresql://postgres@127.0.0.1:{standby}/orchestrator",
        "DJANGO_SETTINGS_MODULE": "orchestrator.settings",
        "AUDIT_JSONL_PATH": str(tmp_path / "audit.log"),
    }
    env.pop("CI", None)
    manage = [sys.executable, str(ROOT / "manage.py")]
    for command in (["migrate", "--noinput", "-v0"], ["createcachetable"]):
        subprocess.run(manage + command, env=env, check=True, cwd=ROOT, timeout=600)
    # The replica is a copy: migrate wrote nothing there, and cannot.
    deadline = time.monotonic() + 30
    while (
        _psql(standby, "SELECT to_regclass('audit_auditevent') IS NOT NULL", "orchestrator") != "t"
    ):
        assert time.monotonic() < deadline, "the standby never received the schema"
        time.sleep(0.1)
    run = subprocess.run(
        [sys.executable, "-c", CLIENT],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    [line] = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    assert result == {
        "replica_page_status": 200,
        # The page came from the replica, paused before the event was stored...
        "replica_page_shows_new_event": False,
        # ...while who is logged in came from the primary.
        "logged_in_from_primary_session": True,
        "write_status": 302,
        "pin_cookie": True,
        "pinned_page_shows_new_event": True,
        "other_browser_shows_new_event": False,
        "after_catch_up_shows_new_event": True,
    }


# --- several web and worker processes, one PostgreSQL server -----------------------------

SETUP = r"""
import django
django.setup()
from django.contrib.auth import get_user_model
from leads.crm.models import CrmConnection
from leads.intake.apikeys import api_key_create
from leads.models import LeadSource, Team, TeamMember
from leads.workflows.models import Workflow
from tests.conftest import PIPELINE_CONFIG

users = {n: get_user_model().objects.create_user(n) for n in ["anna", "cara", "fallback"]}
for slug, name in [("emea", "anna"), ("americas", "cara")]:
    team = Team.objects.create(slug=slug, name=slug.upper())
    TeamMember.objects.create(team=team, user=users[name])
config = {**PIPELINE_CONFIG, "steps": [{"kind": "crm_sync", "connection": "hooks"}]}
workflow = Workflow.objects.create(name="sales", config=config)
source = LeadSource.objects.create(name="Website", slug="site", kind="web_form", workflow=workflow)
CrmConnection.objects.create(
    name="hooks",
    kind="webhook",
    base_url=BASE_URL,
    credentials={"secret_env": "CRM_SCALE_WEBHOOK_SECRET"},
    options={"path": "/hooks/leads"},
)
_key, raw = api_key_create(source=source)
print("KEY " + raw)
"""

LEADS = 24


def _wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"process on port {port} exited with {proc.returncode}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


def test_two_web_and_two_worker_processes_share_one_postgresql(pg_pair, tmp_path, httpserver):
    """What several machines run, on one: each process knows only DATABASE_URL."""
    import requests

    primary, _standby = pg_pair
    _psql(primary, "CREATE DATABASE scaleout")
    received: list[dict] = []

    def receive(request):
        from werkzeug import Response

        payload = json.loads(request.get_data())
        received.append(payload)
        body = json.dumps({"id": f"wh-{payload['lead']['public_id']}", "created": True})
        return Response(body, content_type="application/json")

    httpserver.expect_request("/hooks/leads", method="POST").respond_with_handler(receive)
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{primary}/scaleout",
        "DJANGO_SETTINGS_MODULE": "orchestrator.settings",
        "AUDIT_JSONL_PATH": "",
        "CRM_SCALE_WEBHOOK_SECRET": "whsec-scale",
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    env.pop("DATABASE_REPLICA_URL", None)
    env.pop("CI", None)
    manage = [sys.executable, str(ROOT / "manage.py")]
    for command in (["migrate", "--noinput", "-v0"], ["createcachetable"]):
        subprocess.run(manage + command, env=env, check=True, cwd=ROOT, timeout=600)
    setup = subprocess.run(
        [sys.executable, "-c", f"BASE_URL = {httpserver.url_for('/')!r}\n" + SETUP],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert setup.returncode == 0, setup.stderr[-3000:]
    [key] = [line[4:] for line in setup.stdout.splitlines() if line.startswith("KEY ")]

    ports = [_free_port(), _free_port()]
    logs = [open(tmp_path / f"p{i}.log", "w") for i in range(4)]  # noqa: SIM115 - closed below
    procs: list[subprocess.Popen] = []
    try:
        for i, port in enumerate(ports):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "gunicorn",
                        "orchestrator.wsgi",
                        "-w",
                        "1",
                        "-b",
                        f"127.0.0.1:{port}",
                    ],
                    env=env,
                    cwd=ROOT,
                    stdout=logs[i],
                    stderr=subprocess.STDOUT,
                )
            )
        for i in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        *manage,
                        "db_worker",
                        "--interval",
                        "0.2",
                        "--no-startup-delay",
                        "--worker-id",
                        f"machine-{i}",
                    ],
                    env=env,
                    cwd=ROOT,
                    stdout=logs[2 + i],
                    stderr=subprocess.STDOUT,
                )
            )
        for port, proc in zip(ports, procs, strict=False):
            _wait_for_port(port, proc)

        # Leads arrive through both web processes.
        for n in range(LEADS):
            port = ports[n % 2]
            response = requests.post(
                f"http://127.0.0.1:{port}/api/v1/leads",
                json={"email": f"lead{n}@acme.example", "title": "CTO", "country": "DE"},
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            assert response.status_code == 201, response.text
        # The workflow runs (from any machine) and queues one CRM sync per lead...
        subprocess.run([*manage, "run_workflow", "sales"], env=env, check=True, cwd=ROOT)
        # ...which the two workers share.
        deadline = time.monotonic() + 120
        while len({p["lead"]["public_id"] for p in received}) < LEADS:
            assert time.monotonic() < deadline, f"{len(received)} of {LEADS} synced"
            time.sleep(0.2)
        time.sleep(1)  # any duplicate would arrive now
        done = _psql(
            primary,
            "SELECT count(*), count(DISTINCT worker_ids->>0) "
            "FROM django_tasks_database_dbtaskresult WHERE status = 'SUCCESSFUL'",
            "scaleout",
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()
    # Every lead synced exactly once, and both workers took part.
    assert sorted(p["lead"]["public_id"] for p in received) == sorted(
        {p["lead"]["public_id"] for p in received}
    )
    assert len(received) == LEADS
    assert done == f"{LEADS}|2"
    events = _psql(
        primary,
        "SELECT event_type, count(*) FROM audit_auditevent WHERE event_type IN "
        "('lead_ingested', 'lead_qualified', 'crm_create') GROUP BY 1 ORDER BY 1",
        "scaleout",
    )
    assert events.splitlines() == [
        f"crm_create|{LEADS}",
        f"lead_ingested|{LEADS}",
        f"lead_qualified|{LEADS}",
    ]
