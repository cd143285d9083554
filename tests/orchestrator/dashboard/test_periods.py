"""The global date range: presets, custom dates, bad input, buckets, the previous period."""

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from urllib.parse import urlencode

import pytest
from django.http import QueryDict

from core.periods import Period, PeriodError, period_from_query

NOW = datetime(2026, 6, 10, 14, 37, 12, tzinfo=UTC)  # a Wednesday


def parse(query: str) -> Period:
    return period_from_query(QueryDict(query), now=NOW)


@pytest.mark.parametrize(
    ("key", "span"),
    [
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("30d", timedelta(days=30)),
        ("90d", timedelta(days=90)),
    ],
)
def test_presets_end_now(key, span):
    period = parse(f"range={key}")
    assert (period.key, period.start, period.end) == (key, NOW - span, NOW)
    assert period.label == f"last {key}"


def test_no_range_is_the_last_seven_days():
    period = parse("")
    assert (period.key, period.start, period.end) == ("7d", NOW - timedelta(days=7), NOW)


def test_custom_dates_are_whole_days_and_until_is_inclusive():
    period = parse("range=custom&since=2026-05-01&until=2026-05-03")
    assert period.start == datetime(2026, 5, 1, tzinfo=UTC)
    # The whole of May 3rd is in the range: the end is exclusive, at midnight after it.
    assert period.end == datetime(2026, 5, 4, tzinfo=UTC)
    assert period.until_inclusive == datetime(2026, 5, 3, 23, 59, 59, 999999, tzinfo=UTC)
    assert period.label == "2026-05-01 00:00 to 2026-05-04 00:00 UTC"


def test_a_single_day_is_a_valid_custom_range():
    period = parse("range=custom&since=2026-05-01&until=2026-05-01")
    assert period.span == timedelta(days=1)


def test_custom_datetimes_are_exact_and_naive_ones_are_utc():
    period = parse("range=custom&since=2026-05-01T10:00&until=2026-05-01T14:30%2B02:00")
    assert period.start == datetime(2026, 5, 1, 10, tzinfo=UTC)
    assert period.end == datetime(2026, 5, 1, 12, 30, tzinfo=UTC)  # 14:30+02:00, exclusive


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("range=1y", "range must be one of 24h, 7d, 30d, 90d, custom, not '1y'"),
        ("range=custom&since=2026-05-01", "a custom range needs both since and until"),
        ("range=custom&until=2026-05-01", "a custom range needs both since and until"),
        (
            "range=custom&since=yesterday&until=2026-05-01",
            "since must be a date (YYYY-MM-DD) or a date and time, not 'yesterday'",
        ),
        (
            "range=custom&since=2026-05-01&until=2026-13-01",
            "until must be a date (YYYY-MM-DD) or a date and time, not '2026-13-01'",
        ),
        ("range=custom&since=2026-05-03&until=2026-05-01", "until must be after since"),
        (
            "range=custom&since=2026-05-01T10:00&until=2026-05-01T10:00",
            "until must be after since",
        ),
        (
            "range=custom&since=2020-01-01&until=2026-05-01",
            "a custom range can span at most three years",
        ),
    ],
)
def test_bad_input_says_what_is_wrong(query, message):
    with pytest.raises(PeriodError) as caught:
        parse(query)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("span", "unit"),
    [
        (timedelta(hours=24), "hour"),
        (timedelta(days=2), "hour"),
        (timedelta(days=2, hours=1), "day"),
        (timedelta(days=45), "day"),
        (timedelta(days=46), "week"),
    ],
)
def test_the_bucket_unit_follows_the_span(span, unit):
    assert Period(key="custom", start=NOW - span, end=NOW).unit == unit


def test_hour_buckets():
    period = parse("range=24h")
    moment = datetime(2026, 6, 10, 9, 59, 59, 999999, tzinfo=UTC)
    assert period.bucket_of(moment) == datetime(2026, 6, 10, 9, tzinfo=UTC)
    buckets = period.buckets()
    # 13:37 yesterday to 14:37 today: the partial hours at both ends count.
    assert buckets[0] == datetime(2026, 6, 9, 14, tzinfo=UTC)
    assert buckets[-1] == datetime(2026, 6, 10, 14, tzinfo=UTC)
    assert len(buckets) == 25
    assert all(b - a == timedelta(hours=1) for a, b in pairwise(buckets))


