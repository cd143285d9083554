"""Error group states (resolve, ignore, assign), what they mean as errors keep coming,
and regrouping stored events under a new fingerprint strategy."""

import importlib
from datetime import UTC, datetime, timedelta
from functools import partial
from types import SimpleNamespace

import pytest
import time_machine
from django.db import DatabaseError, connection, transaction

from audit import error_groups, error_selectors
from audit.fingerprints import fingerprint
from audit.integrity import seal_all, verify
from audit.models import AuditEvent, ErrorGroupState
from audit.services import record_event

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
pytestmark = pytest.mark.django_db
ACTOR = "user:olga"


def error(at: datetime, message: str = "timeout after 30s", error_type: str = "CrmError"):
    return record_event(
        event_type="error", error_type=error_type, error_message=message, timestamp=at
    )


@pytest.fixture
def clock():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
def group(clock) -> str:
    return error(T0 - timedelta(hours=1)).fingerprint


def audited(event_type: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type=event_type).order_by("id"))


def status(fp: str) -> str:
    return error_selectors.group_state(fp).status


# --- transitions, each audited in its transaction ----------------------------------------


def test_resolve_then_unresolve_is_audited_with_the_acting_user(group):
    state = error_groups.error_group_resolve(fingerprint=group, actor=ACTOR)
    assert (state.status, state.resolved_at) == ("resolved", T0)
    assert status(group) == "resolved"
    [event] = audited("error_group_resolved")
    assert event.actor == ACTOR
    assert event.details == {"fingerprint": group, "title": "CrmError: timeout after <n>s"}

    error_groups.error_group_unresolve(fingerprint=group, actor=ACTOR)
    assert status(group) == "unresolved"
    assert ErrorGroupState.objects.get().resolved_at is None
    [event] = audited("error_group_unresolved")
    assert (event.actor, event.details["fingerprint"]) == (ACTOR, group)


def test_a_change_that_does_not_apply_says_why_and_records_nothing(group):
    with pytest.raises(error_groups.GroupStateError, match="not resolved"):
        error_groups.error_group_unresolve(fingerprint=group, actor=ACTOR)
    with pytest.raises(error_groups.GroupStateError, match="not ignored"):
        error_groups.error_group_unignore(fingerprint=group, actor=ACTOR)
    with pytest.raises(error_groups.GroupStateError, match="not assigned"):
        error_groups.error_group_unassign(fingerprint=group, actor=ACTOR)
    error_groups.error_group_resolve(fingerprint=group, actor=ACTOR)
    with pytest.raises(error_groups.GroupStateError, match="already resolved"):
        error_groups.error_group_resolve(fingerprint=group, actor=ACTOR)
    with pytest.raises(error_groups.UnknownGroup):
        error_groups.error_group_resolve(fingerprint="0123456789abcdef", actor=ACTOR)
    assert AuditEvent.objects.filter(event_type__startswith="error_group_").count() == 1


def test_the_state_change_and_its_audit_event_commit_together(group, monkeypatch):
    def refuse(**kwargs):
        raise DatabaseError("the audit store is down")

    monkeypatch.setattr(error_groups, "record_event", refuse)
    with pytest.raises(DatabaseError):
        error_groups.error_group_resolve(fingerprint=group, actor=ACTOR)
    assert status(group) == "unresolved"
    assert not ErrorGroupState.objects.filter(status="resolved").exists()


def test_ignore_forever_and_unignore(group, clock):
    error_groups.error_group_ignore(fingerprint=group, actor=ACTOR)
    for i in range(50):
        error(T0 + timedelta(minutes=i + 1))
    clock.shift(timedelta(days=400))
    assert status(group) == "ignored"
    [event] = audited("error_group_ignored")
    assert event.details == {"fingerprint": group, "title": "CrmError: timeout after <n>s"}
    error_groups.error_group_unignore(fingerprint=group, actor=ACTOR)
    assert status(group) == "unresolved"
    assert len(audited("error_group_unignored")) == 1


def test_ignore_until_n_more_occurrences_runs_out(group, clock):
    error_groups.error_group_ignore(fingerprint=group, actor=ACTOR, count=3)
    assert audited("error_group_ignored")[0].details["count"] == 3
    clock.shift(timedelta(minutes=1))
    error(T0 + timedelta(seconds=30))
    error(T0 + timedelta(seconds=40))
    state = error_selectors.group_state(group)
    assert (state.status, state.occurrences_since_ignored) == ("ignored", 2)
    error(T0 + timedelta(seconds=50))
    state = error_selectors.group_state(group)
    assert (state.status, state.stored, state.ignore_expired) == ("unresolved", "ignored", True)
    # Nothing was written by reading: the operator still sees what was decided.
    assert ErrorGroupState.objects.get().status == "ignored"


