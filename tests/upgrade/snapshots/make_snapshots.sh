#!/usr/bin/env bash
# Make the upgrade-test database snapshots with the code of one commit.
#
#   tests/upgrade/snapshots/make_snapshots.sh <commit> [out-dir]
#
# For <commit> (default out-dir: this script's directory) it writes
#   main-<short>.sqlite3.sql.gz     gzip of `sqlite3 .dump`
#   main-<short>.postgresql.sql.gz  gzip of `pg_dump --no-owner --no-privileges --inserts` (PG 15)
#   main-<short>.counts.json        {"table": rows} (or one file per database if they differ)
#
# Each database is filled by the real code of <commit>, run from a detached git
# worktree (never the main checkout's tree or index): migrate, createcachetable,
# load_demo (real pipeline, fake HubSpot on loopback, in-memory mail), alert
# rules/channels + one check_alerts pass, two queued (READY, never run) tasks
# under their dotted path orchestrator.steps.run_step, a CommandLock and a
# WorkerHeartbeat row, send_report daily, then seal_audit and verify_audit.
# Every dump is then restored into a fresh database, its row counts compared
# with the source's, and verify_audit run against it.
#
# Needs: root (runs PostgreSQL as the postgres user via su), PostgreSQL 15 binaries
# in /usr/lib/postgresql/15/bin, the sqlite3 CLI (else Python's iterdump), and the
# project's virtualenv (PYTHON, default <repo>/.venv/bin/python) with the dev extras.
# If that python does not import the worktree's code, a venv is made for it.
#
# Environment knobs: DAYS (3), PER_DAY (12), SNAP_WORK (/tmp/snap),
# SNAP_SRC (/tmp/snap-src), PYTHON, KEEP_WORK=1 keeps SNAP_WORK afterwards.
set -euo pipefail

COMMIT=${1:?usage: make_snapshots.sh <commit> [out-dir]}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=$(mkdir -p "${2:-$HERE}" && cd "${2:-$HERE}" && pwd)
REPO=$(git -C "$HERE" rev-parse --show-toplevel)
SHORT=$(git -C "$REPO" rev-parse --short=7 "$COMMIT^{commit}")
DAYS=${DAYS:-3}
PER_DAY=${PER_DAY:-12}
WORK=${SNAP_WORK:-/tmp/snap}
SRC=${SNAP_SRC:-/tmp/snap-src}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
PGBIN=/usr/lib/postgresql/15/bin
PGDATA_DIR=$WORK/pg/data
PGSOCK_DIR=$WORK/pg/sock
PG_STARTED=0

# Fixed keys: the audit trail in the snapshots verifies only with these.
export AUDIT_SIGNING_KEY=upgrade-snapshot-signing-key
export SECRET_KEY=upgrade-snapshot-secret-key
# Everything that would write under the checkout (logs/, var/) goes to $WORK.
export AUDIT_JSONL_PATH=$WORK/logs/audit.log
export AUDIT_ARCHIVE_DIR=$WORK/archive
export STATIC_ROOT=$WORK/static
# Mail never leaves the process (reports, alert emails).
export EMAIL_BACKEND=django.core.mail.backends.locmem.EmailBackend
export TASKS_BACKEND=django_tasks_db.DatabaseBackend
export TIME_ZONE=UTC
unset DEBUG DATABASE_URL REPORTS_RECIPIENTS 2>/dev/null || true

log() { printf '\n=== %s\n' "$*" >&2; }

