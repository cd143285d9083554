"""A workflow config may name only credential variables the rule allows (issue 11)."""

import json
from pathlib import Path

import pytest

from leads.workflows.config import ConfigError, validate_config

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "workflows.example.json"


def example():
    return json.loads(EXAMPLE.read_text())


def test_the_example_names_allowed_variables():
    validate_config(example())


@pytest.mark.parametrize(
    ("key", "name", "reason"),
    [
        ("password_env", "SECRET_KEY", " (Django's SECRET_KEY signs sessions"),
        ("password_env", "PGPASSWORD", " (PostgreSQL's client library"),
        ("username_env", "EMAIL_HOST_USER", " (the SMTP login of the site's mailer)"),
        ("username_env", "SALES_INBOX_USER", "; allowed are names starting with CRM_"),
    ],
)
def test_an_inbox_naming_a_refused_variable_is_refused(key, name, reason):
    data = example()
    data["workflows"][0]["sources"][1]["inbox"][key] = name
    with pytest.raises(ConfigError) as info:
        validate_config(data)
    [error] = info.value.errors
    assert error.startswith(
        f"/workflows/0/sources/1/inbox/{key}: environment variable {name} "
        f"may not be used as a credential{reason}"
    )
