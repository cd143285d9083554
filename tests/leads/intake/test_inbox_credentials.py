"""An inbox source planted past config validation still cannot read the app's secrets."""

import pytest

from audit.models import AuditEvent
from leads.intake.inbox import InboxConfigError, poll, poll_source
from leads.models import LeadSource

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_source_naming_the_database_url_never_connects(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:db-password@db.internal/app")
    monkeypatch.setenv("IMAP_TEST_USER", "sales@example.com")

    def connect(*args, **kwargs):
        raise AssertionError("connected to the IMAP host")

    monkeypatch.setattr(poll, "connect", connect)
    source = LeadSource.objects.create(
        name="Planted",
        slug="planted",
        kind=LeadSource.Kind.EMAIL_INBOX,
        options={
            "inbox": {
                "host": "imap.evil.example",
                "username_env": "IMAP_TEST_USER",
                "password_env": "DATABASE_URL",
            }
        },
    )
    with pytest.raises(InboxConfigError) as info:
        poll_source(source=source)
    assert str(info.value).startswith(
        "environment variable DATABASE_URL may not be used as a credential "
        "(it holds the database credentials); use a variable of its own"
    )
    assert str(info.value).endswith("(source planted: options.inbox.password_env)")
    (error,) = AuditEvent.objects.filter(event_type="error")
    assert error.error_type == "InboxConfigError"
    assert "db-password" not in str(error.details)
