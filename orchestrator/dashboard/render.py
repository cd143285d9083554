"""What every dashboard view shares: the period, the page-or-fragment render, bad input."""

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from core.periods import PRESETS, Period, period_from_request


class UserInputError(ValueError):
    """Bad input from the dashboard user; the middleware answers 400 with this message."""


def get_period(request: HttpRequest) -> Period:
    from core.periods import PeriodError

    try:
        return period_from_request(request)
    except PeriodError as exc:
        raise UserInputError(str(exc)) from None


def render_page(
    request: HttpRequest,
    template: str,
    context: dict[str, Any],
    *,
    nav: str,
    period: Period | None = None,
    fragment: str | None = None,
    status: int = 200,
) -> HttpResponse:
    """The full page, or only its `{% partialdef fragment %}` for an htmx request.

    History restores (HX-History-Restore-Request) need the whole page, so they
    get it.
    """
    htmx = getattr(request, "htmx", None)
    if fragment and htmx and not htmx.history_restore_request and not htmx.boosted:
        template = f"{template}#{fragment}"
    ctx = {
        "nav": nav,
        "period": period,
        "period_qs": urlencode(period.query()) if period else "",
        "range_presets": list(PRESETS),
        **context,
    }
    response = render(request, template, ctx, status=status)
    # The same URL answers with a page or a fragment: caches must keep them apart.
    response.headers["Vary"] = "HX-Request"
    return response


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
    return value  # type: ignore[return-value]
