from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from audit.integrity import verify
from audit.models import AuditEvent
from leads.models import Lead


@pytest.mark.django_db
def test_demo_loads_through_the_pipeline_and_verifies(settings):
    settings.DEBUG = True
    out = StringIO()
    call_command("load_demo", "--leads", "40", stdout=out)
    assert "Created superuser 'demo'" in out.getvalue()
    assert Lead.objects.count() == 40
    assert AuditEvent.objects.filter(event_type="lead_ingested").count() == 40
    assert AuditEvent.objects.filter(event_type="lead_qualified").count() == 40
    assert get_user_model().objects.get(username="demo").is_superuser
    report = verify()
    assert report.ok
    assert report.unsealed == 0
    # A second run changes nothing.
    call_command("load_demo", stdout=out)
    assert "already loaded" in out.getvalue()
    assert Lead.objects.count() == 40


@pytest.mark.django_db
def test_demo_refuses_to_run_without_debug(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG"):
        call_command("load_demo")
    assert not get_user_model().objects.exists()
