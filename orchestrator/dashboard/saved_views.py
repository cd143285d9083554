"""Saved views of the event browser: named query strings of /events/, per user,
optionally shared with every dashboard user.

Writes (save_view, update_view, delete_view) and reads (list_views, visible_view,
menu) live here; the views in views/saved_views.py only translate.
"""

from contextlib import suppress
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, QueryDict
from django.urls import reverse

from core.periods import DEFAULT as DEFAULT_RANGE
from core.periods import PeriodError, period_from_query
from orchestrator.dashboard.filters.events import EventFilter
from orchestrator.models import SavedView

MAX_NAME_LENGTH = SavedView._meta.get_field("name").max_length
MAX_QUERY_LENGTH = SavedView._meta.get_field("query").max_length
# What arrives is a whole page's query string, unknown keys included: bounded before
# parsing, and parsed to at most this many parameters.
MAX_RAW_QUERY_LENGTH = 8000
MAX_QUERY_FIELDS = 200
# The period first (core.periods), then the FilterSet's filters in its own order; the
# paging keys (cursor, after, live: EventFilterForm.PAGING) place or poll a list and
# are no part of a view.
PERIOD_KEYS = ("range", "since", "until")
FILTER_KEYS = (*PERIOD_KEYS, *EventFilter.base_filters)
MULTI_VALUED = frozenset({"type"})


class SavedViewError(ValueError):
    """Input a saved view cannot take; `field` names the form field the message is for."""

    def __init__(self, message: str, *, field: str = "name") -> None:
        super().__init__(message)
        self.field = field


# --- the query string ------------------------------------------------------------------


