"""The dashboard's lead pages: the filtered list, a lead's page, and the operator actions."""

import copy
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.urls import reverse

from audit.models import AuditEvent
from audit.services import record_event
from leads.crm.models import CrmCall, CrmConnection, CrmRecord
from leads.crm.services import crm_retry_lead
from leads.followups.models import Enrollment, OutboundEmail, Sequence, SequenceStep
from leads.followups.services import enroll, sequence_cancel_by_hand
from leads.models import Lead, LeadSource
from leads.services import (
    NotApplicable,
    lead_create,
    lead_qualify,
    lead_requalify,
    lead_route,
    lead_viewed,
)
from orchestrator.dashboard.selectors import leads as selectors
from orchestrator.dashboard.views import leads as lead_views
from tests.conftest import HTMX

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
LIST = reverse("lead-list")


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    # The role fixtures set passwords; the default hasher costs seconds on a busy machine.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def change_config(workflow, change) -> None:
    """Edit a workflow's rules on a copy: the fixture's config dict is shared by every test."""
    config = copy.deepcopy(workflow.config)
    change(config)
    workflow.config = config
    workflow.save()


@pytest.fixture(autouse=True)
def frozen_time():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def make_lead(source: LeadSource, email: str, *, ago: timedelta = timedelta(hours=1), **fields):
    return lead_create(source=source, email=email, at=NOW - ago, **fields)


def row_ids(response) -> list[str]:
    return re.findall(r'class="lead-row" data-lead-id="([^"]+)"', response.content.decode())


def timeline_ids(response) -> list[int]:
    found = re.findall(
        r'class="timeline-item[^"]*"[^>]*data-event-id="(\d+)"', response.content.decode()
    )
    return [int(i) for i in found]


def detail(lead: Lead) -> str:
    return reverse("lead-detail", kwargs={"public_id": lead.public_id})


def action(name: str, lead: Lead) -> str:
    return reverse(name, kwargs={"public_id": lead.public_id})


# --- The list -----------------------------------------------------------------------------


def test_list_full_page_and_fragment(auditor_client, web_source):
    lead = make_lead(web_source, "ann@acme.example", name="Ann")
    page = auditor_client.get(LIST)
    assert page.status_code == 200
    html = page.content.decode()
    assert "<html" in html and 'id="lead-filters"' in html and 'id="lead-table"' in html
    assert row_ids(page) == [lead.public_id]
    assert f'href="{detail(lead)}"' in html

    fragment = auditor_client.get(LIST, **HTMX)
    html = fragment.content.decode()
    assert fragment.status_code == 200
    assert "<html" not in html and 'id="lead-filters"' not in html
    assert html.lstrip().startswith('<section id="lead-table"')
    assert row_ids(fragment) == [lead.public_id]


