"""Existing deployments upgrade with `manage.py migrate` alone.

The snapshots in ./snapshots are databases made by the code of commit e896309
(main before the app restructuring; see snapshots/README.md). Each test
restores one into a scratch database of its own, runs this checkout's
`manage.py migrate` in a subprocess exactly as an operator would, and checks
that nothing was lost: every table's row count, the audit trail (verify_audit
with the snapshot's signing key, and the events' lead ids), the moved models'
tables (same names) and content types (moved, with their permissions, not
recreated), and the tasks queued under the old dotted path, which a worker
started after `migrate` runs.

SQLite always; PostgreSQL only when the suite runs on it (DATABASE_URL), in
a scratch database on the same server, restored with psql and dropped
afterwards.
"""

import gzip
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
COMMIT = "e896309"
COUNTS: dict[str, int] = json.loads((SNAPSHOTS / f"main-{COMMIT}.counts.json").read_text())
# The keys the snapshots were made with (snapshots/README.md): the events and
# seals verify only with this signing key.
SNAPSHOT_ENV = {
    "AUDIT_SIGNING_KEY": "upgrade-snapshot-signing-key",
    "SECRET_KEY": "upgrade-snapshot-secret-key",
}

# Tables whose row count may differ from the snapshot's after the upgrade, and why.
VOLATILE = {
    # snapshots/README.md: both may change whenever code other than `migrate` runs.
    "orchestrator_cache": "a rate-limit entry; a cache read deletes it once expired",
    "orchestrator_workerheartbeat": "a worker starting forgets heartbeats older than a day",
}
GROWING = {
    # Checked separately: every row the snapshot had is still there.
    "django_migrations": "the upgrade's migrations are recorded",
    "django_content_type": "post_migrate adds types for new models (moved ones are moved)",
    "auth_permission": "post_migrate adds the permissions of new models",
}

# (old app_label, model) -> (new app_label, table, which keeps its old name).
MOVED = {
    ("orchestrator", "commandlock"): ("core", "orchestrator_commandlock"),
    ("orchestrator", "workflow"): ("workflows", "orchestrator_workflow"),
    ("orchestrator", "workflowrun"): ("workflows", "orchestrator_workflowrun"),
    ("reports", "integritycheck"): ("audit", "reports_integritycheck"),
}
OLD_TASK_PATH = "orchestrator.steps.run_step"
NEW_TASK_PATH = "leads.workflows.steps.run_step"
# What django_tasks_db records when a queued task's path no longer imports.
IMPORT_FAILURES = ("ImportError", "ModuleNotFoundError", "does not point to a Task")

# The migrations this upgrade applies; rolling back to the snapshot's state
# unapplies them (newest first), with the new code, as an operator would.
ROLLBACK = [
    ("alerts", "0001_initial"),
    ("workflows", "zero"),
    ("core", "zero"),
    ("audit", "0005"),
    ("followups", "0002_outbound_sent_index"),
    ("crm", "0001_initial"),
]

ON_POSTGRESQL = connection.vendor == "postgresql"


# --- scratch databases -----------------------------------------------------------------


class Scratch:
    """A restored snapshot, read with the database's own driver (no Django here)."""

    def __init__(self, vendor: str, url: str, path: Path | None = None) -> None:
        self.vendor = vendor
        self.url = url
        self.path = path

    def rows(self, sql: str) -> list[tuple]:
        if self.vendor == "sqlite":
            db = sqlite3.connect(self.path)
            try:
                return db.execute(sql).fetchall()
            finally:
                db.close()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            return db.execute(sql).fetchall()

    def tables(self) -> set[str]:
        if self.vendor == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        else:
            sql = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        return {name for (name,) in self.rows(sql)}

    def columns(self, table: str) -> set[str]:
        if self.vendor == "sqlite":
            sql = f"SELECT name FROM pragma_table_info('{table}')"
        else:
            sql = (
                "SELECT column_name FROM information_schema.columns "
                f"WHERE table_schema = 'public' AND table_name = '{table}'"
            )
        return {name for (name,) in self.rows(sql)}

    def counts(self) -> dict[str, int]:
        return {t: self.rows(f'SELECT COUNT(*) FROM "{t}"')[0][0] for t in sorted(self.tables())}


def _sqlite_snapshot(tmp_path: Path) -> Iterator[Scratch]:
    path = tmp_path / "restored.sqlite3"
    dump = gzip.decompress((SNAPSHOTS / f"main-{COMMIT}.sqlite3.sql.gz").read_bytes())
    db = sqlite3.connect(path)
    db.executescript(dump.decode())
    db.close()
    yield Scratch("sqlite", f"sqlite:///{path}", path)


