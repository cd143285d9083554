"""Keyset paging: one page of an ordered queryset after an opaque cursor.

A page starts after the last row of the previous one, named by the values of
the ordering's key fields (which must end in a unique field, such as the id).
The query is the row-value comparison `(ts, id) < (x, y)` spelled as
`ts <= x AND (ts < x OR (ts = x AND id < y))`, an index range on the composite
(ts, id) index: page 10,000 costs what page 1 costs. Never OFFSET, never COUNT.

The one cursor format: urlsafe base64 (unpadded) of the canonical JSON list of
the key values, datetimes, dates, decimals and UUIDs tagged with their type,
e.g. `[{"dt":"2026-06-10T14:30:00.000001+00:00"},1234]`. A cursor that does not
decode to values of the key fields' types raises CursorError (a ValueError).
"""

import base64
import binascii
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import models
from django.db.models import Q, QuerySet

from core.jsonvalues import storable_text

# Longer than any cursor this module writes for a few keys; refused before decoding.
MAX_CURSOR_LENGTH = 512

# Field types whose values a cursor carries, and the Python type each decodes to.
_FIELD_TYPES: tuple[tuple[type[models.Field], type], ...] = (
    (models.DateTimeField, datetime),  # before DateField, its base class
    (models.DateField, date),
    (models.BooleanField, bool),
    (models.IntegerField, int),
    (models.AutoField, int),
    (models.BigAutoField, int),
    (models.DecimalField, Decimal),
    (models.FloatField, float),
    (models.UUIDField, uuid.UUID),
    (models.CharField, str),
    (models.TextField, str),
)


class CursorError(ValueError):
    """A cursor this list did not write: malformed, tampered with, or from another list."""


@dataclass(frozen=True)
class Page[T]:
    items: list[T]
    # Where the next page starts; None on the last page.
    next_cursor: str | None
    # Where this page started; None on the first page.
    cursor: str | None = None

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None

    @property
    def is_first(self) -> bool:
        return self.cursor is None


def _tag(value: Any) -> Any:
    # bool before int: True is an int too.
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return {"f": repr(value)}
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"a cursor holds aware datetimes only, not {value!r}")
        return {"dt": value.astimezone(UTC).isoformat(timespec="microseconds")}
    if isinstance(value, date):
        return {"d": value.isoformat()}
    if isinstance(value, Decimal):
        return {"dec": str(value)}
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    raise TypeError(f"a cursor cannot hold {type(value).__name__} values")


def _untag(raw: Any) -> Any:
    """The value of one JSON item; raises ValueError (or TypeError) on anything else."""
    if raw is None or isinstance(raw, bool | int | str):
        return raw
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ValueError("not a tagged value")
    ((tag, text),) = raw.items()
    if not isinstance(text, str):
        raise ValueError("a tagged value is a string")
    if tag == "dt":
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise ValueError("naive datetime")
        # The cursors written here are in UTC; PostgreSQL refuses offsets beyond 15:59.
        return moment.astimezone(UTC)
    if tag == "d":
        return date.fromisoformat(text)
    if tag == "dec":
        number = Decimal(text)
        if not number.is_finite():
            raise ValueError("not a finite decimal")
        return number
    if tag == "f":
        real = float(text)
        if not math.isfinite(real):
            raise ValueError("not a finite float")
        return real
    if tag == "uuid":
        return uuid.UUID(text)
    raise ValueError(f"unknown tag {tag!r}")


def encode_cursor(values: Sequence[Any]) -> str:
    """The cursor of a position given by the key values of its row."""
    text = json.dumps([_tag(v) for v in values], separators=(",", ":"), ensure_ascii=True)
    return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")


def _python_type(field: models.Field) -> type | None:
    for field_class, python_type in _FIELD_TYPES:
        if isinstance(field, field_class):
            return python_type
    return None


def _fits(field: models.Field, value: Any) -> bool:
    """Whether `value` can be a position on `field` (keys are never null)."""
    expected = _python_type(field)
    if value is None:
        return False
    if expected is None:
        return True
    # bool is an int and a datetime a date, but neither is a position on the other.
    if isinstance(value, bool) and expected is not bool:
        return False
    if isinstance(value, datetime) and expected is date:
        return False
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return False  # beyond any database integer: an overflow, not a 400, otherwise
    if isinstance(value, str) and not storable_text(value):
        return False
    return isinstance(value, expected)


