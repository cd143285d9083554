"""The credential rule: which environment variables an integration may read."""

import pytest

from core.credentials import CredentialError, credential_env_allowed, read_credential

ALLOWED = (
    "names starting with CRM_, HUBSPOT_, PIPEDRIVE_, SALESFORCE_, WEBHOOK_, ALERT_, SLACK_, "
    "INBOX_, IMAP_ (CREDENTIAL_ENV_PREFIXES)"
)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("SECRET_KEY", "Django's SECRET_KEY signs sessions and password reset links"),
        ("AUDIT_SIGNING_KEY", "the audit trail's signing key"),
        ("DATABASE_URL", "it holds the database credentials"),
        ("DATABASE_PASSWORD", "database settings hold database credentials"),
        ("PGPASSWORD", "PostgreSQL's client library reads its credentials from PG* variables"),
        ("DJANGO_SECRET_KEY", "DJANGO_* variables configure the framework itself"),
        ("EMAIL_HOST_PASSWORD", "the SMTP password of the site's mailer"),
        ("EMAIL_HOST_USER", "the SMTP login of the site's mailer"),
    ],
)
def test_the_applications_own_secrets_are_refused(name, reason):
    assert credential_env_allowed(name) == (
        f"environment variable {name} may not be used as a credential ({reason}); "
        f"use a variable of its own: {ALLOWED}"
    )


@pytest.mark.parametrize("name", ["SECRET_KEY", "AUDIT_SIGNING_KEY", "PGPASSWORD", "DATABASE_URL"])
def test_the_deny_list_wins_over_any_configuration(name, settings):
    settings.CREDENTIAL_ENV_PREFIXES = ["", "S", "A", "P", "D", name]
    assert "may not be used as a credential (" in credential_env_allowed(name)


def test_a_name_outside_the_prefixes_is_refused():
    assert credential_env_allowed("HOME") == (
        f"environment variable HOME may not be used as a credential; allowed are {ALLOWED}"
    )
    # A prefix is a prefix of the name, not of a word in it.
    assert credential_env_allowed("MY_HUBSPOT_TOKEN") is not None


def test_a_value_that_is_no_variable_name_is_refused_without_echoing_it():
    message = credential_env_allowed("pat-na1-abc123")
    assert message == (
        "must be the NAME of an environment variable (upper case letters, digits, _), "
        "not the secret itself"
    )
    assert credential_env_allowed(None) == message
    assert credential_env_allowed("hubspot_token") == message


@pytest.mark.parametrize(
    "name", ["HUBSPOT_TOKEN", "CRM_WEBHOOK_SECRET", "SALESFORCE_CLIENT_ID", "SLACK_OPS_URL"]
)
def test_names_with_a_configured_prefix_are_allowed(name):
    assert credential_env_allowed(name) is None


def test_entries_without_a_trailing_underscore_are_exact_names(settings):
    settings.CREDENTIAL_ENV_PREFIXES = ["MY_TOKEN", "VAULT_"]
    assert credential_env_allowed("MY_TOKEN") is None
    assert credential_env_allowed("VAULT_X") is None
    assert credential_env_allowed("MY_TOKEN_2") == (
        "environment variable MY_TOKEN_2 may not be used as a credential; allowed are "
        "names starting with VAULT_ or exactly MY_TOKEN (CREDENTIAL_ENV_PREFIXES)"
    )
    settings.CREDENTIAL_ENV_PREFIXES = []
    assert credential_env_allowed("VAULT_X") == (
        "environment variable VAULT_X may not be used as a credential; allowed are "
        "no variable at all (CREDENTIAL_ENV_PREFIXES is empty)"
    )


def test_read_credential_reads_an_allowed_variable(monkeypatch):
    monkeypatch.setenv("CRM_TEST_TOKEN", "t0ken")
    assert read_credential("CRM_TEST_TOKEN") == "t0ken"


def test_read_credential_refuses_a_denied_variable_even_when_set(monkeypatch):
    monkeypatch.setenv("AUDIT_SIGNING_KEY", "the-real-key")
    with pytest.raises(CredentialError) as info:
        read_credential("AUDIT_SIGNING_KEY", purpose="the token of connection 'x'")
    assert str(info.value) == (
        "environment variable AUDIT_SIGNING_KEY may not be used as a credential (the audit "
        f"trail's signing key); use a variable of its own: {ALLOWED} (the token of connection 'x')"
    )
    assert "the-real-key" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_read_credential_says_which_variable_is_not_set(monkeypatch):
    monkeypatch.delenv("CRM_UNSET_TOKEN", raising=False)
    with pytest.raises(CredentialError, match=r"^environment variable CRM_UNSET_TOKEN is not set$"):
        read_credential("CRM_UNSET_TOKEN")
