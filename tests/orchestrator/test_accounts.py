"""Failed logins: counted per account and per client IP, refused unchecked once spent,
each checked failure audited with the client's real address."""

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from audit.models import AuditEvent

NOW = datetime(2026, 6, 1, 12, 0, 5, tzinfo=UTC)


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def login(client, username, password, *, ip="203.0.113.7", path="/accounts/login/"):
    return client.post(
        path,
        {"username": username, "password": password},
        REMOTE_ADDR="10.0.0.2",  # the proxy
        HTTP_X_REAL_IP=ip,
    )


@pytest.fixture(autouse=True)
def behind_the_proxy(settings):
    settings.CLIENT_IP_META_KEY = "HTTP_X_REAL_IP"
    settings.LOGIN_FAILURES_PER_ACCOUNT = "3/15m"
    settings.LOGIN_FAILURES_PER_IP = "5/h"


def failures():
    return list(AuditEvent.objects.filter(event_type="login_failed").order_by("id"))


@pytest.mark.django_db
def test_an_account_is_refused_unchecked_after_its_failures_even_with_the_password(
    client, auditor, frozen
):
    for _ in range(3):
        response = login(client, "audrey", "wrong")
        assert "didn't match" in response.content.decode()
    assert [e.details["ip"] for e in failures()] == ["203.0.113.7"] * 3

    # Right password, but the account's failures are spent: not even checked.
    response = login(client, "audrey", "pw-audrey")
    body = response.content.decode()
    # django-ratelimit's windows are fixed slots: at most the 15 minutes are left.
    minutes = int(re.search(r"try again in (\d+) minutes", body)[1])
    assert "Too many failed logins" in body and 1 <= minutes <= 15
    assert "_auth_user_id" not in client.session
    assert len(failures()) == 3  # refused attempts do not flood the trail

    # Another address does not help: the count is the account's.
    assert (
        "Too many failed logins" in login(client, "AUDREY", "x", ip="198.51.100.9").content.decode()
    )

    frozen.shift(timedelta(minutes=15))
    response = login(client, "audrey", "pw-audrey")
    assert response.status_code == 302 and client.session["_auth_user_id"]


@pytest.mark.django_db
def test_one_address_guessing_many_accounts_is_refused_and_others_are_not(client, auditor, frozen):
    for n in range(5):
        login(client, f"guess{n}", "wrong")
    assert "Too many failed logins" in login(client, "guess9", "x").content.decode()
    # A different visitor behind the same proxy has a count of its own.
    response = login(client, "audrey", "pw-audrey", ip="198.51.100.9")
    assert response.status_code == 302


@pytest.mark.django_db
def test_the_admin_login_counts_and_refuses_the_same_way(client, admin_user, frozen):
    for _ in range(3):
        login(client, "admin", "wrong", path="/admin/login/")
    response = login(client, "admin", "password", path="/admin/login/")
    assert "Too many failed logins" in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert len(failures()) == 3


@pytest.mark.django_db
def test_without_the_proxy_header_setting_the_peer_address_is_the_client(client, settings, frozen):
    settings.CLIENT_IP_META_KEY = ""
    login(client, "nobody", "wrong")
    (event,) = failures()
    assert event.details["ip"] == "10.0.0.2"


def test_a_forwarded_chain_counts_the_address_the_proxy_added(rf, settings):
    from core.http import client_ip

    settings.CLIENT_IP_META_KEY = "HTTP_X_FORWARDED_FOR"
    request = rf.get("/", HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.7", REMOTE_ADDR="10.0.0.2")
    assert client_ip(request) == "203.0.113.7"
    request = rf.get("/", REMOTE_ADDR="10.0.0.2")
    assert client_ip(request) == "10.0.0.2"
