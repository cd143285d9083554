"""Date arguments for the audit commands: ISO dates or datetimes, UTC unless a zone is given."""

from datetime import UTC, datetime

from django.core.management.base import CommandError


def parse_when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(
            f"{option}: {value!r} is not a date (use YYYY-MM-DD or an ISO 8601 datetime)"
        ) from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts
