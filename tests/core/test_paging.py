"""Keyset paging (core.paging): every row once, in order, across ties; one cursor format."""

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.models import CommandLock
from core.paging import CursorError, Keyset, encode_cursor, paginate

T0 = datetime(2026, 6, 10, 14, 30, tzinfo=UTC)


@pytest.fixture
def locks(db):
    """Twelve rows in four instants, three rows tied on each (names break the ties)."""
    rows = []
    for i in range(12):
        moment = T0 + timedelta(minutes=i // 3, microseconds=1)
        rows.append(
            CommandLock(name=f"job-{i:02d}", holder="h", acquired_at=moment, expires_at=moment)
        )
    CommandLock.objects.bulk_create(rows)
    return rows


def walk(qs, keys, size):
    """Every page from the first, following next_cursor; the names, page by page."""
    pages, cursor = [], None
    while True:
        page = paginate(qs, keys=keys, size=size, cursor=cursor)
        pages.append([row.name for row in page.items])
        if not page.has_more:
            return pages
        assert page.next_cursor != cursor
        cursor = page.next_cursor


@pytest.mark.parametrize("size", [1, 2, 3, 5, 12, 50])
def test_descending_pages_hold_every_row_once_in_order_across_ties(locks, size):
    pages = walk(CommandLock.objects.all(), ("-acquired_at", "-name"), size)
    expected = [r.name for r in sorted(locks, key=lambda r: (r.acquired_at, r.name), reverse=True)]
    assert [name for page in pages for name in page] == expected
    assert all(len(page) == size for page in pages[:-1])
    # Exactly as many pages as the rows need, the last holding the remainder.
    assert len(pages) == -(-len(locks) // size)
    assert len(pages[-1]) == len(locks) - size * (len(pages) - 1)


@pytest.mark.parametrize("size", [1, 2, 4, 11])
def test_ascending_pages_hold_every_row_once_in_order(locks, size):
    pages = walk(CommandLock.objects.all(), ("acquired_at", "name"), size)
    assert [name for page in pages for name in page] == [f"job-{i:02d}" for i in range(12)]


def test_mixed_directions_follow_each_key_its_own_way(locks):
    pages = walk(CommandLock.objects.all(), ("-acquired_at", "name"), 2)
    expected = [r.name for r in sorted(locks, key=lambda r: (-r.acquired_at.timestamp(), r.name))]
    assert [name for page in pages for name in page] == expected


def test_the_filter_of_the_queryset_holds_on_every_page(locks):
    qs = CommandLock.objects.exclude(name__in=["job-04", "job-07"])
    pages = walk(qs, ("-acquired_at", "-name"), 4)
    assert [n for page in pages for n in page] == [
        f"job-{i:02d}" for i in reversed(range(12)) if i not in (4, 7)
    ]


def test_the_last_page_has_no_next_cursor(locks):
    full = paginate(CommandLock.objects.all(), keys=("name",), size=12)
    assert len(full.items) == 12
    assert full.next_cursor is None and not full.has_more and full.is_first
    first = paginate(CommandLock.objects.all(), keys=("name",), size=6)
    last = paginate(CommandLock.objects.all(), keys=("name",), size=6, cursor=first.next_cursor)
    assert [r.name for r in last.items] == [f"job-{i:02d}" for i in range(6, 12)]
    assert last.next_cursor is None
    assert last.cursor == first.next_cursor and not last.is_first


def test_an_empty_list_is_one_empty_page(db):
    page = paginate(CommandLock.objects.all(), keys=("-acquired_at", "-name"), size=10)
    assert page.items == [] and page.next_cursor is None


def test_the_cursor_is_base64_of_canonical_json_of_the_last_rows_keys(locks):
    page = paginate(CommandLock.objects.all(), keys=("-acquired_at", "-name"), size=3)
    last = page.items[-1]
    raw = page.next_cursor
    assert "=" not in raw
    decoded = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    assert decoded == [{"dt": last.acquired_at.isoformat(timespec="microseconds")}, last.name]
    assert raw == encode_cursor([last.acquired_at, last.name])
    # Another time zone, the same instant: the same cursor.
    other = last.acquired_at.astimezone(datetime.now().astimezone().tzinfo)
    assert encode_cursor([other, last.name]) == raw


def test_a_page_is_one_query_with_the_row_value_comparison_and_no_offset_or_count(locks):
    cursor = paginate(CommandLock.objects.all(), keys=("-acquired_at", "-name"), size=4).next_cursor
    with CaptureQueriesContext(connection) as queries:
        paginate(CommandLock.objects.all(), keys=("-acquired_at", "-name"), size=4, cursor=cursor)
    assert len(queries) == 1
    sql = queries[0]["sql"].upper()
    assert "OFFSET" not in sql and "COUNT(" not in sql
    assert "LIMIT 5" in sql
    where = sql.split("WHERE", 1)[1]
    # ts <= x AND (ts < x OR (ts = x AND name < y))
    table = CommandLock._meta.db_table.upper()
    ts, name = f'"{table}"."ACQUIRED_AT"', f'"{table}"."NAME"'
    assert f"{ts} <=" in where
    assert f"({ts} < " in where
    assert f"({ts} = " in where and f"{name} < " in where


def test_keyset_after_spells_the_expanded_row_value_comparison():
    keyset = Keyset(CommandLock, ("-acquired_at", "-name"))
    where = str(keyset.after(CommandLock.objects.all(), (T0, "job")).query).split("WHERE", 1)[1]
    table = CommandLock._meta.db_table
    ts, name = f"{table}.acquired_at", f"{table}.name"
    x = f"{T0:%Y-%m-%d %H:%M:%S}"
    expected = f"({ts} <= {x} AND ({ts} < {x} OR ({ts} = {x} AND {name} < job)))"
    # The backend decides how a datetime parameter prints; the shape is what counts.
    assert where.strip().replace('"', "").replace("+00:00", "") == expected


GOOD = encode_cursor([T0, "job-01"])


@pytest.mark.parametrize(
    "raw",
    [
        "yesterday",  # not base64 of JSON
        "!!!",
        GOOD[:-3],  # truncated
        GOOD[:-1] + ("A" if GOOD[-1] != "A" else "B"),  # one character changed
        base64.urlsafe_b64encode(b'{"dt": 1}').decode(),  # not a list
        encode_cursor([T0]),  # too few values
        encode_cursor([T0, "job-01", 3]),  # too many
        encode_cursor(["2026-06-10", "job-01"]),  # a date as an untagged string
        encode_cursor([7, "job-01"]),  # an int where a datetime goes
        encode_cursor([T0, 7]),  # an int where a string goes
        encode_cursor([T0, None]),  # keys are never null
        encode_cursor([T0.date(), "job-01"]),  # a date where a datetime goes
        base64.urlsafe_b64encode(b'[{"dt":"2026-06-10T14:30:00"},"x"]').decode(),  # naive
        base64.urlsafe_b64encode(b'[{"dt":"not a time"},"x"]').decode(),
        base64.urlsafe_b64encode(b'[{"zz":"1"},"x"]').decode(),  # unknown tag
        base64.urlsafe_b64encode(b'[{"dt":"2026-06-10T14:30:00+00:00","d":"x"},"x"]').decode(),
        "A" * 600,  # longer than any cursor
    ],
)
def test_a_bad_or_tampered_cursor_is_a_clear_value_error(locks, raw):
    with pytest.raises(CursorError, match="is not a position in this list") as caught:
        paginate(CommandLock.objects.all(), keys=("-acquired_at", "-name"), size=3, cursor=raw)
    assert isinstance(caught.value, ValueError)


def test_an_int_cursor_out_of_database_range_is_refused():
    from audit.models import AuditEvent

    keyset = Keyset(AuditEvent, ("-timestamp", "-id"))
    assert keyset.decode(encode_cursor([T0, 12])) == (T0, 12)
    with pytest.raises(CursorError):
        keyset.decode(encode_cursor([T0, 2**70]))
    with pytest.raises(CursorError):
        keyset.decode(encode_cursor([T0, True]))


def test_a_keyset_names_fields_of_its_model():
    from django.core.exceptions import FieldDoesNotExist

    with pytest.raises(FieldDoesNotExist):
        Keyset(CommandLock, ("-created", "name"))


def _raw(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "raw",
    [
        _raw('[{"dt":"2026-06-10T14:30:00+00:00"},"job\\u0000"]'),  # NUL: PostgreSQL refuses it
        _raw('[{"dt":"2026-06-10T14:30:00+00:00"},"\\ud800"]'),  # a lone surrogate
        _raw('[{"dt":"0001-01-01T00:00:00+23:59"},"x"]'),  # before year 1 in UTC
        "²",
        "9223372036854775808",
    ],
)
def test_cursors_no_database_could_compare_are_refused(db, raw):
    with pytest.raises(CursorError, match="is not a position in this list"):
        paginate(CommandLock.objects.all(), keys=("-acquired_at", "-name"), size=3, cursor=raw)


def test_a_cursor_with_any_offset_is_read_in_utc(locks):
    # PostgreSQL takes offsets up to 15:59 only: the position is compared in UTC.
    raw = _raw('[{"dt":"2026-06-11T14:30:00-23:59"},"job-05"]')
    keyset = Keyset(CommandLock, ("-acquired_at", "-name"))
    moment, _name = keyset.decode(raw)
    assert moment == datetime(2026, 6, 12, 14, 29, tzinfo=UTC)
    assert moment.utcoffset() == timedelta(0)
    assert len(paginate(CommandLock.objects.all(), keys=keyset.keys, size=3, cursor=raw).items) == 3


@pytest.mark.parametrize("tagged", ['{"dec":"NaN"}', '{"dec":"-Infinity"}', '{"f":"nan"}'])
def test_numbers_that_are_not_finite_are_refused(tagged):
    from core.paging import _untag

    with pytest.raises(ValueError, match="not a finite"):
        _untag(json.loads(tagged))
