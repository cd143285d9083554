"""Every acknowledged lead is durable, and a retried one is never doubled, when the
web server is killed (SIGKILL, no shutdown) in the middle of a load."""

import http.client
import json
import os
import signal
import threading
import time
import uuid

import pytest

from audit.integrity import seal_all, verify
from audit.models import AuditEvent
from leads.models import IdempotencyRecord, Lead
from orchestrator.devtools.bench_intake import bench_key, gunicorn, request

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CLIENTS = 6
PER_CLIENT = 40


def test_sigkill_of_the_server_loses_and_doubles_no_lead():
    actor, raw = bench_key("sigkill")
    run = uuid.uuid4().hex[:8]
    work = [
        [(f"{run}-{c}-{i}", {"email": f"c{c}.l{i}.{run}@example.com"}) for i in range(PER_CLIENT)]
        for c in range(CLIENTS)
    ]
    where = {"port": 0}
    acknowledged: dict[str, str] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(items: list[tuple[str, dict]]) -> None:
        # The client's half of the contract: no answer, or a 5xx, means "send it
        # again with the same key".
        try:
            for key, lead in items:
                deadline = time.monotonic() + 120
                while True:
                    headers = {
                        "Authorization": f"Bearer {raw}",
                        "Content-Type": "application/json",
                        "Idempotency-Key": key,
                    }
                    try:
                        status, body = request(
                            where["port"],
                            "POST",
                            "/api/v1/leads",
                            json.dumps(lead).encode(),
                            headers,
                        )
                    # A connection refused or cut, or an answer cut off midway.
                    except (OSError, http.client.HTTPException):
                        status, body = 0, b""
                    if status in (200, 201):
                        with lock:
                            acknowledged[key] = json.loads(body)["lead_id"]
                        break
                    assert status == 0 or status >= 500, (status, body)
                    assert time.monotonic() < deadline, "the lead was never acknowledged"
                    time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001 (reported to the test thread)
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(items,)) for items in work]
    with gunicorn(workers=2) as (port, server):
        where["port"] = port
        for thread in threads:
            thread.start()
        while len(acknowledged) < CLIENTS * PER_CLIENT // 3 and not errors:
            time.sleep(0.01)
        # The master and its workers at once, mid-request: nothing gets to clean up.
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        killed_at = len(acknowledged)
    with gunicorn(workers=2) as (port, _server):
        where["port"] = port
        for thread in threads:
            thread.join(timeout=180)
    assert errors == []
    assert killed_at < CLIENTS * PER_CLIENT  # the kill did land mid-load
    assert len(acknowledged) == CLIENTS * PER_CLIENT
    # Each acknowledged key is one stored lead, with its record and one event.
    leads = dict(
        Lead.objects.filter(email__endswith=f".{run}@example.com").values_list("public_id", "email")
    )
    assert len(leads) == CLIENTS * PER_CLIENT
    assert set(acknowledged.values()) == set(leads)
    assert IdempotencyRecord.objects.filter(key__startswith=run).count() == len(leads)
    events = AuditEvent.objects.filter(event_type="lead_ingested", actor=actor)
    assert events.count() == len(leads)
    assert set(events.values_list("lead_public_id", flat=True)) == set(leads)
    seal_all()
    assert verify(anchors=False).ok
