import base64
import json
import os
import pickle
import threading
import uuid
from collections import Counter, defaultdict, namedtuple
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.core.cache.backends.db import DatabaseCache
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

from core.cache import PREFIX, TAG, dumps, loads, register_cacheable
from leads.intake.apikeys import api_key_create

TABLE = "orchestrator_cache"


@register_cacheable
@dataclass(frozen=True)
class Point:
    x: int
    y: Decimal


@register_cacheable
@dataclass
class Shape:
    name: str
    points: list[Point]
    tags: set[str] = field(default_factory=set)


@dataclass
class Unregistered:
    x: int


class Exploit:
    """Unpickling it runs a shell command, as a planted row would."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.fixture(autouse=True)
def _clear_cache(db):
    cache.clear()


def plant(key, text):
    """A row written behind the backend's back, as an attacker with SQL access would."""
    expires = connection.ops.adapt_datetimefield_value(datetime(2999, 1, 1, tzinfo=UTC))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (cache_key, value, expires) VALUES (%s, %s, %s)",
            [cache.make_key(key), text, expires],
        )


def row_exists(key):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {TABLE} WHERE cache_key = %s", [cache.make_key(key)])
        return cursor.fetchone() is not None


def planted_pickle(path):
    return base64.b64encode(pickle.dumps(Exploit(path))).decode()


# --- Round trips ---------------------------------------------------------------------------

VALUES = [
    None,
    True,
    False,
    0,
    -7,
    2**70,
    1.5,
    "text",
    "",
    [1, "a", None, [2.5]],
    {"a": 1, "b": {"c": [True]}},
    datetime(2026, 5, 4, 10, 0, 17, 123456, tzinfo=UTC),
    datetime(2026, 5, 4, 10, 0),
    date(2026, 5, 4),
    time(10, 0, 17),
    timedelta(days=2, seconds=3, microseconds=4),
    Decimal("12.3400"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    (1, ("nested", datetime(2026, 1, 1, tzinfo=UTC))),
    {1, 2},
    frozenset({"a"}),
    Counter({"lead_ingested": 3, "error": 1}),
    {1: "int keys", (2, 3): "tuple keys", date(2026, 1, 1): "date keys"},
    {TAG: "a user key that looks like a tag"},
    Point(1, Decimal("2.5")),
    Shape("triangle", [Point(0, Decimal(0)), Point(1, Decimal(1))], {"red"}),
    [(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))],
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_supported_values_round_trip_with_their_types(value):
    cache.set("value", value)
    got = cache.get("value")
    assert got == value
    assert type(got) is type(value)
    if isinstance(value, list | tuple):
        assert [type(v) for v in got] == [type(v) for v in value]


def test_stored_text_is_json_not_a_pickle():
    cache.set("value", Shape("s", [Point(1, Decimal(1))]))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT value FROM {TABLE}")
        (text,) = cursor.fetchone()
    assert text.startswith(PREFIX)
    json.loads(text.removeprefix(PREFIX))


def test_attributes_set_after_construction_survive():
    # The reports view caches a Report whose charts got their `svg` after building.
    shape = Shape("s", [])
    shape.svg = mark_safe("<svg></svg>")
    cache.set("shape", shape)
    got = cache.get("shape")
    assert got.svg == "<svg></svg>"
    assert isinstance(got.svg, SafeString)


def test_choices_and_other_str_subclasses_come_back_as_plain_values():
    from orchestrator.monitoring.reports.models import ReportKind

    cache.set("kind", ReportKind.DAILY)
    assert cache.get("kind") == ReportKind.DAILY
    assert type(cache.get("kind")) is str


def test_incr_add_and_touch_work():
    assert cache.add("n", 1, 60)
    assert not cache.add("n", 5, 60)
    assert cache.incr("n") == 2
    assert cache.incr("n", 10) == 12
    assert cache.touch("n", 120)
    assert cache.get("n") == 12
    assert cache.get_many(["n", "missing"]) == {"n": 12}


def _expire(key):
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET expires = %s WHERE cache_key = %s",
            [
                connection.ops.adapt_datetimefield_value(datetime(2000, 1, 1, tzinfo=UTC)),
                cache.make_key(key),
            ],
        )


