"""Lead intake under load: the lead API (and its batch endpoint) through gunicorn.

What a customer's form backend sees: gunicorn with deploy/gunicorn.conf.py,
its sync workers, the real middleware, API keys, the rate limit (raised so it
counts without refusing), Idempotency-Keys and the dedupe, against the
configured database. Clients are threads of this process speaking plain
http.client (each request a new connection, as gunicorn's sync workers close
them), so the load generator costs little of the machine it shares.

Every lead a client saw acknowledged is then looked up: it must be stored
once, with one lead_ingested event per acknowledged request.
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.db import connection

from audit.models import AuditEvent
from leads.intake.apikeys import api_key_create
from leads.models import Lead, LeadSource
from leads.workflows.models import Workflow
from orchestrator.devtools.sampling import Timing

SOURCE_SLUG = "bench-intake"
# One lead in this many repeats an address sent before: the dedupe's merge path.
REPEAT_EVERY = 10
READY_TIMEOUT = 120.0


class IntakeBenchError(Exception):
    """The server did not start, or what the clients were told is not what was stored."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def gunicorn(*, workers: int, env: dict[str, str] | None = None) -> Iterator[tuple[int, Any]]:
    """gunicorn with the production config on a free loopback port; yields (port, process).

    The environment is this process's, so the server uses the same database."""
    port = free_port()
    logdir = Path(tempfile.mkdtemp(prefix="intake-bench-"))
    child_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE")
        or str(settings.SETTINGS_MODULE),
        "DATABASE_URL": database_url(),
        "AUDIT_JSONL_PATH": settings.AUDIT_JSONL_PATH or "",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": str(workers),
        "GUNICORN_ACCESS_LOG": str(logdir / "access.log"),
        # Counted on every request, never refusing one: the limiter's cost is in
        # the figures, its 429s are not.
        "LEADS_API_RATE": "100000000/m",
        # As deploy/orchestrator.env: a worker keeps its connection between requests.
        "DB_CONN_MAX_AGE": "60",
        **(env or {}),
    }
    root = Path(settings.BASE_DIR)
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "--config",
            str(root / "deploy" / "gunicorn.conf.py"),
        ],
        cwd=root,
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=(logdir / "server.log").open("w"),
        start_new_session=True,
    )
    try:
        _wait_ready(port, server, logdir / "server.log")
        yield port, server
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def database_url() -> str:
    """A DATABASE_URL for this process's database (under tests, the test database)."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    where = f"{db.get('HOST') or 'localhost'}{':' + str(db['PORT']) if db.get('PORT') else ''}"
    return f"postgresql://{quote(db.get('USER') or '', safe='')}{password}@{where}/{db['NAME']}"


def _wait_ready(port: int, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise IntakeBenchError(f"gunicorn exited at start:\n{log.read_text()[-3000:]}")
        try:
            status, _ = request(port, "GET", "/api/v1/leads", None, {})
            if status == 405:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise IntakeBenchError(f"gunicorn did not answer within {READY_TIMEOUT:g} s")


def request(
    port: int, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def bench_key(name: str) -> tuple[str, str]:
    """A fresh leads:write key on the bench source (created once): its actor and raw key.

    Fresh per run, so the run's events are those of its actor."""
    # In a disabled workflow of the same name: its leads' events carry a bench-
    # workflow, so the benchmarks know them as theirs, and no runner takes them.
    workflow, _ = Workflow.objects.get_or_create(name=SOURCE_SLUG, defaults={"enabled": False})
    source, _ = LeadSource.objects.get_or_create(
        slug=SOURCE_SLUG,
        defaults={
            "name": "Benchmark intake",
            "kind": LeadSource.Kind.WEB_FORM,
            "workflow": workflow,
        },
    )
    if source.workflow_id != workflow.pk:  # made by an earlier version of this benchmark
        source.workflow = workflow
        source.save(update_fields=["workflow"])
    key, raw = api_key_create(source=source, name=f"{name}-{uuid.uuid4().hex[:6]}")
    return f"api:{key.name}", raw


def lead_payloads(count: int, *, run: str) -> list[dict[str, Any]]:
    """`count` leads of the run; every REPEAT_EVERY-th repeats an address sent before."""
    payloads = []
    for i in range(count):
        n = i - 1 if i and i % REPEAT_EVERY == 0 else i
        payloads.append(
            {
                "email": f"lead{n}.{run}@intake-bench.example",
                "name": f"Lead {n}",
                "company": f"Company {n % 997}",
                "title": "Head of Operations",
                "utm_source": "bench",
            }
        )
    return payloads


@dataclass
class LoadResult:
    requests: int
    leads: int
    seconds: float
    timing: Timing
    errors: list[str]

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "leads": self.leads,
            "seconds": round(self.seconds, 2),
            "leads_per_s": round(self.leads / self.seconds) if self.seconds else 0,
            **self.timing.summary(),
            "errors": self.errors[:5],
        }