def test_ignore_until_a_date_runs_out(group, clock):
    until = T0 + timedelta(days=2)
    error_groups.error_group_ignore(fingerprint=group, actor=ACTOR, until=until)
    assert audited("error_group_ignored")[0].details["until"] == until.isoformat()
    clock.shift(timedelta(days=1))
    assert status(group) == "ignored"
    clock.shift(timedelta(days=1))
    state = error_selectors.group_state(group)
    assert (state.status, state.ignore_expired) == ("unresolved", True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"until": T0 - timedelta(minutes=1)}, "in the future"),
        ({"count": 0}, "at least 1"),
        ({"count": 2, "until": T0 + timedelta(days=1)}, "not both"),
    ],
)
def test_ignore_refuses_conditions_that_cannot_hold(group, kwargs, message):
    with pytest.raises(error_groups.GroupStateError, match=message):
        error_groups.error_group_ignore(fingerprint=group, actor=ACTOR, **kwargs)
    assert status(group) == "unresolved"


def test_assign_reassign_unassign(group, django_user_model):
    olga = django_user_model.objects.create_user("olga")
    piet = django_user_model.objects.create_user("piet")
    error_groups.error_group_assign(fingerprint=group, assignee=olga, actor=ACTOR)
    error_groups.error_group_assign(fingerprint=group, assignee=piet, actor=ACTOR)
    state = error_selectors.group_state(group)
    assert (state.assignee_id, state.assignee) == (piet.pk, "piet")
    first, second = audited("error_group_assigned")
    assert first.details["assignee"] == "olga" and "previous_assignee" not in first.details
    assert (second.details["assignee"], second.details["previous_assignee"]) == ("piet", "olga")
    with pytest.raises(error_groups.GroupStateError, match="already assigned"):
        error_groups.error_group_assign(fingerprint=group, assignee=piet, actor=ACTOR)
    error_groups.error_group_unassign(fingerprint=group, actor=ACTOR)
    assert error_selectors.group_state(group).assignee_id is None
    [event] = audited("error_group_unassigned")
    assert event.details["previous_assignee"] == "piet"


def test_a_deleted_assignee_leaves_the_group_unassigned(group, django_user_model):
    olga = django_user_model.objects.create_user("olga")
    error_groups.error_group_assign(fingerprint=group, assignee=olga, actor=ACTOR)
    olga.delete()
    assert error_selectors.group_state(group).assignee_id is None


# --- regression -------------------------------------------------------------------------


def test_a_resolved_group_that_occurs_again_has_regressed(group, clock):
    error_groups.error_group_resolve(fingerprint=group, actor=ACTOR)
    assert error_selectors.regressed_groups() == []
    clock.shift(timedelta(hours=1))
    again = error(T0 + timedelta(minutes=30), "timeout after 45s")
    assert again.fingerprint == group
    state = error_selectors.group_state(group)
    assert (state.status, state.stored, state.regressed) == ("unresolved", "resolved", True)
    [(fp, regressed, first_again)] = error_selectors.regressed_groups()
    assert (fp, regressed.regressed, first_again) == (group, True, again.timestamp)

    # Resolving it again starts over: the occurrence before is no regression.
    clock.shift(timedelta(minutes=1))
    error_groups.error_group_resolve(fingerprint=group, actor=ACTOR)
    assert status(group) == "resolved"
    assert len(audited("error_group_resolved")) == 2


def test_an_occurrence_before_resolving_is_no_regression(group, clock):
    error(T0 - timedelta(minutes=1))
    error_groups.error_group_resolve(fingerprint=group, actor=ACTOR)
    assert status(group) == "resolved"


# --- the list filters ---------------------------------------------------------------------