@pytest.fixture
def crowd(pipeline, django_user_model):
    """Leads that each filter tells apart."""
    other = LeadSource.objects.create(name="Import", slug="import", kind="csv")
    anna = pipeline["users"]["anna"]
    leads = {
        "ann": make_lead(
            pipeline["source"], "ann.smith@acme.example", name="Ann Smith", company="Acme"
        ),
        "bob": make_lead(
            other, "bob@globex.example", name="Bob Stone", company="Globex", ago=timedelta(hours=2)
        ),
        "cara": make_lead(
            pipeline["source"],
            "cara@initech.example",
            name="Cara Acheson",
            company="Initech",
            ago=timedelta(hours=3),
        ),
        "old": make_lead(
            pipeline["source"], "old@acme.example", name="Old Timer", ago=timedelta(days=20)
        ),
    }
    Lead.objects.filter(pk=leads["ann"].pk).update(status="qualified", score=80, owner=anna)
    Lead.objects.filter(pk=leads["bob"].pk).update(status="nurture", score=30)
    Lead.objects.filter(pk=leads["cara"].pk).update(status="disqualified", score=5)
    return {name: lead.public_id for name, lead in leads.items()}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["ann", "bob", "cara"]),  # the default 7 days leave out the old lead
        ({"created": "any"}, ["ann", "bob", "cara", "old"]),
        ({"range": "30d"}, ["ann", "bob", "cara", "old"]),
        ({"status": "nurture"}, ["bob"]),
        ({"source": "import"}, ["bob"]),
        ({"owner": "anna"}, ["ann"]),
        ({"owner": "none"}, ["bob", "cara"]),
        ({"score_min": "30"}, ["ann", "bob"]),
        ({"score_max": "30"}, ["bob", "cara"]),
        ({"score_min": "10", "score_max": "50"}, ["bob"]),
        ({"q": "ann.smith@acme.example"}, ["ann"]),  # an exact email
        ({"q": "cara@"}, ["cara"]),  # an email prefix
        ({"q": "BOB"}, ["bob"]),  # name, email prefix, any case
        ({"q": "glob"}, ["bob"]),  # company prefix
        ({"q": "ac"}, ["ann", "cara"]),  # company Acme, name Cara Acheson
        ({"q": "smith"}, ["ann"]),  # inside the email and the name
        ({"q": "tech"}, ["cara"]),  # inside the company and the email's domain
        ({"q": "acme", "created": "any"}, ["ann", "old"]),  # old@acme.example too
        ({"q": "ACME.EX"}, ["ann"]),  # the date range still applies
        ({"q": "xyz"}, []),
        ({"status": "qualified", "owner": "anna", "q": "ann"}, ["ann"]),
    ],
)
def test_each_filter(auditor_client, crowd, params, expected):
    response = auditor_client.get(LIST, params, **HTMX)
    assert response.status_code == 200
    assert row_ids(response) == [crowd[name] for name in expected]


def test_search_by_public_id(auditor_client, crowd):
    # A public id is exact, in any case; the period applies to it as to every filter.
    response = auditor_client.get(LIST, {"q": crowd["old"].lower(), "created": "any"}, **HTMX)
    assert row_ids(response) == [crowd["old"]]
    assert row_ids(auditor_client.get(LIST, {"q": crowd["old"]}, **HTMX)) == []


def test_filters_keep_their_values_in_the_form(auditor_client, crowd):
    html = auditor_client.get(LIST, {"status": "nurture", "q": "bo", "range": "30d"}).content
    html = html.decode()
    assert re.search(r'<option value="nurture" selected>', html)
    assert 'value="bo"' in html
    assert '<input type="hidden" name="range" value="30d">' in html


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": "bogus"}, "status: Select a valid choice"),
        ({"source": "nowhere"}, "source: Select a valid choice"),
        ({"owner": "ghost"}, "owner: Select a valid choice"),
        ({"score_min": "abc"}, "score_min: Enter a whole number"),
        ({"score_min": "60", "score_max": "10"}, "score from (60) is above score to (10)"),
        ({"q": "a"}, "q: Ensure this value has at least 2 characters"),
        ({"q": "a" * 101}, "q: Ensure this value has at most 100 characters"),
        ({"created": "forever"}, "created: Select a valid choice"),
        ({"cursor": "yesterday"}, "is not a position in this list"),
        ({"range": "forever"}, "range must be one of"),
    ],
)
def test_bad_filter_values_are_a_400_with_a_message(auditor_client, web_source, params, message):
    response = auditor_client.get(LIST, params)
    assert response.status_code == 400
    assert message in response.content.decode()
    fragment = auditor_client.get(LIST, params, **HTMX)
    assert fragment.status_code == 400
    assert fragment["HX-Retarget"] == "#request-error"


