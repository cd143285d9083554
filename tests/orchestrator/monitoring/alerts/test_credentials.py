"""Issue 11 for alert channels: credentials are variable names from the allowed set.

Secrets are read at send time through core.credentials, so a row planted past
AlertChannel.clean still sends nothing; a Slack webhook URL is a credential
(url_env) and never appears in the admin or in a delivery's error.
"""

import importlib

import pytest
from django.contrib.auth.models import Permission, User
from django.core import checks
from django.db import connection as db
from django.utils import timezone

from orchestrator.monitoring.alerts.models import AlertChannel, Delivery
from tests.orchestrator.monitoring.alerts.conftest import T0, run_at


@pytest.fixture(autouse=True)
def _strict_server(httpserver):
    yield
    httpserver.check_assertions()


SLACK_PATH = "/services/T0/B0/s3cr3t-slack-path"
pytestmark = pytest.mark.django_db(transaction=True)
migration = importlib.import_module(
    "orchestrator.monitoring.alerts.migrations.0002_alertchannel_url_env"
)


def plant(**fields) -> AlertChannel:
    """A channel written with raw SQL, past AlertChannel.clean."""
    row = {"target": "", "secret_env": "", "url_env": "", "enabled": True, **fields}
    row["created_at"] = timezone.now()
    columns = ", ".join(row)
    with db.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {AlertChannel._meta.db_table} ({columns}) "
            f"VALUES ({', '.join(['%s'] * len(row))})",
            list(row.values()),
        )
    return AlertChannel.objects.get(name=fields["name"])


def test_a_planted_webhook_cannot_sign_with_secret_key(httpserver, firing, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "the-django-secret-key")
    channel = plant(
        name="evil",
        kind="webhook",
        target=httpserver.url_for("/hooks/alerts"),
        secret_env="SECRET_KEY",
    )
    firing.channels.add(channel)
    assert run_at(T0).counts["failed"] == 1
    delivery = Delivery.objects.get()
    assert delivery.last_error.startswith(
        "environment variable SECRET_KEY may not be used as a credential (Django's SECRET_KEY "
        "signs sessions and password reset links); use a variable of its own: names starting "
        "with CRM_"
    )
    assert delivery.last_error.endswith("(the signing secret of alert channel 'evil')")
    assert httpserver.log == []


def test_a_planted_slack_channel_cannot_read_the_audit_key(httpserver, firing, monkeypatch):
    # Were the variable read, the notice would go to this server.
    monkeypatch.setenv("AUDIT_SIGNING_KEY", httpserver.url_for("/exfiltrated"))
    channel = plant(name="evil", kind="slack", url_env="AUDIT_SIGNING_KEY")
    firing.channels.add(channel)
    assert run_at(T0).counts["failed"] == 1
    error = Delivery.objects.get().last_error
    assert error.startswith(
        "environment variable AUDIT_SIGNING_KEY may not be used as a credential "
        "(the audit trail's signing key)"
    )
    assert httpserver.log == []


def test_slack_never_posts_to_a_url_left_in_target(httpserver, firing, monkeypatch):
    # A channel from before migration 0002: url_env named, its variable not set yet.
    monkeypatch.delenv("SLACK_OPS_URL", raising=False)
    channel = plant(
        name="ops", kind="slack", target=httpserver.url_for(SLACK_PATH), url_env="SLACK_OPS_URL"
    )
    firing.channels.add(channel)
    assert run_at(T0).counts["failed"] == 1
    assert Delivery.objects.get().last_error == (
        "environment variable SLACK_OPS_URL is not set "
        "(the Slack webhook URL of alert channel 'ops')"
    )
    assert httpserver.log == []


def test_slack_errors_do_not_reveal_the_url(firing, monkeypatch, settings):
    settings.ALERTS_HTTP_ATTEMPTS = 1
    # Nothing listens on port 9 of loopback: requests names the URL in its error.
    monkeypatch.setenv("SLACK_OPS_URL", f"http://127.0.0.1:9{SLACK_PATH}")
    channel = AlertChannel.objects.create(name="ops", kind="slack", url_env="SLACK_OPS_URL")
    firing.channels.add(channel)
    run_at(T0)
    error = Delivery.objects.get().last_error
    assert error.startswith("POST to 127.0.0.1:9 failed:")
    assert "s3cr3t" not in error


# --- The admin ----------------------------------------------------------------------------


