"""The one retry policy: exponential backoff with jitter, honouring Retry-After.

Two shapes of the same policy:

- `retrying()`: tries again at once, in process (tenacity), for an HTTP call
  inside a task: a CRM upsert, an alert POST.
- `retry_delay()`: how long a stored job waits before a later pass picks it
  up again (CRM records, follow-up emails, alert deliveries).

Both double from `base` up to `cap`. An error that carries `retry_after`
(seconds, from the peer's Retry-After header) waits at least that long.
"""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_exponential_jitter


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def backoff_seconds(attempts: int, *, base: float, cap: float) -> float:
    """base, 2 x base, 4 x base, ... up to cap, after the `attempts`-th failure (from 1)."""
    return min(cap, base * 2 ** max(attempts - 1, 0))


def retry_delay(
    attempts: int, *, base: float, cap: float, retry_after: float | None = None
) -> timedelta:
    """How long a stored job waits after its `attempts`-th failure."""
    seconds = backoff_seconds(attempts, base=base, cap=cap)
    if retry_after is not None:
        seconds = max(seconds, retry_after)
    return timedelta(seconds=seconds)


def _retry_after(state: RetryCallState) -> float | None:
    exc = state.outcome.exception() if state.outcome else None
    return getattr(exc, "retry_after", None)


class _RetryAfterTooLong(stop_base):
    """Stop when the error asks to wait longer than `limit` seconds."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def __call__(self, retry_state: RetryCallState) -> bool:
        retry_after = _retry_after(retry_state)
        return retry_after is not None and retry_after > self.limit


def retrying(
    *,
    transient: Callable[[BaseException], bool],
    attempts: int,
    base: float,
    cap: float,
    sleep: Callable[[float], None],
    max_retry_after: float | None = None,
    **hooks: Any,
) -> Retrying:
    """A tenacity policy: up to `attempts` tries (the first included) while `transient(exc)`.

    Waits grow from `base` to `cap` with up to `base` of jitter. With
    `max_retry_after`, an error's `retry_after` is waited instead, and one
    asking for longer than that ends the tries at once: a task should not
    sleep for minutes, a later pass comes back. Without it, Retry-After is
    left to the caller's `retry_delay` between passes. `sleep` is the
    caller's, so its tests can record the waits; `hooks` go to tenacity
    (before, before_sleep, ...).
    """
    backoff = wait_exponential_jitter(multiplier=base, max=cap, jitter=base)
    stop: stop_base = stop_after_attempt(max(attempts, 1))

    if max_retry_after is None:
        wait: Callable[[RetryCallState], float] = backoff
    else:
        limit = max_retry_after

        def wait(state: RetryCallState) -> float:
            retry_after = _retry_after(state)
            return backoff(state) if retry_after is None else retry_after

        stop = stop | _RetryAfterTooLong(limit)

    return Retrying(
        retry=retry_if_exception(transient),
        stop=stop,
        wait=wait,
        sleep=sleep,
        reraise=True,
        **hooks,
    )
