"""One definition per figure: the overview, analytics, the reports and the alerts agree.

One day (Monday 8 June 2026) is seeded through the pipeline's own services
(lead_create, lead_qualify, lead_route, crm_sync_lead, enroll, record_open,
record_click, cancel, unsubscribe), with the traps that made the pages
disagree: a lead created before the day that is emailed and replies on it, a
lead that replies twice, a lead emailed although its CRM sync failed, a
nurture lead emailed, an email sent after the day. Each figure is then read
through every place that shows it and compared with the value worked out by
hand below.
"""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.cache import cache
from django.urls import reverse

from audit.services import record_event
from leads.crm.base import CrmError, Upsert
from leads.crm.models import CrmConnection
from leads.crm.services import crm_sync_lead
from leads.followups import services as followups
from leads.followups.models import Enrollment, OutboundEmail, Sequence, SequenceStep
from leads.models import Lead
from leads.services import lead_create, lead_qualify, lead_route
from orchestrator.dashboard import figures
from orchestrator.monitoring.alerts import params, rules
from orchestrator.monitoring.reports.builders import build_report
from tests.conftest import PIPELINE_CONFIG

DAY = datetime(2026, 6, 8, tzinfo=UTC)  # a Monday: the weekly report's week starts with it
NEXT = DAY + timedelta(days=1)
NOW = datetime(2026, 6, 10, 12, 30, tzinfo=UTC)
QUERY = {"range": "custom", "since": "2026-06-08", "until": "2026-06-08"}

# Worked out by hand from the seed below.
EXPECTED = {
    "leads": 5,  # L1..L5 (OLD was created three days before)
    "qualified": 3,  # L1, L2, L3 (L4 nurture, L5 free mail: disqualified)
    "routed": 3,
    "crm_ok": 3,  # L1, L2 and OLD synced on the day
    "crm_failed": 1,  # L3
    "emails_sent": 6,  # step 1 to L1..L4 and OLD, step 2 to OLD (L3's step 2 goes the day after)
    "opens": 2,  # L1 and OLD's first emails (a click counts as an open)
    "clicks": 1,  # L1's first email
    "replies": 2,  # L1 (twice, counted once) and OLD (created before the day, replied on it)
    "bounces": 1,  # L4
    "unsubscribes": 1,  # L2
    "errors": 2,  # L3's failed sync and one failed qualification
}
# Nested: emailed is L1 and L2 only (L3 emailed but not synced, L4 not qualified);
# replied is L1 only (OLD is not in the day's cohort).
FUNNEL = [5, 3, 3, 2, 2, 1]


