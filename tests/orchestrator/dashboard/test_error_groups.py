"""Error groups on the dashboard: states on the list (filters, badges, totals), the group
page (chart, first and last seen, leads, totals), what an operator does to a group, and
the way from an error event to its group."""

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from audit import error_groups, error_selectors
from audit.models import AuditEvent, ErrorGroupState
from audit.services import record_event
from tests.conftest import HTMX

NOW = datetime(2026, 6, 10, 14, 30, tzinfo=UTC)
GROUP_ROW = re.compile(r'<tr class="error-group" data-fingerprint="([0-9a-f]{16})"')
HUBSPOT_400 = 'POST /crm/v3/objects/contacts returned 400: {"message": "invalid email"}'
HUBSPOT_500 = 'POST /crm/v3/objects/contacts returned 500: {"message": "internal error"}'


def error(message: str, *, ago: timedelta, lead: str = "") -> AuditEvent:
    return record_event(
        event_type="error",
        error_type="CrmError",
        error_message=message,
        lead_id=lead,
        timestamp=NOW - ago,
    )


@pytest.fixture(autouse=True)
def _fresh_cache(fresh_cache):
    pass


@pytest.fixture
def now():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def groups(db, now):
    """Three groups in the last 7 days: HubSpot 400 (two leads), HubSpot 500, a timeout."""
    h400 = [
        error(HUBSPOT_400, ago=timedelta(days=2), lead="LEAD-000001"),
        error(HUBSPOT_400, ago=timedelta(hours=5), lead="LEAD-000002"),
        error(HUBSPOT_400, ago=timedelta(hours=4), lead="LEAD-000001"),
    ]
    h500 = error(HUBSPOT_500, ago=timedelta(hours=3), lead="LEAD-000003")
    timeout = [
        error("timeout after 30s for LEAD-000123", ago=timedelta(days=20)),
        error("timeout after 31s for LEAD-000999", ago=timedelta(hours=1)),
    ]
    assert len({e.fingerprint for e in h400}) == 1
    assert timeout[0].fingerprint == timeout[1].fingerprint
    return {
        "h400": h400[0].fingerprint,
        "h500": h500.fingerprint,
        "timeout": timeout[0].fingerprint,
    }


def listed(client, query: str = "", **headers) -> list[str]:
    response = client.get(reverse("error-list") + "?range=7d" + query, **headers)
    assert response.status_code == 200
    return GROUP_ROW.findall(response.content.decode())


# --- the list ---------------------------------------------------------------------------


def test_hubspot_400_and_500_are_two_groups_with_readable_titles(auditor_client, groups):
    response = auditor_client.get(reverse("error-list") + "?range=7d")
    html = response.content.decode()
    assert set(GROUP_ROW.findall(html)) == set(groups.values())
    titles = {r["group"].fingerprint: r["group"].title for r in response.context["rows"]}
    assert titles[groups["h400"]] == (
        "CrmError: POST /crm/v3/objects/contacts returned 400: invalid email"
    )
    assert titles[groups["h500"]] == (
        "CrmError: POST /crm/v3/objects/contacts returned 500: internal error"
    )
    assert titles[groups["timeout"]] == "CrmError: timeout after <n>s for <id>"
    assert "returned 400: invalid email" in html


def test_the_list_shows_unresolved_groups_by_default_and_filters_by_state(
    auditor_client, auditor, groups, now
):
    error_groups.error_group_resolve(fingerprint=groups["h500"], actor="user:oscar")
    error_groups.error_group_ignore(fingerprint=groups["timeout"], actor="user:oscar")
    error_groups.error_group_assign(
        fingerprint=groups["h400"], assignee=auditor, actor="user:oscar"
    )
    assert listed(auditor_client) == [groups["h400"]]
    assert listed(auditor_client, "&state=unresolved") == [groups["h400"]]
    assert listed(auditor_client, "&state=resolved") == [groups["h500"]]
    assert listed(auditor_client, "&state=ignored") == [groups["timeout"]]
    assert set(listed(auditor_client, "&state=all")) == set(groups.values())
    assert listed(auditor_client, "&state=all&assigned=me") == [groups["h400"]]
    # The fragment filters alike.
    assert listed(auditor_client, "&state=resolved", **HTMX) == [groups["h500"]]
    html = auditor_client.get(reverse("error-list") + "?range=7d&state=all").content.decode()
    states = dict(re.findall(r'data-fingerprint="([0-9a-f]{16})" data-state="(\w+)"', html))
    assert states == {groups["h400"]: "unresolved", groups["h500"]: "resolved",
                      groups["timeout"]: "ignored"}  # fmt: skip
    assert "→ audrey" in html