def clean_query(raw: str) -> str:
    """The event browser's filters in `raw` (a query string, "?" optional), in one
    canonical spelling: unknown and empty parameters dropped, the types sorted, a
    single-valued filter's last value kept (the one the browser reads).

    Raises SavedViewError when the filters are ones the browser would refuse, or the
    result is longer than a view can hold.
    """
    if len(raw) > MAX_RAW_QUERY_LENGTH:
        raise SavedViewError(
            f"The filters are too long to save (over {MAX_RAW_QUERY_LENGTH} characters).",
            field="query",
        )
    try:
        pairs = parse_qsl(raw.removeprefix("?"), max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        raise SavedViewError(
            f"The filters have more than {MAX_QUERY_FIELDS} parameters.", field="query"
        ) from None
    kept: dict[str, list[str]] = {}
    for key, value in pairs:
        if key not in FILTER_KEYS or not value.strip():
            continue
        if key in MULTI_VALUED:
            kept.setdefault(key, []).append(value)
        else:
            kept[key] = [value]
    # No range is the default one: spelt out, the two compare equal.
    kept.setdefault("range", [DEFAULT_RANGE])
    if kept["range"][0] != "custom":
        # A preset range ignores since/until; kept, they would make equal views differ.
        kept.pop("since", None)
        kept.pop("until", None)
    ordered = [
        (key, value)
        for key in FILTER_KEYS
        for value in (sorted(set(kept.get(key, []))) if key in MULTI_VALUED else kept.get(key, []))
    ]
    _check_filters(ordered)
    query = urlencode(ordered)
    if len(query) > MAX_QUERY_LENGTH:
        raise SavedViewError(
            f"The filters are too long to save ({len(query)} characters, at most "
            f"{MAX_QUERY_LENGTH}).",
            field="query",
        )
    return query


def _check_filters(pairs: list[tuple[str, str]]) -> None:
    """Refuse filters the event browser itself would answer with a 400."""
    params = QueryDict(mutable=True)
    for key, value in pairs:
        params.appendlist(key, value)
    try:
        period = period_from_query(params)
    except PeriodError as exc:
        raise SavedViewError(f"The filters cannot be saved: {exc}.", field="query") from None
    message = EventFilter(params, period=period).error_message()
    if message:
        raise SavedViewError(f"The filters cannot be saved: {message}", field="query")


def event_list_query(url: str) -> str | None:
    """The query string of `url` if it is the event browser's (HX-Current-URL), else None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return parts.query if parts.path == reverse("event-list") else None


def view_path(view: SavedView) -> str:
    return reverse("event-list") + (f"?{view.query}" if view.query else "")


# --- writes ----------------------------------------------------------------------------


def _name_taken(name: str) -> SavedViewError:
    return SavedViewError(f"You already have a view named “{name}”: choose another name.")


def _check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise SavedViewError("Give the view a name.")
    if len(name) > MAX_NAME_LENGTH:
        raise SavedViewError(f"A name has at most {MAX_NAME_LENGTH} characters.")
    return name


def _store(view: SavedView, *, owner, name: str) -> SavedView:
    others = SavedView.objects.filter(owner=owner, name__iexact=name).exclude(pk=view.pk)
    if others.exists():
        raise _name_taken(name)
    try:
        # Its own savepoint: a concurrent save of the same name fails only itself.
        with transaction.atomic():
            view.save()
    except IntegrityError:
        raise _name_taken(name) from None
    return view


def save_view(*, owner, name: str, query: str, shared: bool = False) -> SavedView:
    """A new view of `owner`'s: `query` is cleaned (clean_query) before it is kept."""
    name = _check_name(name)
    view = SavedView(owner=owner, name=name, query=clean_query(query), shared=shared)
    return _store(view, owner=owner, name=name)


def _check_owner(view: SavedView, user) -> None:
    if view.owner_id != user.pk:
        raise PermissionDenied(
            f"Only {view.owner.get_username()}, who saved “{view.name}”, can rename, "
            "unshare or delete it."
        )


def update_view(*, user, view: SavedView, name: str, shared: bool) -> SavedView:
    """Rename, share or unshare a view; only its owner may."""
    _check_owner(view, user)
    name = _check_name(name)
    view.name, view.shared = name, shared
    return _store(view, owner=user, name=name)


def delete_view(*, user, view: SavedView) -> None:
    _check_owner(view, user)
    view.delete()


# --- reads -----------------------------------------------------------------------------


def list_views(*, user) -> tuple[list[SavedView], list[SavedView]]:
    """The user's own views, and the views others shared, each by name."""
    views = (
        SavedView.objects.filter(Q(owner=user) | Q(shared=True))
        .select_related("owner")
        .order_by("name", "owner__username", "pk")
    )
    own, shared = [], []
    for view in views:
        (own if view.owner_id == user.pk else shared).append(view)
    return own, shared


def visible_view(*, user, view_id: int) -> SavedView | None:
    """A view the user may see (own or shared), or None."""
    views: QuerySet[SavedView] = SavedView.objects.select_related("owner")
    return views.filter(Q(owner=user) | Q(shared=True), pk=view_id).first()


@dataclass(frozen=True)
class MenuEntry:
    view: SavedView
    url: str  # absolute: the link is what a user copies to share it
    active: bool


@dataclass(frozen=True)
class Menu:
    own: list[MenuEntry]
    shared: list[MenuEntry]
    # The page's filters as a view would keep them ("" when they cannot be kept).
    query: str

    @property
    def active(self) -> MenuEntry | None:
        return next((e for e in (*self.own, *self.shared) if e.active), None)


def menu(*, request: HttpRequest, query: str | None) -> Menu:
    """The saved views `request.user` may open, those equal to `query` (the event
    browser page's query string; None for no page) marked active."""
    current: str | None = None
    # A page the browser refused has no filters to match, nor to save.
    with suppress(SavedViewError):
        current = None if query is None else clean_query(query)
    own, shared = list_views(user=request.user)

    def entries(views: list[SavedView]) -> list[MenuEntry]:
        return [
            MenuEntry(
                view=v,
                url=request.build_absolute_uri(view_path(v)),
                active=v.query == current,
            )
            for v in views
        ]

    return Menu(own=entries(own), shared=entries(shared), query=current or "")
