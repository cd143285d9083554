import time

import pytest
from pytest_httpserver import HTTPServer

from leads.crm import base
from leads.crm.models import CrmConnection
from leads.crm.salesforce import SalesforceConnector
from leads.models import Lead

# Tiny waits and a tiny read timeout keep the failure paths fast.
FAST = {"timeout": [2, 0.5], "max_attempts": 3, "backoff": 0.01, "max_backoff": 0.05}


@pytest.fixture(scope="session")
def make_httpserver():
    # Threaded: a handler that sleeps past the client's read timeout must not
    # hold up the retry that follows it.
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.fixture(autouse=True)
def _strict_server(httpserver):
    """Any request no handler expected fails the test (the server answers it with 500)."""
    yield
    httpserver.check_assertions()


@pytest.fixture(autouse=True)
def waits(monkeypatch):
    """The retry policy's sleeps, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(base, "sleep", slept.append)
    return slept


@pytest.fixture(autouse=True)
def _forget_salesforce_tokens():
    SalesforceConnector._tokens.clear()
    yield
    SalesforceConnector._tokens.clear()


@pytest.fixture
def lead(web_source):
    lead = Lead.objects.create(
        email="ada@example.com",
        name="Ada Lovelace",
        company="Analytical Engines",
        phone="+44 20 7946 0000",
        title="CTO",
        country="GB",
        source=web_source,
    )
    lead.public_id = Lead.format_public_id(lead.pk)
    lead.save()
    return lead


@pytest.fixture
def connect(httpserver, db):
    """A CrmConnection of a kind pointed at the loopback server."""

    def make(kind: str, *, credentials: dict, options: dict | None = None, **fields):
        return CrmConnection.objects.create(
            name=fields.pop("name", kind),
            kind=kind,
            base_url=fields.pop("base_url", httpserver.url_for("").rstrip("/")),
            credentials=credentials,
            options={**FAST, **(options or {})},
            **fields,
        )

    return make


@pytest.fixture
def hubspot(connect, monkeypatch):
    monkeypatch.setenv("HUBSPOT_TEST_TOKEN", "pat-na1-secret")
    return connect("hubspot", credentials={"token_env": "HUBSPOT_TEST_TOKEN"})


def wait_for_log(server, count: int, timeout: float = 5.0) -> None:
    """Wait until the server has answered `count` requests.

    A handler kept sleeping past the client's timeout answers after the client
    moved on; waiting for it keeps its log entry out of the next test.
    """
    deadline = time.monotonic() + timeout
    while len(server.log) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(server.log) == count
