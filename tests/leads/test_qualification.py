import pytest

from audit.models import AuditEvent
from leads.models import Lead
from leads.qualification import qualify
from leads.services import ingest_lead, lead_qualify


def make_lead(source, **fields):
    payload = {"email": "person@acme.example", **fields}
    return ingest_lead(source=source, payload=payload).lead


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("op", "condition", "fields", "hit"),
    [
        ("equals", {"value": "acme"}, {"company": "ACME"}, True),
        ("equals", {"value": "acme", "case_sensitive": True}, {"company": "ACME"}, False),
        ("in", {"value": ["DE", "FR"]}, {"country": "de"}, True),
        ("in", {"value": ["DE", "FR"]}, {"country": "US"}, False),
        ("contains", {"value": "sales"}, {"title": "Head of Sales"}, True),
        ("contains", {"value": "sales"}, {"title": "Engineer"}, False),
        ("regex", {"value": r"^head\b"}, {"title": "Head of Sales"}, True),
        ("regex", {"value": r"^head\b"}, {"title": "Forehead"}, False),
        ("exists", {}, {"phone": "+49 30 1234"}, True),
        ("exists", {}, {}, False),
        ("range", {"min": 100, "max": 500}, {"employees": 250}, True),
        ("range", {"min": 100}, {"employees": "99"}, False),
        ("range", {"max": 10}, {"employees": "many"}, False),
        ("email_domain_in", {"value": ["acme.example"]}, {}, True),
        ("email_domain_in", {"value": ["other.example"]}, {}, False),
    ],
)
def test_each_operator_adds_points_only_when_it_matches(web_source, op, condition, fields, hit):
    field = {
        "equals": "company",
        "in": "country",
        "contains": "title",
        "regex": "title",
        "exists": "phone",
        "range": "extra.employees",
        "email_domain_in": "email",
    }[op]
    lead = make_lead(web_source, **fields)
    config = {
        "rules": [
            {"name": f"{op} rule", "when": {"field": field, "op": op, **condition}, "points": 7}
        ],
        "thresholds": {"qualified": 5, "nurture": 1},
    }
    result = qualify(lead, config)
    assert result.score == (7 if hit else 0)
    assert result.breakdown == ([{"rule": f"{op} rule", "points": 7}] if hit else [])


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("email", "fields", "status", "score", "reason"),
    [
        ("cto@acme.example", {"title": "CTO", "country": "DE"}, "qualified", 70, "score 70"),
        ("vp@acme.example", {"title": "VP Sales"}, "qualified", 50, "score 50"),
        ("dev@acme.example", {"country": "US"}, "nurture", 30, "score 30 below 50"),
        ("dev@acme.example", {}, "disqualified", 10, "score 10 below 25"),
        (
            "cto@gmail.com",
            {"title": "CTO", "country": "DE"},
            "disqualified",
            70,
            "free email domain gmail.com",
        ),
        (
            "cto@mailinator.com",
            {"title": "CTO"},
            "disqualified",
            50,
            "disposable email domain mailinator.com",
        ),
        (
            "cto@eu.rival.example",
            {"title": "CTO"},
            "disqualified",
            50,
            "blocked domain eu.rival.example",
        ),
    ],
)
def test_scoring_matrix(pipeline, email, fields, status, score, reason):
    lead = ingest_lead(source=pipeline["source"], payload={"email": email, **fields}).lead
    config = pipeline["workflow"].config["qualification"]
    result = lead_qualify(lead=lead, config=config)
    lead.refresh_from_db()
    assert (lead.status, lead.score, result.reason) == (status, score, reason)
    assert lead.score_breakdown["rules"][0] == {"rule": "base score", "points": 10}
    event = AuditEvent.objects.get(event_type="lead_qualified", lead_public_id=lead.public_id)
    assert event.details["score"] == score
    assert event.details["status"] == status
    assert event.details["qualified"] is (status == "qualified")
    assert event.details["breakdown"] == lead.score_breakdown["rules"]


@pytest.mark.django_db
def test_negative_points_and_several_conditions(web_source):
    lead = make_lead(web_source, title="Student", country="DE")
    config = {
        "rules": [
            {
                "name": "student",
                "when": {"field": "title", "op": "contains", "value": "student"},
                "points": -30,
            },
            {
                "name": "german student",
                "when": [
                    {"field": "country", "op": "equals", "value": "DE"},
                    {"field": "title", "op": "contains", "value": "student"},
                ],
                "points": 5,
            },
        ],
        "thresholds": {"qualified": 10, "nurture": 0},
    }
    result = qualify(lead, config)
    assert result.score == -25
    assert result.status == Lead.Status.DISQUALIFIED
