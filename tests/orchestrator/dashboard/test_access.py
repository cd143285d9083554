"""Every dashboard URL needs a login and a role; actions need the Operator role."""

import pytest
from django.urls import URLPattern, reverse

from orchestrator.dashboard import urls as dashboard_urls

SAMPLE_KWARGS = {
    "pk": 1,
    "job_id": 1,
    "fingerprint": "0123456789abcdef",
    "public_id": "LEAD-000001",
    "kind": "daily",
    "day": "2026-01-05",
}


def dashboard_routes():
    for pattern in dashboard_urls.urlpatterns:
        assert isinstance(pattern, URLPattern), "nested includes are walked below"
        kwargs = {k: SAMPLE_KWARGS[k] for k in pattern.pattern.converters}
        yield pattern.name, reverse(pattern.name, kwargs=kwargs), pattern.callback


ROUTES = list(dashboard_routes())


def test_every_dashboard_view_is_guarded():
    for name, _url, view in ROUTES:
        assert getattr(view, "dashboard_guard", None) in ("can_view", "can_act"), name


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "url"), [(n, u) for n, u, _ in ROUTES])
@pytest.mark.parametrize("method", ["get", "post"])
def test_anonymous_is_sent_to_login(client, name, url, method):
    response = getattr(client, method)(url)
    assert response.status_code == 302, name
    assert response["Location"].startswith(reverse("login") + "?next=")


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "url"), [(n, u) for n, u, _ in ROUTES])
@pytest.mark.parametrize("method", ["get", "post"])
def test_a_user_without_a_role_gets_403(client, norole, name, url, method):
    client.force_login(norole)
    assert getattr(client, method)(url).status_code == 403, name


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "url"), [(n, u) for n, u, v in ROUTES if v.dashboard_guard == "can_act"]
)
def test_an_auditor_may_not_act(auditor_client, name, url):
    assert auditor_client.post(url).status_code == 403, name


def test_some_views_are_operator_only():
    assert {n for n, _u, v in ROUTES if v.dashboard_guard == "can_act"} == {
        "lead-requalify",
        "lead-retry-crm",
        "lead-cancel-sequence",
        "error-group-state",
    }


@pytest.mark.django_db
def test_login_page_logs_in_and_lands_on_the_overview(client, auditor):
    page = client.get(reverse("login"))
    assert page.status_code == 200
    response = client.post(reverse("login"), {"username": "audrey", "password": "pw-audrey"})
    assert response.status_code == 302
    assert response["Location"] == reverse("overview")


@pytest.mark.django_db
def test_a_bad_range_is_a_400_with_a_message(auditor_client):
    response = auditor_client.get(reverse("overview"), {"range": "forever"})
    assert response.status_code == 400
    assert b"range must be one of 24h, 7d, 30d, 90d, custom" in response.content
    htmx = auditor_client.get(
        reverse("overview"),
        {"range": "custom", "since": "2026-13-01", "until": "x"},
        HTTP_HX_REQUEST="true",
    )
    assert htmx.status_code == 400
    assert htmx["HX-Retarget"] == "#request-error"
    assert b"since must be a date" in htmx.content
    assert b"<html" not in htmx.content


@pytest.mark.django_db
def test_pages_send_a_nonce_csp_without_unsafe_inline(auditor_client):
    response = auditor_client.get(reverse("overview"))
    csp = response["Content-Security-Policy"]
    assert "script-src 'self' 'nonce-" in csp
    assert "unsafe-inline" not in csp
    nonce = csp.split("'nonce-")[1].split("'")[0]
    assert f'nonce="{nonce}"' in response.content.decode()