@pytest.fixture
def legacy_slack(db):
    return plant(
        name="ops-slack",
        kind="slack",
        target=f"https://hooks.slack.test{SLACK_PATH}",
        url_env="SLACK_OPS_SLACK_URL",
    )


@pytest.fixture
def site(settings):
    settings.ROOT_URLCONF = "orchestrator.urls"


def test_the_admin_never_shows_a_slack_url(site, admin_client, legacy_slack):
    listing = admin_client.get("/admin/alerts/alertchannel/").content.decode()
    assert "$SLACK_OPS_SLACK_URL" in listing
    assert "s3cr3t" not in listing
    assert "still stores its webhook URL in the database" in listing
    change = admin_client.get(f"/admin/alerts/alertchannel/{legacy_slack.pk}/change/")
    assert change.status_code == 200
    assert "s3cr3t" not in change.content.decode()
    assert "SLACK_OPS_SLACK_URL" in change.content.decode()
    # The list's search does not look in target (no guessing the URL).
    found = admin_client.get("/admin/alerts/alertchannel/", {"q": "s3cr3t"}).content.decode()
    assert "0 alert channels" in found or "0 results" in found


def test_a_view_only_user_does_not_see_a_slack_url(site, client, legacy_slack):
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_alertchannel"))
    client.force_login(viewer)
    page = client.get(f"/admin/alerts/alertchannel/{legacy_slack.pk}/change/")
    assert page.status_code == 200
    assert "SLACK_OPS_SLACK_URL" in page.content.decode()
    assert "s3cr3t" not in page.content.decode()


def test_saving_a_slack_channel_in_the_admin_clears_the_stored_url(
    site, admin_client, legacy_slack
):
    response = admin_client.post(
        f"/admin/alerts/alertchannel/{legacy_slack.pk}/change/",
        {"name": "ops-slack", "kind": "slack", "url_env": "SLACK_OPS_SLACK_URL", "enabled": "on"},
    )
    assert response.status_code == 302
    legacy_slack.refresh_from_db()
    assert (legacy_slack.target, legacy_slack.url_env) == ("", "SLACK_OPS_SLACK_URL")


def test_turning_a_slack_channel_into_a_webhook_does_not_keep_its_url(
    site, admin_client, legacy_slack
):
    response = admin_client.post(
        f"/admin/alerts/alertchannel/{legacy_slack.pk}/change/",
        {"name": "ops-slack", "kind": "webhook", "secret_env": "ALERT_HOOK_SECRET"},
    )
    assert response.status_code == 200
    assert "Give the http(s) URL to POST to." in response.content.decode()
    legacy_slack.refresh_from_db()
    assert legacy_slack.kind == "slack"


def test_the_admin_refuses_a_denied_variable(site, admin_client):
    response = admin_client.post(
        "/admin/alerts/alertchannel/add/",
        {"name": "s", "kind": "slack", "url_env": "DATABASE_URL", "enabled": "on"},
    )
    assert response.status_code == 200
    assert "DATABASE_URL may not be used as a credential" in response.content.decode()
    assert not AlertChannel.objects.exists()


# --- Upgrading ----------------------------------------------------------------------------


def test_the_database_check_lists_what_the_operator_must_do(legacy_slack, monkeypatch):
    monkeypatch.delenv("SLACK_OPS_SLACK_URL", raising=False)
    warnings = checks.run_checks(tags=[checks.Tags.database], databases=["default"])
    texts = [w.msg for w in warnings if w.id == "alerts.W001"]
    assert texts == [
        "Slack channel 'ops-slack' still stores its webhook URL in the database (unused since "
        "url_env): set SLACK_OPS_SLACK_URL to that URL in the environment, then save the "
        "channel in the admin to clear the stored copy.",
        "slack channel 'ops-slack': environment variable SLACK_OPS_SLACK_URL is not set.",
    ]
    assert not any("s3cr3t" in w.msg for w in warnings)


@pytest.mark.parametrize(
    ("name", "env"),
    [
        ("ops", "SLACK_OPS_URL"),
        ("Sales alerts #1", "SLACK_SALES_ALERTS_1_URL"),
        ("--", "SLACK_CHANNEL_URL"),
    ],
)
def test_the_migration_names_a_slack_variable_the_rule_allows(name, env):
    from core.credentials import credential_env_allowed

    assert migration.slack_env_name(name) == env
    assert credential_env_allowed(env) is None
