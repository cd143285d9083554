"""deploy/: the systemd units, the crontab and gunicorn's config name real commands and work."""

import json
import os
import queue
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest
import requests
from django.core.management import get_commands, load_command_class
from django.utils import timezone

from audit.models import AuditSeal
from audit.services import record_event
from core.models import CommandLock
from orchestrator.monitoring.heartbeat import beat
from tests.core.test_scheduled import scheduled_commands

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VENV_PYTHON = "/srv/orchestrator/.venv/bin/python"
MANAGE = "/srv/orchestrator/manage.py"

# Commands deploy/ runs that are still being written elsewhere; the check that
# they exist is waived only for these. Empty it once they have landed.
PENDING: frozenset[str] = frozenset()

# Stand-ins for the systemd instance name (%i) of the template units.
INSTANCES = {"run_workflow": "sales", "send_report": "daily"}

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "CapabilityBoundingSet": "",
    "EnvironmentFile": "/etc/orchestrator/orchestrator.env",
    "User": "orchestrator",
}


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values]}} (keys may repeat in systemd)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{path.name}: {line!r} outside a section"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def services() -> dict[str, dict]:
    return {p.name: unit(p) for p in sorted(DEPLOY.glob("*.service"))}


def timers() -> dict[str, dict]:
    return {p.name: unit(p) for p in sorted(DEPLOY.glob("*.timer"))}


def systemd_invocations() -> list[tuple[str, list[str]]]:
    """(unit file, manage.py arguments) of every ExecStart that runs manage.py."""
    found = []
    for name, sections in services().items():
        for exec_start in sections["Service"]["ExecStart"]:
            argv = shlex.split(exec_start)
            if MANAGE in argv:
                assert argv[0] == VENV_PYTHON, f"{name}: not the project's virtualenv"
                found.append((name, argv[argv.index(MANAGE) + 1 :]))
    return found


def cron_entries() -> list[tuple[list[str], list[str]]]:
    """(five schedule fields, manage.py arguments) of every crontab line."""
    entries = []
    for raw in (DEPLOY / "crontab").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, f"crontab: {line!r}"
        command = shlex.split(fields[5].split(">>")[0])
        assert command[0] == "$M", f"crontab: {line!r} does not go through deploy/manage.sh"
        entries.append((fields[:5], command[1:]))
    return entries


def all_invocations() -> list[tuple[str, list[str]]]:
    cron = [("crontab", args) for _, args in cron_entries()]
    return systemd_invocations() + cron


@pytest.mark.parametrize(
    ("where", "args"), all_invocations(), ids=lambda v: v if isinstance(v, str) else " ".join(v)
)
def test_every_command_in_deploy_exists_and_accepts_its_arguments(where, args):
    name, *rest = args
    if name in PENDING:
        pytest.skip(f"{name} is PENDING")
    commands = get_commands()
    assert name in commands, f"{where}: no management command {name!r}"
    command = load_command_class(commands[name], name)
    rest = [INSTANCES[name] if arg == "%i" else arg for arg in rest]
    # Parsing is what would reject a misspelt option at 3 am.
    command.create_parser("manage.py", name).parse_args(rest)


def test_every_scheduled_command_runs_from_systemd_and_from_cron():
    in_systemd = {args[0] for _, args in systemd_invocations()}
    in_cron = {args[0] for _, args in cron_entries()}
    for name in scheduled_commands():
        assert name in in_systemd, f"{name} has no systemd unit in deploy/"
        assert name in in_cron, f"{name} is missing from deploy/crontab"
    assert {"run_worker"} <= in_systemd


# Scheduled from deploy/ without a lease of their own, and why that is safe.
UNLOCKED = {"verify_audit": "read-only; an overlapping run only repeats the reading"}


def test_every_command_on_a_schedule_takes_a_lock():
    on_timers = {
        args[0]
        for name, args in systemd_invocations()
        if services()[name]["Service"]["Type"] == ["oneshot"]
    }
    on_cron = {args[0] for _, args in cron_entries()}
    # check_alerts runs as a --loop service under systemd, from cron each minute.
    assert on_cron - on_timers == {"check_alerts"}
    assert on_cron - set(scheduled_commands()) == set(UNLOCKED)


def test_report_timers_cover_every_kind():
    kinds = {
        t["Timer"]["Unit"][0]
        for t in timers().values()
        if t["Timer"].get("Unit", [""])[0].startswith("orchestrator-report@")
    }
    assert kinds == {f"orchestrator-report@{k}.service" for k in ("daily", "weekly", "monthly")}
    reports = {tuple(args) for _, args in cron_entries() if args[0] == "send_report"}
    assert reports == {("send_report", k) for k in ("daily", "weekly", "monthly")}