def test_keyset_pages_cover_every_lead_once_newest_first(auditor_client, web_source, monkeypatch):
    monkeypatch.setattr("orchestrator.dashboard.views.leads.PAGE_SIZE", 2)
    same = timedelta(minutes=5)  # three leads created in the same microsecond
    ids = [make_lead(web_source, f"p{i}@acme.example", ago=same).public_id for i in range(3)]
    ids.append(make_lead(web_source, "older@acme.example", ago=timedelta(hours=1)).public_id)
    ids.insert(0, make_lead(web_source, "newest@acme.example", ago=timedelta(seconds=1)).public_id)

    seen: list[str] = []
    url = LIST + "?range=7d"
    for _ in range(5):
        response = auditor_client.get(url, **HTMX)
        assert response.status_code == 200
        seen += row_ids(response)
        match = re.search(r'id="next-page" href="([^"]+)"', response.content.decode())
        if not match:
            break
        url = match[1].replace("&amp;", "&")
        assert "range=7d" in url and "cursor=" in url
    # Newest first; equal times by id, newest id first.
    expected = [ids[0], ids[3], ids[2], ids[1], ids[4]]
    assert seen == expected


def test_the_list_counts_up_to_a_cap(
    auditor_client, web_source, django_assert_max_num_queries, monkeypatch
):
    for i in range(3):
        make_lead(web_source, f"n{i}@acme.example")
    make_lead(web_source, "other@globex.example")
    with django_assert_max_num_queries(8) as ctx:
        html = auditor_client.get(LIST, {"q": "acme"}, **HTMX).content.decode()
    assert '<span class="total">3 leads</span>' in html
    (count,) = [q["sql"] for q in ctx.captured_queries if "COUNT(" in q["sql"].upper()]
    assert "LIMIT 10001" in count  # never more than the cap is read
    # Beyond the cap the header says so rather than counting on.
    monkeypatch.setattr(lead_views, "COUNT_CAP", 2)
    html = auditor_client.get(LIST, {"q": "acme"}, **HTMX).content.decode()
    assert '<span class="total">2+ leads</span>' in html
    # Exactly the cap is still exact.
    monkeypatch.setattr(lead_views, "COUNT_CAP", 3)
    html = auditor_client.get(LIST, {"q": "acme"}, **HTMX).content.decode()
    assert '<span class="total">3 leads</span>' in html


# --- The lead page ---------------------------------------------------------------------------


@pytest.fixture
def full_lead(pipeline):
    """A routed lead with a CRM record and calls, and a sequence with a sent, replied email."""
    lead = make_lead(
        pipeline["source"],
        "dora@acme.example",
        ago=timedelta(hours=5),
        name="Dora Diaz",
        company="Acme",
        title="CTO",
        country="DE",
    )
    with time_machine.travel(NOW - timedelta(hours=4), tick=False):
        lead_qualify(lead=lead, config=pipeline["workflow"].config["qualification"])
        lead_route(lead=lead, config=pipeline["workflow"].config["routing"])
        connection = CrmConnection.objects.create(
            name="hub", kind="webhook", base_url="http://127.0.0.1:9"
        )
        CrmRecord.objects.create(
            lead=lead,
            connection=connection,
            status=CrmRecord.Status.NEEDS_ATTENTION,
            attempts=5,
            last_error="CrmError: 422 invalid email",
        )
        CrmCall.objects.create(
            connection=connection,
            lead=lead,
            operation="upsert",
            method="POST",
            path="/hooks/leads",
            status_code=422,
            outcome=CrmCall.Outcome.PERMANENT,
            latency_ms=87,
        )
        sequence = Sequence.objects.create(name="Welcome", slug="welcome")
        for position in (1, 2):
            SequenceStep.objects.create(
                sequence=sequence,
                position=position,
                delay=timedelta(hours=position),
                subject_template=f"Hello {position}",
                text_template="Hi",
            )
        enrollment = enroll(lead=lead, sequence=sequence)
    first = enrollment.emails.get()
    OutboundEmail.objects.filter(pk=first.pk).update(
        status=OutboundEmail.Status.SENT,
        subject="Hello Dora",
        sent_at=NOW - timedelta(hours=3),
        opened_at=NOW - timedelta(hours=2),
    )
    OutboundEmail.objects.create(
        enrollment=enrollment,
        step=sequence.steps.get(position=2),
        recipient=lead.email,
        message_id="<step2@example.test>",
        due_at=NOW + timedelta(hours=1),
    )
    record_event(
        event_type="email_replied",
        lead=lead,
        timestamp=NOW - timedelta(hours=1),
        details={"message_id": first.message_id, "sequence_step": 1},
    )
    lead.refresh_from_db()
    return lead