def test_bucket_of_works_in_utc_whatever_the_zone_of_the_moment():
    from zoneinfo import ZoneInfo

    period = parse("range=7d")
    moment = datetime(2026, 6, 10, 1, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # 23:30 UTC the 9th
    assert period.bucket_of(moment) == datetime(2026, 6, 9, tzinfo=UTC)


def test_day_buckets():
    period = parse("range=7d")
    assert period.unit == "day"
    assert period.bucket_of(NOW) == datetime(2026, 6, 10, tzinfo=UTC)
    buckets = period.buckets()
    assert buckets[0] == datetime(2026, 6, 3, tzinfo=UTC)
    assert buckets[-1] == datetime(2026, 6, 10, tzinfo=UTC)
    assert len(buckets) == 8


def test_week_buckets_start_on_monday():
    period = parse("range=90d")
    assert period.unit == "week"
    assert period.bucket_of(NOW) == datetime(2026, 6, 8, tzinfo=UTC)  # Monday
    sunday_night = datetime(2026, 6, 7, 23, 59, tzinfo=UTC)
    assert period.bucket_of(sunday_night) == datetime(2026, 6, 1, tzinfo=UTC)
    buckets = period.buckets()
    assert all(b.weekday() == 0 and b.hour == 0 for b in buckets)
    assert buckets[0] <= period.start < buckets[0] + timedelta(weeks=1)
    assert buckets[-1] <= period.end < buckets[-1] + timedelta(weeks=1)


def test_previous_is_the_same_length_just_before():
    period = parse("range=custom&since=2026-05-10&until=2026-05-16")
    before = period.previous()
    assert before.end == period.start
    assert before.span == period.span == timedelta(days=7)
    assert before.start == datetime(2026, 5, 3, tzinfo=UTC)
    assert parse("range=24h").previous().start == NOW - timedelta(hours=48)


@pytest.mark.parametrize(
    "query",
    ["range=24h", "range=90d", "range=custom&since=2026-05-01&until=2026-05-03"],
)
def test_query_round_trips(query):
    period = parse(query)
    again = period_from_query(QueryDict(urlencode(period.query())), now=NOW)
    assert again == period


def test_narrowed_reproduces_the_bucket():
    period = parse("range=7d")
    start = datetime(2026, 6, 8, tzinfo=UTC)
    params = period.narrowed(start, start + timedelta(days=1))
    # Through a real query string: the '+' of the UTC offset must survive it.
    narrowed = period_from_query(QueryDict(urlencode(params)), now=NOW)
    assert (narrowed.start, narrowed.end) == (start, start + timedelta(days=1))
    assert narrowed.unit == "hour"


def test_a_narrowed_range_keeps_its_times_in_its_own_query():
    # The event browser's links carry period.query(): a bar's hour must survive them.
    start = datetime(2026, 6, 8, 10, tzinfo=UTC)
    narrowed = parse(urlencode(parse("range=24h").narrowed(start, start + timedelta(hours=1))))
    assert narrowed.query() == {
        "range": "custom",
        "since": "2026-06-08T10:00+00:00",
        "until": "2026-06-08T11:00+00:00",
    }
    again = period_from_query(QueryDict(urlencode(narrowed.query())), now=NOW)
    assert (again.start, again.end) == (start, start + timedelta(hours=1))


def test_narrowed_is_exact_to_the_microsecond():
    period = parse("range=7d")
    start = datetime(2026, 6, 3, 14, 37, 12, 250000, tzinfo=UTC)
    end = datetime(2026, 6, 4, 0, 0, 30, tzinfo=UTC)
    params = period.narrowed(start, end)
    assert params["since"] == "2026-06-03T14:37:12.250000+00:00"
    assert params["until"] == "2026-06-04T00:00:30+00:00"
    again = period_from_query(QueryDict(urlencode(params)), now=NOW)
    assert (again.start, again.end) == (start, end)
