from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from audit.integrity import verify
from audit.models import AuditEvent
from leads.models import Lead


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_demo_loads_through_the_pipeline_and_verifies(settings):
    settings.DEBUG = True
    out = StringIO()
    call_command("load_demo", "--days", "6", "--per-day", "6", stdout=out)
    assert "Created superuser 'demo'" in out.getvalue()
    leads = Lead.objects.count()
    assert leads > 10
    assert Lead.objects.filter(source__slug="trade-shows").exists()
    assert Lead.objects.filter(source__slug="website").exists()
    # Every lead went through the runner (the clock stops at now, so the last
    # arrivals of today may still wait for the next pass).
    processed = Lead.objects.exclude(status="new")
    assert processed.count() >= leads - 6
    assert processed.filter(owner__isnull=False).exists()
    assert AuditEvent.objects.filter(event_type="lead_qualified").count() == processed.count()
    assert AuditEvent.objects.filter(event_type="workflow_started").count() >= 6
    # The inbox was down on day 5: a real connection error, with its traceback.
    errors = AuditEvent.objects.filter(event_type="error")
    assert errors.exists()
    assert all(e.traceback for e in errors)
    days = {e.timestamp.date() for e in AuditEvent.objects.filter(event_type="lead_ingested")}
    assert len(days) >= 5
    assert get_user_model().objects.get(username="demo").is_superuser
    report = verify()
    assert report.ok
    assert report.unsealed == 0
    # A second run changes nothing.
    call_command("load_demo", stdout=out)
    assert "already loaded" in out.getvalue()
    assert Lead.objects.count() == leads


@pytest.mark.django_db
def test_demo_refuses_to_run_without_debug(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG"):
        call_command("load_demo")
    assert not get_user_model().objects.exists()
