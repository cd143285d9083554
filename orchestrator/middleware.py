import time
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme

from core.db.routers import replica_configured, replica_reads
from orchestrator.dashboard.render import UserInputError

# Where a swap's 400 message goes (templates/base.html): above the page, so the
# form that caused it stays, with what the user typed, and nothing else moves.
ERROR_SLOT = "request-error"
# A range is the one filter almost every page takes; kept on the way back.
RANGE_PARAMS = ("range", "since", "until")


class UserInputErrorMiddleware:
    """Turns UserInputError from a dashboard view into a 400 page that says what was wrong."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # The next request clears the message (static/dashboard/dashboard.js).
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, UserInputError):
            return None
        context = {"message": str(exception)}
        if getattr(request, "htmx", False):
            # Into the slot above the page; the form and the table stay as they were.
            response = render(request, "400_input.html#message", context, status=400)
            response.headers["HX-Retarget"] = f"#{ERROR_SLOT}"
            response.headers["HX-Reswap"] = "innerHTML"
            # The URL bar keeps the last good view, not the refused one.
            response.headers["HX-Push-Url"] = "false"
            return response
        referer = request.headers.get("Referer", "")
        same_site = url_has_allowed_host_and_scheme(
            referer, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
        back = referer if same_site and urlsplit(referer).path else ""
        kept = urlencode([(k, v) for k, v in request.GET.items() if k in RANGE_PARAMS])
        context.update({"back_url": back, "kept_qs": kept})
        return render(request, "400_input.html", context, status=400)


# Set after a write, for this long: the browser's next pages read the primary, so
# they show what it just saved even if the replica is a moment behind.
PRIMARY_COOKIE = "primary_until"


class ReplicaReadsMiddleware:
    """Serve GET and HEAD requests from the read replica (core.db.routers), unless this
    browser wrote something in the last REPLICA_PIN_SECONDS (read your own writes).

    Without DATABASE_REPLICA_URL it does nothing. The cookie only ever moves a
    browser's reads to the primary, so a forged one costs nothing but speed.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not replica_configured():
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            response = self.get_response(request)
            seconds = settings.REPLICA_PIN_SECONDS
            response.set_cookie(
                PRIMARY_COOKIE,
                str(int(time.time()) + seconds),
                max_age=seconds,
                secure=request.is_secure(),
                httponly=True,
                samesite="Lax",
            )
            return response
        if _pinned(request):
            return self.get_response(request)
        with replica_reads():
            return self.get_response(request)


def _pinned(request: HttpRequest) -> bool:
    try:
        until = int(request.COOKIES.get(PRIMARY_COOKIE, "0"))
    except ValueError:
        return False
    return until >= time.time()
