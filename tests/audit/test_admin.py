import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audit.integrity import seal_all
from audit.models import AuditEvent
from audit.services import record_event

CHANGELIST = reverse("admin:audit_auditevent_changelist")


@pytest.fixture
def events(db):
    for i in range(30):
        record_event(
            event_type="error" if i % 10 == 0 else "lead_routed",
            error_type="E" if i % 10 == 0 else "",
            error_message="boom" if i % 10 == 0 else "",
            lead_id=f"LEAD-{i % 3:06d}",
            correlation_id=f"corr-{i % 5}",
            details={"i": i},
        )
    seal_all()


def test_changelist_never_counts_the_whole_table(admin_client, events):
    with CaptureQueriesContext(connection) as ctx:
        response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    counts = [q["sql"] for q in ctx.captured_queries if "COUNT(" in q["sql"].upper()]
    # The only count is capped by a LIMIT inside a subquery.
    assert counts
    assert all("LIMIT" in sql.upper() for sql in counts)


def test_filter_by_type_and_exact_search(admin_client, events):
    response = admin_client.get(CHANGELIST, {"event_type": "error"})
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 3
    response = admin_client.get(CHANGELIST, {"q": "LEAD-000001"})
    assert len(response.context["cl"].result_list) == 10
    response = admin_client.get(CHANGELIST, {"q": "corr-2"})
    assert len(response.context["cl"].result_list) == 6
    # Exact, not substring: a prefix finds nothing.
    response = admin_client.get(CHANGELIST, {"q": "LEAD-0000"})
    assert len(response.context["cl"].result_list) == 0


def test_events_are_read_only_in_the_admin(admin_client, events):
    event = AuditEvent.objects.filter(event_type="error").first()
    url = reverse("admin:audit_auditevent_change", args=[event.pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    assert b'name="_save"' not in response.content
    assert b"boom" in response.content
    response = admin_client.post(url, {"event_type": "lead_ingested"})
    assert response.status_code == 403
    assert admin_client.get(reverse("admin:audit_auditevent_add")).status_code == 403
    delete = reverse("admin:audit_auditevent_delete", args=[event.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk, event_type="error").exists()


def test_staff_need_a_login(client, events):
    response = client.get(CHANGELIST)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_home_is_the_dashboard_and_it_links_the_admin(admin_client, db):
    response = admin_client.get("/")
    assert response.status_code == 200
    assert 'href="/admin/"' in response.content.decode()


def test_pages_carry_a_content_security_policy_without_unsafe_inline(admin_client, db):
    response = admin_client.get(CHANGELIST)
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert "SENTINEL" not in policy
    assert "'nonce'" not in policy
