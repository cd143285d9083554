import ipaddress
import socket
from datetime import timedelta
from io import StringIO
from urllib.parse import urlsplit

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.tasks import TaskResultStatus
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from audit.integrity import verify
from audit.models import AuditEvent
from leads.crm.models import CrmCall, CrmConnection, CrmRecord
from leads.followups.models import Enrollment, OutboundEmail, Sequence
from leads.models import Lead


@pytest.fixture
def connects(monkeypatch):
    """Every socket connect this process makes (address family, address)."""
    made = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(sock, address):
        made.append((sock.family, address))
        return real_connect(sock, address)

    def connect_ex(sock, address):
        made.append((sock.family, address))
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return made


def is_loopback(family, address):
    if family == socket.AF_UNIX:
        return True
    return ipaddress.ip_address(address[0]).is_loopback


def types(**filters):
    return set(AuditEvent.objects.filter(**filters).values_list("event_type", flat=True))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_demo_loads_through_the_pipeline_and_verifies(settings, connects):
    settings.DEBUG = True
    out = StringIO()
    call_command("load_demo", "--days", "6", "--per-day", "6", stdout=out)
    output = out.getvalue()
    assert "Created superuser 'demo' with password 'demo-password'." in output
    assert "Created user (Auditor) 'auditor' with password 'auditor-password'." in output
    assert "Created user (Operator) 'operator' with password 'operator-password'." in output
    leads = Lead.objects.count()
    assert leads > 10
    assert Lead.objects.filter(source__slug="trade-shows").exists()
    assert Lead.objects.filter(source__slug="website").exists()
    # Every lead went through the runner (the clock stops at now, so the last
    # arrivals of today may still wait for the next pass).
    processed = Lead.objects.exclude(status="new")
    assert processed.count() >= leads - 6
    routed = processed.filter(owner__isnull=False)
    assert routed.exists()
    assert AuditEvent.objects.filter(event_type="lead_qualified").count() == processed.count()
    assert AuditEvent.objects.filter(event_type="workflow_started").count() >= 6

    # The worker ran every step task the runner queued, at the simulated time.
    assert not DBTaskResult.objects.ready().exists()
    assert DBTaskResult.objects.filter(status=TaskResultStatus.SUCCESSFUL).exists()

    # CRM: each routed lead has a record in the fake HubSpot; most were created
    # there, and the calls that failed (429, 500, the outage) were kept.
    hubspot = CrmConnection.objects.get(name="hubspot")
    assert CrmRecord.objects.filter(connection=hubspot).count() == routed.count()
    synced = CrmRecord.objects.filter(status="synced")
    assert synced.exists()
    assert not synced.filter(external_id="").exists()
    assert CrmCall.objects.filter(outcome="ok", operation="create", status_code=201).exists()
    assert CrmCall.objects.exclude(outcome="ok").exists()
    assert {"search", "create"} <= set(CrmCall.objects.values_list("operation", flat=True))
    crm_create = AuditEvent.objects.filter(event_type="crm_create").first()
    assert crm_create is not None
    assert synced.filter(external_id=crm_create.details["external_id"]).exists()
    # The fake server is gone with the load: the connection stays, inactive, on loopback.
    assert not hubspot.active
    assert urlsplit(hubspot.base_url).hostname == "127.0.0.1"

    # Email: the "welcome" sequence went out through the real send path, and
    # recipients opened, clicked, replied, bounced and unsubscribed.
    assert Sequence.objects.get(slug="welcome").steps.count() == 3
    sent = OutboundEmail.objects.filter(status="sent")
    assert sent.exists()
    assert sent.filter(opened_at__isnull=False).exists()
    assert sent.filter(clicked_at__isnull=False).exists()
    replied = Enrollment.objects.filter(status="cancelled", cancel_reason="replied")
    assert replied.exists()
    reply = AuditEvent.objects.filter(event_type="email_replied").first()
    assert reply is not None
    assert replied.filter(lead__public_id=reply.lead_public_id).exists()
    assert Enrollment.objects.filter(cancel_reason="bounced").exists()
    assert Enrollment.objects.filter(cancel_reason="unsubscribed").exists()
    assert {
        "crm_create",
        "email_scheduled",
        "email_sent",
        "email_opened",
        "email_clicked",
        "email_replied",
        "email_bounced",
        "email_cancelled",
    } <= types()
    sent_days = {e.timestamp.date() for e in AuditEvent.objects.filter(event_type="email_sent")}
    assert len(sent_days) >= 3

    # Errors with tracebacks: the inbox was down on day 5, and the CRM failed.
    errors = AuditEvent.objects.filter(event_type="error")
    assert errors.filter(error_type="InboxConnectionError").exists()
    assert errors.filter(error_type="CrmError", details__stage="crm_sync").exists()
    assert all(e.traceback for e in errors)
    days = {e.timestamp.date() for e in AuditEvent.objects.filter(event_type="lead_ingested")}
    assert len(days) >= 5

    # The three logins and their roles.
    User = get_user_model()
    demo = User.objects.get(username="demo")
    assert demo.is_superuser and demo.check_password("demo-password")
    auditor = User.objects.get(username="auditor")
    assert not auditor.is_superuser and auditor.check_password("auditor-password")
    assert list(auditor.groups.values_list("name", flat=True)) == ["Auditor"]
    operator = User.objects.get(username="operator")
    assert not operator.is_superuser and operator.check_password("operator-password")
    assert list(operator.groups.values_list("name", flat=True)) == ["Operator"]

    # Nothing left the machine: every connection went to loopback (the fake
    # CRM, the "down" inbox, the database), and the CRM was one of them.
    assert connects
    assert all(is_loopback(family, address) for family, address in connects), connects
    crm_port = urlsplit(hubspot.base_url).port
    assert any(address[1] == crm_port for family, address in connects if family != socket.AF_UNIX)

    report = verify()
    assert report.ok
    assert report.unsealed == 0
    # A second run at once tops up the seconds since: no pass falls in them.
    out = StringIO()
    call_command("load_demo", stdout=out)
    assert "topped it up through the pipeline" in out.getvalue()
    assert "Created" not in out.getvalue()
    assert Lead.objects.count() == leads


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_second_run_days_later_tops_the_demo_up_to_now(settings, audit_mirror_path):
    settings.DEBUG = True
    with time_machine.travel(timezone.now() - timedelta(days=4)):
        call_command("load_demo", "--days", "3", "--per-day", "6", stdout=StringIO())
    day_ago = timezone.now() - timedelta(hours=24)
    # What the dashboard's default 24-hour view would show before: nothing.
    assert not AuditEvent.objects.filter(timestamp__gte=day_ago).exists()
    leads = Lead.objects.count()

    out = StringIO()
    call_command("load_demo", stdout=out)

    assert "topped it up through the pipeline from" in out.getvalue()
    assert Lead.objects.count() > leads
    recent = AuditEvent.objects.filter(timestamp__gte=day_ago)
    assert {"lead_ingested", "lead_qualified", "email_sent"} <= types(timestamp__gte=day_ago)
    assert recent.filter(event_type="crm_create").exists()
    # Addresses of the top-up are new ones, not the first load's again.
    emails = Lead.objects.values_list("email", flat=True)
    assert len(set(emails)) == len(emails)
    assert not CrmConnection.objects.get(name="hubspot").active
    # One continuous, sealed history, matching the mirror and the anchor log.
    report = verify()
    assert report.ok, report.problems
    assert report.unsealed == 0
    call_command("verify_audit", stdout=StringIO())


