"""The error group rollups (AuditErrorHour, AuditErrorLead) give the error pages the
same answers as counting the error events themselves, whatever part is sealed, at
every kind of period edge, and after retention deleted the oldest errors."""

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from audit import error_selectors
from audit.integrity import rebuild_error_rollups, seal_pending
from audit.models import AuditErrorHour, AuditErrorLead, AuditEvent
from audit.retention import prune
from audit.services import record_event

NOW = datetime(2026, 6, 20, 12, 30, 15, tzinfo=UTC)
MESSAGES = ("timeout after 30s", "HubSpot 429 rate limited", "mailbox full", "bad address")
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def errors(clock) -> list[AuditEvent]:
    """300 errors over 12 days, four groups, twenty leads (and some without a lead),
    with ordinary events between them; about two thirds sealed."""
    rng = random.Random(7)
    made = []
    for _ in range(300):
        at = NOW - timedelta(seconds=rng.randrange(12 * 86400))
        lead = rng.choice([f"LEAD-{n:06d}" for n in range(20)] + [""])
        made.append(
            record_event(
                event_type="error",
                error_type="CrmError",
                error_message=rng.choice(MESSAGES),
                lead_id=lead,
                timestamp=at,
            )
        )
        if rng.random() < 0.3:
            record_event(event_type="lead_ingested", lead_id=lead, timestamp=at)
    # Seal in small blocks up to a point: the rest is the unsealed tail.
    while AuditEvent.objects.filter(id__lte=made[200].id).count() > _sealed():
        if seal_pending(batch=37) is None:
            break
    return made


def _sealed() -> int:
    from audit.models import AuditSeal

    return sum(AuditSeal.objects.values_list("event_count", flat=True))


def _expected(events: list[AuditEvent], since: datetime, until: datetime) -> dict:
    groups: dict[str, dict] = {}
    for e in AuditEvent.objects.exclude(fingerprint="").order_by("id"):
        if not since <= e.timestamp < until:
            continue
        g = groups.setdefault(
            e.fingerprint, {"count": 0, "leads": set(), "latest": (e.timestamp, e.id)}
        )
        g["count"] += 1
        if e.lead_public_id:
            g["leads"].add(e.lead_public_id)
        g["latest"] = max(g["latest"], (e.timestamp, e.id))
    return groups


PERIODS = [
    # A preset: ends now, starts mid-hour.
    (NOW - timedelta(days=7), NOW),
    (NOW - timedelta(hours=24), NOW),
    # Within one hour; across one hour boundary.
    (NOW - timedelta(minutes=20), NOW),
    (NOW - timedelta(minutes=50), NOW),
    # A custom range in the past, odd edges.
    (datetime(2026, 6, 10, 7, 13, tzinfo=UTC), datetime(2026, 6, 15, 22, 41, tzinfo=UTC)),
    # Whole days in the past.
    (datetime(2026, 6, 9, tzinfo=UTC), datetime(2026, 6, 12, tzinfo=UTC)),
]


@pytest.mark.parametrize(("since", "until"), PERIODS)
def test_groups_counts_leads_and_latest_match_the_events(errors, since, until):
    expected = _expected(errors, since, until)
    buckets = [since + timedelta(hours=6 * i) for i in range(4)]
    listed = error_selectors.error_groups(since=since, until=until, buckets=buckets)
    assert {g.fingerprint for g in listed} == set(expected)
    for group in listed:
        want = expected[group.fingerprint]
        assert group.count == want["count"]
        assert group.leads == len(want["leads"])
        assert (group.last_seen, group.latest_id) == want["latest"]
        assert group.first_seen == (
            AuditEvent.objects.filter(fingerprint=group.fingerprint)
            .order_by("timestamp")
            .first()
            .timestamp
        )
    assert error_selectors.error_group_count(since=since, until=until) == len(expected)


