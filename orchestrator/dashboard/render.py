"""What every dashboard view shares: the period, the page-or-fragment render, paging,
bad input."""

import hashlib
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
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
# How long one request may hold a figure's recomputation before another takes over
# (a worker killed mid-computation must not leave the figure unowned for long), and
# how long the others wait for it before computing the figure themselves.
FIGURE_LOCK_SECONDS = 30
FIGURE_WAIT_SECONDS = 20.0
FIGURE_POLL_SECONDS = 0.05
_MISSING = object()


def minute(moment: datetime) -> int:
    """The minute holding `moment`: "last 7 days" moves with every request, so cache
    keys round the period's bounds to it."""
    return int(moment.timestamp()) // 60


def _digest(key: tuple[object, ...]) -> str:
    return hashlib.sha256(repr(key).encode()).hexdigest()[:40]


def cached_figure[T](
    name: str,
    *key: object,
    compute: Callable[[], T],
    window: tuple[datetime, datetime] | None = None,
) -> T:
    """`compute()`, shared for FIGURE_CACHE_SECONDS by requests with the same `key` and
    the same `window` (a period, to the minute), and computed once however many
    requests ask at the same moment.

    A rolling period ("last 7 days") is a new window every minute: the first request
    of the minute recomputes it, and while it does, every other request gets the same
    window one minute earlier (a figure at most a minute old, as for any cache hit)
    instead of queueing behind it or computing it again. With nothing that recent, the
    others wait for the one computation (up to FIGURE_WAIT_SECONDS, then compute
    themselves: its owner may have died).
    """
    if window is None:
        exact, family, at = key, None, None
    else:
        at = (minute(window[0]), minute(window[1]))
        exact = (*key, *at)
        # The same figure over a window of the same length: the previous minute's.
        family = _digest((*key, at[1] - at[0]))
    cache_key = f"figures:{name}:{_digest(exact)}"
    value = cache.get(cache_key, _MISSING)
    if value is not _MISSING:
        return value
    lock_key = f"{cache_key}:lock"

    def compute_and_store() -> T:
        # Under the lock just taken: the one computation, stored, then unlocked.
        try:
            return _compute_and_store(name, cache_key, family, at, compute)
        finally:
            with _lazily():
                cache.delete(lock_key)

    if cache.add(lock_key, 1, FIGURE_LOCK_SECONDS):
        return compute_and_store()
    if family is not None and at is not None:
        latest = cache.get(f"figures:{name}:latest:{family}")
        if isinstance(latest, list) and len(latest) == 3:
            start, end, stale = latest
            if at[1] - 1 <= end <= at[1] and end - start == at[1] - at[0]:
                return stale  # type: ignore[no-any-return]
    deadline = time.monotonic() + FIGURE_WAIT_SECONDS
    while time.monotonic() < deadline:
        time.sleep(FIGURE_POLL_SECONDS)
        value = cache.get(cache_key, _MISSING)
        if value is not _MISSING:
            return value
        if cache.add(lock_key, 1, FIGURE_LOCK_SECONDS):
            # Its owner gave up (an exception, or its lock ran out): ours now.
            return compute_and_store()
    return compute()


def _lazily() -> AbstractContextManager[None]:
    # A figure lost in a crash is recomputed: its writes need not wait for the disk
    # (core.cache.JSONDatabaseCache.lazily; other cache backends write as they do).
    lazily = getattr(cache, "lazily", None)
    return lazily() if lazily is not None else nullcontext()


def _compute_and_store[T](
    name: str,
    cache_key: str,
    family: str | None,
    at: tuple[int, int] | None,
    compute: Callable[[], T],
) -> T:
    value = compute()
    with _lazily():
        cache.set(cache_key, value, FIGURE_CACHE_SECONDS)
        if family is not None and at is not None:
            # Kept two minutes: it stands in for the next minute's window while that
            # is computed, and is never more than a minute older than what was asked.
            latest = [at[0], at[1], value]
            cache.set(f"figures:{name}:latest:{family}", latest, 2 * FIGURE_CACHE_SECONDS)
    return value
