"""Rules, channels and seeded history for the alert tests; a real SMTP and HTTP server."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from pytest_httpserver import HTTPServer

from audit.services import record_event
from leads.workflows.models import Workflow, WorkflowRun
from orchestrator.monitoring.alerts.channels import webhook
from orchestrator.monitoring.alerts.models import AlertChannel, AlertRule
from orchestrator.monitoring.alerts.services import check_alerts
from tests.leads.followups.conftest import SMTPServer, free_port, mailers

BASE_URL = "https://orchestrator.example.test"
SECRET = "alert-signing-secret-for-tests"


@pytest.fixture(autouse=True)
def alert_settings(settings, monkeypatch):
    # Only the pages alerts link to, whatever else the project mounts.
    settings.ROOT_URLCONF = "tests.orchestrator.monitoring.alerts.urls"
    settings.ALERTS_BASE_URL = BASE_URL
    settings.ALERTS_FROM_EMAIL = "alerts@example.test"
    settings.ALERTS_RETRY_BASE_SECONDS = 60
    settings.ALERTS_MAX_ATTEMPTS = 5
    settings.ALERTS_HTTP_ATTEMPTS = 2
    settings.ALERTS_HTTP_TIMEOUT = 2
    monkeypatch.setenv("ALERT_HOOK_SECRET", SECRET)
    return settings


@pytest.fixture(autouse=True)
def waits(monkeypatch) -> list[float]:
    """The in-pass HTTP retry sleeps, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(webhook, "sleep", slept.append)
    return slept


@pytest.fixture(scope="session")
def make_httpserver() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.fixture
def smtp_down(settings) -> Iterator[SMTPServer]:
    """MAILERS point at a port where nothing listens yet; start() brings the server up."""
    port = free_port()
    settings.MAILERS = mailers(port)
    server = SMTPServer(port)
    yield server
    server.stop()


@pytest.fixture
def smtp(smtp_down) -> SMTPServer:
    smtp_down.start()
    return smtp_down


@pytest.fixture
def email_channel(db) -> AlertChannel:
    return AlertChannel.objects.create(
        name="ops-mail", kind="email", target="ops@example.test, oncall@example.test"
    )


@pytest.fixture
def hook_channel(db, httpserver) -> AlertChannel:
    return AlertChannel.objects.create(
        name="ops-hook",
        kind="webhook",
        target=httpserver.url_for("/hooks/alerts"),
        secret_env="ALERT_HOOK_SECRET",
    )


@pytest.fixture
def make_rule(db):
    def make(kind: str, channels=(), **fields) -> AlertRule:
        rule = AlertRule.objects.create(
            name=fields.pop("name", kind), kind=kind, params=fields.pop("params", {}), **fields
        )
        rule.channels.set(channels)
        return rule

    return make


@pytest.fixture
def workflow(db) -> Workflow:
    return Workflow.objects.create(name="sales", config={})


def add_run(workflow: Workflow, at: datetime, **fields) -> WorkflowRun:
    return WorkflowRun.objects.create(
        workflow=workflow,
        started_at=at,
        finished_at=at + timedelta(seconds=5),
        status=fields.pop("status", WorkflowRun.Status.SUCCEEDED),
        correlation_id="c",
        **fields,
    )


def add_errors(at: datetime, n: int = 1, *, error_type: str = "CRMError", **fields) -> None:
    message = fields.pop("error_message", "the CRM timed out")
    for i in range(n):
        record_event(
            event_type="error",
            error_type=error_type,
            error_message=message,
            timestamp=at + timedelta(seconds=i),
            **fields,
        )


# --- a rule that fires at T0, for the channel tests ------------------------------------

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def firing(make_rule, workflow):
    """A workflow_missed rule firing at T0; channels are attached by each test."""
    with time_machine.travel(T0 - timedelta(days=1), tick=False):
        workflow.save()
    add_run(workflow, T0 - timedelta(hours=2))
    return make_rule("workflow_missed", params={"max_age_minutes": 60})


def run_at(when: datetime):
    with time_machine.travel(when, tick=False):
        return check_alerts()
