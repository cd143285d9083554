"""Hostile dashboard input never gives a 500 (issue 11): each case the issue found is a
400 that says why, or a 404; and a property test throws arbitrary text at every GET
page. The same tests run on SQLite and on PostgreSQL (.ci/run)."""

import base64
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from django.http import QueryDict
from django.urls import URLPattern, reverse
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.models import AuditEvent
from audit.services import record_event
from core.paging import encode_cursor
from core.periods import PeriodError, period_from_query
from leads.models import Lead
from leads.services import lead_create
from orchestrator.dashboard import urls as dashboard_urls
from orchestrator.dashboard.access import answers_posts
from orchestrator.dashboard.filters.events import EventFilter
from orchestrator.dashboard.filters.leads import LeadFilter
from tests.conftest import HTMX

pytestmark = pytest.mark.django_db

OUT_OF_RANGE = "must lie between 2000-01-01 and 9000-01-01"
UNSEARCHABLE = "contains characters that cannot be searched"
NOT_A_POSITION = "is not a position in this list"
# Each page that follows the global period, by name.
PERIOD_PAGES = [
    "overview",
    "event-list",
    "event-export",
    "error-list",
    "analytics",
    "workflow-runs",
    "lead-list",
]
# Pages with a cursor, by name (error-detail needs a recorded group: see below).
PAGED = ["event-list", "lead-list", "workflow-runs"]


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    # The role fixtures set passwords; the default hasher costs seconds on a busy machine.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def body(response) -> str:
    if response.streaming:
        return b"".join(response.streaming_content).decode(errors="replace")
    return response.content.decode(errors="replace")


def assert_400(response, message: str) -> None:
    text = body(response)
    assert response.status_code == 400, text[:500]
    assert message in text, text[:500]


def both(client, url: str, params: dict | None = None):
    """The full page and the htmx fragment of the same request."""
    return [client.get(url, params or {}), client.get(url, params or {}, **HTMX)]


# --- periods: dates near year 1 and 9999, offsets beyond PostgreSQL's ----------------------


@pytest.mark.parametrize("name", PERIOD_PAGES)
@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("9999-12-30", "9999-12-31"),
        ("0001-01-01", "0001-01-02"),
        ("0001-01-01T00:00+23:59", "2026-01-01"),
        ("2026-01-01", "9999-12-31T23:59-23:59"),
        ("1999-12-31", "2000-01-02"),
    ],
)
def test_ranges_near_the_ends_of_the_calendar_are_a_400(auditor_client, name, since, until):
    params = {"range": "custom", "since": since, "until": until}
    for response in both(auditor_client, reverse(name), params):
        assert_400(response, OUT_OF_RANGE)
    assert not AuditEvent.objects.filter(event_type="audit_exported").exists()


def test_bounds_are_normalised_to_utc():
    period = period_from_query(
        QueryDict("range=custom&since=2026-03-09T00:00-23:59&until=2026-03-11T00:00%2B23:59")
    )
    assert period.start == datetime(2026, 3, 9, 23, 59, tzinfo=UTC)
    assert period.start.utcoffset() == timedelta(0)
    assert period.end == datetime(2026, 3, 10, 0, 1, tzinfo=UTC)
    assert period.end.utcoffset() == timedelta(0)
    with pytest.raises(PeriodError, match="until must lie between"):
        period_from_query(QueryDict("range=custom&since=2026-01-01&until=9999-12-31"))