@dataclass(frozen=True)
class Keyset:
    """The order `keys` (e.g. ("-timestamp", "-id")) of `model`, and positions in it.

    The last key must be unique, or rows tied on every key would be skipped.
    Keys are fields of the model itself and never null.
    """

    model: type[models.Model]
    keys: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a keyset needs at least one key field")
        for key in self.keys:
            self.model._meta.get_field(key.removeprefix("-"))  # FieldDoesNotExist if not

    @property
    def _fields(self) -> list[tuple[str, bool]]:
        """(field name, descending) of each key."""
        return [(key.removeprefix("-"), key.startswith("-")) for key in self.keys]

    def position(self, row: Any) -> tuple[Any, ...]:
        """The key values of a row (a model instance)."""
        return tuple(getattr(row, name) for name, _desc in self._fields)

    def encode(self, row: Any) -> str:
        return encode_cursor(self.position(row))

    def decode(self, raw: str) -> tuple[Any, ...]:
        """The position a cursor names; CursorError unless this keyset could have written it."""
        shown = raw if len(raw) <= 40 else raw[:39] + "…"
        problem = (
            f"cursor {shown!r} is not a position in this list; start again from the first page"
        )
        if not raw or len(raw) > MAX_CURSOR_LENGTH:
            raise CursorError(problem)
        try:
            text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
            items = json.loads(text.decode("ascii"))
            if not isinstance(items, list) or len(items) != len(self.keys):
                raise ValueError("wrong number of values")
            values = tuple(_untag(item) for item in items)
        except (
            binascii.Error,
            UnicodeDecodeError,
            ValueError,
            TypeError,
            InvalidOperation,
            OverflowError,
        ):
            raise CursorError(problem) from None
        for (name, _desc), value in zip(self._fields, values, strict=True):
            field = self.model._meta.get_field(name)
            if not isinstance(field, models.Field) or not _fits(field, value):
                raise CursorError(problem)
        return values

    def after(self, qs: QuerySet, position: Sequence[Any]) -> QuerySet:
        """`qs` narrowed to the rows that come after `position` in this order."""
        fields = self._fields
        condition: Q | None = None
        # Built from the last key outwards: k1 < v1 OR (k1 = v1 AND (k2 < v2 OR ...)).
        for (name, desc), value in reversed(list(zip(fields, position, strict=True))):
            beyond = Q(**{f"{name}__{'lt' if desc else 'gt'}": value})
            condition = beyond if condition is None else beyond | (Q(**{name: value}) & condition)
        first, desc = fields[0]
        # The plain bound on the first key gives the index scan its starting point;
        # the OR alone would make it walk from the start of the index.
        start = Q(**{f"{first}__{'lte' if desc else 'gte'}": position[0]})
        return qs.filter(start, condition) if len(fields) > 1 else qs.filter(condition)

    def order(self, qs: QuerySet) -> QuerySet:
        return qs.order_by(*self.keys)

    def page_of(self, rows: Sequence[Any], *, size: int, cursor: str | None = None) -> Page:
        """The page made of `rows`: up to size + 1 rows in this order, read after `cursor`
        (the extra row only tells that there is a next page)."""
        items = list(rows[:size])
        more = len(rows) > size and bool(items)
        return Page(
            items=items, next_cursor=self.encode(items[-1]) if more else None, cursor=cursor
        )

    def page(self, qs: QuerySet, *, size: int, cursor: str | None = None) -> Page:
        """Up to `size` rows of `qs` in this order, after `cursor` (None: from the start)."""
        if size < 1:
            raise ValueError(f"a page holds at least one row, not {size}")
        if cursor:
            qs = self.after(qs, self.decode(cursor))
        rows = list(self.order(qs)[: size + 1])
        return self.page_of(rows, size=size, cursor=cursor or None)


def paginate(qs: QuerySet, *, keys: Sequence[str], size: int, cursor: str | None = None) -> Page:
    """One page of `qs` in the order `keys` (the last one unique), after `cursor`.

    Raises CursorError (a ValueError) for a cursor this order did not write.
    """
    return Keyset(qs.model, tuple(keys)).page(qs, size=size, cursor=cursor)


# A list's total in its header: exact up to this many, "10,000+" beyond (the
# |count filter), so a count never reads more rows than a page of a big table.
COUNT_CAP = 10_000


def capped_count(qs: QuerySet, *, cap: int = COUNT_CAP) -> int:
    """How many rows `qs` has, reading at most cap + 1 of them (cap + 1 means "more")."""
    return qs.order_by()[: cap + 1].count()