class FakeCrm:
    """A connector answering without a network: what crm_sync_lead needs of one."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.attempt = 1
        self.calls = 1

    def upsert(self, lead: Lead) -> Upsert:
        if self.fail:
            raise CrmError("the CRM answered 400: invalid email", permanent=True, status=400)
        return Upsert(f"ext-{lead.pk}", created=True)

    def update(self, external_id: str, lead: Lead) -> None:
        if self.fail:
            raise CrmError("the CRM answered 400", permanent=True, status=400)


@pytest.fixture
def seeded(pipeline):
    cache.clear()
    source = pipeline["source"]
    hub = CrmConnection.objects.create(name="hubspot", kind="hubspot")
    sequence = Sequence.objects.create(name="Welcome", slug="welcome")
    for position in (1, 2):
        SequenceStep.objects.create(
            sequence=sequence, position=position, subject_template="s", text_template="t"
        )

    def new_lead(at: datetime, email: str, **fields: str) -> Lead:
        with time_machine.travel(at, tick=False):
            lead = lead_create(source=source, email=email, at=at, **fields)
            lead_qualify(lead=lead, config=PIPELINE_CONFIG["qualification"])
            if lead.status == Lead.Status.QUALIFIED:
                lead_route(lead=lead, config=PIPELINE_CONFIG["routing"])
        lead.refresh_from_db()
        return lead

    def sync(lead: Lead, at: datetime, *, fail: bool = False) -> None:
        with time_machine.travel(at, tick=False):
            crm_sync_lead(lead=lead, connection=hub, connector=FakeCrm(fail=fail))

    def send(lead: Lead, position: int, at: datetime) -> OutboundEmail:
        with time_machine.travel(at, tick=False):
            enrollment = followups.enroll(lead=lead, sequence=sequence)
        step = sequence.steps.get(position=position)
        email, _ = OutboundEmail.objects.get_or_create(
            enrollment=enrollment,
            step=step,
            defaults={"message_id": f"<{lead.pk}.{position}@x>", "recipient": lead.email},
            due_at=at,
        )
        # Sending itself talks SMTP (tests/leads/followups); the figures read its outcome.
        OutboundEmail.objects.filter(pk=email.pk).update(
            status="sent", sent_at=at, links=["https://acme.example/pricing"]
        )
        return email

    def reply(lead: Lead, position: int, at: datetime) -> None:
        # What leads.followups.inbox.handle_reply does with a human answer.
        with time_machine.travel(at, tick=False):
            record_event(
                event_type="email_replied",
                lead=lead,
                workflow=lead.workflow_name,
                details={"sequence": "welcome", "sequence_step": position},
            )
            for enrollment in Enrollment.objects.filter(lead=lead, status="active"):
                followups.cancel(enrollment=enrollment, reason=followups.REPLIED)

    at = DAY.replace
    old = new_lead(DAY - timedelta(days=3), "olga@bigcorp.example", title="CTO", country="US")
    l1 = new_lead(at(hour=8), "ann@acme.example", title="CTO", country="DE")
    l2 = new_lead(at(hour=8, minute=5), "bob@acme.example", title="VP Sales", country="US")
    l3 = new_lead(at(hour=8, minute=10), "cy@acme.example", title="Head of IT", country="US")
    l4 = new_lead(at(hour=8, minute=15), "dee@acme.example", country="DE")  # nurture
    l5 = new_lead(at(hour=8, minute=20), "eve@gmail.com", title="CTO", country="US")
    assert [lead.status for lead in (l1, l2, l3, l4, l5)] == [
        "qualified",
        "qualified",
        "qualified",
        "nurture",
        "disqualified",
    ]

    sync(l1, at(hour=9))
    sync(l2, at(hour=9, minute=1))
    sync(l3, at(hour=9, minute=2), fail=True)
    sync(old, at(hour=9, minute=3))

    first = {lead.pk: send(lead, 1, at(hour=10)) for lead in (l1, l2, l3, l4, old)}
    send(old, 2, at(hour=11))
    send(l3, 2, NEXT + timedelta(hours=10))  # the day after: not the day's

    with time_machine.travel(at(hour=12), tick=False):
        followups.record_click(email_pk=first[l1.pk].pk, url="https://acme.example/pricing")
        followups.record_open(email_pk=first[old.pk].pk)
    reply(l1, 1, at(hour=13))
    reply(l1, 1, at(hour=14))  # the same lead again: still one reply
    reply(old, 2, at(hour=15))
    with time_machine.travel(at(hour=16), tick=False):
        record_event(
            event_type="email_bounced",
            lead=l4,
            workflow=l4.workflow_name,
            details={"sequence": "welcome", "sequence_step": 1, "status": "5.1.1"},
        )
        followups.cancel(
            enrollment=Enrollment.objects.get(lead=l4, status="active"),
            reason=followups.BOUNCED,
        )
        followups.unsubscribe(enrollment=Enrollment.objects.get(lead=l2))
        record_event(
            event_type="error",
            exc=ValueError("bad scoring rule"),
            lead=l5,
            workflow="sales",
            details={"stage": "qualify_route"},
        )
    return {"old": old, "leads": [l1, l2, l3, l4, l5]}


@pytest.fixture
def clock(seeded):
    with time_machine.travel(NOW, tick=False):
        yield
    cache.clear()


def test_the_figures_match_the_seed(seeded, clock):
    s = figures.summary(start=DAY, end=NEXT)
    assert {
        "leads": s.leads,
        "qualified": s.qualified,
        "routed": s.routed,
        "crm_ok": s.crm.ok,
        "crm_failed": s.crm.failed,
        "emails_sent": s.emails_sent,
        "opens": s.opens,
        "clicks": s.clicks,
        "replies": s.replies,
        "bounces": s.bounces,
        "unsubscribes": s.unsubscribes,
        "errors": s.errors,
    } == EXPECTED
    assert s.crm.success_rate == 0.75
    assert [stage.count for stage in figures.funnel(start=DAY, end=NEXT)] == FUNNEL
    # The workflow filter: every lead here is the "sales" workflow's.
    assert figures.leads_in(start=DAY, end=NEXT, workflow="sales") == 5
    assert figures.leads_in(start=DAY, end=NEXT, workflow="other") == 0
    assert figures.crm_sync_failures(start=DAY, end=NEXT, connection="hubspot") == 1


def test_every_page_report_and_alert_shows_the_same_numbers(seeded, clock, auditor_client):
    # The overview cards.
    overview = auditor_client.get(reverse("overview"), QUERY)
    cards = {k.key: k for k in overview.context["kpis"]}
    assert cards["leads"].value == EXPECTED["leads"]
    assert cards["qualification_rate"].value == pytest.approx(3 / 5)
    assert cards["crm_success"].value == 0.75
    assert cards["crm_success"].detail == "3 synced, 1 failed"
    assert cards["emails_sent"].value == EXPECTED["emails_sent"]
    assert cards["replies"].value == EXPECTED["replies"]
    assert cards["errors"].value == EXPECTED["errors"]

    # The analytics page: funnel, sources, email steps, CRM sync.
    analytics = auditor_client.get(reverse("analytics"), QUERY).context
    funnel = analytics["funnel"]
    assert [stage.count for stage in funnel] == FUNNEL
    (site,) = analytics["sources"]
    assert [site.ingested, site.qualified, site.routed, site.crm_synced, site.emailed] == FUNNEL[:5]
    assert site.replied == FUNNEL[5]
    steps = analytics["email_steps"]
    for column, key in [
        ("sent", "emails_sent"),
        ("opened", "opens"),
        ("clicked", "clicks"),
        ("replied", "replies"),
        ("bounced", "bounces"),
        ("unsubscribed", "unsubscribes"),
    ]:
        assert sum(getattr(step, column) for step in steps) == EXPECTED[key], column
    by_step = {step.position: step for step in steps}
    assert (by_step[1].sent, by_step[1].replied, by_step[2].sent, by_step[2].replied) == (
        5,
        1,
        1,
        1,
    )
    crm = analytics["crm_syncs"]
    assert (crm.ok, crm.failed, crm.success_shown) == (3, 1, "75.0%")
    assert cards["crm_success"].shown == crm.success_shown

    # The daily report of the same day.
    daily = build_report("daily", DAY.date())
    kpis = {k.label: k.value for k in daily.kpis}
    assert kpis["Leads"] == EXPECTED["leads"]
    assert kpis["Qualification rate %"] == 60.0
    assert kpis["CRM sync success %"] == 75.0
    assert kpis["CRM failures"] == EXPECTED["crm_failed"]
    assert kpis["Emails sent"] == EXPECTED["emails_sent"]
    assert kpis["Replies"] == EXPECTED["replies"]
    assert kpis["Bounces"] == EXPECTED["bounces"]
    assert kpis["Errors"] == EXPECTED["errors"]
    emails = next(t for t in daily.tables if t.key == "emails")
    assert emails.rows == [[6, 2, 1, 2, 1, 1]]
    sources = next(t for t in daily.tables if t.key == "leads_by_source")
    assert sources.rows[0][:3] == ["Website", 5, 3]
    assert sources.rows[0][5] == 20.0  # replied: 1 of 5, as the funnel's last stage
    hourly = next(c for c in daily.charts if c.key == "errors_per_hour")
    assert sum(hourly.series["Errors"]) == EXPECTED["errors"]

    # The weekly report: its week holds exactly the day's leads.
    weekly = build_report("weekly", DAY.date())
    rows = next(t for t in weekly.tables if t.key == "funnel").rows
    assert [row[1] for row in rows] == FUNNEL
    trends = {row[0]: row[1] for row in next(t for t in weekly.tables if t.key == "trends").rows}
    assert (trends["routed"], trends["replies"], trends["crm_failed"]) == (3, 2, 1)

    # The alert rules, over the same day.
    found = rules.crm_failures(
        params.resolve("crm_failures", {"window_minutes": 24 * 60, "threshold": 1}), NEXT
    )
    assert found["hubspot"].details["failures"] == EXPECTED["crm_failed"]
    assert found["hubspot"].details["last_error"].startswith("the CRM answered 400")
    spike = rules.error_spike(
        params.resolve(
            "error_spike",
            {"window_minutes": 24 * 60, "baseline_days": 1, "multiplier": 1.0, "min_count": 1},
        ),
        NEXT,
    )
    assert spike[rules.SITE].details["count"] == EXPECTED["errors"]


def test_no_funnel_stage_exceeds_the_one_before(seeded, clock, auditor_client):
    # The trap: L3 is emailed without a CRM sync and L4 (nurture) is emailed, so
    # counting each stage on its own made "Emailed" 4 against 2 CRM synced (200%).
    emailed_anyhow = Lead.objects.filter(
        created_at__gte=DAY, created_at__lt=NEXT, enrollments__emails__sent_at__isnull=False
    ).distinct()
    assert emailed_anyhow.count() == 4
    funnel = auditor_client.get(reverse("analytics"), QUERY).context["funnel"]
    assert all(stage.from_previous <= 1 for stage in funnel[1:])
    assert {s.key: s.count for s in funnel}["emailed"] == 2
    html = auditor_client.get(reverse("analytics"), QUERY).content.decode()
    assert "200%" not in html
    weekly = build_report("weekly", DAY.date())
    rows = next(t for t in weekly.tables if t.key == "funnel").rows
    assert all(row[2] <= 100.0 for row in rows)