@pytest.mark.parametrize("name", ["event-list", "error-list", "lead-list", "workflow-runs"])
def test_offsets_beyond_fifteen_hours_are_answered(auditor_client, name):
    since = (timezone.now() - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M-23:59")
    params = {"range": "custom", "since": since, "until": timezone.now().date().isoformat()}
    for response in both(auditor_client, reverse(name), params):
        assert response.status_code == 200, name


def test_export_with_a_far_offset_streams_to_the_end(auditor_client):
    hit = record_event(
        event_type="lead_ingested", workflow="sales", timestamp=timezone.now() - timedelta(hours=1)
    )
    # Nearly a day either side of now, written with offsets PostgreSQL refuses.
    since = timezone.now().strftime("%Y-%m-%dT%H:%M+23:59")
    until = timezone.now().strftime("%Y-%m-%dT%H:%M-23:59")
    response = auditor_client.get(
        reverse("event-export"),
        {"range": "custom", "since": since, "until": until, "format": "jsonl"},
    )
    assert response.status_code == 200
    lines = [json.loads(line) for line in body(response).splitlines()]
    assert [line["event_id"] for line in lines] == [str(hit.uuid)]
    exported = AuditEvent.objects.get(event_type="audit_exported")
    assert exported.details["since"].endswith("+00:00")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"range": "custom", "since": "0001-01-01", "until": "2026-01-01"}, OUT_OF_RANGE),
        ({"q": "a\x00b"}, UNSEARCHABLE),
        ({"lead": "\x00"}, UNSEARCHABLE),
        ({"after": "9223372036854775808"}, "after: Ensure this value is less than or equal to"),
        ({"format": "xml\x00"}, "format must be one of csv, jsonl"),
    ],
)
def test_export_refuses_bad_input_before_recording_it(auditor_client, params, message):
    assert_400(auditor_client.get(reverse("event-export"), params), message)
    assert not AuditEvent.objects.filter(event_type="audit_exported").exists()


# --- cursors and the live tail's event id -------------------------------------------------


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


HOSTILE_CURSORS = [
    "9223372036854775808",
    "²",
    "\x00",
    "a" * 600,
    _b64('[{"dt":"2026-01-01T00:00:00+00:00"},9223372036854775808]'),
    _b64('[{"dt":"0001-01-01T00:00:00+23:59"},1]'),
    _b64('[{"dec":"NaN"},1]'),
    _b64('["\\u0000",1]'),
    _b64('[{"dt":"2026-01-01T00:00:00+00:00"},"\\ud800"]'),
]


@pytest.mark.parametrize("name", PAGED)
@pytest.mark.parametrize("cursor", HOSTILE_CURSORS)
def test_hostile_cursors_are_a_400(auditor_client, name, cursor):
    for response in both(auditor_client, reverse(name), {"cursor": cursor}):
        if name == "event-list" and len(cursor) > 512:
            assert_400(response, "Ensure this value has at most 512 characters")
        elif name == "event-list" and cursor == "\x00":
            assert_400(response, "Null characters are not allowed")
        else:
            assert_400(response, NOT_A_POSITION)


def test_a_cursor_with_a_far_offset_is_read_in_utc(auditor_client):
    # A position written by hand with an offset PostgreSQL refuses: still a position.
    moment = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "-23:59")
    cursor = _b64(f'[{{"dt":"{moment}"}},1]')
    for response in both(auditor_client, reverse("event-list"), {"cursor": cursor}):
        assert response.status_code == 200


@pytest.fixture
def error_group():
    event = record_event(
        event_type="error",
        workflow="sales",
        error_type="ValueError",
        error_message="boom",
        traceback="Traceback\n  File x\nValueError: boom",
        timestamp=timezone.now() - timedelta(hours=1),
    )
    event.refresh_from_db()
    assert event.fingerprint
    return event.fingerprint


@pytest.mark.parametrize("cursor", HOSTILE_CURSORS)
def test_hostile_cursors_on_an_error_group_are_a_400(auditor_client, error_group, cursor):
    url = reverse("error-detail", kwargs={"fingerprint": error_group})
    for response in both(auditor_client, url, {"cursor": cursor}):
        assert_400(response, NOT_A_POSITION)


@pytest.mark.parametrize("after", ["1_99999999999999999999999", "9223372036854775808", str(2**200)])
def test_a_huge_live_tail_position_is_a_400(auditor_client, after):
    for response in both(auditor_client, reverse("event-list"), {"after": after, "live": "1"}):
        assert_400(response, "after: Ensure this value is less than or equal to")


