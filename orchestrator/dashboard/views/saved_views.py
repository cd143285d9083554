"""Saved views of the event browser: save the page's filters under a name, list,
rename, share and delete them (the logic is in orchestrator.dashboard.saved_views)."""

from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from orchestrator.dashboard import saved_views
from orchestrator.dashboard.access import takes_posts, viewer_required
from orchestrator.dashboard.render import validate_searchable
from orchestrator.dashboard.saved_views import SavedViewError
from orchestrator.models import SavedView

# The block above the event browser's filters (a save swaps it), and the menu in it
# (reloaded after each URL htmx pushes).
BLOCK_TEMPLATE = "dashboard/_saved_views.html#saved-views"
MENU_FRAGMENT = "saved-views-menu"


class SavedViewForm(forms.Form):
    name = forms.CharField(
        max_length=saved_views.MAX_NAME_LENGTH,
        validators=[validate_searchable],
        error_messages={"required": "Give the view a name."},
    )
    shared = forms.BooleanField(required=False)


class NewSavedViewForm(SavedViewForm):
    # The page's query string; cleaned by the service, so only its size is checked here.
    query = forms.CharField(
        required=False, strip=False, max_length=saved_views.MAX_RAW_QUERY_LENGTH
    )


def _page_query(request: HttpRequest, posted: str) -> str:
    """The filters to save: the event browser's URL as htmx last pushed it, else the
    query the page was rendered with (a hidden field: the form without JavaScript)."""
    htmx = getattr(request, "htmx", None)
    if htmx and htmx.current_url:
        # The filter form swaps the table and pushes its URL: the hidden field, written
        # with the whole page, may be some filter changes behind.
        current = saved_views.event_list_query(htmx.current_url)
        if current is not None:
            return current
    return posted


def _fragment(
    request: HttpRequest, fragment: str, *, query: str, status: int = 200, **context: Any
) -> HttpResponse:
    menu = saved_views.menu(request=request, query=query)
    response = render(request, fragment, {"menu": menu, **context}, status=status)
    patch_vary_headers(response, ("HX-Request", "HX-Target", "HX-Current-URL"))
    return response


def _manage_page(request: HttpRequest, *, status: int = 200, **context: Any) -> HttpResponse:
    context = {"menu": saved_views.menu(request=request, query=None), "nav": "events", **context}
    response = render(request, "dashboard/saved_views.html", context, status=status)
    patch_vary_headers(response, ("HX-Request", "HX-Target", "HX-Current-URL"))
    return response


def _add_error(form: forms.Form, exc: SavedViewError) -> None:
    form.add_error(exc.field if exc.field in form.fields else None, str(exc))


def _owned_or_refused(request: HttpRequest, pk: int) -> SavedView | HttpResponse:
    """The view the request may change, or the page that says why it may not."""
    view = saved_views.visible_view(user=request.user, view_id=pk)
    if view is None:
        # Someone else's private view is "no such view": its existence is not theirs to know.
        return _manage_page(
            request, status=404, error="No such saved view (it may have been deleted)."
        )
    if view.owner_id != request.user.pk:
        return _manage_page(
            request,
            status=403,
            error=(
                f"Only {view.owner.get_username()}, who saved “{view.name}”, can rename, "
                "unshare or delete it."
            ),
        )
    return view


@viewer_required
@require_GET
def saved_view_list(request: HttpRequest) -> HttpResponse:
    """The user's views and the shared ones; for htmx, the event browser's menu,
    refreshed after each URL the browser pushes (so the active view stays marked)."""
    if getattr(request, "htmx", None) and request.htmx.target == MENU_FRAGMENT:
        return _fragment(
            request,
            f"dashboard/_saved_views.html#{MENU_FRAGMENT}",
            query=_page_query(request, ""),
            reload=True,
        )
    return _manage_page(request)


@takes_posts
@viewer_required
@require_POST
def saved_view_create(request: HttpRequest) -> HttpResponse:
    form = NewSavedViewForm(request.POST)
    query = _page_query(request, str(form.data.get("query", "")))
    view = None
    if form.is_valid():
        try:
            view = saved_views.save_view(
                owner=request.user,
                name=form.cleaned_data["name"],
                query=query,
                shared=form.cleaned_data["shared"],
            )
        except SavedViewError as exc:
            _add_error(form, exc)
    if request.htmx:
        if view is None:
            return _fragment(
                request, BLOCK_TEMPLATE, query=query, status=400, form=form, save_open=True
            )
        return _fragment(request, BLOCK_TEMPLATE, query=view.query, saved=view)
    if view is None:
        return _manage_page(request, status=400, form=form)
    return redirect(saved_views.view_path(view))


@takes_posts
@viewer_required
@require_POST
def saved_view_update(request: HttpRequest, pk: int) -> HttpResponse:
    found = _owned_or_refused(request, pk)
    if isinstance(found, HttpResponse):
        return found
    form = SavedViewForm(request.POST)
    if form.is_valid():
        try:
            saved_views.update_view(
                user=request.user,
                view=found,
                name=form.cleaned_data["name"],
                shared=form.cleaned_data["shared"],
            )
        except SavedViewError as exc:
            _add_error(form, exc)
        else:
            messages.success(request, f"Saved “{found.name}”.")
            return redirect("saved-views")
    # The stored row, not the refused edit, in the list; the edit stays in its form.
    return _manage_page(request, status=400, edit_form=form, edit_id=pk)


@takes_posts
@viewer_required
@require_http_methods(["GET", "POST"])
def saved_view_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """GET asks to confirm; only the POST of that form deletes."""
    found = _owned_or_refused(request, pk)
    if isinstance(found, HttpResponse):
        return found
    if request.method == "GET":
        return render(
            request,
            "dashboard/saved_view_delete.html",
            {"view": found, "nav": "events", "url": saved_views.view_path(found)},
        )
    name = found.name
    saved_views.delete_view(user=request.user, view=found)
    messages.success(request, f"Deleted “{name}”.")
    return redirect("saved-views")
