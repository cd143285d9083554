"""One alert per incident: open, no repeats, snooze, resolve; with time travel."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.core.management import call_command

from audit.models import AuditEvent
from audit.services import record_event
from orchestrator.monitoring.alerts.models import AlertChannel, AlertRule, Delivery, Incident
from orchestrator.monitoring.alerts.services import check_alerts, evaluate_rule
from tests.orchestrator.monitoring.alerts.conftest import BASE_URL, add_run

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def missed(make_rule, email_channel, workflow):
    """A workflow_missed rule that fires at T0: the last run started 2 hours before."""
    with time_machine.travel(T0 - timedelta(days=1), tick=False):
        workflow.save()
    add_run(workflow, T0 - timedelta(hours=2))
    return make_rule("workflow_missed", [email_channel], params={"max_age_minutes": 60})


def run_at(when: datetime):
    with time_machine.travel(when, tick=False):
        return check_alerts()


def alert_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type="alert_sent").order_by("id"))


def test_an_incident_alerts_once_then_resolves_with_a_notice(missed, workflow, mailoutbox):
    summary = run_at(T0)
    assert (summary.counts["opened"], summary.counts["sent"]) == (1, 1)
    incident = Incident.objects.get()
    assert incident.state == "open" and incident.key == "sales"
    assert incident.last_notified_at == T0
    assert len(mailoutbox) == 1
    message = mailoutbox[0]
    assert message.subject.startswith("[ALERT] Workflow missed its schedule")
    assert message.to == ["ops@example.test", "oncall@example.test"]
    assert f"{BASE_URL}/workflows/?workflow=sales" in message.body
    [event] = alert_events()
    assert event.actor == "system"
    assert event.workflow == "sales"
    assert event.details["notice"] == "opened"
    assert event.details["rule"] == "workflow_missed"
    assert event.details["incident_id"] == incident.pk
    assert event.details["channel"] == "ops-mail"
    assert event.details["attempt"] == 1

    # Still missing its schedule on later passes: no repeats.
    for minutes in (1, 5, 30):
        summary = run_at(T0 + timedelta(minutes=minutes))
        assert summary.counts["queued"] == 0
    assert len(mailoutbox) == 1
    assert Incident.objects.get().last_seen_at == T0 + timedelta(minutes=30)

    # It runs again: resolved, and one resolved notice.
    add_run(workflow, T0 + timedelta(minutes=40))
    summary = run_at(T0 + timedelta(minutes=41))
    assert summary.counts["resolved"] == 1
    incident.refresh_from_db()
    assert incident.state == "resolved"
    assert incident.resolved_at == T0 + timedelta(minutes=41)
    assert len(mailoutbox) == 2
    assert mailoutbox[1].subject.startswith("[RESOLVED]")
    assert "Resolved after 41 min" in mailoutbox[1].body
    assert [e.details["notice"] for e in alert_events()] == ["opened", "resolved"]

    run_at(T0 + timedelta(minutes=50))
    assert len(mailoutbox) == 2

    # Missed again later: a new incident, a new alert.
    run_at(T0 + timedelta(minutes=40 + 61))
    assert Incident.objects.filter(state="open").count() == 1
    assert Incident.objects.count() == 2
    assert len(mailoutbox) == 3


def test_unsealed_events_open_one_incident_until_the_sealer_runs(
    make_rule, email_channel, settings, mailoutbox
):
    settings.AUDIT_SEAL_MAX_AGE_SECONDS = 60
    make_rule("unsealed_events", [email_channel])
    with time_machine.travel(T0, tick=False):
        record_event(event_type="lead_ingested")
        record_event(event_type="lead_ingested")
    # Within the bound: quiet.
    assert run_at(T0 + timedelta(seconds=30)).counts["opened"] == 0

    # The sealer is not running; the window grows past the bound.
    summary = run_at(T0 + timedelta(seconds=75))
    assert (summary.counts["opened"], summary.counts["sent"]) == (1, 1)
    incident = Incident.objects.get()
    assert incident.state == "open" and incident.key == "audit"
    assert incident.details["age_seconds"] == 75.0
    assert incident.details["unsealed"] == 2
    assert incident.details["max_age_seconds"] == 60
    assert mailoutbox[0].subject.startswith("[ALERT] Audit events left unsealed")
    run_at(T0 + timedelta(minutes=5))  # still unsealed: no repeat
    assert len(mailoutbox) == 1
    assert Incident.objects.get().details["age_seconds"] == 300.0

    with time_machine.travel(T0 + timedelta(minutes=6), tick=False):
        call_command("seal_audit", verbosity=0)
    summary = run_at(T0 + timedelta(minutes=6, seconds=10))
    assert summary.counts["resolved"] == 1
    assert Incident.objects.get().state == "resolved"
    assert mailoutbox[1].subject.startswith("[RESOLVED]")


def test_a_snoozed_rule_stays_quiet_then_alerts_if_still_firing(missed, mailoutbox):
    AlertRule.objects.filter(pk=missed.pk).update(snooze_until=T0 + timedelta(hours=1))
    run_at(T0)
    incident = Incident.objects.get()
    assert incident.state == "open"
    assert incident.last_notified_at is None
    assert Delivery.objects.count() == 0
    run_at(T0 + timedelta(minutes=30))
    assert mailoutbox == []
    assert alert_events() == []

    run_at(T0 + timedelta(minutes=61))
    assert len(mailoutbox) == 1
    run_at(T0 + timedelta(minutes=70))
    assert len(mailoutbox) == 1
    assert len(alert_events()) == 1


def test_a_snoozed_incident_is_announced_again_once_when_the_snooze_ends(missed, mailoutbox):
    run_at(T0)
    assert len(mailoutbox) == 1
    Incident.objects.update(snooze_until=T0 + timedelta(hours=2))
    run_at(T0 + timedelta(hours=1))
    assert len(mailoutbox) == 1
    run_at(T0 + timedelta(hours=2, minutes=1))
    assert len(mailoutbox) == 2
    assert mailoutbox[1].subject.startswith("[ALERT]")
    run_at(T0 + timedelta(hours=2, minutes=5))
    assert len(mailoutbox) == 2
    assert [e.details["notice"] for e in alert_events()] == ["opened", "opened"]


def test_resolving_during_a_snooze_sends_no_notice(missed, workflow, mailoutbox):
    run_at(T0)
    AlertRule.objects.filter(pk=missed.pk).update(snooze_until=T0 + timedelta(hours=3))
    add_run(workflow, T0 + timedelta(minutes=10))
    summary = run_at(T0 + timedelta(minutes=11))
    assert summary.counts["resolved"] == 1
    assert len(mailoutbox) == 1
    assert Incident.objects.get().state == "resolved"


def test_no_resolved_notice_when_the_rule_does_not_want_one(missed, workflow, mailoutbox):
    AlertRule.objects.filter(pk=missed.pk).update(notify_resolved=False)
    run_at(T0)
    add_run(workflow, T0 + timedelta(minutes=10))
    run_at(T0 + timedelta(minutes=11))
    assert len(mailoutbox) == 1
    assert Incident.objects.get().state == "resolved"


def test_one_open_incident_per_rule_and_key_even_if_evaluated_twice_at_once(missed):
    missed.refresh_from_db()
    first = evaluate_rule(rule=missed, now=T0)
    second = evaluate_rule(rule=missed, now=T0 + timedelta(seconds=1))
    assert (first["opened"], second["opened"]) == (1, 0)
    assert Incident.objects.count() == 1
    assert Delivery.objects.count() == 1


def test_disabling_a_rule_closes_its_incidents_quietly(missed, mailoutbox):
    run_at(T0)
    AlertRule.objects.filter(pk=missed.pk).update(enabled=False)
    summary = run_at(T0 + timedelta(minutes=5))
    assert summary.counts["rules"] == 0
    assert Incident.objects.get().state == "resolved"
    assert len(mailoutbox) == 1


def test_a_rule_with_bad_parameters_is_reported_not_fatal(missed, make_rule, mailoutbox):
    AlertRule.objects.create(name="broken", kind="error_spike", params={"multiplier": "lots"})
    summary = run_at(T0)
    assert "broken" in summary.invalid
    assert "multiplier" in str(summary)
    assert len(mailoutbox) == 1  # the good rule still alerted


def test_a_disabled_channel_gets_nothing(missed, email_channel, mailoutbox):
    AlertChannel.objects.filter(pk=email_channel.pk).update(enabled=False)
    run_at(T0)
    assert Delivery.objects.count() == 0
    assert mailoutbox == []


def test_models_validate_parameters_and_targets(db):
    rule = AlertRule(name="r", kind="crm_failures", params={"threshold": 0})
    with pytest.raises(ValidationError, match="threshold"):
        rule.full_clean()
    AlertRule(name="ok", kind="crm_failures", params={"threshold": 3}).full_clean()
    with pytest.raises(ValidationError, match="secret_env"):
        AlertChannel(name="h", kind="webhook", target="https://example.test/hook").full_clean()
    with pytest.raises(ValidationError, match="environment variable"):
        AlertChannel(
            name="h", kind="webhook", target="https://example.test/hook", secret_env="s3cr3t!"
        ).full_clean()
    with pytest.raises(ValidationError, match="not an email address"):
        AlertChannel(name="m", kind="email", target="ops@example.test, nobody").full_clean()
    # A Slack webhook URL is a credential: named by url_env, never stored.
    with pytest.raises(ValidationError, match="a Slack webhook URL is a credential"):
        AlertChannel(name="s", kind="slack", target="https://hooks.slack.test/T/B/x").full_clean()
    with pytest.raises(ValidationError, match="url_env"):
        AlertChannel(name="s", kind="slack").full_clean()
    with pytest.raises(ValidationError, match="AUDIT_SIGNING_KEY may not be used as a credential"):
        AlertChannel(name="s", kind="slack", url_env="AUDIT_SIGNING_KEY").full_clean()
    AlertChannel(name="s", kind="slack", url_env="SLACK_OPS_URL").full_clean()
