from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from orchestrator.dashboard.render import UserInputError


class UserInputErrorMiddleware:
    """Turns UserInputError from a dashboard view into a 400 page that says what was wrong."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, UserInputError):
            context = {"message": str(exception)}
            if getattr(request, "htmx", False):
                # A fragment request: show the message in place of the page body.
                response = render(request, "400_input.html#message", context, status=400)
                response.headers["HX-Retarget"] = "#main"
                response.headers["HX-Reswap"] = "innerHTML"
                return response
            return render(request, "400_input.html", context, status=400)
        return None