def _psql() -> str:
    psql = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
    if not os.access(psql, os.X_OK):
        pytest.fail("psql is needed to restore the PostgreSQL snapshot (postgresql-client)")
    return psql


def _postgres_snapshot(tmp_path: Path) -> Iterator[Scratch]:
    """A database of its own on the suite's PostgreSQL server, dropped afterwards."""
    import psycopg

    server = urlsplit(os.environ["DATABASE_URL"])
    name = f"upgrade_{secrets.token_hex(6)}"
    url = urlunsplit(server._replace(path=f"/{name}"))
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        dump = gzip.decompress((SNAPSHOTS / f"main-{COMMIT}.postgresql.sql.gz").read_bytes())
        # pg_dump 15.14+ wraps the dump in \restrict ... \unrestrict, meta-commands
        # only a psql of 15.14/16.10/17.6 or newer knows; they guard against a
        # hostile server during restore, which this is not. Any psql then works.
        script = "\n".join(
            line
            for line in dump.decode().splitlines()
            if not line.startswith(("\\restrict ", "\\unrestrict "))
        )
        restore = subprocess.run(
            [_psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url],
            input=script,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert restore.returncode == 0, restore.stderr[-3000:]
        yield Scratch("postgresql", url)
    finally:
        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(
                not ON_POSTGRESQL,
                reason="the suite runs on SQLite; .ci/run runs it again on PostgreSQL",
            ),
        ),
    ]
)
def snapshot(request, tmp_path) -> Iterator[Scratch]:
    """The snapshot of e896309 for this database, restored into a scratch database."""
    restore = _sqlite_snapshot if request.param == "sqlite" else _postgres_snapshot
    yield from restore(tmp_path)


# --- processes, as an operator runs them -----------------------------------------------