def test_lead_page_shows_every_section(auditor_client, full_lead):
    response = auditor_client.get(detail(full_lead))
    assert response.status_code == 200
    html = response.content.decode()
    for dom_id in ("lead-profile", "score-breakdown", "crm-records", "sequence"):
        assert f'<section id="{dom_id}"' in html, dom_id
    assert '<ol id="timeline"' in html

    profile = html.split('id="lead-profile"')[1].split("</section>")[0]
    assert "Dora Diaz" in profile and "dora@acme.example" in profile and "Acme" in profile
    assert "anna" in profile and "EMEA" in profile  # owner and team from the routing
    assert "territory DE" in profile  # the rule that routed it

    score = html.split('id="score-breakdown"')[1].split("</section>")[0]
    assert re.search(r"base score</td><td class=\"num\">10<", score)
    assert re.search(r"decision maker</td><td class=\"num\">40<", score)
    assert re.search(r"target country</td><td class=\"num\">20<", score)
    assert 'class="num score-total">70<' in score
    assert "qualified from 50, nurture from 25" in score

    crm = html.split('id="crm-records"')[1].split("</section>")[0]
    assert "hub" in crm and "Needs attention" in crm and "422 invalid email" in crm
    assert "upsert: POST /hooks/leads" in crm

    sequence = html.split('id="sequence"')[1].split("</section>")[0]
    assert "Welcome" in sequence and "Active" in sequence
    emails = re.findall(r'<tr class="sequence-email" data-email-status="(\w+)">', sequence)
    assert emails == ["sent", "pending"]
    assert "Hello Dora" in sequence and "opened" in sequence and "replied" in sequence
    assert "bounced</span>" not in sequence


def test_timeline_is_oldest_first_with_type_time_and_correlation(auditor_client, full_lead):
    # Recorded last but timestamped first: the order is by time, not by id.
    early = record_event(
        event_type="lead_updated",
        lead=full_lead,
        timestamp=NOW - timedelta(days=1),
        correlation_id="corr-early",
    )
    response = auditor_client.get(detail(full_lead))
    html = response.content.decode().replace("\xa0", " ")  # naturaltime's no-break spaces
    ids = timeline_ids(response)
    events = AuditEvent.objects.filter(lead_public_id=full_lead.public_id)
    by_time = [e.pk for e in events.order_by("timestamp", "id") if e.pk in ids]
    assert ids == by_time and ids[0] == early.pk
    # Every event of the lead, this page view included.
    assert set(ids) == set(events.values_list("pk", flat=True))
    assert html.split('data-event-type="audit_viewed"')[1].count("user:audrey")

    item = html.split(f'data-event-id="{early.pk}"')[1].split("</li>")[0]
    assert 'class="icon type-lead"' in item
    assert '<time datetime="2026-11-19T12:00:00+00:00"' in item and ">1 day ago<" in item
    assert "2026-11-19 12:00:00 UTC" in item
    link = re.search(r'class="correlation-link" href="([^"]+)"', item)[1].replace("&amp;", "&")
    assert link == (
        reverse("event-list") + "?correlation=corr-early&range=custom"
        "&since=2026-11-18&until=2026-12-19"
    )
    replied = html.split('data-event-type="email_replied"')[1].split("</li>")[0]
    assert 'class="icon type-email"' in replied and ">an hour ago<" in replied


