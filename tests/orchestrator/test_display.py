"""The dashboard's one way to write times and counts (orchestrator.templatetags.display)."""

from datetime import UTC, datetime

from django.template import Context, Template
from django.utils import timezone

from orchestrator.templatetags.display import count, stamp, stamp_text

MOMENT = datetime(2026, 12, 7, 14, 3, 9, 654321, tzinfo=UTC)


def test_a_time_is_to_the_second_with_its_zone_named_and_the_utc_instant_in_the_markup():
    assert stamp_text(MOMENT) == "2026-12-07 14:03:09 UTC"
    assert str(stamp(MOMENT)) == (
        '<time datetime="2026-12-07T14:03:09Z" title="2026-12-07 14:03:09 UTC">'
        "2026-12-07 14:03:09 UTC</time>"
    )


def test_in_another_display_zone_the_text_moves_and_the_instant_stays():
    with timezone.override("Europe/Berlin"):
        html = str(stamp(MOMENT))
    assert ">2026-12-07 15:03:09 CET</time>" in html
    assert 'datetime="2026-12-07T14:03:09Z"' in html
    assert 'title="2026-12-07 14:03:09 UTC"' in html


def test_a_naive_time_is_read_as_utc_and_a_missing_one_is_blank():
    assert ">2026-12-07 14:03:09 UTC<" in str(stamp(MOMENT.replace(tzinfo=None)))
    assert stamp(None) == "" and stamp_text(None) == "" and stamp("soon") == ""


def test_counts_are_thousands_separated_and_a_capped_count_says_so():
    assert count(12480) == "12,480"
    assert count(0) == "0"
    assert count(None) == ""
    assert count(10_000, 10_000) == "10,000"  # exactly the cap: exact
    assert count(10_001, 10_000) == "10,000+"  # capped_count read one more: "more"


def test_the_filters_in_a_template():
    rendered = Template("{% load display %}{{ n|count:cap }} · {{ t|stamp_text }}").render(
        Context({"n": 1234567, "cap": 10_000, "t": MOMENT})
    )
    assert rendered == "10,000+ · 2026-12-07 14:03:09 UTC"