def test_add_takes_the_place_of_an_expired_row_only():
    assert cache.add("k", 1, 60)
    assert not cache.add("k", 2, 60)
    assert cache.get("k") == 1
    _expire("k")
    assert cache.add("k", 3, 60)
    assert cache.get("k") == 3


def test_incr_is_one_update_and_keeps_djangos_errors():
    cache.set("n", 41, 60)
    with CaptureQueriesContext(connection) as queries:
        assert cache.incr("n") == 42
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(writes) == 1 and "RETURNING" in writes[0]
    assert cache.incr("n", -40) == 2
    with pytest.raises(ValueError, match="not found"):
        cache.incr("missing")
    _expire("n")
    with pytest.raises(ValueError, match="not found"):
        cache.incr("n")
    cache.set("text", "41", 60)  # a string of digits is not a count: Django's TypeError
    with pytest.raises(TypeError):
        cache.incr("text")
    cache.set("big", 10**18, 60)  # past what the SQL path adds safely: Django's path
    assert cache.incr("big") == 10**18 + 1
    cache.set("float", 1.5, 60)
    assert cache.incr("float") == 2.5


@pytest.mark.django_db(transaction=True)
def test_concurrent_increments_are_never_lost():
    cache.set("shared", 0, 600)

    def bump():
        try:
            for _ in range(100):
                cache.incr("shared")
        finally:
            connection.close()

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.get("shared") == 400


def test_incr_inside_a_transaction_commits_and_rolls_back_with_it():
    cache.set("t", 1, 60)
    with pytest.raises(RuntimeError), transaction.atomic():
        cache.incr("t")
        raise RuntimeError
    assert cache.get("t") == 1


# --- What cannot be stored raises at set -----------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        Unregistered(1),
        [1, Unregistered(2)],
        {"deep": {"er": Unregistered(3)}},
        object(),
        b"bytes",
        namedtuple("Pair", "a b")(1, 2),
        defaultdict(int),
    ],
)
def test_values_it_cannot_store_raise_type_error_at_set(value):
    with pytest.raises(TypeError, match="cannot be stored in the cache"):
        cache.set("value", value)
    assert cache.get("value") is None


def test_register_cacheable_takes_only_dataclasses():
    with pytest.raises(TypeError):
        register_cacheable(Exploit)


# --- What is read back is never executed ------------------------------------------------------


def test_the_planted_pickle_really_runs_under_djangos_backend(tmp_path):
    # The control for the next test: the payload is live.
    plant("planted", planted_pickle(tmp_path / "pwned"))
    assert DatabaseCache(TABLE, {}).get("planted") is not None
    assert (tmp_path / "pwned").exists()


def test_a_planted_pickle_is_a_miss_is_deleted_and_is_never_run(tmp_path, caplog):
    plant("planted", planted_pickle(tmp_path / "pwned"))
    assert cache.get("planted", "default") == "default"
    assert not (tmp_path / "pwned").exists()
    assert not row_exists("planted")
    assert "does not decode" in caplog.text