@pytest.mark.parametrize("after", ["²", "-1", "x"])
def test_a_live_tail_position_that_is_no_event_id_is_a_400(auditor_client, after):
    for response in both(auditor_client, reverse("event-list"), {"after": after}):
        assert response.status_code == 400
        assert "after: " in body(response)


def test_a_written_cursor_still_pages(auditor_client):
    cursor = encode_cursor([timezone.now(), 10])
    assert auditor_client.get(reverse("event-list"), {"cursor": cursor}).status_code == 200


# --- text that reaches a query -------------------------------------------------------------


@pytest.fixture
def lead(web_source):
    return lead_create(
        source=web_source, email="max@example.com", name="Max", at=timezone.now() - timedelta(1)
    )


@pytest.mark.parametrize(
    "text", ["\U0010ffff\U0010ffff", "m\U0010ffff", "\ud7ff\ud7ff", "  ", "max\U0010ffff"]
)
def test_lead_search_at_the_top_of_unicode_is_answered(auditor_client, lead, text):
    for response in both(auditor_client, reverse("lead-list"), {"q": text, "created": "any"}):
        assert response.status_code == 200
    # A prefix of U+10FFFF still bounds the range right below it.
    found = auditor_client.get(reverse("lead-list"), {"q": "ma", "created": "any"})
    assert lead.public_id in found.content.decode()


@pytest.mark.parametrize("name", ["lead-list", "event-list"])
def test_search_text_with_nul_is_a_400(auditor_client, name):
    for response in both(auditor_client, reverse(name), {"q": "ma\x00x"}):
        assert_400(response, UNSEARCHABLE)


@pytest.mark.parametrize("param", ["lead", "actor", "workflow", "correlation", "fingerprint"])
def test_event_filters_with_nul_are_a_400(auditor_client, param):
    for response in both(auditor_client, reverse("event-list"), {param: "a\x00"}):
        assert_400(response, UNSEARCHABLE)


def test_lone_surrogates_never_reach_the_database(auditor_client, lead):
    # Over HTTP a lone surrogate arrives as broken UTF-8 and is read as U+FFFD.
    url = reverse("lead-list") + "?q=%ED%A0%80%ED%A0%80&created=any"
    assert auditor_client.get(url).status_code == 200
    # Given to the filters directly, it is refused before any query.
    period = period_from_query(QueryDict())
    leads = LeadFilter({"q": "ma\ud800"}, queryset=Lead.objects.all(), period=period)
    assert not leads.is_valid()
    assert UNSEARCHABLE in leads.error_message()
    events = EventFilter({"q": "\udfff\udfff"}, period=period)
    assert UNSEARCHABLE in (events.error_message() or "")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/leads/%00/", 404),
        ("/leads/LEAD-%00/", 404),
        ("/errors/%00/", 404),
        ("/errors/%00%00%00%00%00%00%00%00/", 404),
        ("/reports/daily/%00/", 400),
        ("/reports/%00/2026-01-01/", 404),
        ("/reports/daily/%00/download/", 400),
        ("/events/%00/", 404),
    ],
)
def test_nul_in_the_path_is_a_404_or_400(auditor_client, path, status):
    for response in [auditor_client.get(path), auditor_client.get(path, **HTMX)]:
        assert response.status_code == status, path


def test_nul_in_a_lead_action_path_is_a_404(operator_client):
    assert operator_client.post("/leads/%00/requalify/").status_code == 404


def test_score_bounds_far_beyond_any_score_are_a_400(auditor_client):
    for param in ("score_min", "score_max"):
        for value in (str(2**64), str(-(2**64))):
            response = auditor_client.get(reverse("lead-list"), {param: value})
            assert_400(response, param)


# --- reports ---------------------------------------------------------------------------------


