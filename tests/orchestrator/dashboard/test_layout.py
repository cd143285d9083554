"""What every dashboard page carries: the navigation a user can use, an icon."""

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_admin_is_in_the_navigation_only_for_those_who_can_use_it(auditor_client, admin_client):
    admin_link = f'href="{reverse("admin:index")}"'.encode()
    assert admin_link not in auditor_client.get(reverse("overview")).content
    assert admin_link in admin_client.get(reverse("overview")).content


def test_every_page_names_an_icon_that_exists(auditor_client):
    html = auditor_client.get(reverse("overview")).content.decode()
    assert '<link rel="icon" href="/static/dashboard/favicon.svg" type="image/svg+xml">' in html
    assert finders.find("dashboard/favicon.svg")


def test_favicon_ico_leads_to_the_icon_without_a_login(client):
    # Asked for by browsers on pages that name no icon (downloads, the admin).
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"] == "/static/dashboard/favicon.svg"
    login = client.get(reverse("login")).content.decode()
    assert '<link rel="icon" href="/static/dashboard/favicon.svg"' in login


def test_the_direct_400_page_is_a_page_with_navigation_and_a_way_back(auditor_client):
    referer = "http://testserver/events/?range=7d&type=error&q=boom"
    response = auditor_client.get(
        reverse("event-list"),
        {"range": "30d", "type": "error", "q": "bo"},
        headers={"Referer": referer},
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert '<nav class="mainnav"' in html and 'role="alert"' in html
    assert 'href="http://testserver/events/?range=7d&amp;type=error&amp;q=boom"' in html
    assert f'href="{reverse("event-list")}?range=30d"' in html


def test_a_referer_from_elsewhere_is_not_offered_as_the_way_back(auditor_client):
    response = auditor_client.get(
        reverse("event-list"),
        {"range": "30d", "q": "bo"},
        headers={"Referer": "https://evil.example/phish"},
    )
    assert response.status_code == 400
    assert "evil.example" not in response.content.decode()


def test_a_refused_swap_goes_to_the_message_slot_and_leaves_the_url(auditor_client):
    response = auditor_client.get(
        reverse("event-list"),
        {"range": "30d", "q": "bo"},
        headers={"HX-Request": "true", "HX-Target": "event-table"},
    )
    assert response.status_code == 400
    assert response["HX-Retarget"] == "#request-error"
    assert response["HX-Push-Url"] == "false"
    assert b"<nav" not in response.content and b'role="alert"' in response.content
