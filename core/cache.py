"""The database cache, storing JSON instead of pickles.

Django's DatabaseCache unpickles every row it reads: whoever can write to the
cache table (an SQL injection, a leaked database password, a restored dump)
then runs code in the web process, which holds AUDIT_SIGNING_KEY. This backend
keeps the same table and SQL but writes values as tagged JSON, and a row it
reads back is only ever parsed as JSON: a planted pickle, bad JSON or an
unknown tag is a cache miss (the row is deleted and a warning logged).

Besides JSON's own types it stores datetime, date, time, timedelta, Decimal,
UUID, tuple, set, frozenset, Counter, dicts with non-string keys, safe strings (drawn
SVG) and instances of dataclasses registered with `register_cacheable`.
Those are rebuilt with `cls(**fields)` after the tag is looked up in the
registry; a class name read from the database is never imported. A value it
cannot store raises TypeError at `set`, so a test shows it at once.
"""

import contextlib
import dataclasses
import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.db import DatabaseCache
from django.db import DatabaseError, connections, models, router, transaction
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.safestring import SafeData, SafeString, mark_safe
from django.utils.timezone import now as tz_now

logger = logging.getLogger(__name__)

# Written before the JSON text. Pickled rows are base64 and never contain ":",
# so rows written by Django's backend fail fast as misses.
PREFIX = "json1:"
TAG = "__cache__"

_REGISTRY: dict[str, Any] = {}  # tag -> dataclass


def _tag_of(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_cacheable[C: type](cls: C) -> C:
    """Allow instances of the dataclass `cls` in the cache (usable as a decorator).

    Its fields must themselves be cacheable values."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"register_cacheable takes a dataclass, not {cls!r}")
    _REGISTRY[_tag_of(cls)] = cls
    return cls


class UndecodableValue(ValueError):
    """A cache row that is not a value this backend wrote."""


def _tagged(tag: str, payload: Any) -> dict[str, Any]:
    return {TAG: tag, "v": payload}


def _encode(value: Any) -> Any:
    """`value` as plain JSON data, tagging what JSON cannot say itself."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, SafeData) and isinstance(value, str):
        # HTML the page shows unescaped (drawn charts): signed, so a row planted
        # by someone who can write the table but not read SECRET_KEY is a miss.
        return _tagged("safe", [str(value), _safe_mac(str(value))])
    # Subclasses (TextChoices, IntegerChoices) come back as the plain value.
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, list):
        return [_encode(item) for item in value]
    if type(value) is Counter:
        return _tagged("counter", [[_encode(k), _encode(v)] for k, v in value.items()])
    if type(value) is dict:
        if all(type(k) is str for k in value) and TAG not in value:
            return {k: _encode(v) for k, v in value.items()}
        return _tagged("dict", [[_encode(k), _encode(v)] for k, v in value.items()])
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return _tagged("tuple", [_encode(item) for item in value])
    if isinstance(value, (set, frozenset)):
        return _tagged(type(value).__name__, [_encode(item) for item in value])
    if type(value) is datetime:
        return _tagged("datetime", value.isoformat())
    if type(value) is date:
        return _tagged("date", value.isoformat())
    if type(value) is time:
        return _tagged("time", value.isoformat())
    if type(value) is timedelta:
        return _tagged("timedelta", [value.days, value.seconds, value.microseconds])
    if type(value) is Decimal:
        return _tagged("decimal", str(value))
    if type(value) is UUID:
        return _tagged("uuid", str(value))
    tag = _tag_of(type(value))
    cls = _REGISTRY.get(tag)
    if cls is type(value):
        init = {f.name for f in dataclasses.fields(cls) if f.init}
        fields = {name: _encode(getattr(value, name)) for name in init}
        # Attributes set after construction (a report's drawn chart.svg) travel too.
        extra = {k: _encode(v) for k, v in getattr(value, "__dict__", {}).items() if k not in init}
        return _tagged("dataclass", {"cls": tag, "fields": fields, "extra": extra})
    raise TypeError(
        f"{type(value).__qualname__} cannot be stored in the cache: it takes JSON types, "
        "datetime/date/time/timedelta/Decimal/UUID/tuple/set, and dataclasses registered "
        "with core.cache.register_cacheable"
    )


