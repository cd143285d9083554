"""manage.py check_alerts: one pass, overlapping runs skip; the admin pages."""

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command

from audit.models import AuditEvent
from core import locks
from orchestrator.monitoring.alerts.models import AlertRule, Delivery, Incident
from tests.orchestrator.monitoring.alerts.conftest import add_run

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def firing(make_rule, email_channel, workflow):
    with time_machine.travel(T0 - timedelta(days=1), tick=False):
        workflow.save()
    add_run(workflow, T0 - timedelta(hours=2))
    return make_rule("workflow_missed", [email_channel], params={"max_age_minutes": 60})


def check_alerts(*args: str) -> str:
    out = StringIO()
    with time_machine.travel(T0, tick=False):
        call_command("check_alerts", *args, stdout=out)
    return out.getvalue()


def test_one_pass_reports_what_it_did(firing, mailoutbox):
    output = check_alerts()
    assert "rules 1, opened 1, resolved 0, queued 1, sent 1, retry 0, failed 0" in output
    assert len(mailoutbox) == 1
    assert AuditEvent.objects.filter(event_type="alert_sent").count() == 1
    # The lease is given back at the end of the run.
    assert locks.acquire("check_alerts", ttl=timedelta(minutes=1))


def test_an_overlapping_run_skips(firing, mailoutbox):
    holder = locks.acquire("check_alerts", ttl=timedelta(minutes=30))
    assert holder
    output = check_alerts()
    assert "another run holds the lock" in output
    assert Incident.objects.count() == 0
    assert mailoutbox == []
    locks.release("check_alerts", holder)
    assert "opened 1" in check_alerts()


def test_the_admin_edits_rules_and_shows_incidents_read_only(admin_client, firing, mailoutbox):
    check_alerts()
    incident = Incident.objects.get()
    delivery = Delivery.objects.get()
    for url in [
        "/admin/alerts/alertrule/",
        "/admin/alerts/alertrule/add/",
        f"/admin/alerts/alertrule/{firing.pk}/change/",
        "/admin/alerts/alertchannel/",
        "/admin/alerts/alertchannel/add/",
        "/admin/alerts/incident/",
        f"/admin/alerts/incident/{incident.pk}/change/",
        "/admin/alerts/delivery/",
        f"/admin/alerts/delivery/{delivery.pk}/change/",
    ]:
        assert admin_client.get(url).status_code == 200, url
    assert admin_client.get("/admin/alerts/incident/add/").status_code == 403

    response = admin_client.post(
        "/admin/alerts/alertrule/add/",
        {"name": "spike", "kind": "error_spike", "params": '{"multiplier": 0}', "enabled": "on"},
    )
    assert response.status_code == 200  # the form again, with the error
    assert "multiplier" in response.content.decode()
    assert not AlertRule.objects.filter(name="spike").exists()


def test_snoozing_from_the_admin_is_audited(admin_client, firing, admin_user):
    response = admin_client.post(
        "/admin/alerts/alertrule/",
        {"action": "snooze_hour", "_selected_action": [firing.pk]},
    )
    assert response.status_code == 302
    firing.refresh_from_db()
    assert firing.snooze_until is not None
    event = AuditEvent.objects.get(event_type="alert_snoozed")
    assert event.actor == f"user:{admin_user.username}"
    assert event.details["rule"] == "workflow_missed"
    assert event.details["until"] == firing.snooze_until.isoformat()