def _env(db: Scratch, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "orchestrator.settings",
        "DATABASE_URL": db.url,
        **SNAPSHOT_ENV,
        "DEBUG": "false",
        # Nothing written under the checkout, nothing sent.
        "AUDIT_JSONL_PATH": str(tmp_path / "logs" / "audit.log"),
        "AUDIT_ARCHIVE_DIR": str(tmp_path / "archive"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
    }


def manage(db: Scratch, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=_env(db, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )


def python(db: Scratch, tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + code],
        cwd=ROOT,
        env=_env(db, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (
        f"{result.args[1:]} exited {result.returncode}\n"
        f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )
    return result.stdout


# --- what the upgrade must keep ----------------------------------------------------------


def content_types(db: Scratch) -> dict[tuple[str, str], int]:
    return {
        (app, model): pk
        for pk, app, model in db.rows("SELECT id, app_label, model FROM django_content_type")
    }


def permissions(db: Scratch) -> dict[int, set[str]]:
    """Permission codenames by content type id."""
    found: dict[int, set[str]] = {}
    for ct, codename in db.rows("SELECT content_type_id, codename FROM auth_permission"):
        found.setdefault(ct, set()).add(codename)
    return found


def audit_checksum(db: Scratch) -> str:
    """What the upgrade must not change in the audit events: ids, leads, MACs."""
    digest = hashlib.sha256()
    for row in db.rows("SELECT id, uuid, lead_public_id, mac FROM audit_auditevent ORDER BY id"):
        digest.update("|".join(map(str, row)).encode() + b"\n")
    return digest.hexdigest()


def tasks(db: Scratch) -> dict[str, tuple[str, str]]:
    rows = db.rows("SELECT id, task_path, status FROM django_tasks_database_dbtaskresult")
    return {str(pk): (path, status) for pk, path, status in rows}


def migrations(db: Scratch) -> set[tuple[str, str]]:
    return set(db.rows("SELECT app, name FROM django_migrations"))


def assert_is_the_snapshot(db: Scratch) -> None:
    """The restore itself lost nothing, and the old schema is what the test expects."""
    assert db.counts() == COUNTS
    assert "lead_id" in db.columns("audit_auditevent")
    # Every event's lead column agreed with its lead_public_id, which stays:
    # dropping the column loses no information.
    disagree = db.rows(
        "SELECT e.id FROM audit_auditevent e LEFT JOIN leads_lead l ON l.id = e.lead_id "
        "WHERE e.lead_id IS NOT NULL AND (l.public_id IS NULL OR l.public_id <> e.lead_public_id)"
    )
    assert disagree == []
    assert db.rows("SELECT COUNT(*) FROM audit_auditevent WHERE lead_id IS NOT NULL")[0][0] > 0
    types = content_types(db)
    for old, (new, _table) in MOVED.items():
        assert old in types and (new, old[1]) not in types
    queued = [pk for pk, (path, status) in tasks(db).items() if status == "READY"]
    assert len(queued) == 2
    assert {path for path, _ in tasks(db).values()} == {OLD_TASK_PATH}


# --- the tests ---------------------------------------------------------------------------------


def test_migrate_alone_upgrades_a_database_of_e896309(snapshot, tmp_path):
    db = snapshot
    assert_is_the_snapshot(db)
    types_before = content_types(db)
    perms_before = permissions(db)
    checksum = audit_checksum(db)
    migrations_before = migrations(db)
    tasks_before = tasks(db)
    queued = sorted(pk for pk, (_, status) in tasks_before.items() if status == "READY")

    out = ok(manage(db, tmp_path, "migrate", "--noinput"))
    assert "Applying" in out
    ok(manage(db, tmp_path, "migrate", "--check"))

    # No data lost: every table as the snapshot had it, before anything else runs.
    counts = db.counts()
    assert set(COUNTS) <= set(counts), "a table of the snapshot is gone"
    for table, rows in COUNTS.items():
        if table in VOLATILE:
            continue
        if table in GROWING:
            assert counts[table] >= rows, table
        else:
            assert counts[table] == rows, table
    assert migrations_before <= migrations(db)
    # The moves are state-only: no table was made under a new app's name.
    made = {f"{new}_{model}" for (_, model), (new, _) in MOVED.items()}
    assert not made & set(counts)

    # Moved models: same tables, content types moved in place (same ids, so
    # permissions and admin history follow), none left or recreated under the old label.
    types = content_types(db)
    perms = permissions(db)
    for (old_app, model), (new_app, table) in MOVED.items():
        assert table in counts
        assert (old_app, model) not in types, f"{old_app}.{model} left behind"
        assert types[(new_app, model)] == types_before[(old_app, model)], f"{model} recreated"
        pk = types[(new_app, model)]
        assert perms[pk] == perms_before[pk], f"permissions of {model} changed"
        assert len(perms[pk]) >= 4
    assert len(types) == len(set(types.values()))
    # Every other content type and permission is untouched.
    moved_ids = {types_before[old] for old in MOVED}
    assert {k: v for k, v in types_before.items() if v not in moved_ids}.items() <= types.items()
    assert all(perms[pk] == codenames for pk, codenames in perms_before.items())

    # The audit events lost their lead column but not their lead.
    assert "lead_id" not in db.columns("audit_auditevent")
    assert audit_checksum(db) == checksum
    if db.vendor == "postgresql":
        triggers = {
            name
            for (name,) in db.rows("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
            if name.endswith("_append_only")
        }
        assert triggers == {
            "audit_auditevent_append_only",
            "audit_auditseal_append_only",
            "audit_auditprune_append_only",
            "reports_integritycheck_append_only",
        }

    # Every task row, finished or queued, now names the task where it lives.
    after = tasks(db)
    assert after.keys() == tasks_before.keys()
    assert {pk: status for pk, (_, status) in after.items()} == {
        pk: status for pk, (_, status) in tasks_before.items()
    }
    assert {path for path, _ in after.values()} == {NEW_TASK_PATH}

    # The new code's models read the old rows.
    seen = json.loads(
        ok(
            python(
                db,
                tmp_path,
                """
import json
from audit.models import AuditEvent, IntegrityCheck
from core.models import CommandLock
from django_tasks_db.models import DBTaskResult
from leads.models import Lead, LeadSource
from leads.workflows.models import Workflow, WorkflowRun
lead = Lead.objects.filter(workflow__isnull=False).select_related("workflow").first()
source = LeadSource.objects.filter(workflow__isnull=False).first()
print(json.dumps({
    "workflows": Workflow.objects.count(),
    "runs": WorkflowRun.objects.count(),
    "runs_of_workflow": WorkflowRun.objects.filter(workflow__leads=lead).distinct().count(),
    "locks": list(CommandLock.objects.values_list("name", flat=True)),
    "checks": IntegrityCheck.objects.count(),
    "events": AuditEvent.objects.count(),
    "lead_workflow": lead.workflow.name,
    "lead_workflow_name": lead.workflow_name,
    "source_workflow": source.workflow.name,
    "leads_of_workflow": lead.workflow.leads.count(),
    "task_names": sorted({r.task.name for r in DBTaskResult.objects.all()}),
}))
""",
            )
        )
    )
    assert seen["workflows"] == COUNTS["orchestrator_workflow"]
    assert seen["runs"] == seen["runs_of_workflow"] == COUNTS["orchestrator_workflowrun"]
    assert seen["locks"] == ["upgrade-snapshot:held"]
    assert seen["checks"] == COUNTS["reports_integritycheck"]
    assert seen["events"] == COUNTS["audit_auditevent"]
    assert seen["lead_workflow"] == seen["lead_workflow_name"] == seen["source_workflow"] != ""
    assert seen["leads_of_workflow"] >= 1
    assert seen["task_names"] == ["run_step"]

    # The audit trail still verifies with the snapshot's key (and records a check).
    out = ok(manage(db, tmp_path, "verify_audit"))
    assert "Audit trail verified." in out
    assert f"Checked {COUNTS['audit_auditevent']} events and 2 seals" in out
    assert db.counts()["reports_integritycheck"] == COUNTS["reports_integritycheck"] + 1

    # A worker started after `migrate` runs the tasks queued by the old code.
    ok(manage(db, tmp_path, "run_worker", "--batch", "--worker-id", "upgrade-test"))
    results = db.rows(
        "SELECT id, task_path, status, exception_class_path, traceback "
        "FROM django_tasks_database_dbtaskresult"
    )
    ran = {str(pk): row for pk, *row in results if str(pk) in queued}
    assert sorted(ran) == queued
    for pk, (path, status, exception, traceback) in ran.items():
        assert path == NEW_TASK_PATH
        assert not any(f in exception or f in traceback for f in IMPORT_FAILURES), (pk, traceback)
        assert status in ("SUCCESSFUL", "FAILED"), (pk, status)
    # In this snapshot both succeed: the CRM connection is inactive (the step
    # skips) and the lead is disqualified (no enrolment).
    assert {status for _, status, _, _ in ran.values()} == {"SUCCESSFUL"}
    assert not [pk for pk, _, status, *_ in results if status in ("READY", "RUNNING")]


def test_the_upgrade_migrations_roll_back_and_forward_again(snapshot, tmp_path):
    """Each migration of the upgrade is reversible: back to e896309's state and forward."""
    db = snapshot
    types_before = content_types(db)
    perms_before = permissions(db)
    checksum = audit_checksum(db)
    migrations_before = migrations(db)
    tasks_before = tasks(db)

    ok(manage(db, tmp_path, "migrate", "--noinput"))
    assert migrations(db) > migrations_before

    # Back, with the new code (what an operator does before deploying the old one):
    # one `migrate APP TARGET` per app, each with its post_migrate as from the shell,
    # in one process to save the start-ups.
    code = "from django.core.management import call_command\n" + "".join(
        f"call_command('migrate', {app!r}, {target!r}, interactive=False)\n"
        for app, target in ROLLBACK
    )
    ok(python(db, tmp_path, code))
    assert migrations(db) == migrations_before
    assert tasks(db) == tasks_before
    # The column comes back empty (its values are not restored: lead_public_id has them).
    assert "lead_id" in db.columns("audit_auditevent")
    assert audit_checksum(db) == checksum
    counts = db.counts()
    for table, rows in COUNTS.items():
        if table not in VOLATILE and table not in GROWING:
            assert counts[table] == rows, table
    problems = content_type_problems(db, types_before, perms_before, moved=False)

    # And forward again.
    ok(manage(db, tmp_path, "migrate", "--noinput"))
    ok(manage(db, tmp_path, "migrate", "--check"))
    assert {path for path, _ in tasks(db).values()} == {NEW_TASK_PATH}
    assert "lead_id" not in db.columns("audit_auditevent")
    assert audit_checksum(db) == checksum
    assert "Audit trail verified." in ok(manage(db, tmp_path, "verify_audit"))
    problems += content_type_problems(db, types_before, perms_before, moved=True)

    # Between two of the rollback's `migrate` commands a moved model is in both
    # apps' state, so post_migrate makes an empty twin content type; the move
    # functions drop the twin and keep the original (ids, permissions).
    assert problems == []


def content_type_problems(
    db: Scratch,
    types_before: dict[tuple[str, str], int],
    perms_before: dict[int, set[str]],
    *,
    moved: bool,
) -> list[str]:
    """Each moved model has one content type, the original, under the expected label."""
    types = content_types(db)
    problems = []
    for old, (new_app, _table) in MOVED.items():
        want, other = (new_app, old[1]), old
        if not moved:
            want, other = other, want
        if types.get(want) != types_before[old]:
            problems.append(f"{'.'.join(want)} is #{types.get(want)}, not #{types_before[old]}")
        if other in types:
            problems.append(f"{'.'.join(other)} (#{types[other]}) remains")
    if not problems:
        # Models this release adds (AuditAnchorMark) keep their content type and
        # permissions after a rollback, as Django leaves any removed model's; the
        # old code's `remove_stale_contenttypes` drops them. Every older one is intact.
        now = permissions(db)
        assert {ct: now[ct] for ct in perms_before} == perms_before
    return problems
