from urllib.parse import urlencode, urlsplit

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme

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