cleanup() {
    local rc=$?
    if [[ $PG_STARTED == 1 ]]; then
        su postgres -c "$PGBIN/pg_ctl -D $PGDATA_DIR -m fast -w stop" >/dev/null || true
    fi
    if git -C "$REPO" worktree list --porcelain | grep -qx "worktree $SRC"; then
        git -C "$REPO" worktree remove --force "$SRC" || true
    fi
    if [[ ${KEEP_WORK:-0} != 1 ]]; then rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT

# --- Source tree of <commit> -------------------------------------------------------
if git -C "$REPO" worktree list --porcelain | grep -qx "worktree $SRC"; then
    git -C "$REPO" worktree remove --force "$SRC"
fi
rm -rf "$SRC" "$WORK"
git -C "$REPO" worktree add --detach "$SRC" "$COMMIT"
mkdir -p "$WORK/logs" "$WORK/static"

manage() { (cd "$SRC" && "$PYTHON" manage.py "$@"); }

imported=$(cd "$SRC" && DATABASE_URL=sqlite:///$WORK/probe.sqlite3 "$PYTHON" manage.py shell -v0 \
    -c 'import audit, leads, orchestrator; print(audit.__file__, leads.__file__, orchestrator.__file__)')
rm -f "$WORK"/probe.sqlite3*
echo "code imported from: $imported" >&2
if [[ $imported != "$SRC/audit/__init__.py $SRC/leads/__init__.py $SRC/orchestrator/__init__.py" ]]; then
    log "$PYTHON imports another checkout's code; making a venv for $SRC"
    python3.12 -m venv "$WORK/venv"
    "$WORK/venv/bin/pip" install --quiet -e "$SRC[dev]"
    PYTHON=$WORK/venv/bin/python
fi

# A day inside the demo data (load_demo covers the DAYS days before today).
REPORT_DATE=$(date -u -d "$((DAYS > 1 ? 2 : 1)) days ago" +%F)

# --- Helpers run through the project's code -----------------------------------------
EXTRAS_PY=$(cat <<'EOF'
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from audit.alerts.models import AlertChannel, AlertRule
from audit.services import new_correlation_id
from leads.models import Lead
from orchestrator import heartbeat, locks
from orchestrator.models import Workflow
from orchestrator.steps import enqueue_steps
from django.test import Client
from leads.apikeys import api_key_create
from leads.models import LeadSource

email = AlertChannel(name="ops-email", kind="email", target="ops@example.test")
email.full_clean()
email.save()
hook = AlertChannel(
    name="ops-webhook",
    kind="webhook",
    target="https://hooks.example.test/orchestrator",
    secret_env="ALERT_WEBHOOK_SECRET",
    enabled=False,  # nothing is called: the host does not exist
)
hook.full_clean()
hook.save()
rules = [
    AlertRule(name="Error spike", kind="error_spike", params={"min_count": 5}),
    AlertRule(name="New error group", kind="new_error_group", params={}),
    AlertRule(name="CRM sync failures", kind="crm_failures", params={"threshold": 3}),
    # The demo's last runner pass is hours old: this one opens an incident.
    AlertRule(
        name="Lead workflow missed",
        kind="workflow_missed",
        params={"max_age_minutes": 60, "workflow": "sales_lead_management"},
    ),
]
for rule in rules:
    rule.full_clean()
    rule.save()
    rule.channels.add(email)
rules[0].channels.add(hook)

# Queued work a deployment has when it is upgraded: tasks stored under their
# dotted path (orchestrator.steps.run_step), READY, no worker runs them.
workflow = Workflow.objects.get(name="sales_lead_management")
lead = Lead.objects.order_by("-id").first()
with transaction.atomic():
    enqueue_steps(
        lead_id=lead.id, steps=workflow.config["steps"], correlation_id=new_correlation_id()
    )

# An API key and one lead through the API under an Idempotency-Key (the lead
# waits, unprocessed, for the next runner pass).
_key, raw = api_key_create(source=LeadSource.objects.get(slug="website"), name="upgrade-snapshot")
response = Client().post(
    "/api/v1/leads",
    data={
        "email": "katherine.johnson@initech.example",
        "full_name": "Katherine Johnson",
        "organisation": "Initech",
        "title": "CTO",
        "country": "US",
    },
    content_type="application/json",
    headers={"Authorization": f"Bearer {raw}", "Idempotency-Key": "upgrade-snapshot-1"},
    HTTP_HOST="localhost",
)
assert response.status_code in (200, 201), (response.status_code, response.content)

# A lease held by a run in progress and a live worker's heartbeat.
assert locks.acquire("upgrade-snapshot:held", ttl=timedelta(days=3650))
heartbeat.beat(worker_id="upgrade-snapshot-worker", started_at=timezone.now())
print("extras: 2 alert channels, 4 alert rules, 2 queued tasks, 1 API key, 1 API lead, 1 lock, 1 heartbeat")
EOF
)

COUNTS_PY=$(cat <<'EOF'
import json
import os

from django.db import connection

with connection.cursor() as cursor:
    tables = sorted(connection.introspection.table_names(cursor))
    counts = {}
    for table in tables:
        cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(table)}")
        counts[table] = cursor.fetchone()[0]
with open(os.environ["COUNTS_OUT"], "w") as fh:
    json.dump(counts, fh, indent=2, sort_keys=True)
    fh.write("\n")
EOF
)

QUEUED_PY=$(cat <<'EOF'
from django_tasks_db.models import DBTaskResult

ready = DBTaskResult.objects.filter(status="READY", task_path="orchestrator.steps.run_step")
assert ready.count() >= 1, list(DBTaskResult.objects.values_list("task_path", "status"))
print(f"queued READY orchestrator.steps.run_step tasks: {ready.count()}")
EOF
)

counts() {  # counts <out.json>  (DATABASE_URL from the environment)
    COUNTS_OUT=$1 manage shell -v0 -c "$COUNTS_PY"
}