def test_the_filter_links_keep_the_other_parameters(auditor_client, groups):
    html = auditor_client.get(reverse("error-list") + "?range=24h&sort=last_seen").content.decode()
    nav = re.search(
        r'<nav class="pager filter-links" id="state-filter".*?</nav>', html, re.S
    ).group(0)
    assert 'href="?range=24h&amp;sort=last_seen&amp;state=resolved"' in nav
    assert 'href="?range=24h&amp;sort=last_seen&amp;assigned=me"' in nav
    assert '<strong aria-current="true">Unresolved</strong>' in nav


def test_the_table_header_counts_the_groups_with_thousands_separators(
    auditor_client, groups, monkeypatch
):
    html = auditor_client.get(reverse("error-list") + "?range=7d").content.decode()
    assert re.search(r'id="group-total" class="muted">· 3 groups<', html)
    cache.clear()
    monkeypatch.setattr(error_selectors, "error_group_count", lambda **kw: 12480)
    html = auditor_client.get(reverse("error-list") + "?range=7d").content.decode()
    assert "· 12,480 groups" in html
    assert "top 100 of 12,480 groups" not in html  # only 3 rows shown: no "top" note


def test_a_regressed_group_is_back_in_the_unresolved_list_with_a_badge(auditor_client, groups, now):
    error_groups.error_group_resolve(fingerprint=groups["h500"], actor="user:oscar")
    assert groups["h500"] not in listed(auditor_client)
    now.shift(timedelta(minutes=10))
    error(HUBSPOT_500, ago=timedelta(minutes=-5))  # after it was resolved
    cache.clear()  # the list may be a minute stale; a regression is no state write
    html = auditor_client.get(reverse("error-list") + "?range=7d").content.decode()
    row = re.search(
        rf'<tr class="error-group" data-fingerprint="{groups["h500"]}".*?</tr>', html, re.S
    )
    assert row is not None
    assert 'class="badge bad regressed"' in row.group(0)
    assert groups["h500"] not in listed(auditor_client, "&state=resolved")


def test_an_ignore_that_ran_out_is_unresolved_again(auditor_client, groups, now):
    error_groups.error_group_ignore(fingerprint=groups["h400"], actor="user:oscar", count=2)
    assert groups["h400"] not in listed(auditor_client)
    now.shift(timedelta(minutes=10))
    error(HUBSPOT_400, ago=timedelta(minutes=-1))
    error(HUBSPOT_400, ago=timedelta(minutes=-2))
    cache.clear()
    html = auditor_client.get(reverse("error-list") + "?range=7d").content.decode()
    assert groups["h400"] in GROUP_ROW.findall(html)
    assert "unresolved again" in html


def test_a_state_change_shows_at_once_despite_the_cached_list(operator_client, groups):
    assert groups["h500"] in listed(operator_client)
    operator_client.post(reverse("error-group-state", args=[groups["h500"]]), {"action": "resolve"})
    assert groups["h500"] not in listed(operator_client)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("state=fixed", "state must be one of unresolved, resolved, ignored, all"),
        ("assigned=bob", "assigned must be &#x27;me&#x27; or left out"),
    ],
)
def test_bad_filters_are_400_with_a_message(auditor_client, db, query, message):
    response = auditor_client.get(reverse("error-list") + "?" + query)
    assert response.status_code == 400
    assert message in response.content.decode()


# --- the group page ---------------------------------------------------------------------


