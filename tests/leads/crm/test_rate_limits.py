"""429s postpone a sync, a lost create still counts as ours, and a pass runs concurrently
within the connection's rate limit; against a loopback HubSpot that keeps its contacts."""

import json
import re
import threading
import time
from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from werkzeug import Request, Response

from audit.models import AuditEvent
from leads.crm.models import CrmCall, CrmRecord
from leads.crm.services import crm_sync_lead
from leads.models import Lead
from leads.services import ingest_lead
from leads.workflows.runner import run_pass
from tests.leads.crm.conftest import wait_for_log

CONTACTS = "/crm/v3/objects/contacts"
SEARCH = f"{CONTACTS}/search"
RATE_LIMITED = {
    "status": "error",
    "message": "You have reached your secondly limit.",
    "category": "RATE_LIMITS",
}


class StandIn:
    """HubSpot's contacts API with its state: search, create, update.

    `rate_limited` calls answer 429 with `retry_after` first; `lose_creates`
    creates answer 500 or time out *after* making the contact; every answer
    takes `latency` seconds. It counts requests in flight and when each began.
    """

    def __init__(self, *, rate_limited=0, retry_after="120", lose_creates=0, latency=0.0):
        self.contacts: dict[str, dict] = {}
        self.rate_limited = rate_limited
        self.retry_after = retry_after
        self.lose_creates = lose_creates
        self.lost_by = "500"
        self.latency = latency
        self.creates = 0
        self.started: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def install(self, httpserver):
        httpserver.expect_request(SEARCH, method="POST").respond_with_handler(
            self.wrap(self.search)
        )
        httpserver.expect_request(CONTACTS, method="POST").respond_with_handler(
            self.wrap(self.create)
        )
        httpserver.expect_request(
            re.compile(rf"{CONTACTS}/\d+"), method="PATCH"
        ).respond_with_handler(self.wrap(self.patch))
        return self

    def wrap(self, handler):
        def serve(request: Request) -> Response:
            with self._lock:
                self.started.append(time.monotonic())
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                limited = self.rate_limited > 0
                self.rate_limited -= limited
            try:
                time.sleep(self.latency)
                if limited:
                    return Response(
                        json.dumps(RATE_LIMITED),
                        429,
                        headers={"Retry-After": self.retry_after},
                        content_type="application/json",
                    )
                return handler(request)
            finally:
                with self._lock:
                    self.in_flight -= 1

        return serve

    def search(self, request: Request) -> Response:
        email = request.json["filterGroups"][0]["filters"][0]["value"]
        with self._lock:
            hits = [
                {"id": c, "properties": p} for c, p in self.contacts.items() if p["email"] == email
            ]
        return Response(json.dumps({"total": len(hits), "results": hits[:1]}), 200)

    def create(self, request: Request) -> Response:
        with self._lock:
            self.creates += 1
            cid = str(100 + len(self.contacts))
            self.contacts[cid] = dict(request.json["properties"])
            lose = self.lose_creates > 0
            self.lose_creates -= lose
        if lose and self.lost_by == "timeout":
            time.sleep(1.0)  # past the client's 0.5 s read timeout
        elif lose:
            return Response("upstream request timeout", 500)
        return Response(json.dumps({"id": cid}), 201, content_type="application/json")

    def patch(self, request: Request) -> Response:
        cid = request.path.rsplit("/", 1)[1]
        with self._lock:
            self.contacts[cid].update(request.json["properties"])
        return Response(json.dumps({"id": cid}), 200, content_type="application/json")

    def emails(self):
        return sorted(p["email"] for p in self.contacts.values())


def events(*types):
    return list(AuditEvent.objects.filter(event_type__in=types).order_by("id"))


