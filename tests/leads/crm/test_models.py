import pytest
from django.core.exceptions import ValidationError

from leads.crm.base import parse_retry_after
from leads.crm.models import CrmConnection
from leads.crm.registry import CONNECTORS, connector_class, kind_choices


def test_kind_choices_come_from_the_registry():
    assert [k for k, _ in kind_choices()] == list(CONNECTORS)
    assert CrmConnection._meta.get_field("kind").choices == kind_choices()
    with pytest.raises(ValueError, match="unknown CRM kind 'fax'"):
        connector_class("fax")


@pytest.mark.parametrize("kind", list(CONNECTORS))
def test_every_connector_module_cites_its_reference(kind):
    cls = connector_class(kind)
    assert cls.kind == kind
    doc = __import__(cls.__module__, fromlist=["_"]).__doc__
    assert "https://" in doc


@pytest.mark.django_db
def test_credentials_hold_variable_names_not_secrets():
    conn = CrmConnection(name="hs", kind="hubspot", credentials={"token_env": "pat-na1-abc123"})
    with pytest.raises(ValidationError, match="NAME of an environment variable"):
        conn.full_clean()
    conn.credentials = {"token": "HUBSPOT_TOKEN"}
    with pytest.raises(ValidationError, match="must end in _env"):
        conn.full_clean()
    conn.credentials = {"token_env": "HUBSPOT_TOKEN"}
    conn.field_mapping = {"shoe_size": "x"}
    with pytest.raises(ValidationError, match="not a lead field"):
        conn.full_clean()
    conn.field_mapping = {"name": ["firstname", "lastname"], "extra.source_campaign": "utm"}
    conn.full_clean()


def test_parse_retry_after():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
