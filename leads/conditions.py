"""The condition language shared by scoring rules and routing rules.

A condition reads one field of a lead (a model field, `score`, `source`, or
`extra.<key>`) and tests it with one operator. Strings compare without
regard to case unless the condition says `case_sensitive`.
"""

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from leads.models import Lead

OPERATORS = ("equals", "in", "contains", "regex", "exists", "range", "email_domain_in")


def field_value(lead: Lead, name: str) -> Any:
    if name.startswith("extra."):
        return (lead.extra or {}).get(name.removeprefix("extra."))
    if name == "source":
        return lead.source.slug if lead.source_id else None
    if name == "email_domain":
        return email_domain(lead.email)
    return getattr(lead, name, None)


def email_domain(email: str) -> str:
    return email.rpartition("@")[2].lower()


def domain_in(domain: str, domains: Sequence[str] | set[str]) -> bool:
    """The domain or any parent of it is listed (mail.corp.example matches corp.example)."""
    parts = domain.lower().split(".")
    return any(".".join(parts[i:]) in domains for i in range(len(parts) - 1))


@lru_cache(maxsize=256)
def _regex(pattern: str, flags: int) -> re.Pattern[str]:
    return re.compile(pattern, flags)


def _fold(value: Any, case_sensitive: bool) -> Any:
    return value if case_sensitive or not isinstance(value, str) else value.casefold()


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def evaluate(condition: Mapping[str, Any], lead: Lead) -> bool:
    op = condition["op"]
    value = field_value(lead, condition["field"])
    cs = bool(condition.get("case_sensitive", False))
    expected = condition.get("value")
    if op == "exists":
        return value not in (None, "", [], {})
    if value is None:
        return False
    if op == "equals":
        return _fold(value, cs) == _fold(expected, cs)
    if op == "in":
        return _fold(value, cs) in {_fold(v, cs) for v in expected}
    if op == "contains":
        return _fold(str(expected), cs) in _fold(str(value), cs)
    if op == "regex":
        return _regex(expected, 0 if cs else re.IGNORECASE).search(str(value)) is not None
    if op == "range":
        number = _number(value)
        if number is None:
            return False
        low, high = condition.get("min"), condition.get("max")
        return (low is None or number >= low) and (high is None or number <= high)
    if op == "email_domain_in":
        return domain_in(email_domain(str(value)), {d.lower() for d in expected})
    raise ValueError(f"unknown condition operator {op!r}")


def matches(when: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None, lead: Lead) -> bool:
    """All conditions hold (no conditions: always)."""
    if not when:
        return True
    conditions = [when] if isinstance(when, Mapping) else list(when)
    return all(evaluate(c, lead) for c in conditions)
