"""Unsubscribe, open pixel and click redirect. Public: every input is a signed token.

A bad token or URL answers 400 with a short page, never 500 and never a
redirect to somewhere the email did not link to.
"""

import base64
import contextlib
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods
from django_ratelimit.core import get_usage

from leads.followups import services, tokens
from leads.followups.models import Enrollment

log = logging.getLogger(__name__)

# The smallest transparent GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
ONE_CLICK = "One-Click"


def _bad_link(request: HttpRequest, status: int = 400) -> HttpResponse:
    return render(request, "followups/bad_link.html", status=status)


# RFC 8058: mail clients POST "List-Unsubscribe=One-Click" with no cookies
# and no CSRF token; the signed token is what authorizes the request.
@csrf_exempt
@never_cache
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    try:
        pk = tokens.read_token(tokens.UNSUBSCRIBE, token)
    except tokens.BadToken:
        return _bad_link(request)
    enrollment = Enrollment.objects.select_related("lead", "sequence").filter(pk=pk).first()
    if enrollment is None:
        return _bad_link(request, status=404)
    context = {"token": token, "address": enrollment.lead.email}
    if request.method == "GET":
        # A GET only shows the form: link scanners and prefetchers follow GETs.
        return render(request, "followups/unsubscribe.html", context)
    if request.POST.get("List-Unsubscribe") != ONE_CLICK:
        return render(request, "followups/unsubscribe.html", context, status=400)
    services.unsubscribe(enrollment=enrollment)
    return render(request, "followups/unsubscribed.html", context)


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store, max-age=0"
    return response


def _over_rate(request: HttpRequest) -> bool:
    """Count a tracking hit of this client IP; True once FOLLOWUPS_TRACKING_RATE is spent.

    Over the rate nothing is recorded, but the pixel and the redirect still
    answer: a recipient behind a busy NAT still reaches the link.
    """
    usage = get_usage(
        request,
        group="followups-tracking",
        key="ip",
        rate=settings.FOLLOWUPS_TRACKING_RATE,
        increment=True,
    )
    if usage and usage["should_limit"]:
        log.info(
            "tracking hits from %s over the rate; not recorded", request.META.get("REMOTE_ADDR")
        )
        return True
    return False


@require_GET
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    # A broken image in a mail client helps nobody: a bad token gets the pixel too.
    with contextlib.suppress(tokens.BadToken, services.NotTracked):
        email_pk = tokens.read_token(tokens.OPEN, token)
        if not _over_rate(request):
            services.record_open(email_pk=email_pk)
    return _no_store(HttpResponse(PIXEL, content_type="image/gif"))


@require_GET
def click(request: HttpRequest, token: str) -> HttpResponse:
    url = request.GET.get("u", "")
    try:
        email_pk = tokens.read_token(tokens.CLICK, token)
        if _over_rate(request):
            target = services.click_target(email_pk=email_pk, url=url)
        else:
            target = services.record_click(email_pk=email_pk, url=url)
    except (tokens.BadToken, services.NotTracked):
        return _no_store(_bad_link(request))
    # The URL was a link of this email (checked above), so the redirect is no open redirect.
    return _no_store(HttpResponseRedirect(target))