def test_the_group_page_shows_chart_first_last_seen_leads_and_totals(auditor_client, groups):
    fp = groups["h400"]
    response = auditor_client.get(reverse("error-detail", args=[fp]) + "?range=7d")
    assert response.status_code == 200
    html = response.content.decode()
    group = response.context["group"]
    assert (group.count, group.total, group.leads) == (3, 3, 2)
    chart = re.search(r'<figure id="occurrence-chart">(.*?)</figure>', html, re.S).group(1)
    assert re.search(r'<svg[^>]*class="chart"', chart)
    assert re.search(r'id="count-in-period">3<', html)
    assert re.search(r'id="count-total">3<', html)
    assert re.search(r'id="leads-in-period">2<', html)
    first = re.search(r'id="first-seen"><time datetime="([^"]+)"', html).group(1)
    last = re.search(r'id="last-seen"><time datetime="([^"]+)"', html).group(1)
    assert first == "2026-06-08T14:30:00Z" and last == "2026-06-10T10:30:00Z"
    for lead in ("LEAD-000001", "LEAD-000002"):
        assert f'href="{reverse("lead-detail", args=[lead])}"' in html
    assert [(r["lead_public_id"], r["count"]) for r in response.context["leads"]] == [
        ("LEAD-000001", 2),
        ("LEAD-000002", 1),
    ]
    # A bar opens its bucket's occurrences in the event browser.
    assert f"fingerprint={fp}" in chart and "type=error" in chart
    # An auditor reads the state but gets no forms.
    assert '<span class="badge warn">unresolved</span>' in html
    assert 'id="action-resolve"' not in html


def test_the_total_counts_occurrences_before_the_period(auditor_client, groups):
    response = auditor_client.get(reverse("error-detail", args=[groups["timeout"]]) + "?range=7d")
    group = response.context["group"]
    assert (group.count, group.total) == (1, 2)
    assert group.first_seen == NOW - timedelta(days=20)


def test_an_operator_sees_the_forms_with_csrf_tokens(operator_client, groups):
    html = operator_client.get(reverse("error-detail", args=[groups["h400"]])).content.decode()
    for action in ("resolve", "ignore", "assign"):
        form = re.search(rf'<form id="action-{action}".*?</form>', html, re.S).group(0)
        assert 'method="post"' in form and "csrfmiddlewaretoken" in form
        assert f'hx-post="{reverse("error-group-state", args=[groups["h400"]])}?' in form
    assert 'id="action-unresolve"' not in html and 'id="action-unassign"' not in html


# --- acting on a group ------------------------------------------------------------------


def state_url(fp: str) -> str:
    return reverse("error-group-state", args=[fp]) + "?range=7d"


def test_resolve_without_javascript_redirects_back_with_a_message(operator_client, groups):
    fp = groups["h400"]
    response = operator_client.post(state_url(fp), {"action": "resolve"})
    assert response.status_code == 302
    assert response["Location"] == reverse("error-detail", args=[fp]) + "?range=7d"
    page = operator_client.get(response["Location"]).content.decode()
    assert "Resolved." in page and '<span class="badge ok">resolved</span>' in page
    assert 'id="action-unresolve"' in page
    [event] = AuditEvent.objects.filter(event_type="error_group_resolved")
    assert (event.actor, event.details["fingerprint"]) == ("user:oscar", fp)


def test_resolve_with_htmx_answers_the_state_panel(operator_client, groups):
    fp = groups["h400"]
    response = operator_client.post(state_url(fp), {"action": "resolve"}, **HTMX)
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<section id="group-state"')
    assert "<html" not in body and "Resolved." in body
    assert error_selectors.group_state(fp).status == "resolved"

    response = operator_client.post(state_url(fp), {"action": "unresolve"}, **HTMX)
    assert "Marked unresolved." in response.content.decode()
    assert error_selectors.group_state(fp).status == "unresolved"
    assert AuditEvent.objects.filter(event_type="error_group_unresolved").count() == 1


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"ignore": "forever"}, (None, None)),
        ({"ignore": "count", "count": "100"}, (100, None)),
        ({"ignore": "until", "until": "2026-06-20T08:00"}, (None, "2026-06-20")),
        ({"ignore": "until", "until": "2026-06-20"}, (None, "2026-06-20")),
    ],
)
def test_ignore_forever_for_a_count_or_until_a_date(operator_client, groups, form, expected):
    fp = groups["h500"]
    response = operator_client.post(state_url(fp), {"action": "ignore", **form}, **HTMX)
    assert response.status_code == 200, response.content.decode()
    state = ErrorGroupState.objects.get(fingerprint=fp)
    assert state.status == "ignored"
    assert state.ignore_count == expected[0]
    assert (state.ignore_until.date().isoformat() if state.ignore_until else None) == expected[1]
    [event] = AuditEvent.objects.filter(event_type="error_group_ignored")
    assert event.actor == "user:oscar"
    response = operator_client.post(state_url(fp), {"action": "unignore"}, **HTMX)
    assert error_selectors.group_state(fp).status == "unresolved"


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"action": "ignore", "ignore": "count"}, "after how many more occurrences"),
        ({"action": "ignore", "ignore": "count", "count": "0"}, "greater than or equal to 1"),
        ({"action": "ignore", "ignore": "until", "until": "soon"}, "Enter a valid date/time"),
        ({"action": "ignore", "ignore": "until", "until": "2020-01-01"}, "in the future"),
        ({"action": "ignore", "ignore": "always"}, "Select a valid choice"),
        ({"action": "unresolve"}, "This error group is not resolved."),
        ({"action": "assign", "assignee": "999999"}, "No such operator."),
        ({"action": "assign"}, "This field is required."),
        ({"action": "explode"}, "action must be one of resolve, unresolve, ignore"),
        ({}, "action must be one of"),
    ],
)
@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "no js"])
def test_bad_input_is_a_400_that_says_why(operator_client, groups, form, message, htmx):
    response = operator_client.post(state_url(groups["h400"]), form, **(HTMX if htmx else {}))
    assert response.status_code == 400
    body = response.content.decode()
    assert message in body.replace("&#x27;", "'")
    assert ("<html" in body) is not htmx
    assert not AuditEvent.objects.filter(event_type__startswith="error_group_").exists()


