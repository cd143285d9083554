"""One-click unsubscribe (RFC 8058), the open pixel and the click redirect."""

import re
from datetime import timedelta
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.utils import timezone

from audit.models import AuditEvent
from leads.followups import services, tokens
from leads.followups.models import Enrollment, OutboundEmail
from leads.followups.services import enroll, render_email
from leads.followups.views import PIXEL

pytestmark = pytest.mark.django_db


def events(event_type):
    return list(AuditEvent.objects.filter(event_type=event_type).order_by("id"))


@pytest.fixture
def enrollment(lead, sequence):
    return enroll(lead=lead, sequence=sequence)


@pytest.fixture
def sent_email(enrollment):
    """The first email as if sent: rendered, its links stored."""
    email = OutboundEmail.objects.get(step__position=1)
    rendered = render_email(email)
    OutboundEmail.objects.filter(pk=email.pk).update(
        status="sent", sent_at=timezone.now(), links=rendered.links, subject=rendered.subject
    )
    email.refresh_from_db()
    email.rendered = rendered
    return email


def path_of(url):
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def unsubscribe_path(enrollment):
    return f"/u/{tokens.make_token(tokens.UNSUBSCRIBE, enrollment.pk)}"


def test_one_click_unsubscribe_post(client, enrollment, make_lead, sequence, one_step):
    other = enroll(lead=make_lead("ADA@example.com"), sequence=one_step)

    # What a mail client sends (RFC 8058 section 3.2): no cookie, no CSRF token.
    response = client.post(
        unsubscribe_path(enrollment),
        "List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )

    assert response.status_code == 200
    assert b"You are unsubscribed" in response.content
    enrollment.refresh_from_db()
    other.refresh_from_db()
    # Every sequence to the address stops, and it is not enrolled again.
    assert (enrollment.cancel_reason, other.cancel_reason) == ("unsubscribed", "unsubscribed")
    assert not OutboundEmail.objects.filter(status="pending").exists()
    cancelled = events("email_cancelled")
    assert [e.details["reason"] for e in cancelled] == ["unsubscribed", "unsubscribed"]
    assert cancelled[0].details["recipient"] == "ada@example.com"
    again = enroll(lead=make_lead("ada@example.com"), sequence=sequence)
    assert again.cancel_reason == "suppressed"

    # A second POST is harmless.
    response = client.post(
        unsubscribe_path(enrollment),
        {"List-Unsubscribe": "One-Click"},
    )
    assert response.status_code == 200
    assert len(events("email_cancelled")) == 3  # the two above and the suppressed enrollment


def test_csrf_is_not_required(enrollment):
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post(
        unsubscribe_path(enrollment), {"List-Unsubscribe": "One-Click"}
    )
    assert response.status_code == 200


def test_get_shows_a_confirmation_form_and_changes_nothing(client, enrollment):
    response = client.get(unsubscribe_path(enrollment))
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    html = response.content.decode()
    assert "ada@example.com" in html
    assert '<form method="post">' in html
    assert 'name="List-Unsubscribe" value="One-Click"' in html
    enrollment.refresh_from_db()
    assert enrollment.status == Enrollment.Status.ACTIVE
    assert not events("email_cancelled")


def test_post_without_the_one_click_body_is_refused(client, enrollment):
    response = client.post(unsubscribe_path(enrollment), {})
    assert response.status_code == 400
    enrollment.refresh_from_db()
    assert enrollment.status == Enrollment.Status.ACTIVE


def test_unsubscribe_after_the_sequence_finished_still_suppresses(client, enrollment):
    Enrollment.objects.filter(pk=enrollment.pk).update(status="completed")
    response = client.post(unsubscribe_path(enrollment), {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert services.is_suppressed("ada@example.com")
    (cancelled,) = events("email_cancelled")
    assert cancelled.details["reason"] == "unsubscribed"


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "1:1xWpp9:forgedsignature",
        "",
        "%00",
    ],
)
def test_bad_tokens_get_a_400_page(client, enrollment, token):
    for path in (f"/u/{token}", f"/c/{token}?u=https://example.com/demo"):
        response = client.get(path)
        assert response.status_code in (400, 404), path
        if response.status_code == 400:
            assert b"This link is not valid" in response.content
    assert client.post(f"/u/{token}x", {"List-Unsubscribe": "One-Click"}).status_code == 400


def test_a_token_for_another_purpose_is_refused(client, sent_email):
    open_token = tokens.make_token(tokens.OPEN, sent_email.enrollment_id)
    response = client.post(f"/u/{open_token}", {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 400
    assert Enrollment.objects.get().status == "active"


def test_an_unknown_enrollment_is_404(client, db):
    response = client.get(f"/u/{tokens.make_token(tokens.UNSUBSCRIBE, 999999)}")
    assert response.status_code == 404


def test_open_pixel_records_the_first_open(client, sent_email):
    pixel_url = next(
        part.split('"')[0]
        for part in sent_email.rendered.html.split('<img src="')[1:]
        if "/o/" in part
    )
    response = client.get(path_of(pixel_url))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/gif"
    assert response["Cache-Control"] == "no-store, max-age=0"
    assert response.content == PIXEL
    client.get(path_of(pixel_url))
    sent_email.refresh_from_db()
    assert sent_email.opened_at is not None
    (opened,) = events("email_opened")  # image proxies reload: recorded once
    assert opened.details["message_id"] == sent_email.message_id
    assert opened.details["recipient"] == "ada@example.com"

    # A bad token still gets the image, and records nothing.
    response = client.get("/o/forged.gif")
    assert response.status_code == 200 and response.content == PIXEL
    assert len(events("email_opened")) == 1


def click_urls(html):
    hrefs = re.findall(r"""href=(["'])(.*?)\1""", html)
    return [unescape(url) for _q, url in hrefs if "/c/" in url]


def test_click_redirects_to_a_link_of_the_email(client, sent_email):
    (pricing, demo) = click_urls(sent_email.rendered.html)
    target = parse_qs(urlsplit(pricing).query)["u"][0]
    assert target == "https://example.com/pricing?plan=pro&ref=mail"

    response = client.get(path_of(pricing))

    assert response.status_code == 302
    assert response["Location"] == target
    assert response["Cache-Control"] == "no-store, max-age=0"
    sent_email.refresh_from_db()
    assert sent_email.clicked_at is not None
    assert sent_email.opened_at is not None  # a click implies an open
    (clicked,) = events("email_clicked")
    assert clicked.details["url"] == target
    assert clicked.details["message_id"] == sent_email.message_id
    assert client.get(path_of(demo))["Location"] == "https://example.com/demo"


@pytest.mark.parametrize(
    "url",
    ["https://evil.example/phish", "//evil.example", "javascript:alert(1)", ""],
)
def test_click_refuses_a_url_the_email_did_not_contain(client, sent_email, url):
    token = tokens.make_token(tokens.CLICK, sent_email.pk)
    response = client.get(f"/c/{token}", {"u": url})
    assert response.status_code == 400
    assert "Location" not in response
    assert not events("email_clicked")


def test_another_emails_click_token_cannot_redirect_to_this_emails_links(
    client, sent_email, make_lead, one_step
):
    enroll(lead=make_lead(), sequence=one_step)
    other = OutboundEmail.objects.exclude(enrollment=sent_email.enrollment).get()
    OutboundEmail.objects.filter(pk=other.pk).update(status="sent")
    token = tokens.make_token(tokens.CLICK, other.pk)
    response = client.get(f"/c/{token}", {"u": "https://example.com/demo"})
    assert response.status_code == 400


def test_a_replayed_click_link_records_one_event_per_window(client, sent_email, settings):
    (pricing, demo) = click_urls(sent_email.rendered.html)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        for _ in range(25):
            assert client.get(path_of(pricing)).status_code == 302
        # Another link of the same email is another click.
        assert client.get(path_of(demo)).status_code == 302
    assert len(events("email_clicked")) == 2
    # Inside the window still one; after it, the next click counts again.
    window = settings.FOLLOWUPS_CLICK_DEDUPE_SECONDS
    with time_machine.travel(start + timedelta(seconds=window - 1), tick=False):
        client.get(path_of(pricing))
    assert len(events("email_clicked")) == 2
    with time_machine.travel(start + timedelta(seconds=window + 1), tick=False):
        client.get(path_of(pricing))
    assert len(events("email_clicked")) == 3


def test_tracking_hits_over_the_rate_still_answer_but_record_nothing(client, sent_email, settings):
    settings.FOLLOWUPS_TRACKING_RATE = "2/m"
    settings.FOLLOWUPS_CLICK_DEDUPE_SECONDS = 0
    (pricing, _demo) = click_urls(sent_email.rendered.html)
    target = parse_qs(urlsplit(pricing).query)["u"][0]
    with time_machine.travel(timezone.now().replace(second=1), tick=False):
        responses = [client.get(path_of(pricing)) for _ in range(5)]
    assert [r.status_code for r in responses] == [302] * 5
    assert {r["Location"] for r in responses} == {target}
    assert len(events("email_clicked")) == 2
    # Over the rate a forged URL is still refused, not redirected.
    forged = path_of(pricing).split("?")[0] + "?u=https://evil.example/"
    with time_machine.travel(timezone.now().replace(second=2), tick=False):
        assert client.get(forged).status_code == 400