def test_error_groups_filter_by_state_and_assignee(clock, django_user_model):
    olga = django_user_model.objects.create_user("olga")
    fps = {
        name: error(T0 - timedelta(hours=1), message=f"{name} failed").fingerprint
        for name in ("open", "fixed", "quiet", "back", "mine")
    }
    error_groups.error_group_resolve(fingerprint=fps["fixed"], actor=ACTOR)
    error_groups.error_group_ignore(fingerprint=fps["quiet"], actor=ACTOR)
    error_groups.error_group_resolve(fingerprint=fps["back"], actor=ACTOR)
    error_groups.error_group_assign(fingerprint=fps["mine"], assignee=olga, actor=ACTOR)
    clock.shift(timedelta(minutes=5))
    error(T0 + timedelta(minutes=1), message="back failed")  # a regression

    since, until = T0 - timedelta(days=1), T0 + timedelta(hours=1)

    def listed(**kwargs):
        groups = error_selectors.error_groups(since=since, until=until, **kwargs)
        count = error_selectors.error_group_count(since=since, until=until, **kwargs)
        assert count == len(groups)
        return {fp for fp in fps if fps[fp] in {g.fingerprint for g in groups}}

    assert listed(state="unresolved") == {"open", "back", "mine"}
    assert listed(state="resolved") == {"fixed"}
    assert listed(state="ignored") == {"quiet"}
    assert listed(state="all") == set(fps)
    assert listed(state="all", assignee_id=olga.pk) == {"mine"}
    assert listed(state="resolved", assignee_id=olga.pk) == set()
    back = next(
        g
        for g in error_selectors.error_groups(since=since, until=until)
        if g.fingerprint == fps["back"]
    )
    assert back.state.regressed and back.title == "CrmError: back failed"
    with pytest.raises(ValueError, match="state must be one of"):
        error_selectors.error_groups(since=since, until=until, state="fixed")  # type: ignore[arg-type]


def test_occurrence_counts_per_bucket(group, clock):
    error(T0 - timedelta(hours=2, minutes=30))
    error(T0 - timedelta(minutes=30))
    buckets = [T0 - timedelta(hours=3), T0 - timedelta(hours=2), T0 - timedelta(hours=1)]
    assert error_selectors.occurrence_counts(fingerprint=group, buckets=buckets, until=T0) == [
        1,
        0,
        2,
    ]


# --- regrouping stored events (migration 0012) ------------------------------------------

HUBSPOT_400 = 'POST /crm/v3/objects/contacts returned 400: {"message": "invalid email"}'
HUBSPOT_500 = 'POST /crm/v3/objects/contacts returned 500: {"message": "internal error"}'


@pytest.fixture
def stored_by_old_strategy(monkeypatch):
    """Events as "2026-12" fingerprinted them, before migration 0012."""
    monkeypatch.setattr("audit.services.fingerprint", partial(fingerprint, strategy="2026-12"))
    events = [
        error(T0, HUBSPOT_400),
        error(T0 + timedelta(seconds=1), HUBSPOT_500),
        error(T0 + timedelta(seconds=2), "timeout after 30s for LEAD-000123"),
        record_event(event_type="lead_ingested", lead_id="LEAD-1", timestamp=T0),
    ]
    monkeypatch.undo()
    return events


# What RunPython hands the migration, as far as it looks: SQLite's schema editor cannot
# open inside the test's transaction (and the migration needs none of its DDL helpers).
EDITOR = SimpleNamespace(connection=connection)


def fingerprints(events) -> list[str]:
    return [AuditEvent.objects.get(pk=e.pk).fingerprint for e in events]


def test_the_backfill_regroups_stored_events_and_history_still_verifies(
    stored_by_old_strategy, monkeypatch
):
    migration = importlib.import_module("audit.migrations.0012_fingerprint_2026_12_07")
    monkeypatch.setattr(migration, "BATCH", 2)  # several batches
    seal_all()
    before = fingerprints(stored_by_old_strategy)
    assert before[0] == before[1]  # the merged HubSpot errors staff complained about

    assert migration.regroup(EDITOR, "2026-12-07") == 2

    after = fingerprints(stored_by_old_strategy)
    assert after[0] != after[1]
    assert after[0] == fingerprint(error_type="CrmError", error_message=HUBSPOT_400, traceback="")
    assert after[2] == before[2]  # no status code, no endpoint: its group stays
    assert after[3] == ""
    report = verify(anchors=False)
    assert report.ok and report.events_checked == 4

    # Back to "2026-12", as migrating backwards does.
    assert migration.regroup(EDITOR, "2026-12") == 2
    assert fingerprints(stored_by_old_strategy) == before


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger is PostgreSQL's")
def test_the_backfill_leaves_the_append_only_trigger_on(stored_by_old_strategy):
    migration = importlib.import_module("audit.migrations.0012_fingerprint_2026_12_07")
    migration.regroup(EDITOR, "2026-12-07")
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE audit_auditevent SET fingerprint = 'x'")