verify() {
    local out
    out=$(manage verify_audit)
    echo "$out"
    grep -q "Audit trail verified" <<<"$out"
}

populate() {  # DATABASE_URL from the environment
    manage migrate --noinput
    manage createcachetable
    DEBUG=true manage load_demo --days "$DAYS" --per-day "$PER_DAY"
    manage shell -v0 -c "$EXTRAS_PY"
    manage check_alerts
    manage send_report daily --date "$REPORT_DATE" --to ops@example.test
    manage seal_audit
    verify
    manage shell -v0 -c "$QUEUED_PY"
}

# --- SQLite ---------------------------------------------------------------------------
log "SQLite: fill with the code of $SHORT"
SQLITE_DB=$WORK/db.sqlite3
export DATABASE_URL=sqlite:///$SQLITE_DB
populate
counts "$WORK/sqlite.source.counts.json"
SQLITE_GZ=$OUT/main-$SHORT.sqlite3.sql.gz
"$PYTHON" - "$SQLITE_DB" <<'EOF'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
con.close()
EOF
if command -v sqlite3 >/dev/null; then
    sqlite3 "$SQLITE_DB" .dump | gzip -9n >"$SQLITE_GZ"
else
    "$PYTHON" -c 'import sqlite3,sys; [print(l) for l in sqlite3.connect(sys.argv[1]).iterdump()]' \
        "$SQLITE_DB" | gzip -9n >"$SQLITE_GZ"
fi

log "SQLite: restore the dump into a fresh file and verify it"
RESTORED=$WORK/restored.sqlite3
gunzip -c "$SQLITE_GZ" | "$PYTHON" -c '
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
con.executescript(sys.stdin.read())
con.close()
' "$RESTORED"
export DATABASE_URL=sqlite:///$RESTORED
counts "$WORK/sqlite.restored.counts.json"
cmp "$WORK/sqlite.source.counts.json" "$WORK/sqlite.restored.counts.json"
verify
manage migrate --check >/dev/null  # nothing left unapplied at this commit

# --- PostgreSQL 15 ------------------------------------------------------------------------
log "PostgreSQL: start a throwaway cluster"
PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
install -d -o postgres -g postgres "$WORK/pg" "$PGDATA_DIR" "$PGSOCK_DIR"
su postgres -c "$PGBIN/initdb -D $PGDATA_DIR -U postgres --auth=trust -E UTF8 --locale=C.UTF-8" >/dev/null
su postgres -c "$PGBIN/pg_ctl -D $PGDATA_DIR -l $PGDATA_DIR/server.log \
    -o '-p $PORT -k $PGSOCK_DIR -c listen_addresses=127.0.0.1 -c fsync=off' -w start" >/dev/null
PG_STARTED=1
psql_() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres "$@"; }
psql_ -d postgres -c "CREATE DATABASE snap"
psql_ -d postgres -c "CREATE DATABASE restored"

log "PostgreSQL: fill with the code of $SHORT"
export DATABASE_URL=postgresql://postgres@127.0.0.1:$PORT/snap
populate
counts "$WORK/pg.source.counts.json"
PG_GZ=$OUT/main-$SHORT.postgresql.sql.gz
"$PGBIN/pg_dump" --no-owner --no-privileges --inserts -h 127.0.0.1 -p "$PORT" -U postgres snap \
    | gzip -9n >"$PG_GZ"

log "PostgreSQL: restore the dump into a fresh database and verify it"
gunzip -c "$PG_GZ" | psql_ -d restored >/dev/null
export DATABASE_URL=postgresql://postgres@127.0.0.1:$PORT/restored
counts "$WORK/pg.restored.counts.json"
cmp "$WORK/pg.source.counts.json" "$WORK/pg.restored.counts.json"
verify
manage migrate --check >/dev/null
# The append-only triggers came back with the restore (post-data).
triggers=$(psql_ -d restored -Atc "SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%append_only'")
echo "append-only triggers in the restored database: $triggers"
[[ $triggers -gt 0 ]]

# --- Row counts -------------------------------------------------------------------------------
rm -f "$OUT/main-$SHORT".*counts.json
if cmp -s "$WORK/sqlite.source.counts.json" "$WORK/pg.source.counts.json"; then
    cp "$WORK/sqlite.source.counts.json" "$OUT/main-$SHORT.counts.json"
else
    echo "row counts differ between SQLite and PostgreSQL: one counts file per database" >&2
    cp "$WORK/sqlite.source.counts.json" "$OUT/main-$SHORT.sqlite3.counts.json"
    cp "$WORK/pg.source.counts.json" "$OUT/main-$SHORT.postgresql.counts.json"
fi
log "done"
ls -l "$OUT"/main-"$SHORT".* >&2