@pytest.mark.parametrize(
    "text",
    [
        PREFIX + "{not json",
        PREFIX + json.dumps({TAG: "pickle", "v": "gASV"}),
        # A class name is never imported: only registered dataclasses are built.
        PREFIX
        + json.dumps({TAG: "dataclass", "v": {"cls": "os.system", "fields": {}, "extra": {}}}),
        PREFIX
        + json.dumps(
            {
                TAG: "dataclass",
                "v": {"cls": "tests.core.test_cache.Unregistered", "fields": {"x": 1}, "extra": {}},
            }
        ),
        # A registered class with fields it does not take, or a dunder attribute.
        PREFIX + dumps(Point(1, Decimal(1))).removeprefix(PREFIX).replace('"x"', '"z"'),
        PREFIX
        + json.dumps(
            {
                TAG: "dataclass",
                "v": {
                    "cls": "tests.core.test_cache.Shape",
                    "fields": {"name": "s", "points": []},
                    "extra": {"__class__": "x"},
                },
            }
        ),
        PREFIX + json.dumps({TAG: "datetime", "v": 5}),
        PREFIX + json.dumps({TAG: "dict", "v": [[[1], 2]]}),  # an unhashable key
    ],
)
def test_rows_that_do_not_decode_are_misses_and_deleted(text):
    plant("bad", text)
    assert cache.get("bad", "default") == "default"
    assert not row_exists("bad")


def test_loads_only_takes_what_dumps_wrote():
    assert loads(dumps({"a": [1]})) == {"a": [1]}


# --- Rate limits and figures keep working -----------------------------------------------------


def test_rate_limit_is_shared_by_two_clients(web_source, settings):
    settings.LEADS_API_RATE = "2/m"
    _, raw = api_key_create(source=web_source, name="shared")

    def post(client, n):
        return client.post(
            reverse("leads:api-leads"),
            json.dumps({"email": f"a{n}@example.com"}),
            content_type="application/json",
            headers={"Authorization": f"Bearer {raw}"},
        )

    first, second = Client(), Client()
    assert post(first, 1).status_code == 201
    assert post(second, 2).status_code == 201
    assert post(first, 3).status_code == 429
    assert post(second, 4).status_code == 429


def test_cached_figure_is_computed_once():
    from orchestrator.dashboard.figures import CrmSyncs
    from orchestrator.dashboard.render import cached_figure

    calls = []

    def compute():
        calls.append(1)
        return [CrmSyncs(ok=3, failed=1)]

    assert cached_figure("test", 1, compute=compute) == [CrmSyncs(ok=3, failed=1)]
    assert cached_figure("test", 1, compute=compute) == [CrmSyncs(ok=3, failed=1)]
    assert len(calls) == 1


def test_safe_html_comes_back_only_with_its_signature(db, caplog):
    from django.db import connection
    from django.utils.safestring import SafeData, mark_safe

    from orchestrator.dashboard.views.overview import _cached_svg

    cache.set("chart", mark_safe("<svg>ok</svg>"))
    back = cache.get("chart")
    assert isinstance(back, SafeData) and back == "<svg>ok</svg>"

    # A writer of the table without SECRET_KEY swaps the text, keeping the old MAC.
    with connection.cursor() as cursor:
        cursor.execute("SELECT cache_key, value FROM orchestrator_cache")
        key, value = cursor.fetchone()
        forged = value.replace("<svg>ok</svg>", "<form action=//evil.example>")
        cursor.execute(
            "UPDATE orchestrator_cache SET value = %s WHERE cache_key = %s", [forged, key]
        )
    assert cache.get("chart") is None
    # And a plain string planted where a chart is cached is shown escaped, not as HTML.
    cache.set("chart", "<form action=//evil.example>")
    assert _cached_svg(cache.get("chart")) == "&lt;form action=//evil.example&gt;"


def test_migrate_alone_creates_the_cache_table(tmp_path):
    """A fresh install runs `migrate` and nothing else; the API's rate limiter
    then needs the cache table."""
    import os
    import sqlite3
    import subprocess
    import sys
    from pathlib import Path

    from django.conf import settings

    database = tmp_path / "fresh.sqlite3"
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "DATABASE_URL": f"sqlite:///{database}"},
        check=True,
    )
    table = settings.CACHES["default"]["LOCATION"]
    with sqlite3.connect(database) as db:
        found = db.execute("SELECT name FROM sqlite_master WHERE name = ?", [table]).fetchall()
    assert found == [(table,)]
