"""GET /healthz for load balancers and monitoring: JSON, 200 when every check passes, else 503.

Checks, in order: the database answers SELECT 1 within HEALTHZ_DB_TIMEOUT_SECONDS
and would accept writes; a task worker beat within HEALTHZ_WORKER_MAX_AGE_SECONDS
(and, if configured, the next task in line has not waited too long); every enabled workflow ran
recently (if HEALTHZ_WORKFLOW_MAX_AGE_SECONDS is set). `?check=database` (any
subset, comma-separated) runs only those.

Load balancers call this every few seconds from every node, so it stays at a
handful of indexed queries, needs no login, writes nothing (no audit event,
no session) and never shows error text: it is public, and a driver's message
names hosts and ports. The details go to the log instead.

Anonymous callers get only {"status": "ok"|"fail"} and the status code: how
many workers run and which workflows exist is nobody else's business. The
per-check details go to a monitor sending `Authorization: Bearer
<HEALTHZ_TOKEN>` and to a logged-in dashboard user.

"Writable" without writing: the probe asks the database whether it would
refuse writes (PostgreSQL: a standby in recovery, or a read-only transaction
by default_transaction_read_only, set for the role, the database or the
server; SQLite: PRAGMA query_only, a file or folder the process may not
write, the file at its max_page_count, or less than HEALTHZ_MIN_FREE_MB left
on its filesystem) and reports `writable: false`, a 503. A PostgreSQL
server's full disk cannot be seen from here without writing (and a test
write on every probe from every balancer is the load this view exists to
avoid; an UPDATE that fits in its page succeeds on a full disk anyway), so
the application's own writes are the probe: while the latest lead write this
process attempted was refused, within HEALTHZ_WRITE_REFUSAL_SECONDS, the
database is reported unwritable with the reason (core.writes). The worker
heartbeat is a second witness, failing the worker check when its writes do.
"""

import hmac
import logging
import os
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import OuterRef, Subquery
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from django_tasks_db.backend import DatabaseBackend
from django_tasks_db.models import DBTaskResult, get_date_max

from core import writes
from leads.workflows.models import Workflow, WorkflowRun
from orchestrator.dashboard.access import can_view
from orchestrator.models import WorkerHeartbeat

log = logging.getLogger(__name__)

Check = dict[str, Any]


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else round((now - then).total_seconds(), 1)


def _sqlite_read_only_reason(cursor: Any) -> str | None:
    cursor.execute("PRAGMA query_only")
    if cursor.fetchone()[0]:
        return "query_only"
    name = str(connection.settings_dict["NAME"])
    if name.startswith("file:") or not os.path.isfile(name):
        return None  # in memory, or a URI this cannot judge
    # The folder too: SQLite writes its journal (or WAL) beside the file.
    folder = os.path.dirname(name) or "."
    if not (os.access(name, os.W_OK) and os.access(folder, os.W_OK)):
        return "file not writable"
    cursor.execute("PRAGMA page_count")
    pages = cursor.fetchone()[0]
    cursor.execute("PRAGMA max_page_count")
    if pages >= cursor.fetchone()[0]:
        return "database full (max_page_count)"
    disk = os.statvfs(folder)
    free_mb = disk.f_bavail * disk.f_frsize / 2**20
    if free_mb < settings.HEALTHZ_MIN_FREE_MB:
        return f"disk nearly full ({free_mb:.0f} MB free)"
    return None


def _postgresql_read_only_reason(cursor: Any) -> str | None:
    # Inside the probe's transaction, so transaction_read_only also reflects
    # default_transaction_read_only however it was set (role, database, server).
    cursor.execute("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")
    in_recovery, read_only = cursor.fetchone()
    if in_recovery:
        return "in recovery (a standby)"
    if read_only == "on":
        return "transaction_read_only"
    return None


def check_database(now: datetime) -> Check:
    try:
        if connection.vendor == "postgresql":
            # A database that accepts the connection but hangs must not hang
            # the load balancer's probe too (connecting is bounded by
            # connect_timeout, see settings). SET LOCAL needs a transaction.
            timeout_ms = int(settings.HEALTHZ_DB_TIMEOUT_SECONDS * 1000)
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL statement_timeout = {timeout_ms}")
                cursor.execute("SELECT 1")
                cursor.fetchone()
                read_only = _postgresql_read_only_reason(cursor)
        else:
            # No transaction on SQLite: BEGIN IMMEDIATE would queue the probe
            # behind every writer.
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
                read_only = (
                    _sqlite_read_only_reason(cursor) if connection.vendor == "sqlite" else None
                )
    except DatabaseError:
        log.warning("healthz: database check failed", exc_info=True)
        return {"ok": False, "error": "database unreachable"}
    if read_only:
        log.warning("healthz: database refuses writes: %s", read_only)
        return {"ok": False, "writable": False, "error": f"database refuses writes ({read_only})"}
    refused = writes.recent_refusal(settings.HEALTHZ_WRITE_REFUSAL_SECONDS)
    if refused is not None:
        reason, seconds_ago = refused
        return {
            "ok": False,
            "writable": False,
            "error": f"the last write was refused {seconds_ago} s ago ({reason})",
        }
    return {"ok": True, "writable": True}