@pytest.mark.parametrize("view", ["report-detail", "report-download"])
@pytest.mark.parametrize("kind", ["daily", "weekly", "monthly"])
@pytest.mark.parametrize("day", ["0001-01-01", "1999-12-31"])
def test_reports_before_the_trail_are_a_400(auditor_client, view, kind, day):
    url = reverse(view, kwargs={"kind": kind, "day": day})
    for response in both(auditor_client, url):
        assert_400(response, "reports start at 2000-01-01")


@pytest.mark.parametrize(
    ("kind", "day", "status", "message"),
    [
        ("daily", "9999-12-31", 400, "lies in the future"),
        ("daily", "2026-02-30", 400, "the report date must be YYYY-MM-DD"),
        ("yearly", "2026-01-01", 404, ""),
        ("daily", "99999-01-01", 400, "the report date must be YYYY-MM-DD"),
    ],
)
def test_other_report_dates_and_kinds(auditor_client, kind, day, status, message):
    url = reverse("report-detail", kwargs={"kind": kind, "day": day})
    for response in both(auditor_client, url):
        assert response.status_code == status
        assert message in body(response)


# --- lead ids with a "/" ---------------------------------------------------------------------


@pytest.fixture
def slashed_lead(lead):
    # Imported and CRM lead ids may hold a slash.
    Lead.objects.filter(pk=lead.pk).update(public_id="ACME/42")
    lead.refresh_from_db()
    return lead


def test_a_lead_id_with_a_slash_has_a_page(auditor_client, slashed_lead):
    url = reverse("lead-detail", kwargs={"public_id": "ACME/42"})
    assert url == "/leads/ACME/42/"
    page = auditor_client.get(url)
    assert page.status_code == 200
    assert "ACME/42" in page.content.decode()
    fragment = auditor_client.get(url, **HTMX)
    assert fragment.status_code == 200
    assert "<html" not in fragment.content.decode()


def test_the_event_page_links_to_a_lead_id_with_a_slash(auditor_client, slashed_lead):
    event = record_event(
        event_type="lead_ingested",
        lead_id="ACME/42",
        timestamp=timezone.now() - timedelta(hours=1),
    )
    url = reverse("event-detail", kwargs={"pk": event.pk})
    for response in both(auditor_client, url):
        assert response.status_code == 200
        assert 'href="/leads/ACME/42/"' in response.content.decode()


def test_an_old_imported_event_has_a_page(auditor_client):
    event = record_event(event_type="lead_ingested", timestamp=datetime(1990, 1, 1, tzinfo=UTC))
    response = auditor_client.get(reverse("event-detail", kwargs={"pk": event.pk}))
    assert response.status_code == 200


def test_lead_actions_reach_a_lead_id_with_a_slash(operator_client, slashed_lead):
    url = reverse("lead-requalify", kwargs={"public_id": "ACME/42"})
    assert url == "/leads/ACME/42/requalify/"
    assert operator_client.post(url).status_code in (302, 400)


# --- methods ---------------------------------------------------------------------------------

SAMPLE_KWARGS = {
    "pk": 1,
    "job_id": 1,
    "fingerprint": "0123456789abcdef",
    "public_id": "LEAD-000001",
    "kind": "daily",
    "day": "2026-01-05",
}


def get_routes() -> list[tuple[str, str]]:
    routes = []
    for pattern in dashboard_urls.urlpatterns:
        assert isinstance(pattern, URLPattern)
        if answers_posts(pattern.callback):
            continue  # operator actions (test_access) and saved-view forms (test_saved_views)
        kwargs = {k: SAMPLE_KWARGS[k] for k in pattern.pattern.converters}
        routes.append((pattern.name, reverse(pattern.name, kwargs=kwargs)))
    return routes


GET_ROUTES = get_routes()


@pytest.mark.parametrize(("name", "url"), GET_ROUTES)
@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_get_only_pages_refuse_other_methods(auditor_client, name, url, method):
    response = getattr(auditor_client, method)(url)
    assert response.status_code == 405, name
    assert "GET" in response["Allow"]
    assert not AuditEvent.objects.filter(event_type="audit_exported").exists()


