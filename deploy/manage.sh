#!/bin/sh
# Run a management command the way the systemd units do, for cron:
#   deploy/manage.sh seal_audit
# Loads the EnvironmentFile (ORCHESTRATOR_ENV, default /etc/orchestrator/orchestrator.env)
# and runs manage.py from the checkout this script lives in.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
env_file=${ORCHESTRATOR_ENV:-/etc/orchestrator/orchestrator.env}
set -a
# shellcheck disable=SC1090
. "$env_file"
set +a
cd "$here"
exec "$here/.venv/bin/python" "$here/manage.py" "$@"
