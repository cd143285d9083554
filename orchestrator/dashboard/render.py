"""What every dashboard view shares: the period, the page-or-fragment render, paging,
bad input."""

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django_htmx.middleware import HtmxDetails

from core.jsonvalues import storable_text
from core.paging import CursorError, Page
from core.periods import PRESETS, Period, PeriodError, period_from_request


class UserInputError(ValueError):
    """Bad input from the dashboard user; the middleware answers 400 with this message."""


UNSEARCHABLE = "contains characters that cannot be searched"


def validate_searchable(value: str) -> None:
    """A form validator for text that reaches a query: no NUL (PostgreSQL refuses it in
    text) and no lone surrogate (no UTF-8 spelling)."""
    if not storable_text(value):
        raise ValidationError(UNSEARCHABLE, code="unsearchable")


def path_value(value: str, *, what: str) -> str:
    """A URL path parameter that names a row: one no database could hold names none."""
    if not storable_text(value):
        raise Http404(f"No {what} {value!r}")
    return value


def get_period(request: HttpRequest) -> Period:
    try:
        return period_from_request(request)
    except PeriodError as exc:
        raise UserInputError(str(exc)) from None


def wanted_fragment(
    request: HttpRequest, *, fragments: Sequence[str] = (), default: str | None = None
) -> str | None:
    """The partial an htmx request asks for, or None for the whole page.

    The one fragment protocol: every partial is named after the DOM id it
    replaces, so the id htmx swaps into (HX-Target) names it; an htmx request
    that names none of `fragments` gets `default`. History restores
    (HX-History-Restore-Request) and boosted links need the whole page.
    """
    htmx: HtmxDetails | None = getattr(request, "htmx", None)
    if not htmx or htmx.history_restore_request or htmx.boosted:
        return None
    return htmx.target if htmx.target in fragments else default


def render_page(
    request: HttpRequest,
    template: str,
    context: dict[str, Any],
    *,
    nav: str,
    period: Period | None = None,
    fragment: str | None = None,
    fragments: Sequence[str] = (),
    status: int = 200,
) -> HttpResponse:
    """The full page, or for an htmx request the partial wanted_fragment() picks among
    `fragments` (a partial of `template`), `fragment` when it names none of them."""
    chosen = wanted_fragment(request, fragments=fragments, default=fragment)
    if chosen:
        template = f"{template}#{chosen}"
    ctx = {
        "nav": nav,
        "period": period,
        "period_qs": urlencode(period.query()) if period else "",
        "range_presets": list(PRESETS),
        **context,
    }
    response = render(request, template, ctx, status=status)
    # The same URL answers with the page or one of its fragments (by HX-Target):
    # caches must keep them apart.
    patch_vary_headers(response, ("HX-Request", "HX-Target"))
    return response


def requested_page[T](request: HttpRequest, read: Callable[[str | None], Page[T]]) -> Page[T]:
    """`read(cursor)` with the request's `cursor` parameter (core.paging); a cursor the
    list did not write (edited, truncated, from an older format) is a 400 that says so."""
    try:
        return read(request.GET.get("cursor") or None)
    except CursorError as exc:
        raise UserInputError(str(exc)) from None


# The issue allows figures up to a minute old; every cached dashboard figure uses this.
FIGURE_CACHE_SECONDS = 60
_MISSING = object()


def minute(moment: datetime) -> int:
    """The minute holding `moment`: "last 7 days" moves with every request, so cache
    keys round the period's bounds to it."""
    return int(moment.timestamp()) // 60


def cached_figure[T](name: str, *key: object, compute: Callable[[], T]) -> T:
    """`compute()`, shared for FIGURE_CACHE_SECONDS by requests with the same `key`
    (pass the period as minute(start), minute(end))."""
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:40]
    cache_key = f"figures:{name}:{digest}"
    value = cache.get(cache_key, _MISSING)
    if value is _MISSING:
        value = compute()
        cache.set(cache_key, value, FIGURE_CACHE_SECONDS)
    return value
