"""How the dashboard writes times and counts: one format for each, everywhere.

Times: "2026-12-07 14:03:09 CET" in the display time zone (TIME_ZONE), to the
second, the zone named, inside a <time> element that carries the exact
instant for machines and a title in UTC for whoever compares with a log.
Counts: thousands separated ("12,480"); a count stopped at a cap reads
"10,000+".
"""

from datetime import UTC, datetime

from django import template
from django.contrib.humanize.templatetags.humanize import intcomma
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()

STAMP_FORMAT = "%Y-%m-%d %H:%M:%S %Z"


@register.filter
def stamp_text(value: datetime | None) -> str:
    """The displayed text of a time, for places that cannot hold markup (a title)."""
    if not isinstance(value, datetime):
        return ""
    return timezone.localtime(value).strftime(STAMP_FORMAT)


@register.filter
def stamp(value: datetime | None) -> SafeString | str:
    if not isinstance(value, datetime):
        return ""
    moment = value if timezone.is_aware(value) else timezone.make_aware(value, UTC)
    utc = moment.astimezone(UTC)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        utc.isoformat(timespec="seconds").replace("+00:00", "Z"),
        utc.strftime(STAMP_FORMAT),
        stamp_text(moment),
    )


@register.filter
def count(value: int | None, cap: int | None = None) -> str:
    """12480 -> "12,480"; past a cap (a count that read cap + 1 rows, core.paging.capped_count),
    "10,000+"."""
    if value is None:
        return ""
    if cap is not None and value > int(cap):
        return f"{intcomma(int(cap))}+"
    return intcomma(value)


@register.simple_tag
def zone_name() -> str:
    """The display time zone's abbreviation now ("UTC", "CET"), for table headers."""
    return timezone.localtime().strftime("%Z")