def _decode_dataclass(payload: Any) -> Any:
    cls = _REGISTRY.get(payload["cls"]) if isinstance(payload, dict) else None
    if cls is None:
        raise UndecodableValue("not a registered dataclass")
    fields, extra = payload["fields"], payload["extra"]
    if not isinstance(fields, dict) or not isinstance(extra, dict):
        raise UndecodableValue("malformed dataclass")
    obj = cls(**{name: _decode(v) for name, v in fields.items()})
    for name, v in extra.items():
        if not name.isidentifier() or name.startswith("__"):
            raise UndecodableValue(f"bad attribute name {name!r}")
        # object.__setattr__: frozen dataclasses refuse setattr.
        object.__setattr__(obj, name, _decode(v))
    return obj


def _safe_mac(text: str) -> str:
    return salted_hmac("core.cache.safe-text", text, algorithm="sha256").hexdigest()


def _decode_safe(payload: list[Any]) -> SafeString:
    if len(payload) != 2:
        raise UndecodableValue("malformed safe text")
    text, mac = _str(payload[0]), _str(payload[1])
    if not constant_time_compare(mac, _safe_mac(text)):
        raise UndecodableValue("safe text without a valid signature")
    return mark_safe(text)


def _decode_dict(pairs: Any) -> dict[Any, Any]:
    return {_decode(k): _decode(v) for k, v in pairs}


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "safe": lambda v: _decode_safe(list(_list(v))),
    "dict": _decode_dict,
    "counter": lambda v: Counter(_decode_dict(v)),
    "tuple": lambda v: tuple(_decode(item) for item in _list(v)),
    "set": lambda v: {_decode(item) for item in _list(v)},
    "frozenset": lambda v: frozenset(_decode(item) for item in _list(v)),
    "datetime": lambda v: datetime.fromisoformat(_str(v)),
    "date": lambda v: date.fromisoformat(_str(v)),
    "time": lambda v: time.fromisoformat(_str(v)),
    "timedelta": lambda v: timedelta(*v),
    "decimal": lambda v: Decimal(_str(v)),
    "uuid": lambda v: UUID(_str(v)),
    "dataclass": _decode_dataclass,
}


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise UndecodableValue("expected a string")
    return value


def _list(value: Any) -> Iterable[Any]:
    if not isinstance(value, list):
        raise UndecodableValue("expected a list")
    return value


def _decode(data: Any) -> Any:
    if isinstance(data, list):
        return [_decode(item) for item in data]
    if isinstance(data, dict):
        if TAG not in data:
            return {k: _decode(v) for k, v in data.items()}
        decoder = _DECODERS.get(data[TAG])
        if decoder is None or set(data) != {TAG, "v"}:
            raise UndecodableValue(f"unknown tag {data[TAG]!r}")
        return decoder(data["v"])
    return data


def dumps(value: Any) -> str:
    """The text stored for `value`; TypeError when it cannot be stored."""
    return PREFIX + json.dumps(_encode(value), separators=(",", ":"))


def loads(text: str) -> Any:
    """The value `dumps` wrote; UndecodableValue for anything else. Only parses JSON."""
    if not text.startswith(PREFIX):
        raise UndecodableValue("not written by core.cache")
    try:
        return _decode(json.loads(text.removeprefix(PREFIX)))
    except UndecodableValue:
        raise
    # Whatever a crafted row makes a constructor raise: still only a miss.
    except Exception as exc:  # noqa: BLE001
        raise UndecodableValue(f"{type(exc).__name__}: {exc}") from None


@contextlib.contextmanager
def _lazy_commit(connection: Any) -> Iterator[None]:
    """A transaction whose commit need not reach the disk: a lost count is a few
    requests more in one window, not worth an fsync (on PostgreSQL also a row
    lock held through one, which serialized every request of an API key).

    Inside a caller's transaction it is a savepoint, so a failed statement
    leaves the caller's transaction usable; the commit is the caller's."""
    if not connection.get_autocommit():
        with transaction.atomic(using=connection.alias):
            yield
    elif connection.vendor == "postgresql":
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO off")
            yield
    elif connection.vendor == "sqlite":
        # The backend's group commit skips this commit's fsync; WAL frames are
        # appended in order, so the next durable commit syncs this one's too.
        queue = getattr(connection, "writer_queue", contextlib.nullcontext)
        lazy = getattr(connection, "lazy_commits", contextlib.nullcontext)
        with lazy(), queue():
            yield
    else:
        yield


