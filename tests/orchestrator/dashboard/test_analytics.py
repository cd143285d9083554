"""The analytics page: funnel, lead sources, email steps and CRM performance."""

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.urls import reverse

from audit.services import record_event
from leads.crm.models import CrmCall, CrmConnection, CrmRecord
from leads.followups.models import Enrollment, OutboundEmail, Sequence, SequenceStep
from leads.models import Lead, LeadSource
from orchestrator.dashboard.selectors import analytics as selectors
from tests.conftest import HTMX

NOW = datetime(2026, 6, 10, 14, 30, tzinfo=UTC)
SINCE = NOW - timedelta(days=7)


@pytest.fixture(autouse=True)
def _fresh_cache(fresh_cache):
    pass


@pytest.fixture
def now():
    with time_machine.travel(NOW, tick=False):
        yield NOW


def make_lead(source, n, *, status="new", owner=None, score=None, days_ago=1):
    lead = Lead.objects.create(
        email=f"p{n}@acme.example",
        source=source,
        status=status,
        owner=owner,
        score=score,
        created_at=NOW - timedelta(days=days_ago),
    )
    # As lead_create names it: audit events find their lead by this id.
    lead.public_id = Lead.format_public_id(lead.pk)
    lead.save(update_fields=["public_id"])
    return lead


@pytest.fixture
def seeded(db, django_user_model):
    """Web: 4 leads in the period (3 qualified and routed, 1 disqualified), one older.
    CSV: 2 leads (1 nurture). Two of the routed web leads are synced to the CRM,
    three leads are emailed, one replied."""
    owner = django_user_model.objects.create_user("owner")
    web = LeadSource.objects.create(name="Website", slug="web", kind="web_form")
    csv = LeadSource.objects.create(name="Imports", slug="csv", kind="csv")
    w = [make_lead(web, i, status="qualified", owner=owner, score=80 + i) for i in range(3)]
    w.append(make_lead(web, 3, status="disqualified", score=0))
    old = make_lead(web, 9, status="qualified", owner=owner, score=99, days_ago=30)
    c = [make_lead(csv, 10, status="nurture", score=40), make_lead(csv, 11)]
    hub = CrmConnection.objects.create(name="hubspot", kind="webhook")
    for lead in (w[0], w[1], old):
        CrmRecord.objects.create(
            lead=lead, connection=hub, status="synced", last_synced_at=NOW - timedelta(hours=5)
        )
    CrmRecord.objects.create(lead=w[2], connection=hub, status="failed")

    seq = Sequence.objects.create(name="Welcome", slug="welcome")
    s1, s2 = (
        SequenceStep.objects.create(
            sequence=seq, position=p, subject_template="s", text_template="t"
        )
        for p in (1, 2)
    )

    def enroll(lead, reason="", steps=(), status="active"):
        enrollment = Enrollment.objects.create(
            lead=lead, sequence=seq, status=status, cancel_reason=reason
        )
        for i, (step, opened, clicked) in enumerate(steps):
            sent = NOW - timedelta(days=3) + timedelta(days=i)
            OutboundEmail.objects.create(
                enrollment=enrollment,
                step=step,
                message_id=f"<{lead.pk}.{step.pk}@x>",
                recipient=lead.email,
                status="sent",
                due_at=sent,
                sent_at=sent,
                opened_at=sent if opened else None,
                clicked_at=sent if clicked else None,
            )
        return enrollment

    # w0: two emails, replied to the second. w1: one email, opened and clicked,
    # then bounced... no: unsubscribed. c0: one email, bounced. w2: enrolled, nothing sent.
    enroll(w[0], "replied", [(s1, True, False), (s2, True, True)], status="cancelled")
    enroll(w[1], "unsubscribed", [(s1, True, True)], status="cancelled")
    enroll(c[0], "bounced", [(s1, False, False)], status="cancelled")
    enroll(w[2])
    # What the inbox and the unsubscribe link record: the figures count these events.
    answered = NOW - timedelta(days=2) + timedelta(hours=1)
    reply = {"sequence": "welcome", "sequence_step": 2}
    record_event(event_type="email_replied", lead=w[0], details=reply, timestamp=answered)
    bounce = {"sequence": "welcome", "sequence_step": 1}
    record_event(event_type="email_bounced", lead=c[0], details=bounce, timestamp=answered)
    unsubscribe = {"sequence": "welcome", "reason": "unsubscribed"}
    record_event(event_type="email_cancelled", lead=w[1], details=unsubscribe, timestamp=answered)
    pipe = CrmConnection.objects.create(name="pipedrive", kind="webhook")
    for i, (outcome, latency) in enumerate(
        [("ok", 100), ("ok", 200), ("ok", 300), ("retry", 900), ("permanent", 50)]
    ):
        CrmCall.objects.create(
            connection=hub,
            operation="upsert",
            method="POST",
            path="/contacts",
            outcome=outcome,
            latency_ms=latency,
            created_at=NOW - timedelta(hours=i + 1),
        )
    CrmCall.objects.create(
        connection=hub,
        operation="upsert",
        method="POST",
        path="/contacts",
        outcome="ok",
        latency_ms=5000,
        created_at=NOW - timedelta(days=20),  # outside the period
    )
    CrmCall.objects.create(
        connection=pipe,
        operation="search",
        method="GET",
        path="/persons",
        outcome="ok",
        latency_ms=70,
        created_at=NOW - timedelta(hours=2),
    )
    return {"web": web, "csv": csv, "w": w, "c": c, "hub": hub}


def test_funnel_counts_and_rates(seeded, now):
    stages = selectors.funnel(since=SINCE, until=NOW)
    assert [(s.key, s.count) for s in stages] == [
        ("ingested", 6),
        ("qualified", 3),
        ("routed", 3),
        ("crm_synced", 2),
        ("emailed", 2),
        ("replied", 1),
    ]
    by_key = {s.key: s for s in stages}
    assert by_key["ingested"].from_previous is None
    assert by_key["ingested"].from_top == 1
    assert by_key["crm_synced"].from_previous == pytest.approx(2 / 3)
    assert by_key["crm_synced"].from_top == pytest.approx(2 / 6)
    # Nested: the emailed CSV lead (not qualified) is not in the emailed stage, so
    # emailed never exceeds CRM synced.
    assert by_key["emailed"].from_previous == 1
    assert all(s.from_previous <= 1 for s in stages[1:])
    assert by_key["replied"].percent_of_top == 17


def test_source_effectiveness(seeded, now):
    rows = {s.slug: s for s in selectors.source_stats(since=SINCE, until=NOW)}
    web, csv = rows["web"], rows["csv"]
    assert (web.ingested, web.qualified, web.replied) == (4, 3, 1)
    assert web.qualified_rate == pytest.approx(0.75)
    assert web.reply_rate == pytest.approx(0.25)
    assert web.avg_score == pytest.approx((80 + 81 + 82 + 0) / 4)
    assert (csv.ingested, csv.qualified, csv.replied, csv.avg_score) == (2, 0, 0, 40)
    assert [s.slug for s in selectors.source_stats(since=SINCE, until=NOW)] == ["web", "csv"]


def test_email_engagement_per_step(seeded, now):
    rows = {s.position: s for s in selectors.email_step_stats(since=SINCE, until=NOW)}
    one, two = rows[1], rows[2]
    assert (one.sent, one.opened, one.clicked) == (3, 2, 1)
    # The reply came after step 2, so it counts there, not on step 1.
    assert (one.replied, one.bounced, one.unsubscribed) == (0, 1, 1)
    assert (two.sent, two.opened, two.clicked, two.replied) == (1, 1, 1, 1)
    assert one.rates["opened"] == pytest.approx(2 / 3)
    # Only emails sent in the period count.
    assert selectors.email_step_stats(since=NOW - timedelta(days=1), until=NOW) == []


def test_crm_performance_per_connection(seeded, now):
    rows = {c.connection: c for c in selectors.crm_performance(since=SINCE, until=NOW)}
    hub = rows["hubspot"]
    assert (hub.calls, hub.ok, hub.retried, hub.failed, hub.permanent) == (5, 3, 1, 1, 1)
    assert hub.success_rate == pytest.approx(0.6)
    # Nearest rank over 50, 100, 200, 300, 900 (the 5000 ms call is outside the period).
    assert (hub.p50_ms, hub.p95_ms) == (200, 900)
    assert hub.records_failing == 1
    assert (rows["pipedrive"].calls, rows["pipedrive"].p50_ms, rows["pipedrive"].p95_ms) == (
        1,
        70,
        70,
    )


def test_results_are_cached_for_a_minute(seeded, now):
    assert selectors.funnel(since=SINCE, until=NOW)[0].count == 6
    make_lead(seeded["web"], 50)
    assert selectors.funnel(since=SINCE, until=NOW)[0].count == 6
    with time_machine.travel(NOW + timedelta(seconds=61), tick=False):
        later = NOW + timedelta(seconds=61)
        assert selectors.funnel(since=later - timedelta(days=7), until=later)[0].count == 7


def test_empty_period(db, now):
    stages = selectors.funnel(since=SINCE, until=NOW)
    assert [s.count for s in stages] == [0] * 6
    assert all(s.from_top is None for s in stages)
    assert selectors.crm_performance(since=SINCE, until=NOW) == []


def test_analytics_page_has_every_section(auditor_client, seeded, now):
    response = auditor_client.get(reverse("analytics"))
    assert response.status_code == 200
    html = response.content.decode()
    for section in ("funnel", "sources", "email-steps", "crm-performance"):
        assert f'<section id="{section}"' in html
    assert re.findall(r'data-stage="(\w+)"', html) == [
        "ingested",
        "qualified",
        "routed",
        "crm_synced",
        "emailed",
        "replied",
    ]
    assert '<progress max="100" value="50"' in html  # qualified: 3 of 6
    assert 'data-source="web"' in html and 'data-source="csv"' in html
    assert 'data-sequence="welcome" data-step="2"' in html
    assert 'data-connection="hubspot"' in html and "60.0%" in html
    assert 'class="chart"' in html


@pytest.mark.parametrize("section", ["funnel", "sources", "email-steps", "crm-performance"])
def test_each_section_is_a_fragment(auditor_client, seeded, now, section):
    response = auditor_client.get(reverse("analytics") + f"?section={section}", **HTMX)
    body = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in body
    assert body.lstrip().startswith(f'<section id="{section}"')
    assert body.count("<section") == 1


def test_unknown_section_is_400(auditor_client, db, now):
    response = auditor_client.get(reverse("analytics") + "?section=nope", **HTMX)
    assert response.status_code == 400
    assert "section must be one of" in response.content.decode()


def test_source_names_are_escaped(auditor_client, db, now):
    source = LeadSource.objects.create(name="<b>evil</b>", slug="evil", kind="csv")
    make_lead(source, 1)
    html = auditor_client.get(reverse("analytics")).content.decode()
    assert "<b>evil</b>" not in html and "&lt;b&gt;evil&lt;/b&gt;" in html