def drive(
    port: int,
    raw_key: str,
    payloads: list[dict[str, Any]],
    *,
    clients: int,
    batch: int = 0,
) -> tuple[LoadResult, dict[str, str]]:
    """Send the payloads from `clients` threads: one lead a request to /api/v1/leads,
    or `batch` a request to /api/v1/leads/batch. Returns the timings and, per
    Idempotency-Key acknowledged, the lead id the server gave."""
    if batch:
        jobs: list[tuple[str, list[dict[str, Any]]]] = [
            (uuid.uuid4().hex, payloads[i : i + batch]) for i in range(0, len(payloads), batch)
        ]
    else:
        jobs = [(uuid.uuid4().hex, [p]) for p in payloads]
    lock = threading.Lock()
    position = 0
    samples: list[float] = []
    errors: list[str] = []
    acknowledged: dict[str, str] = {}

    def worker() -> None:
        nonlocal position
        while True:
            with lock:
                if position >= len(jobs):
                    return
                key, items = jobs[position]
                position += 1
            headers = {"Authorization": f"Bearer {raw_key}", "Content-Type": "application/json"}
            if batch:
                path = "/api/v1/leads/batch"
                body = json.dumps(
                    {
                        "leads": [
                            {"idempotency_key": f"{key}-{i}", "lead": p}
                            for i, p in enumerate(items)
                        ]
                    }
                ).encode()
            else:
                path = "/api/v1/leads"
                headers["Idempotency-Key"] = key
                body = json.dumps(items[0]).encode()
            started = perf_counter()
            try:
                status, data = request(port, "POST", path, body, headers)
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            elapsed = perf_counter() - started
            with lock:
                samples.append(elapsed)
                if status not in (200, 201):
                    errors.append(f"HTTP {status}: {data[:200]!r}")
                    continue
                answer = json.loads(data)
                if batch:
                    for i, result in enumerate(answer["results"]):
                        if result.get("status") in (200, 201):
                            acknowledged[f"{key}-{i}"] = result["lead_id"]
                        else:
                            errors.append(f"item {i}: {result}")
                else:
                    acknowledged[key] = answer["lead_id"]

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = perf_counter() - started
    result = LoadResult(
        requests=len(jobs),
        leads=len(acknowledged),
        seconds=seconds,
        timing=Timing(samples or [0.0]),
        errors=errors,
    )
    return result, acknowledged


def check_stored(
    acknowledged: dict[str, str], payloads: list[dict[str, Any]], *, actor: str
) -> None:
    """Every acknowledged lead is stored once, with an event per acknowledged request."""
    emails = {p["email"] for p in payloads}
    stored = dict(Lead.objects.filter(email__in=emails).values_list("public_id", "email"))
    if len(stored) != len(emails):
        raise IntakeBenchError(f"{len(emails)} addresses sent, {len(stored)} leads stored")
    missing = set(acknowledged.values()) - set(stored)
    if missing:
        raise IntakeBenchError(f"{len(missing)} acknowledged leads are not stored")
    events = AuditEvent.objects.filter(event_type="lead_ingested", actor=actor).count()
    if events != len(acknowledged):
        raise IntakeBenchError(
            f"{len(acknowledged)} requests acknowledged, {events} lead_ingested events"
        )


def measure_lead_api(*, leads: int, clients: int, workers: int, batch: int = 0) -> dict[str, Any]:
    """Post `leads` leads through gunicorn and check what was stored; the figures."""
    run = uuid.uuid4().hex[:8]
    actor, raw = bench_key("batch" if batch else "single")
    _, warm_key = bench_key("warm-up")
    payloads = lead_payloads(leads, run=run)
    with gunicorn(workers=workers) as (port, _server):
        # A few requests first: workers import lazily and warm their connection.
        warm, _ = drive(port, warm_key, lead_payloads(workers * 4, run=f"{run}w"), clients=workers)
        if warm.errors:
            raise IntakeBenchError(f"warm-up failed: {warm.errors[:3]}")
        server_cpu = _tree_cpu_seconds(_server.pid)
        client_cpu = time.process_time()
        result, acknowledged = drive(port, raw, payloads, clients=clients, batch=batch)
        client_cpu = time.process_time() - client_cpu
        server_cpu = _tree_cpu_seconds(_server.pid) - server_cpu
        worker_rss = _children_rss_mb(_server.pid)
    if result.errors:
        raise IntakeBenchError(f"{len(result.errors)} requests failed: {result.errors[:3]}")
    check_stored(acknowledged, payloads, actor=actor)
    return {
        "workers": workers,
        "clients": clients,
        "batch": batch,
        **result.summary(),
        # Where the machine's time went: the server, and this process's clients.
        "server_cpu_ms_per_lead": round(server_cpu / max(result.leads, 1) * 1000, 3),
        "client_cpu_ms_per_lead": round(client_cpu / max(result.leads, 1) * 1000, 3),
        "worker_rss_mb_max": max(worker_rss, default=0),
    }


def _children_rss_mb(pid: int, field: str = "VmRSS") -> list[float]:
    """Resident memory of each child of `pid` (gunicorn's workers), in MB (Linux /proc).

    VmRSS counts the database's pages a worker has mapped (SQLite's mmap), which
    are the kernel's page cache, shared by all workers and reclaimable;
    field="RssAnon" is the worker's own memory."""
    sizes = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("PPid", "").strip() == str(pid) and field in fields:
            sizes.append(round(int(fields[field].split()[0]) / 1024, 1))
    return sizes


def _tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children now alive (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the name: state, ppid, ... utime is field 14 of stat, stime 15.
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total
