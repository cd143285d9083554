"""Statistics from rollups plus the unsealed tail equal a plain count over the rows."""

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.django import TestCase

from audit.integrity import seal_all
from audit.models import AuditEvent
from audit.selectors import details_contains, event_list, statistics
from audit.services import record_event

T0 = datetime(2026, 6, 1, tzinfo=UTC)
TYPES = ["lead_ingested", "lead_qualified", "error", "email_sent"]


def seed(rng: random.Random, n: int) -> None:
    for _ in range(n):
        etype = rng.choice(TYPES)
        record_event(
            event_type=etype,
            error_type="E" if etype == "error" else "",
            error_message="boom" if etype == "error" else "",
            workflow=rng.choice(["sales", "support", ""]),
            lead_id=rng.choice(["", "LEAD-000001", "LEAD-000002", "LEAD-000003"]),
            timestamp=T0 + timedelta(minutes=rng.randrange(0, 4 * 24 * 60)),
        )


def brute_force(workflow, since, until):
    qs = AuditEvent.objects.all()
    if workflow is not None:
        qs = qs.filter(workflow=workflow)
    if since:
        qs = qs.filter(timestamp__gte=since)
    if until:
        qs = qs.filter(timestamp__lt=until)
    rows = list(qs.values_list("event_type", "workflow", "timestamp"))
    return (
        Counter(r[0] for r in rows),
        Counter(r[1] for r in rows),
        Counter(r[2].astimezone(UTC).date().isoformat() for r in rows),
    )


class StatisticsMatchRows(TestCase):
    @settings(max_examples=25, deadline=None)
    @given(
        n_sealed=st.integers(0, 40),
        n_tail=st.integers(0, 15),
        start=st.integers(-60, 5 * 24 * 60),
        length=st.integers(0, 5 * 24 * 60),
        workflow=st.sampled_from([None, "sales", "support", ""]),
        open_start=st.booleans(),
        open_end=st.booleans(),
        seed_value=st.integers(0, 10_000),
    )
    def test_statistics_equal_a_count_over_rows(
        self, n_sealed, n_tail, start, length, workflow, open_start, open_end, seed_value
    ):
        rng = random.Random(seed_value)
        seed(rng, n_sealed)
        seal_all()
        seed(rng, n_tail)  # committed but not sealed yet
        since = None if open_start else T0 + timedelta(minutes=start, seconds=rng.randrange(60))
        until = None if open_end else (since or T0) + timedelta(minutes=length)
        stats = statistics(workflow=workflow, since=since, until=until)
        by_type, by_workflow, by_day = brute_force(workflow, since, until)
        assert dict(stats.by_type) == dict(by_type)
        assert {k: v for k, v in stats.by_workflow.items() if v} == dict(by_workflow)
        assert dict(stats.by_day) == dict(by_day)
        assert stats.total_events == sum(by_type.values())
        assert stats.errors == by_type.get("error", 0)


@pytest.mark.django_db
def test_keyset_pages_cover_everything_once():
    for i in range(23):
        # Pairs of equal timestamps: the id breaks the tie.
        record_event(event_type="lead_routed", timestamp=T0 + timedelta(seconds=i // 2))
    seen, before = [], None
    while True:
        page = list(event_list(event_type="lead_routed", before=before)[:5])
        if not page:
            break
        seen.extend(e.pk for e in page)
        before = (page[-1].timestamp, page[-1].pk)
    assert len(seen) == 23
    assert len(set(seen)) == 23
    expected = list(AuditEvent.objects.order_by("-timestamp", "-id").values_list("pk", flat=True))
    assert seen == expected


@pytest.mark.django_db
def test_statistics_queries_do_not_scan_the_range(django_assert_max_num_queries):
    rng = random.Random(1)
    seed(rng, 200)
    seal_all()
    # Whole hours come from the rollup: a fixed number of queries whatever the size.
    with django_assert_max_num_queries(8):
        stats = statistics(since=T0, until=T0 + timedelta(days=30))
    assert stats.total_events == 200


@pytest.mark.django_db
def test_an_actor_filter_uses_the_small_index_of_people_and_keys():
    """Only people and API keys are indexed by actor ("system" writes most events)."""
    from django.db import connection

    from audit.selectors import event_list

    plan = event_list(actor="user:ann").explain()
    assert "audit_actor_ts_people" in plan, plan
    # "system" is most of the table: its newest events are a walk down the time index.
    assert list(event_list(actor="system")[:1]) == []
    assert "audit_actor_ts_people" not in event_list(actor="system").explain()
    if connection.vendor == "sqlite":
        assert "SCAN" not in plan.replace("SCAN CONSTANT", "")


# --- text search through the trigram index (migration 0014) ------------------------------


def _search_plan(text: str) -> str:
    from django.db import connection

    qs = AuditEvent.objects.filter(details_contains(text)).order_by()
    sql, params = qs.values("id").query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # A test table is tiny: without this the planner reads it whole.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute(f"EXPLAIN {sql}", params)
        else:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        return "\n".join(str(row) for row in cursor.fetchall())


def test_text_search_reads_the_trigram_index(db):

    record_event(event_type="lead_ingested", details={"email": "ann@needle.example"})
    plan = _search_plan("needle")
    if connection.vendor == "postgresql":
        assert "audit_details_trgm" in plan
    else:
        assert "VIRTUAL TABLE INDEX" in plan and "audit_search" in plan
    # Two characters have no trigram: on SQLite a scan, which the dashboard bounds
    # in days (PostgreSQL may still read the whole GIN index for them).
    assert "audit_search" not in _search_plan("ne")


@pytest.mark.skipif(
    connection.vendor != "sqlite",
    reason="SQLite's FTS5 table is kept by triggers; PostgreSQL's GIN index needs none",
)
def test_a_deleted_event_leaves_the_search_index(db):
    kept = record_event(event_type="lead_ingested", details={"note": "needle one"})
    gone = record_event(event_type="lead_ingested", details={"note": "needle two"})
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE id = %s", [gone.id])
        cursor.execute("SELECT rowid FROM audit_search WHERE audit_search MATCH '\"needle\"'")
        assert [row[0] for row in cursor.fetchall()] == [kept.id]


def test_text_in_many_events_is_searched_by_walking_them(db, monkeypatch):
    from audit import selectors

    monkeypatch.setattr(selectors, "COMMON_MATCHES", 2)
    made = [
        record_event(event_type="lead_ingested", details={"email": f"n{i}@needle.example"})
        for i in range(3)
    ]
    record_event(event_type="lead_ingested", details={"email": "x@hay.example"})
    found = AuditEvent.objects.filter(details_contains("NEEDLE")).order_by("id")
    assert list(found.values_list("id", flat=True)) == [e.id for e in made]
    # Common text: no list of the index's matches, a test per event walked instead.
    assert "audit_search" not in _search_plan("needle")
    monkeypatch.setattr(selectors, "COMMON_MATCHES", 4)
    if connection.vendor == "sqlite":
        assert "audit_search" in _search_plan("needle")
