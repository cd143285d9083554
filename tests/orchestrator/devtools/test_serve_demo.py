import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from leads.crm.models import CrmConnection, CrmRecord
from leads.followups.models import OutboundEmail
from leads.intake.apikeys import api_key_create
from leads.models import Lead, LeadSource
from orchestrator.devtools.demo import set_up_demo
from tests.conftest import ROOT, database_url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children_of(pid: int) -> set[int]:
    """Every descendant of `pid`, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead; only its parent has not read its exit status yet.
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"


def until(check, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    pytest.fail(f"not within {timeout}s: {what}")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_served_demo_takes_a_posted_lead_through_the_pipeline(audit_mirror_path, tmp_path):
    hubspot = set_up_demo(crm_url="http://127.0.0.1:1")
    CrmConnection.objects.filter(pk=hubspot.pk).update(active=False)
    _key, raw = api_key_create(
        source=LeadSource.objects.get(slug="website"), name="test", scopes=["leads:write"]
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve_demo", f"--port={port}", f"--log={tmp_path / 'log'}"],
        cwd=ROOT,
        env={
            **os.environ,
            "DEBUG": "true",
            "DATABASE_URL": database_url(),
            "AUDIT_JSONL_PATH": str(audit_mirror_path),
            "PYTHONUNBUFFERED": "1",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # The connection points at the serving fake, and is active.
        until(
            lambda: CrmConnection.objects.filter(pk=hubspot.pk, active=True).exists(),
            timeout=60,
            what="the CRM connection becomes active",
        )
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/leads",
            data=json.dumps(
                {
                    "email": "grace.hopper@initech.example",
                    "full_name": "Grace Hopper",
                    "organisation": "Initech",
                    "title": "CTO",
                    "country": "US",
                }
            ).encode(),
            headers={"Authorization": f"Bearer {raw}", "Content-Type": "application/json"},
        )

        def post():
            try:
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(request, timeout=5) as response:
                    return json.load(response)
            except OSError:
                return None  # runserver not listening yet

        posted = until(post, timeout=60, what="the API takes the lead")
        lead = Lead.objects.get(public_id=posted["lead_id"])

        until(
            lambda: Lead.objects.filter(pk=lead.pk, owner__isnull=False).exists(),
            timeout=30,
            what="the runner routes the lead",
        )
        until(
            lambda: AuditEvent.objects.filter(
                event_type="crm_create", lead_public_id=lead.public_id
            ).exists(),
            timeout=30,
            what="the worker syncs it to the fake CRM",
        )
        record = CrmRecord.objects.get(lead=lead)
        assert record.status == "synced" and record.external_id
        until(
            lambda: OutboundEmail.objects.filter(
                enrollment__lead=lead, step__position=1, status="sent"
            ).exists(),
            timeout=30,
            what="the first follow-up is sent",
        )
        children = children_of(proc.pid)
        assert len(children) >= 5, children  # worker, runner, CRM sync, sender, web
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    assert "Demo stopped" in output
    assert not [pid for pid in children if alive(pid)]
    assert not CrmConnection.objects.get(pk=hubspot.pk).active


@pytest.mark.django_db
def test_serve_demo_needs_the_demo_data(settings):
    settings.DEBUG = True
    with pytest.raises(CommandError, match="no demo data"):
        call_command("serve_demo", "--no-web", stdout=StringIO())


@pytest.mark.django_db
def test_serve_demo_refuses_to_run_without_debug(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG"):
        call_command("serve_demo", stdout=StringIO())
