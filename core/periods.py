"""The global date range every dashboard widget follows.

It travels in the query string (`range=24h|7d|30d|90d|custom`, with `since`
and `until` for custom), so a URL always reproduces what it showed. Buckets
follow the span: hours up to two days, days up to a month and a half, weeks
beyond.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.http import HttpRequest, QueryDict
from django.utils import timezone

PRESETS: dict[str, timedelta] = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
DEFAULT = "7d"
MAX_CUSTOM = timedelta(days=3 * 366)
# A custom range lies within these bounds: the trail starts well after the first, and
# date arithmetic near year 1 or 9999 (a previous period, a bucket's end) overflows.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
UNITS: dict[str, timedelta] = {
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(weeks=1),
}


class PeriodError(ValueError):
    """A range the user asked for that cannot be shown; the message says why."""


@dataclass(frozen=True)
class Period:
    key: str  # a preset name or "custom"
    start: datetime  # inclusive, aware
    end: datetime  # exclusive, aware

    @property
    def span(self) -> timedelta:
        return self.end - self.start

    @property
    def until_inclusive(self) -> datetime:
        return self.end - timedelta(microseconds=1)

    @property
    def unit(self) -> str:
        if self.span <= timedelta(days=2):
            return "hour"
        if self.span <= timedelta(days=45):
            return "day"
        return "week"

    @property
    def step(self) -> timedelta:
        return UNITS[self.unit]

    def bucket_of(self, moment: datetime) -> datetime:
        """Start of the bucket holding `moment` (UTC hours, days, ISO weeks)."""
        moment = moment.astimezone(UTC)
        if self.unit == "hour":
            return moment.replace(minute=0, second=0, microsecond=0)
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.unit == "day":
            return day
        return day - timedelta(days=day.weekday())

    def buckets(self) -> list[datetime]:
        """Start of every bucket that overlaps the period, oldest first."""
        out = []
        current = self.bucket_of(self.start)
        while current < self.end:
            out.append(current)
            current += self.step
        return out

    def previous(self) -> "Period":
        """The period of the same length just before this one (for KPI changes)."""
        return Period(key=self.key, start=self.start - self.span, end=self.start)

    def query(self) -> dict[str, str]:
        """Query-string parameters that reproduce this period."""
        if self.key != "custom":
            return {"range": self.key}
        if _is_midnight(self.start) and _is_midnight(self.end):
            return {
                "range": "custom",
                "since": self.start.date().isoformat(),
                "until": (self.end - timedelta(days=1)).date().isoformat(),
            }
        # A range narrowed to a chart bucket is not whole days: as dates it
        # would come back as other days (or as an end before its start).
        return self.narrowed(self.start, self.end)

    def narrowed(self, start: datetime, end: datetime) -> dict[str, str]:
        """Query parameters for a sub-range (a clicked chart bucket), as absolute times."""
        return {"range": "custom", "since": _iso(start), "until": _iso(end)}

    @property
    def label(self) -> str:
        if self.key in PRESETS:
            return f"last {self.key}"
        return f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC"


def _is_midnight(moment: datetime) -> bool:
    return moment.astimezone(UTC).time() == time.min


def _iso(moment: datetime) -> str:
    """The exact moment in UTC, as short as exactness allows (minutes when whole)."""
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.isoformat()
    return moment.isoformat(timespec="seconds" if moment.second else "minutes")


def _parse_bound(value: str, *, field: str, end: bool) -> datetime:
    """A date (whole day, `until` inclusive) or an ISO datetime (exact), in UTC."""
    value = value.strip()
    out_of_range = PeriodError(
        f"{field} must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}, not {value!r}"
    )
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime.combine(day, time.min, tzinfo=UTC)
            if end:
                moment += timedelta(days=1)
        else:
            moment = datetime.fromisoformat(value)
            if timezone.is_naive(moment):
                moment = moment.replace(tzinfo=UTC)
            # PostgreSQL takes offsets up to 15:59 only; UTC is what every query uses.
            moment = moment.astimezone(UTC)
    except OverflowError:
        raise out_of_range from None
    except ValueError:
        raise PeriodError(
            f"{field} must be a date (YYYY-MM-DD) or a date and time, not {value!r}"
        ) from None
    if not EARLIEST <= moment <= LATEST:
        raise out_of_range
    return moment


def period_from_query(params: QueryDict, *, now: datetime | None = None) -> Period:
    now = now or timezone.now()
    key = params.get("range") or DEFAULT
    if key in PRESETS:
        return Period(key=key, start=now - PRESETS[key], end=now)
    if key != "custom":
        raise PeriodError(f"range must be one of {', '.join([*PRESETS, 'custom'])}, not {key!r}")
    since, until = params.get("since", ""), params.get("until", "")
    if not since or not until:
        raise PeriodError("a custom range needs both since and until")
    start = _parse_bound(since, field="since", end=False)
    end = _parse_bound(until, field="until", end=True)
    if end <= start:
        raise PeriodError("until must be after since")
    if end - start > MAX_CUSTOM:
        raise PeriodError("a custom range can span at most three years")
    return Period(key="custom", start=start, end=end)


def period_from_request(request: HttpRequest) -> Period:
    """The request's period; a bad one raises PeriodError (views answer 400)."""
    return period_from_query(request.GET)