# --- 429: postponed, not failed -------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_rate_limited_task_is_postponed_then_creates(httpserver, hubspot, pipeline, waits):
    workflow = pipeline["workflow"]
    workflow.config = {**workflow.config, "steps": [{"kind": "crm_sync", "connection": "hubspot"}]}
    workflow.save()
    lead = ingest_lead(
        source=pipeline["source"],
        payload={"email": "ada@engines.example", "title": "CTO", "country": "DE"},
    )
    lead = Lead.objects.get(email="ada@engines.example")
    # Three 429s: every try the connector makes (max_attempts 3), each waiting 20 s.
    crm = StandIn(rate_limited=3, retry_after="20").install(httpserver)
    run_pass(workflow=workflow)
    before = timezone.now()
    call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)

    assert waits == [20.0, 20.0]
    record = CrmRecord.objects.get(lead=lead)
    assert record.status == CrmRecord.Status.PENDING and record.attempts == 0
    assert record.deferrals == 1
    assert record.next_attempt_at >= before + timedelta(seconds=20)
    assert not events("error", "crm_create", "crm_update")
    (deferred,) = events("crm_deferred")
    assert deferred.lead_public_id == lead.public_id
    assert deferred.details["status_code"] == 429
    assert deferred.details["wait_seconds"] == 20.0
    assert deferred.details["connection"] == "hubspot"
    # The 429 is tried again later: not a call that failed for good.
    assert set(CrmCall.objects.values_list("outcome", flat=True)) == {"retry"}
    # The task succeeded and left its successor, due after the wait.
    tasks = DBTaskResult.objects.order_by("enqueued_at")
    assert [t.status for t in tasks] == ["SUCCESSFUL", "READY"]
    assert tasks[1].run_after == record.next_attempt_at
    assert tasks[1].args_kwargs["args"][-1] == deferred.correlation_id

    # Not before its time...
    call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)
    assert crm.creates == 0
    # ...and after it, the sync completes as the create it is.
    with time_machine.travel(record.next_attempt_at + timedelta(seconds=1)):
        call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)
    record.refresh_from_db()
    assert record.status == CrmRecord.Status.SYNCED and record.deferrals == 0
    assert crm.emails() == ["ada@engines.example"]
    assert [e.event_type for e in events("crm_create", "crm_update", "error")] == ["crm_create"]
    assert not DBTaskResult.objects.filter(status="FAILED").exists()


@pytest.mark.django_db
def test_a_retry_after_beyond_the_limit_postpones_without_waiting(httpserver, hubspot, lead, waits):
    crm = StandIn(rate_limited=1, retry_after="3600").install(httpserver)
    record = crm_sync_lead(lead=lead, connection=hubspot)
    assert waits == []
    assert len(httpserver.log) == 1
    assert record.status == CrmRecord.Status.PENDING
    assert record.next_attempt_at >= timezone.now() + timedelta(minutes=59)
    assert not events("error")
    # A task that comes back early leaves it alone: the CRM's wait stands.
    assert crm_sync_lead(lead=lead, connection=hubspot).deferrals == 1
    assert len(httpserver.log) == 1
    assert crm.creates == 0


@pytest.mark.django_db
def test_429s_past_max_deferrals_fail_saying_why(httpserver, hubspot, lead, waits):
    hubspot.options = {**hubspot.options, "max_deferrals": 2}
    hubspot.save()
    StandIn(rate_limited=100, retry_after="3600").install(httpserver)
    for deferrals in (1, 2):
        record = crm_sync_lead(lead=lead, connection=hubspot, force=True)
        assert record.deferrals == deferrals and record.attempts == 0
    assert not events("error")

    record = crm_sync_lead(lead=lead, connection=hubspot, force=True)
    assert record.status == CrmRecord.Status.FAILED
    assert record.attempts == 1 and record.deferrals == 0
    assert "rate-limited 3 times in a row (max_deferrals 2)" in record.last_error
    (error,) = events("error")
    assert "rate-limited 3 times in a row" in error.error_message
    assert error.details["status_code"] == 429
    assert len(events("crm_deferred")) == 2


# --- A create whose answer was lost ---------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("lost_by", ["500", "timeout"])
def test_a_lost_create_found_by_a_later_sync_is_recorded_as_created(
    httpserver, connect, monkeypatch, lead, waits, lost_by
):
    monkeypatch.setenv("HUBSPOT_TEST_TOKEN", "pat-na1-secret")
    # One try per sync: the lost answer ends this sync, the next one finds the contact.
    hubspot = connect(
        "hubspot", credentials={"token_env": "HUBSPOT_TEST_TOKEN"}, options={"max_attempts": 1}
    )
    crm = StandIn(lose_creates=1).install(httpserver)
    crm.lost_by = lost_by
    record = crm_sync_lead(lead=lead, connection=hubspot)
    if lost_by == "timeout":
        wait_for_log(httpserver, 2)
    assert record.status == CrmRecord.Status.FAILED
    assert record.create_attempted_at is not None
    assert crm.emails() == ["ada@example.com"]

    record = crm_sync_lead(lead=lead, connection=hubspot, force=True)
    assert record.status == CrmRecord.Status.SYNCED and record.external_id == "100"
    assert record.create_attempted_at is None
    assert crm.creates == 1 and list(crm.contacts) == ["100"]
    assert [e.event_type for e in events("crm_create", "crm_update")] == ["crm_create"]
    assert [op for (op,) in CrmCall.objects.order_by("pk").values_list("operation")] == [
        "search",
        "create",
        "search",
        "update",
    ]

    # Later changes to the contact this system created are updates.
    lead.title = "CEO"
    lead.save()
    crm_sync_lead(lead=lead, connection=hubspot)
    assert [e.event_type for e in events("crm_create", "crm_update")] == [
        "crm_create",
        "crm_update",
    ]