def test_a_page_view_is_audited_once_not_on_fragment_refreshes(auditor_client, full_lead):
    def views():
        return AuditEvent.objects.filter(
            lead_public_id=full_lead.public_id, event_type="audit_viewed"
        )

    auditor_client.get(detail(full_lead))
    (viewed,) = views()
    assert viewed.actor == "user:audrey"
    assert viewed.details == {"view": "lead_history"}
    assert viewed.workflow == "sales"

    fragment = auditor_client.get(detail(full_lead), **HTMX)
    assert fragment.status_code == 200
    html = fragment.content.decode()
    assert "<html" not in html and html.lstrip().startswith('<div id="lead-page"')
    assert views().count() == 1
    # The recorded view shows in the timeline on the next look.
    assert f'data-event-id="{viewed.pk}"' in html

    auditor_client.get(detail(full_lead))
    assert views().count() == 2


def test_unknown_lead_is_a_404(auditor_client, db):
    response = auditor_client.get(reverse("lead-detail", kwargs={"public_id": "LEAD-999999"}))
    assert response.status_code == 404
    assert not AuditEvent.objects.filter(event_type="audit_viewed").exists()


def test_a_long_history_shows_its_latest_events(auditor_client, web_source, monkeypatch):
    monkeypatch.setattr(selectors, "TIMELINE_LIMIT", 3)
    lead = make_lead(web_source, "busy@acme.example", ago=timedelta(hours=10))
    newer = [
        record_event(event_type="lead_updated", lead=lead, timestamp=NOW - timedelta(hours=h))
        for h in (3, 2, 1)
    ]
    response = auditor_client.get(detail(lead), **HTMX)
    assert timeline_ids(response) == [e.pk for e in newer]
    assert "Showing the latest 3 events" in response.content.decode()


def test_lead_fields_are_escaped(auditor_client, web_source):
    lead = make_lead(
        web_source,
        "x@acme.example",
        name="<script>alert(1)</script>",
        company='"><img src=x>',
        extra={"note": "<b>hi</b>"},
    )
    for response in (auditor_client.get(LIST), auditor_client.get(detail(lead))):
        html = response.content.decode()
        assert "<script>alert(1)</script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert '"><img src=x>' not in html
    assert "&lt;b&gt;hi&lt;/b&gt;" in html


def test_auditors_see_no_actions_and_get_403(auditor_client, full_lead):
    html = auditor_client.get(detail(full_lead)).content.decode()
    assert 'id="action-requalify"' not in html and 'id="lead-actions"' not in html
    for name in ("lead-requalify", "lead-retry-crm", "lead-cancel-sequence"):
        assert auditor_client.post(action(name, full_lead)).status_code == 403
    full_lead.refresh_from_db()
    assert Enrollment.objects.get(lead=full_lead).status == "active"
    assert (
        not AuditEvent.objects.filter(actor="user:audrey")
        .exclude(event_type="audit_viewed")
        .exists()
    )


def test_operators_see_the_action_forms(operator_client, full_lead):
    html = operator_client.get(detail(full_lead)).content.decode()
    for name, form_id in (
        ("lead-requalify", "action-requalify"),
        ("lead-retry-crm", "action-retry-crm"),
        ("lead-cancel-sequence", "action-cancel-sequence"),
    ):
        form = html.split(f'<form id="{form_id}"')[1].split("</form>")[0]
        assert 'method="post"' in form and f'action="{action(name, full_lead)}"' in form
        assert 'name="csrfmiddlewaretoken"' in form
        assert "disabled" not in form


def test_actions_need_post(operator_client, full_lead):
    assert operator_client.get(action("lead-requalify", full_lead)).status_code == 405


# --- Operator actions -----------------------------------------------------------------------


