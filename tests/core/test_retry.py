from datetime import timedelta

import pytest
import time_machine

from core.retry import backoff_seconds, parse_retry_after, retry_delay, retrying


class Flaky(Exception):
    def __init__(self, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__("flaky")
        self.permanent = permanent
        self.retry_after = retry_after


def failing(*errors: Exception):
    """A callable that raises each error in turn, then returns "ok"."""
    calls = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    call.calls = calls
    return call


def policy(slept: list[float], **overrides):
    options = {
        "transient": lambda e: isinstance(e, Flaky) and not e.permanent,
        "attempts": 4,
        "base": 1.0,
        "cap": 30.0,
        "sleep": slept.append,
    } | overrides
    return retrying(**options)


def test_backoff_doubles_up_to_the_cap():
    assert [backoff_seconds(n, base=60, cap=3600) for n in (0, 1, 2, 3, 7, 8)] == [
        60,
        60,
        120,
        240,
        3600,
        3600,
    ]


def test_retry_delay_waits_at_least_what_retry_after_says():
    assert retry_delay(2, base=60, cap=3600) == timedelta(minutes=2)
    assert retry_delay(2, base=60, cap=3600, retry_after=600) == timedelta(minutes=10)
    assert retry_delay(2, base=60, cap=3600, retry_after=5) == timedelta(minutes=2)


def test_transient_errors_are_retried_with_growing_jittered_waits():
    slept: list[float] = []
    call = failing(Flaky(), Flaky(), Flaky())
    assert policy(slept)(call) == "ok"
    assert len(call.calls) == 4
    # Exponential from base (1, 2, 4) plus up to `base` of jitter.
    for wait, low in zip(slept, (1, 2, 4), strict=True):
        assert low <= wait <= low + 1


def test_a_permanent_error_is_raised_at_once():
    slept: list[float] = []
    call = failing(Flaky(permanent=True))
    with pytest.raises(Flaky):
        policy(slept)(call)
    assert (len(call.calls), slept) == (1, [])


def test_the_last_error_is_raised_after_the_last_attempt():
    slept: list[float] = []
    call = failing(*[Flaky() for _ in range(5)])
    with pytest.raises(Flaky):
        policy(slept, attempts=3)(call)
    assert len(call.calls) == 3
    assert len(slept) == 2


def test_retry_after_is_waited_when_the_caller_honours_it():
    slept: list[float] = []
    call = failing(Flaky(retry_after=7))
    assert policy(slept, max_retry_after=60)(call) == "ok"
    assert slept == [7]


def test_a_retry_after_longer_than_the_limit_ends_the_tries():
    slept: list[float] = []
    call = failing(Flaky(retry_after=120))
    with pytest.raises(Flaky):
        policy(slept, max_retry_after=60)(call)
    assert (len(call.calls), slept) == (1, [])


def test_without_a_limit_retry_after_is_left_to_the_next_pass():
    slept: list[float] = []
    call = failing(Flaky(retry_after=120))
    assert policy(slept)(call) == "ok"
    assert slept and slept[0] <= 2  # the backoff, not 120 s


def test_hooks_reach_tenacity():
    seen: list[int] = []
    call = failing(Flaky())
    retrying_ = policy([], before=lambda state: seen.append(state.attempt_number))
    assert retrying_(call) == "ok"
    assert seen == [1, 2]


@time_machine.travel("2026-03-03 10:00:00Z", tick=False)
def test_parse_retry_after_reads_seconds_and_http_dates():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Tue, 03 Mar 2026 10:01:30 GMT") == 90.0
    assert parse_retry_after("Tue, 03 Mar 2026 09:00:00 GMT") == 0.0  # in the past
