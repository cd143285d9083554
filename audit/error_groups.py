"""Writes of error group states: resolve, ignore, assign and their undoing.

Each change locks the group's ErrorGroupState row and records its audit event
in the same transaction, with the acting user as actor, so the trail says who
decided what about which group and when. Who may call these is the caller's
business (the dashboard lets operators act, auditors only read).
"""

from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.error_selectors import group_exists, group_state, latest_title
from audit.models import ErrorGroupState
from audit.services import record_event

Status = ErrorGroupState.Status


class GroupStateError(ValueError):
    """The change does not apply to the group as it stands (its message says why)."""


class UnknownGroup(LookupError):
    """No error was ever recorded under this fingerprint."""


def _locked(fingerprint: str) -> ErrorGroupState:
    if not group_exists(fingerprint):
        raise UnknownGroup(f"no error group {fingerprint!r}")
    ErrorGroupState.objects.get_or_create(fingerprint=fingerprint)
    return ErrorGroupState.objects.select_for_update().get(fingerprint=fingerprint)


def _record(event_type: str, state: ErrorGroupState, *, actor: str, **details: Any) -> None:
    record_event(
        event_type=event_type,
        actor=actor,
        details={
            "fingerprint": state.fingerprint,
            "title": latest_title(state.fingerprint)[:200],
            **{k: v for k, v in details.items() if v is not None},
        },
    )


def _save(state: ErrorGroupState, now: datetime) -> None:
    state.updated_at = now
    state.save()


def error_group_resolve(*, fingerprint: str, actor: str) -> ErrorGroupState:
    """Resolved from now: an occurrence after this moment is a regression. A regressed
    group may be resolved again (the new moment counts)."""
    with transaction.atomic():
        state = _locked(fingerprint)
        now = timezone.now()
        if group_state(fingerprint, now=now).status == Status.RESOLVED:
            raise GroupStateError("This error group is already resolved.")
        state.status = Status.RESOLVED
        state.resolved_at = now
        state.ignored_at = state.ignore_until = state.ignore_count = None
        _save(state, now)
        _record("error_group_resolved", state, actor=actor)
    return state


def error_group_unresolve(*, fingerprint: str, actor: str) -> ErrorGroupState:
    with transaction.atomic():
        state = _locked(fingerprint)
        if state.status != Status.RESOLVED:
            raise GroupStateError("This error group is not resolved.")
        now = timezone.now()
        state.status = Status.UNRESOLVED
        state.resolved_at = None
        _save(state, now)
        _record("error_group_unresolved", state, actor=actor)
    return state


def error_group_ignore(
    *,
    fingerprint: str,
    actor: str,
    until: datetime | None = None,
    count: int | None = None,
) -> ErrorGroupState:
    """Ignored until `until`, or until `count` more occurrences, or (neither) forever;
    when the condition runs out the group counts as unresolved again."""
    if until is not None and count is not None:
        raise GroupStateError("Ignore until a date or for a number of occurrences, not both.")
    if count is not None and count < 1:
        raise GroupStateError("The number of occurrences must be at least 1.")
    with transaction.atomic():
        state = _locked(fingerprint)
        now = timezone.now()
        if until is not None and until <= now:
            raise GroupStateError("The date to ignore until must be in the future.")
        if group_state(fingerprint, now=now).status == Status.IGNORED:
            raise GroupStateError("This error group is already ignored.")
        state.status = Status.IGNORED
        state.ignored_at = now
        state.ignore_until = until
        state.ignore_count = count
        state.resolved_at = None
        _save(state, now)
        _record(
            "error_group_ignored",
            state,
            actor=actor,
            until=until.isoformat() if until else None,
            count=count,
        )
    return state


def error_group_unignore(*, fingerprint: str, actor: str) -> ErrorGroupState:
    with transaction.atomic():
        state = _locked(fingerprint)
        if state.status != Status.IGNORED:
            raise GroupStateError("This error group is not ignored.")
        now = timezone.now()
        state.status = Status.UNRESOLVED
        state.ignored_at = state.ignore_until = state.ignore_count = None
        _save(state, now)
        _record("error_group_unignored", state, actor=actor)
    return state


def error_group_assign(*, fingerprint: str, assignee: Any, actor: str) -> ErrorGroupState:
    """Assigned to `assignee` (a user), in place of whoever had it."""
    with transaction.atomic():
        state = _locked(fingerprint)
        if state.assignee_id == assignee.pk:
            raise GroupStateError(f"This error group is already assigned to {assignee}.")
        previous = state.assignee.get_username() if state.assignee else None
        state.assignee = assignee
        _save(state, timezone.now())
        _record(
            "error_group_assigned",
            state,
            actor=actor,
            assignee=assignee.get_username(),
            previous_assignee=previous,
        )
    return state


def error_group_unassign(*, fingerprint: str, actor: str) -> ErrorGroupState:
    with transaction.atomic():
        state = _locked(fingerprint)
        if state.assignee_id is None:
            raise GroupStateError("This error group is not assigned.")
        previous = state.assignee.get_username() if state.assignee else None
        state.assignee = None
        _save(state, timezone.now())
        _record("error_group_unassigned", state, actor=actor, previous_assignee=previous)
    return state