@pytest.mark.django_db
def test_a_second_run_leaves_leads_that_are_not_the_demos_alone(settings, web_source):
    settings.DEBUG = True
    Lead.objects.create(source=web_source, email="real@customer.example")
    out = StringIO()
    call_command("load_demo", stdout=out)
    assert "holds no demo data" in out.getvalue()
    assert Lead.objects.count() == 1


@pytest.mark.django_db
def test_demo_refuses_to_run_without_debug(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG"):
        call_command("load_demo")
    assert not get_user_model().objects.exists()


@pytest.mark.django_db
def test_demo_refuses_a_period_too_short_to_show_anything(settings):
    settings.DEBUG = True
    with pytest.raises(CommandError, match="--days"):
        call_command("load_demo", "--days", "0")
    assert not Lead.objects.exists()


@pytest.mark.django_db
def test_demo_leaves_a_real_crm_connection_alone(settings):
    settings.DEBUG = True
    real = CrmConnection.objects.create(
        name="hubspot",
        kind="hubspot",
        base_url="https://api.hubapi.com",
        credentials={"token_env": "HUBSPOT_TOKEN"},
    )
    with pytest.raises(CommandError, match="exists already"):
        call_command("load_demo", "--days", "2", stdout=StringIO())
    real.refresh_from_db()
    assert (real.base_url, real.active) == ("https://api.hubapi.com", True)
    assert not Lead.objects.exists()
