"""Each kind of rule against seeded history: what fires, what does not, what it says."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone
from django_tasks_db.models import DBTaskResult, get_date_max

from audit.integrity import seal_all
from audit.models import AuditEvent
from audit.services import record_event
from leads.crm.base import CrmError
from leads.crm.models import CrmCall, CrmConnection
from leads.models import LeadSource
from leads.workflows.models import Workflow
from orchestrator.monitoring.alerts import params, rules
from tests.orchestrator.monitoring.alerts.conftest import add_errors, add_run

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
pytestmark = pytest.mark.django_db


def evaluate(kind: str, **overrides):
    return params.evaluator(kind)(params.resolve(kind, overrides), NOW)


# --- error_spike ---------------------------------------------------------------------


def seed_baseline(per_day: int, days: int = 7, window: int = 15) -> None:
    for d in range(1, days + 1):
        # Inside the same 15 minutes d days ago, and some outside it that must not count.
        add_errors(NOW - timedelta(days=d, minutes=window - 1), per_day)
        add_errors(NOW - timedelta(days=d, minutes=window + 30), 20)


def test_error_spike_fires_above_the_multiple_of_the_same_window_on_past_days():
    seed_baseline(per_day=2)
    add_errors(NOW - timedelta(minutes=10), 25)
    found = evaluate("error_spike", multiplier=3, min_count=10)
    assert list(found) == [rules.SITE]
    details = found[rules.SITE].details
    assert details["count"] == 25
    assert details["baseline"] == [2] * 7
    assert details["threshold"] == 6
    assert details["top_groups"][0]["count"] == 25
    assert "25 errors in the last 15 min" in found[rules.SITE].summary
    assert found[rules.SITE].path == "/errors/"


def test_error_spike_needs_min_count_and_the_multiple():
    seed_baseline(per_day=5)
    add_errors(NOW - timedelta(minutes=10), 14)
    assert evaluate("error_spike", multiplier=3, min_count=10) == {}  # 14 <= 3 x 5
    assert evaluate("error_spike", multiplier=2, min_count=15) == {}  # 14 < min_count
    assert list(evaluate("error_spike", multiplier=2, min_count=10)) == [rules.SITE]


def test_error_spike_counts_only_error_events_in_the_window():
    add_errors(NOW - timedelta(minutes=20), 30)  # before the window
    for i in range(30):
        record_event(event_type="lead_ingested", timestamp=NOW - timedelta(minutes=1, seconds=i))
    assert evaluate("error_spike", min_count=1) == {}


# --- new_error_group -------------------------------------------------------------------


def test_new_error_group_fires_once_per_fingerprint_first_seen_in_the_window():
    add_errors(NOW - timedelta(days=2), error_type="OldError", error_message="known")
    add_errors(NOW - timedelta(minutes=5), 3, error_type="OldError", error_message="known")
    add_errors(NOW - timedelta(minutes=30), 2, error_type="NewError", error_message="fresh")
    found = evaluate("new_error_group", window_minutes=60)
    new_fp = AuditEvent.objects.filter(error_type="NewError").values_list("fingerprint", flat=True)[
        0
    ]
    assert list(found) == [new_fp]
    finding = found[new_fp]
    assert finding.details["count"] == 2
    assert finding.details["error_type"] == "NewError"
    assert finding.path == f"/errors/{new_fp}/"
    assert "fresh" in finding.summary
    # An hour later the group is not new any more.
    assert (
        rules.new_error_group(params.resolve("new_error_group", {}), NOW + timedelta(hours=1)) == {}
    )


def test_new_error_group_caps_a_flood_of_groups():
    for i in range(5):
        add_errors(NOW - timedelta(minutes=5 + i), error_type=f"Boom{i}")
    assert len(evaluate("new_error_group", max_groups=3)) == 3


# --- crm_failures ------------------------------------------------------------------------


def failed_sync(connection, at, message="POST /contacts returned 503"):
    # As leads.crm.services records a failed sync.
    return record_event(
        event_type="error",
        exc=CrmError(message),
        details={"stage": "crm_sync", "connection": connection.name, "gave_up": False},
        timestamp=at,
    )


def test_crm_failures_counts_failed_syncs_per_connection():
    hub = CrmConnection.objects.create(name="hubspot", kind="hubspot")
    pipe = CrmConnection.objects.create(name="pipedrive", kind="pipedrive")
    recent = NOW - timedelta(minutes=10)
    for _ in range(2):
        failed_sync(hub, recent)
    failed_sync(hub, recent + timedelta(minutes=1), message="400 bad email")
    record_event(event_type="crm_create", details={"connection": "hubspot"}, timestamp=recent)
    # A failed HTTP call retried inside a sync that then worked is no failed sync.
    CrmCall.objects.create(
        connection=hub,
        operation="upsert",
        method="POST",
        path="/contacts",
        outcome=CrmCall.Outcome.TRANSIENT,
        latency_ms=10,
        created_at=recent,
    )
    record_event(
        event_type="error",
        exc=RuntimeError("not a CRM sync"),
        details={"stage": "qualify_route"},
        timestamp=recent,
    )
    failed_sync(pipe, recent)
    failed_sync(pipe, NOW - timedelta(hours=3))  # outside the window
    found = evaluate("crm_failures", threshold=3, window_minutes=60)
    assert list(found) == ["hubspot"]
    assert found["hubspot"].details["failures"] == 3
    assert found["hubspot"].details["last_error"] == "400 bad email"
    assert evaluate("crm_failures", threshold=4) == {}
    assert evaluate("crm_failures", threshold=1, connection="pipedrive").keys() == {"pipedrive"}


# --- inbox_failing ---------------------------------------------------------------------


def test_inbox_failing_counts_failed_polls_not_bad_messages():
    LeadSource.objects.create(name="Sales inbox", slug="sales-inbox", kind="email_inbox")
    LeadSource.objects.create(name="Support", slug="support", kind="email_inbox")
    LeadSource.objects.create(name="Off", slug="off", kind="email_inbox", active=False)

    def poll_failed(slug, at):
        record_event(
            event_type="error",
            error_type="InboxError",
            error_message="login failed",
            timestamp=at,
            details={"source": slug, "host": "imap.example", "port": 993, "reason": "login failed"},
        )

    poll_failed("sales-inbox", NOW - timedelta(minutes=4))
    poll_failed("sales-inbox", NOW - timedelta(minutes=9))
    poll_failed("off", NOW - timedelta(minutes=4))  # inactive source
    poll_failed("support", NOW - timedelta(hours=2))  # outside the window
    # A bad message in a healthy inbox is not a failing poll.
    record_event(
        event_type="error",
        error_type="BadMessage",
        error_message="no sender",
        timestamp=NOW - timedelta(minutes=2),
        details={"source": "support", "message_id": "<x@y>", "uid": 3, "reason": "no sender"},
    )
    found = evaluate("inbox_failing", window_minutes=15)
    assert list(found) == ["sales-inbox"]
    assert found["sales-inbox"].details["failures"] == 2
    assert found["sales-inbox"].details["reason"] == "login failed"
    assert evaluate("inbox_failing", min_failures=3) == {}
    # A good poll after the failures: the inbox is back, though the window still
    # holds the failures.
    LeadSource.objects.filter(slug="sales-inbox").update(
        state={"last_poll_ok_at": (NOW - timedelta(minutes=1)).isoformat()}
    )
    assert evaluate("inbox_failing", window_minutes=15) == {}
    LeadSource.objects.filter(slug="sales-inbox").update(
        state={"last_poll_ok_at": (NOW - timedelta(minutes=30)).isoformat()}
    )
    assert list(evaluate("inbox_failing", window_minutes=15)) == ["sales-inbox"]


# --- queue_stalled -------------------------------------------------------------------------


def task(enqueued_at, *, status="READY", queue="default", run_after=None):
    result = DBTaskResult.objects.create(
        args_kwargs={"args": [], "kwargs": {}},
        task_path="leads.workflows.steps.run_step",
        backend_name="default",
        queue_name=queue,
        status=status,
        run_after=run_after or get_date_max(),
    )
    # enqueued_at is auto_now_add: set the past afterwards.
    DBTaskResult.objects.filter(pk=result.pk).update(enqueued_at=enqueued_at)
    return result


def test_queue_stalled_fires_when_the_oldest_runnable_task_waits_too_long():
    task(NOW - timedelta(minutes=40))
    task(NOW - timedelta(minutes=2))
    task(NOW - timedelta(hours=5), status="SUCCESSFUL")
    found = evaluate("queue_stalled", max_age_minutes=30)
    assert list(found) == ["default"]
    assert found["default"].details["waiting"] == 1
    assert "40 min" in found["default"].summary
    assert evaluate("queue_stalled", max_age_minutes=60) == {}


def test_queue_stalled_ignores_tasks_held_back_by_run_after():
    task(NOW - timedelta(hours=2), run_after=NOW - timedelta(minutes=5))
    task(NOW - timedelta(hours=2), run_after=NOW + timedelta(hours=1), queue="later")
    assert evaluate("queue_stalled", max_age_minutes=30) == {}


# --- workflow_missed -----------------------------------------------------------------------


def test_workflow_missed_fires_when_the_last_run_is_older_than_max_age(workflow):
    with time_machine.travel(NOW - timedelta(days=1), tick=False):
        fresh = Workflow.objects.create(name="fresh", config={})
        Workflow.objects.create(name="off", config={}, enabled=False)
        workflow.save()  # its updated_at is a day old too
    add_run(workflow, NOW - timedelta(minutes=90))
    add_run(workflow, NOW - timedelta(minutes=5), dry_run=True)  # a dry run does not count
    add_run(fresh, NOW - timedelta(minutes=10))
    found = evaluate("workflow_missed", max_age_minutes=60)
    assert list(found) == ["sales"]
    assert found["sales"].details["last_run_status"] == "succeeded"
    assert "90 min ago" in found["sales"].summary
    assert found["sales"].path == "/workflows/?workflow=sales"
    assert evaluate("workflow_missed", max_age_minutes=120) == {}


def test_a_workflow_that_never_ran_is_measured_from_its_last_change():
    with time_machine.travel(NOW - timedelta(minutes=30), tick=False):
        Workflow.objects.create(name="new", config={})
    assert evaluate("workflow_missed", max_age_minutes=60) == {}
    found = rules.workflow_missed(
        params.resolve("workflow_missed", {"max_age_minutes": 60}), NOW + timedelta(hours=1)
    )
    assert "never run" in found["new"].summary


# --- unsealed_events -----------------------------------------------------------------------


def test_unsealed_events_fire_when_the_oldest_waits_past_the_bound(settings):
    settings.AUDIT_SEAL_MAX_AGE_SECONDS = 60
    record_event(event_type="lead_ingested", timestamp=NOW - timedelta(minutes=10))
    seal_all()
    assert evaluate("unsealed_events") == {}  # sealed: nothing waits
    first = record_event(event_type="lead_ingested", timestamp=NOW - timedelta(seconds=90))
    record_event(event_type="lead_ingested", timestamp=NOW - timedelta(seconds=5))

    found = evaluate("unsealed_events")
    assert list(found) == [rules.TRAIL]
    details = found[rules.TRAIL].details
    assert details == {
        "unsealed": 2,
        "first_id": first.pk,
        "oldest_at": (NOW - timedelta(seconds=90)).isoformat(),
        "age_seconds": 90.0,
        "max_age_seconds": 60,
    }
    assert "oldest for 90 s" in found[rules.TRAIL].summary
    assert found[rules.TRAIL].path == f"/events/{first.pk}/"
    # An explicit bound wins over the setting; within it, nothing fires.
    assert evaluate("unsealed_events", max_age_seconds=120) == {}
    settings.AUDIT_SEAL_MAX_AGE_SECONDS = 100
    assert evaluate("unsealed_events") == {}

    seal_all()
    assert evaluate("unsealed_events") == {}


def test_unsealed_events_parameters():
    assert params.resolve("unsealed_events", {}) == {"max_age_seconds": None}
    assert params.errors("unsealed_events", {"max_age_seconds": 0}) != []
    assert params.errors("unsealed_events", {"max_age_seconds": "60"}) != []


# --- step_failures --------------------------------------------------------------------


def test_step_failures_counts_error_events_per_configured_stage():
    def failed(stage, at, n=1, message="boom"):
        add_errors(
            NOW - at, n, error_type="StepError", error_message=message, details={"stage": stage}
        )

    failed("send_followup:render", timedelta(minutes=50), message="bad template")
    failed("send_followup", timedelta(minutes=10), 2, message="outcome unknown")
    failed("enroll", timedelta(minutes=5), message="no sequence 'x'")
    failed("enroll", timedelta(hours=2))  # outside the window
    failed("send_followups", timedelta(minutes=5))  # another stage sharing the prefix
    failed("qualify_route", timedelta(minutes=5))  # not a configured stage
    failed("smtp_connect", timedelta(minutes=5))  # smtp_unreachable's
    record_event(event_type="lead_ingested", timestamp=NOW - timedelta(minutes=1))

    found = evaluate("step_failures")
    assert sorted(found) == ["enroll", "send_followup"]
    send = found["send_followup"].details
    assert send["failures"] == 3
    assert send["stages"] == {"send_followup": 2, "send_followup:render": 1}
    assert send["last_error"] == "outcome unknown"
    assert found["enroll"].details["failures"] == 1
    assert "no sequence 'x'" in found["enroll"].summary
    assert list(evaluate("step_failures", threshold=2)) == ["send_followup"]
    assert list(evaluate("step_failures", stages=["qualify_route"])) == ["qualify_route"]


def test_step_failures_parameters():
    assert params.resolve("step_failures", {})["stages"] == ["send_followup", "enroll"]
    assert params.errors("step_failures", {"stages": []}) != []
    assert params.errors("step_failures", {"stages": ["Send Followup"]}) != []
    assert params.errors("step_failures", {"stages": ["a", "a"]}) != []
    assert params.errors("emails_stuck_sending", {"max_age_minutes": 0}) != []
    assert params.errors("smtp_unreachable", {"min_failures": 0}) != []


def test_parameters_are_validated_per_kind():
    assert params.errors("error_spike", {"multiplier": 0}) != []
    assert params.errors("error_spike", {"window": 5}) != []  # unknown name
    assert params.errors("workflow_missed", {"max_age_minutes": "60"}) != []
    assert params.errors("nope", {}) == ["unknown rule kind 'nope'"]
    with pytest.raises(ValueError, match="multiplier"):
        params.resolve("error_spike", {"multiplier": -1})
    assert params.resolve("crm_failures", {"threshold": 2})["window_minutes"] == 60


def test_the_window_uses_the_time_given_not_the_clock():
    add_errors(NOW - timedelta(minutes=5), 12)
    with time_machine.travel(NOW + timedelta(days=30)):
        assert timezone.now() > NOW + timedelta(days=29)
        assert list(evaluate("error_spike", min_count=10)) == [rules.SITE]