def test_every_timer_starts_an_existing_oneshot_service():
    names = services()
    scheduled = set()
    for name, sections in timers().items():
        assert sections["Timer"]["OnCalendar"], name
        assert sections["Install"]["WantedBy"] == ["timers.target"], name
        target = sections["Timer"].get("Unit", [name.removesuffix(".timer") + ".service"])[0]
        template = re.sub(r"@[^.]+\.service$", "@.service", target)
        assert template in names, f"{name} starts {target}, which deploy/ lacks"
        assert names[template]["Service"]["Type"] == ["oneshot"], template
        scheduled.add(template)
    oneshots = {n for n, s in names.items() if s["Service"]["Type"] == ["oneshot"]}
    assert oneshots == scheduled, "a oneshot service that no timer starts"


def test_every_service_is_hardened_and_long_runners_restart():
    for name, sections in services().items():
        service = sections["Service"]
        for key, value in HARDENING.items():
            assert service.get(key) == [value], f"{name}: {key}"
        if service["Type"] != ["oneshot"]:
            assert service["Restart"] == ["always"], name
            assert sections["Install"]["WantedBy"] == ["multi-user.target"], name
    web = services()["orchestrator-web.service"]["Service"]
    assert web["ExecStart"] == [
        "/srv/orchestrator/.venv/bin/gunicorn --config /srv/orchestrator/deploy/gunicorn.conf.py"
    ]


def _field_ok(field: str, low: int, high: int) -> bool:
    for part in field.split(","):
        base, _, step = part.partition("/")
        if step and not step.isdigit():
            return False
        if base == "*":
            continue
        bounds = base.split("-")
        if not all(b.isdigit() and low <= int(b) <= high for b in bounds) or len(bounds) > 2:
            return False
    return True