# add() counts the table (to cull it) on about one call in this many, not on each.
CULL_CHECK_EVERY = 100


class JSONDatabaseCache(DatabaseCache):
    """DatabaseCache with `dumps`/`loads` in place of pickle (same table, same SQL).

    get_many and _base_set are Django 6.1's with only the (de)serialisation
    changed: the originals call pickle inline, so they cannot be reused.

    add and incr are single statements: the rate limits (django-ratelimit: an
    add, then an incr, on every API request) took two write transactions, two
    COUNT(*)s of the table and two durable commits per request through Django's
    versions, and serialized the lead API on the counter's row."""

    @contextlib.contextmanager
    def lazily(self) -> Iterator[None]:
        """The writes inside commit without waiting for the disk, as one transaction:
        for values that are recomputed when lost (the dashboard's figures), where a
        durable commit per write made a cold page wait for several fsyncs."""
        connection = connections[router.db_for_write(self.cache_model_class)]
        with _lazy_commit(connection):
            yield

    def add(
        self,
        key: Any,
        value: Any,
        timeout: float | None = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> bool:
        key = self.make_and_validate_key(key, version=version)
        encoded = dumps(value)
        db = router.db_for_write(self.cache_model_class)
        connection = connections[db]
        quote_name = connection.ops.quote_name
        table = quote_name(self._table)  # type: ignore[attr-defined]
        ck, value_col, expires_col = map(quote_name, ("cache_key", "value", "expires"))
        now = tz_now().replace(microsecond=0)
        backend_timeout = self.get_backend_timeout(timeout)
        exp = (
            datetime.max
            if backend_timeout is None
            else datetime.fromtimestamp(backend_timeout, tz=UTC if settings.USE_TZ else None)
        ).replace(microsecond=0)
        adapt = connection.ops.adapt_datetimefield_value
        if random.random() < 1 / CULL_CHECK_EVERY:
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT COUNT(*) FROM {table}")
                num = cursor.fetchone()[0]
                if num > self._max_entries:
                    self._cull(db, cursor, now, num)  # type: ignore[attr-defined]
        # A live row is the usual answer (a rate limit adds its window's key on
        # every request): found by a read, without queueing for SQLite's write lock.
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT 1 FROM {table} WHERE {ck} = %s AND {expires_col} >= %s",
                [key, adapt(now)],
            )
            if cursor.fetchone() is not None:
                return False
        try:
            with _lazy_commit(connection), connection.cursor() as cursor:
                # Inserted, or taking the place of an expired row; a live row stays.
                cursor.execute(
                    f"INSERT INTO {table} ({ck}, {value_col}, {expires_col}) "
                    f"VALUES (%s, %s, %s) ON CONFLICT ({ck}) DO UPDATE "
                    f"SET {value_col} = EXCLUDED.{value_col}, "
                    f"{expires_col} = EXCLUDED.{expires_col} "
                    f"WHERE {table}.{expires_col} < %s",
                    [key, encoded, adapt(exp), adapt(now)],
                )
                added = cursor.rowcount == 1
        except DatabaseError:
            return False  # as Django's add: a failed write is "not added"
        return added

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """One UPDATE ... RETURNING for a live whole-number value; anything else
        (missing, expired, not an integer) takes Django's path and its errors."""
        if type(delta) is not int:
            return super().incr(key, delta, version)
        made = self.make_and_validate_key(key, version=version)
        db = router.db_for_write(self.cache_model_class)
        connection = connections[db]
        quote_name = connection.ops.quote_name
        table = quote_name(self._table)  # type: ignore[attr-defined]
        ck, value_col, expires_col = map(quote_name, ("cache_key", "value", "expires"))
        digits = f"SUBSTR({value_col}, {len(PREFIX) + 1})"
        if connection.vendor == "postgresql":
            is_count = f"{digits} ~ '^[0-9]{{1,18}}$'"
        else:
            is_count = f"LENGTH({digits}) BETWEEN 1 AND 18 AND {digits} NOT GLOB '*[^0-9]*'"
        now = connection.ops.adapt_datetimefield_value(tz_now())
        sql = (
            f"UPDATE {table} SET {value_col} = %s || "
            f"CAST(CAST({digits} AS BIGINT) + %s AS VARCHAR(20)) "
            f"WHERE {ck} = %s AND {expires_col} >= %s "
            f"AND {value_col} LIKE %s AND {is_count} RETURNING {value_col}"
        )
        params: list[Any] = [PREFIX, delta, made, now, f"{PREFIX}%"]
        with _lazy_commit(connection), connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        if row is None:
            return super().incr(key, delta, version)
        return loads(connection.ops.process_clob(row[0]))

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        keys = list(keys)
        if not keys:
            return {}

        key_map = {self.make_and_validate_key(key, version=version): key for key in keys}

        db = router.db_for_read(self.cache_model_class)
        connection = connections[db]
        quote_name = connection.ops.quote_name
        table = quote_name(self._table)  # type: ignore[attr-defined]
        ck = quote_name("cache_key")

        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {ck}, {quote_name('value')}, {quote_name('expires')} FROM {table} "
                f"WHERE {ck} IN ({', '.join(['%s'] * len(key_map))})",
                list(key_map),
            )
            rows = cursor.fetchall()

        result = {}
        dropped_keys = []
        expression = models.Expression(output_field=models.DateTimeField())
        converters = connection.ops.get_db_converters(expression) + expression.get_db_converters(
            connection
        )
        for key, value, expires in rows:
            for converter in converters:
                expires = converter(expires, expression, connection)
            if expires < tz_now():
                dropped_keys.append(key)
                continue
            try:
                result[key_map.get(key)] = loads(connection.ops.process_clob(value))
            except UndecodableValue as exc:
                # A pickle from Django's backend, or a planted row: a miss, never run.
                logger.warning("Dropped cache row %r that does not decode: %s", key, exc)
                dropped_keys.append(key)
        self._base_delete_many(dropped_keys)  # type: ignore[attr-defined]
        return result

    def _base_set(
        self, mode: str, key: str, value: Any, timeout: float | None = DEFAULT_TIMEOUT
    ) -> bool:
        # Encode first: a value that cannot be stored is the caller's bug, so it
        # raises here rather than being swallowed as a failed write.
        encoded = dumps(value)
        timeout = self.get_backend_timeout(timeout)
        db = router.db_for_write(self.cache_model_class)
        connection = connections[db]
        quote_name = connection.ops.quote_name
        table = quote_name(self._table)  # type: ignore[attr-defined]
        ck, value_col, expires_col = map(quote_name, ("cache_key", "value", "expires"))

        with connection.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {table}")
            num = cursor.fetchone()[0]
            now = tz_now()
            now = now.replace(microsecond=0)
            if timeout is None:
                exp = datetime.max
            else:
                tz = UTC if settings.USE_TZ else None
                exp = datetime.fromtimestamp(timeout, tz=tz)
            exp = exp.replace(microsecond=0)
            if num > self._max_entries:
                self._cull(db, cursor, now, num)  # type: ignore[attr-defined]
            try:
                with transaction.atomic(using=db):
                    cursor.execute(
                        f"SELECT {ck}, {expires_col} FROM {table} WHERE {ck} = %s", [key]
                    )
                    result = cursor.fetchone()

                    if result:
                        current_expires = result[1]
                        expression = models.Expression(output_field=models.DateTimeField())
                        for converter in connection.ops.get_db_converters(
                            expression
                        ) + expression.get_db_converters(connection):
                            current_expires = converter(current_expires, expression, connection)

                    adapted_exp = connection.ops.adapt_datetimefield_value(exp)
                    if result and mode == "touch":
                        cursor.execute(
                            f"UPDATE {table} SET {expires_col} = %s WHERE {ck} = %s",
                            [adapted_exp, key],
                        )
                    elif result and (mode == "set" or (mode == "add" and current_expires < now)):
                        cursor.execute(
                            f"UPDATE {table} SET {value_col} = %s, {expires_col} = %s "
                            f"WHERE {ck} = %s",
                            [encoded, adapted_exp, key],
                        )
                    elif mode != "touch":
                        cursor.execute(
                            f"INSERT INTO {table} ({ck}, {value_col}, {expires_col}) "
                            "VALUES (%s, %s, %s)",
                            [key, encoded, adapted_exp],
                        )
                    else:
                        return False  # touch failed.
            except DatabaseError:
                # As Django's: concurrent inserts of one key may fail, silently.
                return False
            else:
                return True


__all__ = ["JSONDatabaseCache", "UndecodableValue", "dumps", "loads", "register_cacheable"]