@pytest.mark.parametrize(("since", "until"), PERIODS[:2] + PERIODS[4:5])
def test_the_group_page_matches_the_events(errors, since, until):
    expected = _expected(errors, since, until)
    for fp, want in expected.items():
        summary = error_selectors.error_group(fingerprint=fp, since=since, until=until)
        assert summary is not None
        assert (summary.count, summary.leads) == (want["count"], len(want["leads"]))
        assert summary.latest.id == want["latest"][1]
        assert summary.total == AuditEvent.objects.filter(fingerprint=fp).count()

        edges = [since + (until - since) * i / 5 for i in range(5)]
        counts = error_selectors.occurrence_counts(fingerprint=fp, buckets=edges, until=until)
        assert sum(counts) == want["count"]
        bounds = [*edges[1:], until]
        for i, n in enumerate(counts):
            in_bucket = AuditEvent.objects.filter(
                fingerprint=fp, timestamp__gte=edges[i], timestamp__lt=bounds[i]
            ).count()
            # A whole hour from the rollup lands in the bucket its start is in.
            assert abs(n - in_bucket) <= AuditErrorHour.objects.filter(fingerprint=fp).count()

        rows = error_selectors.group_leads(fingerprint=fp, since=since, until=until, limit=5)
        per_lead = Counter(
            e.lead_public_id
            for e in AuditEvent.objects.filter(
                fingerprint=fp, timestamp__gte=since, timestamp__lt=until
            ).exclude(lead_public_id="")
        )
        last = {
            lead: max(
                e.timestamp
                for e in AuditEvent.objects.filter(
                    fingerprint=fp, lead_public_id=lead, timestamp__gte=since, timestamp__lt=until
                )
            )
            for lead in per_lead
        }
        newest = sorted(per_lead, key=lambda lead: (-last[lead].timestamp(), lead))[:5]
        assert [r["lead_public_id"] for r in rows] == newest
        assert [r["count"] for r in rows] == [per_lead[lead] for lead in newest]


def test_buckets_add_up_and_match_the_events_on_hour_aligned_buckets(errors):
    since = NOW.replace(minute=0, second=0) - timedelta(days=3)
    buckets = [since + timedelta(hours=12 * i) for i in range(6)]
    for group in error_selectors.error_groups(since=since, until=NOW, buckets=buckets):
        bounds = [*buckets[1:], NOW]
        assert group.counts == [
            AuditEvent.objects.filter(
                fingerprint=group.fingerprint, timestamp__gte=lo, timestamp__lt=hi
            ).count()
            for lo, hi in zip(buckets, bounds, strict=True)
        ]


def test_a_lead_hit_only_after_the_period_is_not_counted_in_it(clock):
    fp = record_event(
        event_type="error",
        error_type="CrmError",
        error_message="timeout after 30s",
        lead_id="LEAD-000001",
        timestamp=NOW - timedelta(minutes=1),
    ).fingerprint
    record_event(
        event_type="error",
        error_type="CrmError",
        error_message="timeout after 30s",
        lead_id="LEAD-000002",
        timestamp=NOW - timedelta(days=2),
    )
    while seal_pending() is not None:
        pass
    until = NOW - timedelta(minutes=5)
    [group] = error_selectors.error_groups(since=NOW - timedelta(days=7), until=until)
    assert (group.count, group.leads) == (1, 1)
    assert error_selectors.leads_hit([fp], since=NOW - timedelta(days=7), until=until) == {fp: 1}


def _rollup_rows() -> tuple[list, list]:
    hours = sorted(
        AuditErrorHour.objects.values_list("hour", "fingerprint", "count", "last_seen", "last_id")
    )
    leads = sorted(
        AuditErrorLead.objects.values_list("fingerprint", "lead_public_id", "count", "last_seen")
    )
    return hours, leads


def test_the_sealer_keeps_what_a_rebuild_would_count(errors):
    kept = _rollup_rows()
    assert kept[0] and kept[1]
    rebuild_error_rollups(batch=17)
    assert _rollup_rows() == kept


def test_retention_takes_the_deleted_errors_out_of_the_rollups(errors, clock):
    before = NOW - timedelta(days=6)
    result = prune(before=before)
    assert result.deleted > 0
    after_prune = _rollup_rows()
    rebuild_error_rollups()
    assert _rollup_rows() == after_prune
    since = NOW - timedelta(days=12)
    expected = _expected(errors, since, NOW)
    listed = error_selectors.error_groups(since=since, until=NOW)
    assert {g.fingerprint: (g.count, g.leads) for g in listed} == {
        fp: (want["count"], len(want["leads"])) for fp, want in expected.items()
    }