def test_crontab_schedules_are_valid():
    ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
    for fields, args in cron_entries():
        for field, (low, high) in zip(fields, ranges, strict=True):
            assert _field_ok(field, low, high), f"{args}: {field!r}"
    assert not _field_ok("61", 0, 59)  # the checker can fail


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_sealer_runs_well_within_the_unsealed_bound(settings):
    # AUDIT_SEAL_MAX_AGE_SECONDS is what verify_audit and the unsealed_events
    # alert rule hold the sealer to; a pass at the bound itself would trip them.
    [calendar] = timers()["orchestrator-seal-audit.timer"]["Timer"]["OnCalendar"]
    result = subprocess.run(
        ["systemd-analyze", "calendar", "--iterations=4", calendar],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    times = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+)", result.stdout)
    elapses = [datetime.fromisoformat(t) for t in times]
    assert len(elapses) == 4, result.stdout
    gaps = {(b - a).total_seconds() for a, b in pairwise(elapses)}
    assert max(gaps) <= settings.AUDIT_SEAL_MAX_AGE_SECONDS / 2, gaps


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_units(tmp_path):
    # Point the paths at this checkout so that verify can also check the
    # executables; every warning (unknown key, bad value) fails the test.
    env_file = tmp_path / "orchestrator.env"
    env_file.write_text("DEBUG=false\n")
    for path in [*DEPLOY.glob("*.service"), *DEPLOY.glob("*.timer")]:
        text = path.read_text()
        text = text.replace("/srv/orchestrator/.venv/bin/", f"{Path(sys.executable).parent}/")
        text = text.replace("/srv/orchestrator", str(ROOT))
        text = text.replace("/etc/orchestrator/orchestrator.env", str(env_file))
        (tmp_path / path.name).write_text(text)
    # Template units are checked through an instance of each.
    for template, instances in {
        "orchestrator-report@": ["daily", "weekly", "monthly"],
        "orchestrator-run-workflow@": ["sales"],
    }.items():
        for suffix in (".service", ".timer"):
            source = tmp_path / f"{template}{suffix}"
            if source.exists():
                for instance in instances:
                    shutil.copy(source, tmp_path / f"{template}{instance}{suffix}")
    names = sorted(p.name for p in tmp_path.glob("*.*") if "@." not in p.name)
    names.remove("orchestrator.env")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *[str(tmp_path / n) for n in names]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_gunicorn_accepts_its_config():
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "--check-config",
            "--config",
            str(DEPLOY / "gunicorn.conf.py"),
        ],
        cwd=ROOT,
        env={**os.environ, "GUNICORN_WORKERS": "3", "GUNICORN_BIND": "127.0.0.1:9999"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(stream, text: str) -> None:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    seen = []
    while True:
        line = lines.get(timeout=60)
        seen.append(line)
        assert line, f"gunicorn ended before {text!r}:\n{''.join(seen)}"
        if text in line:
            return


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_gunicorn_serves_healthz_and_hashed_static_files(tmp_path):
    """The production stack for real: collectstatic, gunicorn with this config, WhiteNoise."""
    from tests.conftest import database_url

    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "STATIC_MANIFEST": "true",
        "STATIC_ROOT": str(tmp_path / "static"),
        "ALLOWED_HOSTS": "127.0.0.1",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "1",
        "LOG_FORMAT": "json",
        "HEALTHZ_TOKEN": "deploy-test-token",
    }
    collect = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert collect.returncode == 0, collect.stderr
    manifest = json.loads((tmp_path / "static" / "staticfiles.json").read_text())
    hashed = manifest["paths"]["dashboard/dashboard.css"]
    assert hashed != "dashboard/dashboard.css"

    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "--config",
            str(DEPLOY / "gunicorn.conf.py"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(server.stderr, "Booting worker")
        base = f"http://127.0.0.1:{port}"
        monitor = {"Authorization": "Bearer deploy-test-token"}
        response = requests.get(f"{base}/healthz", headers=monitor, timeout=30)
        assert response.status_code == 503  # no worker yet
        assert response.json()["checks"]["worker"]["ok"] is False

        beat(worker_id="w1", started_at=timezone.now())
        response = requests.get(f"{base}/healthz", timeout=30)
        assert response.status_code == 200, response.text

        css = requests.get(
            f"{base}/static/{hashed}", headers={"Accept-Encoding": "gzip"}, timeout=30
        )
        assert css.status_code == 200
        assert "immutable" in css.headers["Cache-Control"]
        assert css.headers.get("Content-Encoding") == "gzip"
        # Pages link the hashed name.
        login = requests.get(f"{base}/accounts/login/", timeout=30)
        assert f"/static/{hashed}" in login.text
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.django_db(transaction=True)
def test_the_cron_wrapper_loads_the_environment_file(tmp_path):
    from tests.conftest import database_url

    env_file = tmp_path / "orchestrator.env"
    env_file.write_text(f"DATABASE_URL={database_url()}\nLOG_FORMAT=json\n")
    # Only what cron gives a job: no DATABASE_URL, no virtualenv on PATH.
    cron_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ORCHESTRATOR_ENV": str(env_file)}
    # Proof that the job reached this database: it seals this event.
    record_event(event_type="lead_ingested", lead_id="LEAD-000001")
    result = subprocess.run(
        [str(DEPLOY / "manage.sh"), "seal_audit"],
        cwd=tmp_path,
        env=cron_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Sealed 1 events.\n"
    assert AuditSeal.objects.get().event_count == 1
    assert not CommandLock.objects.exists()


def test_the_environment_template_passes_check_deploy():
    from tests.orchestrator.test_settings import PRODUCTION, check_deploy

    template = {}
    for line in (DEPLOY / "orchestrator.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            template[key] = value
    # Only the secrets and the database are placeholders.
    assert template["SECRET_KEY"] == "change-me"
    env = {
        **template,
        **{k: PRODUCTION[k] for k in ("SECRET_KEY", "AUDIT_SIGNING_KEY", "DATABASE_URL")},
    }
    result = check_deploy(env)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_proxy_sets_the_client_ip_header_the_application_reads():
    # nginx must SET the header (clients could send their own) and the
    # environment template must name the same one, as Django's META key.
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert "proxy_set_header X-Real-IP $remote_addr;" in nginx
    values = dict(
        line.split("=", 1)
        for line in (DEPLOY / "orchestrator.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert values["RATELIMIT_IP_META_KEY"] == "HTTP_X_REAL_IP"


def test_the_workflows_the_deploy_examples_name_are_in_the_example_config():
    import json
    import re

    example = json.loads((ROOT / "config" / "workflows.example.json").read_text())
    defined = {w["name"] for w in example["workflows"]}
    crontab = (ROOT / "deploy" / "crontab").read_text().splitlines()
    entries = "\n".join(line for line in crontab if not line.startswith("#"))
    named = set(re.findall(r"run_workflow (\S+)", entries))
    named |= set(
        re.findall(r"orchestrator-run-workflow@([^.\s`]+)\.timer", (ROOT / "README.md").read_text())
    )
    named.discard("NAME")
    assert named, "the examples name no workflow"
    assert named <= defined, named - defined