@pytest.mark.django_db
def test_a_lost_create_then_a_429_is_still_a_create(httpserver, connect, monkeypatch, lead, waits):
    monkeypatch.setenv("HUBSPOT_TEST_TOKEN", "pat-na1-secret")
    hubspot = connect(
        "hubspot", credentials={"token_env": "HUBSPOT_TEST_TOKEN"}, options={"max_attempts": 2}
    )
    crm = StandIn(lose_creates=1)
    # search, create (lost), then the retried search meets a long 429.
    original = crm.search
    calls = []

    def search(request):
        calls.append(1)
        if len(calls) == 2:
            return Response(json.dumps(RATE_LIMITED), 429, headers={"Retry-After": "600"})
        return original(request)

    crm.search = search
    crm.install(httpserver)
    record = crm_sync_lead(lead=lead, connection=hubspot)
    assert record.deferrals == 1 and not events("error")

    record = crm_sync_lead(lead=lead, connection=hubspot, force=True)
    assert record.status == CrmRecord.Status.SYNCED
    assert crm.creates == 1
    assert [e.event_type for e in events("crm_create", "crm_update")] == ["crm_create"]


@pytest.mark.django_db
def test_a_contact_someone_else_created_is_an_update(httpserver, hubspot, lead):
    crm = StandIn().install(httpserver)
    crm.contacts["7"] = {"email": "ada@example.com"}
    record = crm_sync_lead(lead=lead, connection=hubspot)
    assert record.external_id == "7" and crm.creates == 0
    assert [e.event_type for e in events("crm_create", "crm_update")] == ["crm_update"]


# --- sync_crm --retry-failed: concurrent, within the rate limit -------------------------


def backends():
    """Open connections to the test database (PostgreSQL; SQLite has no server to ask)."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


def failed_leads(source, hubspot, count):
    leads = Lead.objects.bulk_create(
        Lead(email=f"lead{i}@example.com", source=source) for i in range(count)
    )
    CrmRecord.objects.bulk_create(
        CrmRecord(lead=lead, connection=hubspot, status="needs_attention", attempts=5)
        for lead in leads
    )


@pytest.mark.django_db(transaction=True)
def test_retry_failed_runs_records_concurrently_up_to_the_limit(httpserver, hubspot, web_source):
    hubspot.options = {**hubspot.options, "concurrency": 3, "rate_limit": 1000}
    hubspot.save()
    # Slow answers: more threads would have more requests in flight.
    crm = StandIn(latency=0.05).install(httpserver)
    failed_leads(web_source, hubspot, 24)
    before = backends()

    call_command("sync_crm", "--retry-failed", stdout=StringIO())

    assert set(CrmRecord.objects.values_list("status", flat=True)) == {"synced"}
    assert crm.emails() == sorted(f"lead{i}@example.com" for i in range(24))
    assert len(events("crm_create")) == 24 and not events("crm_update", "error")
    assert crm.max_in_flight == 3
    # Each thread closed the database connection it opened.
    assert backends() == before


@pytest.mark.django_db(transaction=True)
def test_retry_failed_never_exceeds_the_rate_limit(httpserver, hubspot, web_source):
    hubspot.options = {**hubspot.options, "concurrency": 4, "rate_limit": 20}
    hubspot.save()
    crm = StandIn(latency=0.005).install(httpserver)
    failed_leads(web_source, hubspot, 20)

    call_command("sync_crm", "--retry-failed", stdout=StringIO())

    assert set(CrmRecord.objects.values_list("status", flat=True)) == {"synced"}
    started = sorted(crm.started)
    assert len(started) == 40  # a search and a create each
    # The limiter books starts 50 ms apart; a request is never sent early, but
    # a busy machine may send one late, which bunches it with the next. So: any
    # 21 consecutive requests span at least a second, less 200 ms for a late
    # first one (four unpaced threads would send 21 in a few milliseconds).
    assert min(b - a for a, b in zip(started, started[20:], strict=False)) >= 1.0 - 0.2
    # And the whole pass took at least the 39 intervals it must.
    assert started[-1] - started[0] >= 39 * 0.045


@pytest.mark.django_db(transaction=True)
def test_a_429_in_a_pass_holds_every_thread(httpserver, hubspot, web_source, waits):
    hubspot.options = {**hubspot.options, "concurrency": 4, "rate_limit": 20}
    hubspot.save()
    crm = StandIn(rate_limited=1, retry_after="1").install(httpserver)
    failed_leads(web_source, hubspot, 8)

    call_command("sync_crm", "--retry-failed", stdout=StringIO())

    assert set(CrmRecord.objects.values_list("status", flat=True)) == {"synced"}
    started = sorted(crm.started)
    # After the 429 (the first request), nobody sent anything for a second,
    # not even the threads that had their turn booked before it came.
    assert started[1] - started[0] >= 0.95
    assert len(started) == 17
    assert not events("error", "crm_deferred")
