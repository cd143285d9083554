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
