"""The dashboard's figure cache (render.cached_figure): one computation per figure,
however many requests ask for it at once, and no queue at the turn of a minute."""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core.cache import cache
from django.db import connection

from orchestrator.dashboard import render
from orchestrator.dashboard.render import cached_figure

WINDOW = (datetime(2026, 3, 1, 9, 0, tzinfo=UTC), datetime(2026, 3, 8, 9, 0, 30, tzinfo=UTC))


def _shift(window: tuple[datetime, datetime], minutes: int) -> tuple[datetime, datetime]:
    return (window[0] + timedelta(minutes=minutes), window[1] + timedelta(minutes=minutes))


@pytest.fixture
def empty_cache(transactional_db):
    cache.clear()
    yield
    cache.clear()


def _ask_together(count: int, ask) -> list:
    """`ask()` from `count` threads released at the same moment; their answers."""
    barrier = threading.Barrier(count)
    answers: list = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            answers[i] = ask()
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return answers


def test_many_requests_at_once_compute_a_figure_once(empty_cache):
    calls = []

    def compute():
        calls.append(1)
        time.sleep(0.5)  # long enough for every thread to arrive while it runs
        return {"leads": 42}

    answers = _ask_together(
        6, lambda: cached_figure("test:slow", "k", compute=compute, window=WINDOW)
    )

    assert answers == [{"leads": 42}] * 6
    assert len(calls) == 1


def test_at_a_new_minute_the_others_get_the_previous_minute_while_one_recomputes(empty_cache):
    assert cached_figure("test:rolling", "k", compute=lambda: "at 9:00", window=WINDOW) == (
        "at 9:00"
    )
    started, release = threading.Event(), threading.Event()
    calls = []

    def recompute():
        calls.append(1)
        started.set()
        release.wait(10)
        return "at 9:01"

    next_minute = _shift(WINDOW, 1)
    first = threading.Thread(
        target=lambda: (
            cached_figure("test:rolling", "k", compute=recompute, window=next_minute),
            connection.close(),
        )
    )
    first.start()
    assert started.wait(10)
    try:
        # While the first request of 9:01 computes, another is answered at once
        # with the 9:00 figure, without computing it again.
        asked = time.monotonic()
        other = cached_figure("test:rolling", "k", compute=recompute, window=next_minute)
        waited = time.monotonic() - asked
    finally:
        release.set()
        first.join(10)
    assert other == "at 9:00"
    assert waited < 5
    assert len(calls) == 1
    # Once computed, the new minute's figure is what everyone gets.
    assert cached_figure("test:rolling", "k", compute=recompute, window=next_minute) == "at 9:01"
    assert len(calls) == 1


def test_a_figure_older_than_a_minute_is_never_served_in_its_place(empty_cache, monkeypatch):
    monkeypatch.setattr(render, "FIGURE_WAIT_SECONDS", 0.3)
    cached_figure("test:old", "k", compute=lambda: "at 9:00", window=WINDOW)
    two_later = _shift(WINDOW, 2)
    # Another request holds the recomputation of 9:02 (and never finishes it).
    assert cache.add(_lock_key("test:old", ("k",), two_later), 1, 30)

    got = cached_figure("test:old", "k", compute=lambda: "at 9:02", window=two_later)

    # The 9:00 figure is two minutes old: this request waited, then computed.
    assert got == "at 9:02"


def test_a_figure_of_another_length_or_key_is_never_served_in_its_place(empty_cache, monkeypatch):
    monkeypatch.setattr(render, "FIGURE_WAIT_SECONDS", 0.3)
    cached_figure("test:shape", "k", compute=lambda: "7 days", window=WINDOW)
    longer = (WINDOW[0] - timedelta(days=23), WINDOW[1] + timedelta(minutes=1))
    assert cache.add(_lock_key("test:shape", ("k",), longer), 1, 30)
    assert cached_figure("test:shape", "k", compute=lambda: "30 days", window=longer) == "30 days"

    other = _shift(WINDOW, 1)
    assert cache.add(_lock_key("test:shape", ("other",), other), 1, 30)
    assert cached_figure("test:shape", "other", compute=lambda: "other", window=other) == "other"


def test_a_failed_computation_frees_the_figure_for_the_next_request(empty_cache):
    def broken():
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError):
        cached_figure("test:broken", "k", compute=broken, window=WINDOW)
    # Not left locked: the next request computes at once rather than waiting.
    asked = time.monotonic()
    assert cached_figure("test:broken", "k", compute=lambda: 7, window=WINDOW) == 7
    assert time.monotonic() - asked < render.FIGURE_WAIT_SECONDS / 2


def _lock_key(name: str, key: tuple, window: tuple[datetime, datetime]) -> str:
    at = (render.minute(window[0]), render.minute(window[1]))
    return f"figures:{name}:{render._digest((*key, *at))}:lock"