@pytest.mark.parametrize("name", ["lead-requalify", "lead-retry-crm", "lead-cancel-sequence"])
def test_actions_refuse_get(operator_client, name):
    url = reverse(name, kwargs={"public_id": "LEAD-000001"})
    assert operator_client.get(url).status_code == 405


# --- the owner filter ------------------------------------------------------------------------


def test_the_owner_filter_lists_only_users_who_own_leads(
    auditor_client, lead, web_source, django_user_model
):
    owner = django_user_model.objects.create_user("olga")
    django_user_model.objects.create_user("idle")
    Lead.objects.filter(pk=lead.pk).update(owner=owner)
    response = auditor_client.get(reverse("lead-list"), {"created": "any"})
    assert response.status_code == 200
    choices = response.context["filters"].form.fields["owner"].queryset
    assert [u.username for u in choices] == ["olga"]
    content = response.content.decode()
    assert '<option value="olga"' in content
    assert '<option value="idle"' not in content
    assert '<option value="audrey"' not in content
    assert_400(auditor_client.get(reverse("lead-list"), {"owner": "idle"}), "owner:")
    assert auditor_client.get(reverse("lead-list"), {"owner": "olga"}).status_code == 200


# --- property: no text in any parameter of any page is a 500 ---------------------------------

# Every query parameter a dashboard page reads (render.get_period, the filter forms of
# filters/events.py and filters/leads.py, and the views' own).
PARAMS = [
    "range",
    "since",
    "until",
    "cursor",
    "after",
    "live",
    "type",
    "lead",
    "workflow",
    "actor",
    "correlation",
    "fingerprint",
    "q",
    "status",
    "source",
    "owner",
    "score_min",
    "score_max",
    "created",
    "sort",
    "section",
    "format",
]
huge_ints = st.integers(min_value=2**62, max_value=2**200).flatmap(
    lambda n: st.sampled_from([str(n), str(-n), f"1_{n}"])
)
texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)
values = st.one_of(
    texts,
    texts.map(lambda t: t + "\x00"),
    huge_ints,
    st.sampled_from(
        [
            "custom",
            "24h",
            "0001-01-01",
            "9999-12-31",
            "2026-01-01T00:00-23:59",
            "9999-12-31T23:59:59.999999-23:59",
            "\U0010ffff\U0010ffff",
            "²",
            "error",
            "1",
        ]
    ),
)
queries = st.dictionaries(st.sampled_from(PARAMS), values, max_size=5)


@pytest.fixture
def rows(lead, error_group):
    """Path arguments that name rows, so the detail pages read their parameters."""
    event = AuditEvent.objects.filter(fingerprint=error_group).get()
    return {
        **SAMPLE_KWARGS,
        "pk": event.pk,
        "fingerprint": error_group,
        "public_id": lead.public_id,
    }


@pytest.mark.parametrize("name", [name for name, _url in GET_ROUTES])
@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(query=queries, htmx=st.booleans())
def test_no_query_text_is_a_500(auditor_client, rows, name, query, htmx):
    pattern = next(p for p in dashboard_urls.urlpatterns if p.name == name)
    url = reverse(name, kwargs={k: rows[k] for k in pattern.pattern.converters})
    # The test client raises what a view raises; a 5xx it answers fails here too.
    response = auditor_client.get(url, query, **(HTMX if htmx else {}))
    body(response)
    assert response.status_code < 500, (name, query)


path_texts = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20),
    huge_ints,
    st.just("\x00"),
)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(
        ["leads/{}/", "errors/{}/", "reports/daily/{}/", "reports/{}/2026-01-01/", "events/{}/"]
    ),
    value=path_texts,
)
def test_no_path_text_is_a_500(auditor_client, route, value):
    response = auditor_client.get("/" + route.format(quote(value, safe="")))
    body(response)
    assert response.status_code < 500, (route, value)