def test_assign_to_an_operator_and_unassign(operator_client, operator, auditor, groups):
    fp = groups["h400"]
    html = operator_client.get(reverse("error-detail", args=[fp])).content.decode()
    options = re.findall(r'<option value="(\d+)"[^>]*>(\w+)</option>', html)
    assert (str(operator.pk), "oscar") in options
    assert (str(auditor.pk), "audrey") not in options  # auditors do not act on errors
    response = operator_client.post(
        state_url(fp), {"action": "assign", "assignee": str(operator.pk)}, **HTMX
    )
    assert response.status_code == 200
    assert '<strong id="assignee">oscar</strong>' in response.content.decode()
    response = operator_client.post(
        state_url(fp), {"action": "assign", "assignee": str(auditor.pk)}, **HTMX
    )
    assert response.status_code == 400
    assert listed(operator_client, "&assigned=me") == [fp]
    operator_client.post(state_url(fp), {"action": "unassign"}, **HTMX)
    assert listed(operator_client, "&assigned=me") == []
    assert [e.event_type for e in AuditEvent.objects.filter(
        event_type__startswith="error_group_").order_by("id")] == [
        "error_group_assigned", "error_group_unassigned"]  # fmt: skip


@pytest.mark.parametrize("action", ["resolve", "ignore", "assign", "unassign"])
def test_an_auditor_cannot_change_a_state(auditor_client, auditor, groups, action):
    response = auditor_client.post(
        state_url(groups["h400"]), {"action": action, "assignee": str(auditor.pk)}
    )
    assert response.status_code == 403
    assert not ErrorGroupState.objects.exists()
    assert not AuditEvent.objects.filter(event_type__startswith="error_group_").exists()


def test_state_changes_need_the_csrf_token(operator, groups):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    assert client.post(state_url(groups["h400"]), {"action": "resolve"}).status_code == 403
    page = client.get(reverse("error-detail", args=[groups["h400"]])).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    response = client.post(
        state_url(groups["h400"]), {"action": "resolve", "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert error_selectors.group_state(groups["h400"]).status == "resolved"


@pytest.mark.parametrize("fingerprint", ["0123456789abcdef", "nope"])
def test_acting_on_an_unknown_group_is_404(operator_client, groups, fingerprint):
    response = operator_client.post(
        reverse("error-group-state", args=[fingerprint]), {"action": "resolve"}
    )
    assert response.status_code == 404


def test_get_on_the_state_url_is_refused(operator_client, groups):
    assert operator_client.get(state_url(groups["h400"])).status_code == 405


# --- from an event to its group ---------------------------------------------------------


def test_an_error_event_links_to_its_group(auditor_client, groups):
    event = AuditEvent.objects.filter(fingerprint=groups["h500"]).get()
    html = auditor_client.get(reverse("event-detail", args=[event.pk])).content.decode()
    link = re.search(r'<a id="error-group-link" href="([^"]+)"', html)
    assert link is not None and link.group(1) == reverse("error-detail", args=[groups["h500"]])
    assert auditor_client.get(link.group(1)).status_code == 200

    plain = record_event(event_type="lead_ingested", lead_id="LEAD-000001")
    html = auditor_client.get(reverse("event-detail", args=[plain.pk])).content.decode()
    assert 'id="error-group-link"' not in html