def test_requalify_uses_the_current_rules_as_the_user(operator_client, full_lead, pipeline):
    # decision maker: 40 -> 5 points
    change_config(pipeline["workflow"], lambda c: c["qualification"]["rules"][0].update(points=5))

    response = operator_client.post(action("lead-requalify", full_lead), **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="lead-page"')
    assert "Re-qualified" in html and "nurture, score 35" in html

    full_lead.refresh_from_db()
    assert (full_lead.status, full_lead.score) == ("nurture", 35)
    event = AuditEvent.objects.filter(event_type="lead_qualified").latest("timestamp", "id")
    assert event.actor == "user:oscar"
    assert event.details["score"] == 35
    assert f'data-event-id="{event.pk}"' in html


def test_an_action_without_htmx_redirects_back_with_a_message(operator_client, full_lead):
    response = operator_client.post(action("lead-requalify", full_lead))
    assert response.status_code == 302
    assert response["Location"] == detail(full_lead)
    page = operator_client.get(response["Location"])
    assert "Re-qualified " + full_lead.public_id in page.content.decode()


def test_retry_crm_queues_a_sync_as_the_user(
    operator_client, full_lead, django_capture_on_commit_callbacks
):
    from django_tasks_db.models import DBTaskResult

    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(action("lead-retry-crm", full_lead), **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "CRM sync of " + full_lead.public_id + " queued (hub)" in html

    record = CrmRecord.objects.get(lead=full_lead)
    assert record.status == CrmRecord.Status.PENDING
    assert record.next_attempt_at == NOW
    assert record.attempts == 5  # a retry by hand is one more try, not a fresh budget
    event = AuditEvent.objects.get(event_type="crm_sync_requested")
    assert event.actor == "user:oscar"
    assert event.details == {
        "connections": ["hub"],
        "previous_status": {"hub": "needs_attention"},
    }
    assert f'data-event-id="{event.pk}"' in html
    (task,) = DBTaskResult.objects.all()
    assert task.args_kwargs["args"][:3] == [
        "crm_sync",
        full_lead.pk,
        {"kind": "crm_sync", "connection": "hub"},
    ]
    assert task.args_kwargs["args"][3] == event.correlation_id


def test_cancel_sequence_as_the_user(operator_client, full_lead):
    response = operator_client.post(action("lead-cancel-sequence", full_lead), **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Cancelled 1 active sequence of " + full_lead.public_id in html

    enrollment = Enrollment.objects.get(lead=full_lead)
    assert (enrollment.status, enrollment.cancel_reason) == ("cancelled", "manual")
    assert list(enrollment.emails.order_by("step__position").values_list("status", flat=True)) == [
        "sent",
        "cancelled",
    ]
    event = AuditEvent.objects.get(event_type="email_cancelled")
    assert event.actor == "user:oscar" and event.details["reason"] == "manual"
    assert f'data-event-id="{event.pk}"' in html
    # Nothing left to cancel: the button is disabled now.
    form = html.split('<form id="action-cancel-sequence"')[1].split("</form>")[0]
    assert "disabled" in form


@pytest.mark.parametrize("htmx", [True, False])
def test_actions_that_do_not_apply_are_a_400_with_a_message(operator_client, web_source, htmx):
    lead = make_lead(web_source, "new@acme.example")  # no workflow, no CRM, no sequence
    headers = HTMX if htmx else {}
    before = AuditEvent.objects.count()
    for name, message in (
        ("lead-requalify", "belongs to no workflow"),
        ("lead-retry-crm", "has no active CRM connection"),
        ("lead-cancel-sequence", "has no active email sequence"),
    ):
        response = operator_client.post(action(name, lead), **headers)
        assert response.status_code == 400, name
        html = response.content.decode()
        assert message in html, name
        assert ('<div id="lead-page"' in html) and (("<html" in html) != htmx)
    assert AuditEvent.objects.count() == before


def test_requalify_refuses_a_lead_the_runner_has_not_processed(operator_client, pipeline):
    lead = make_lead(pipeline["source"], "fresh@acme.example")
    response = operator_client.post(action("lead-requalify", lead), **HTMX)
    assert response.status_code == 400
    assert "has not been processed yet" in response.content.decode()
    lead.refresh_from_db()
    assert lead.status == "new"


def test_unknown_lead_action_is_a_404(operator_client, db):
    url = reverse("lead-requalify", kwargs={"public_id": "LEAD-424242"})
    assert operator_client.post(url).status_code == 404


# --- The services behind the actions ----------------------------------------------------


def test_lead_requalify_service_records_lead_qualified(full_lead):
    result = lead_requalify(lead=full_lead, actor="user:ann")
    assert result.status == "qualified"
    event = AuditEvent.objects.filter(event_type="lead_qualified").latest("timestamp", "id")
    assert event.actor == "user:ann" and event.details["score"] == 70


def test_lead_requalify_to_disqualified_stops_the_sequence(full_lead, pipeline):
    change_config(
        pipeline["workflow"],
        lambda c: c["qualification"]["disqualify"].update(blocked_domains=["acme.example"]),
    )
    lead_requalify(lead=full_lead, actor="user:ann")
    cancelled = AuditEvent.objects.get(event_type="email_cancelled")
    assert cancelled.actor == "user:ann" and cancelled.details["reason"] == "disqualified"


def test_lead_viewed_service(web_source):
    lead = make_lead(web_source, "v@acme.example")
    event = lead_viewed(lead=lead, actor="user:ann")
    assert (event.event_type, event.actor, event.lead_public_id) == (
        "audit_viewed",
        "user:ann",
        lead.public_id,
    )
    assert event.details == {"view": "lead_history"}


def test_crm_retry_lead_creates_records_for_the_workflows_connections(full_lead, pipeline):
    CrmRecord.objects.all().delete()
    CrmConnection.objects.create(name="sf", kind="salesforce", active=True)
    CrmConnection.objects.create(name="off", kind="webhook", active=False)
    steps = [{"kind": "crm_sync", "connection": "sf"}, {"kind": "crm_sync", "connection": "off"}]
    change_config(pipeline["workflow"], lambda c: c.update(steps=steps))
    full_lead.refresh_from_db()
    records = crm_retry_lead(lead=full_lead, actor="user:ann")
    assert [r.connection.name for r in records] == ["sf"]
    assert CrmRecord.objects.get(lead=full_lead).status == "pending"
    event = AuditEvent.objects.get(event_type="crm_sync_requested")
    assert event.actor == "user:ann"
    assert event.details == {"connections": ["sf"], "previous_status": {"sf": "pending"}}


def test_crm_retry_lead_leaves_a_running_sync_alone(full_lead):
    CrmRecord.objects.update(locked_until=NOW + timedelta(minutes=5))
    with pytest.raises(NotApplicable, match="is being synced right now"):
        crm_retry_lead(lead=full_lead, actor="user:ann")
    assert CrmRecord.objects.get().status == "needs_attention"
    assert not AuditEvent.objects.filter(event_type="crm_sync_requested").exists()


def test_sequence_cancel_by_hand_service(full_lead):
    assert sequence_cancel_by_hand(lead=full_lead, actor="user:ann") == 1
    event = AuditEvent.objects.get(event_type="email_cancelled")
    assert event.actor == "user:ann" and event.details["reason"] == "manual"
    with pytest.raises(NotApplicable, match="no active email sequence"):
        sequence_cancel_by_hand(lead=full_lead, actor="user:ann")
    assert AuditEvent.objects.filter(event_type="email_cancelled").count() == 1


def test_score_and_routing_come_from_each_types_latest_event(web_source):
    lead = make_lead(web_source, "many@acme.example", ago=timedelta(days=3))
    first = record_event(event_type="lead_qualified", lead=lead, timestamp=NOW - timedelta(days=2))
    routed = record_event(event_type="lead_routed", lead=lead, timestamp=NOW - timedelta(days=2))
    latest = record_event(event_type="lead_qualified", lead=lead, timestamp=NOW - timedelta(days=1))
    # Many newer events of other types between: the walk must go past them.
    for h in range(30):
        record_event(event_type="email_sent", lead=lead, timestamp=NOW - timedelta(hours=h))
    found = selectors.latest_lead_events(lead_id=lead.public_id)
    assert found == {"lead_qualified": latest, "lead_routed": routed}
    assert first != latest
    assert selectors.score_view(lead=lead).decided == latest
    assert selectors.routing_event(lead=lead, latest=found) == routed
    assert selectors.latest_lead_events(lead_id="LEAD-999999") == {}
