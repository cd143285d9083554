"""JSON from outside, read as both databases can store it.

The lead API, the events API and the legacy import read JSON written by
others; each must refuse what PostgreSQL or SQLite would refuse later (or
store differently), with a message, rather than fail in the database.
"""

import json
import math
from typing import Any


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e999 parses to inf, which neither database's JSON column accepts.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _finite_number(text: str) -> float | int:
    value = _finite_float(text)
    return int(value) if value.is_integer() else value


def _hooks(fold: bool) -> dict[str, Any]:
    return {
        "parse_constant": _reject_constant,
        "parse_float": _finite_number if fold else _finite_float,
    }


# Built once: json.loads with hooks builds a decoder per call.
_DECODERS = {fold: json.JSONDecoder(**_hooks(fold)) for fold in (False, True)}


def strict_loads(raw: str | bytes, *, integral_floats_as_int: bool = False) -> Any:
    """json.loads refusing NaN, Infinity and numbers out of range: ValueError
    (json.JSONDecodeError for malformed text), RecursionError when nested too deep.

    integral_floats_as_int: 2.0 reads as 2, as a PostgreSQL jsonb round trip
    gives it back (audit.signing.normalize_json), so the result needs no
    second walk to be signed."""
    if isinstance(raw, str) and not raw.startswith("\ufeff"):
        return _DECODERS[integral_floats_as_int].decode(raw)
    # json.loads detects a byte string's encoding and names a BOM.
    return json.loads(raw, **_hooks(integral_floats_as_int))


def storable_text(value: str) -> bool:
    """Whether a database can store and compare `value`: PostgreSQL refuses NUL in
    text and jsonb, and a lone surrogate (valid as a JSON escape) has no UTF-8
    encoding on either database."""
    return "\x00" not in value and not any("\ud800" <= char <= "\udfff" for char in value)