def _tasks_need_a_worker() -> bool:
    from django.tasks import task_backends

    return isinstance(task_backends["default"], DatabaseBackend)


def check_worker(now: datetime) -> Check:
    if not _tasks_need_a_worker():
        return {"ok": True, "note": "tasks run without a worker (TASKS_BACKEND)"}
    max_age = settings.HEALTHZ_WORKER_MAX_AGE_SECONDS
    last_seen = (
        WorkerHeartbeat.objects.order_by("-seen_at").values_list("seen_at", flat=True).first()
    )
    age = _age(now, last_seen)
    alive = WorkerHeartbeat.objects.filter(seen_at__gte=now - timedelta(seconds=max_age)).count()
    # The task the worker would take next (same order and index as db_worker);
    # a long wait means the worker is stuck or too few workers run.
    next_task = (
        DBTaskResult.objects.ready()
        .filter(backend_name="default")
        .values_list("run_after", "enqueued_at")
        .first()
    )
    waiting = None
    if next_task is not None:
        run_after, enqueued_at = next_task
        waiting = _age(now, enqueued_at if run_after == get_date_max() else run_after)
    result: Check = {
        "ok": age is not None and age <= max_age,
        "last_heartbeat_seconds_ago": age,
        "max_age_seconds": max_age,
        "workers_alive": alive,
        "next_task_waiting_seconds": waiting,
    }
    max_wait = settings.HEALTHZ_QUEUE_MAX_WAIT_SECONDS
    if max_wait:
        result["max_wait_seconds"] = max_wait
        if waiting is not None and waiting > max_wait:
            result["ok"] = False
    if age is None:
        result["error"] = "no worker running (start manage.py run_worker)"
    elif not result["ok"]:
        result["error"] = (
            # The heartbeat is also this check's write probe (see above).
            "worker heartbeat stale (worker down, or the database refusing its writes)"
            if age > max_age
            else "tasks waiting too long"
        )
    return result


def check_workflows(now: datetime) -> Check:
    max_age = settings.HEALTHZ_WORKFLOW_MAX_AGE_SECONDS
    last_runs = WorkflowRun.objects.filter(workflow=OuterRef("pk"), dry_run=False).order_by(
        "-started_at"
    )
    rows = (
        Workflow.objects.filter(enabled=True)
        .order_by("name")
        .annotate(
            last_started=Subquery(last_runs.values("started_at")[:1]),
            last_status=Subquery(last_runs.values("status")[:1]),
        )
        .values_list("name", "last_started", "last_status")
    )
    workflows = {}
    ok = True
    for name, started, status in rows:
        age = _age(now, started)
        late = bool(max_age) and (age is None or age > max_age)
        ok = ok and not late
        workflows[name] = {
            "ok": not late,
            "last_run_seconds_ago": age,
            "last_status": status,
        }
    result: Check = {"ok": ok, "workflows": workflows}
    if max_age:
        result["max_age_seconds"] = max_age
    return result


CHECKS: dict[str, Callable[[datetime], Check]] = {
    "database": check_database,
    "worker": check_worker,
    "workflows": check_workflows,
}


def _selected(request: HttpRequest) -> list[str]:
    raw = request.GET.get("check", "")
    if not raw:
        return list(CHECKS)
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in CHECKS]
    if unknown or not names:
        raise ValueError(
            f"check: unknown check {', '.join(unknown) or raw!r} (known: {', '.join(CHECKS)})"
        )
    return names


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    try:
        names = _selected(request)
    except ValueError as exc:
        # JSON rather than the dashboard's 400 page: that one renders the nav,
        # which reads the session from the database this may be probing.
        return JsonResponse({"status": "error", "error": str(exc)}, status=400)
    now = timezone.now()
    checks: dict[str, Check] = {}
    database_down = False
    for name in CHECKS:
        if name not in names:
            continue
        if database_down:
            # Each check would wait for its own connect timeout to learn the same.
            checks[name] = {"ok": False, "error": "database unreachable"}
            continue
        try:
            checks[name] = CHECKS[name](now)
        except DatabaseError:
            log.warning("healthz: %s check failed", name, exc_info=True)
            checks[name] = {"ok": False, "error": "database error"}
            database_down = True
        if name == "database" and not checks[name]["ok"]:
            # A read-only database still answers the other checks' reads.
            database_down = checks[name].get("writable") is not False
    ok = all(check["ok"] for check in checks.values())
    body: dict[str, Any] = {"status": "ok" if ok else "fail"}
    if _may_see_details(request):
        body |= {"time": now.isoformat(), "checks": checks}
    return JsonResponse(body, status=200 if ok else 503)


def _may_see_details(request: HttpRequest) -> bool:
    token = settings.HEALTHZ_TOKEN
    sent = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        return True
    # Only with a session cookie: a probe without one must not read the
    # session table of the database it is probing.
    if settings.SESSION_COOKIE_NAME not in request.COOKIES:
        return False
    try:
        return can_view(request.user)
    except DatabaseError:
        return False
