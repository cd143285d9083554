"""Downstream steps of a workflow (CRM sync, email sequences, ...), run as tasks.

A workflow's config lists steps by kind; after a lead is routed, the runner
enqueues one task per step once the lead's transaction commits. Step classes
are registered by kind as dotted paths and imported lazily, like the CRM
connectors.
"""

from collections.abc import Mapping
from functools import cache, partial
from typing import Any, Protocol

from django.db import transaction
from django.tasks import task
from django.utils.module_loading import import_string

# kind -> "dotted.path.Class". Apps add theirs with register_step().
STEP_KINDS: dict[str, str] = {}


class Step(Protocol):
    kind: str

    def run(self, *, lead_id: int, config: Mapping[str, Any]) -> None:
        """Do the step's work for one lead. Raise to have the task marked failed."""


def register_step(kind: str, path: str) -> None:
    STEP_KINDS[kind] = path
    step_class.cache_clear()


@cache
def step_class(kind: str) -> type[Step]:
    try:
        return import_string(STEP_KINDS[kind])
    except KeyError:
        known = ", ".join(sorted(STEP_KINDS)) or "none registered"
        raise ValueError(f"unknown step kind {kind!r} (known: {known})") from None


@task()
def run_step(kind: str, lead_id: int, config: dict[str, Any], correlation_id: str) -> None:
    from audit.services import audit_context

    with audit_context(correlation_id=correlation_id):
        step_class(kind)().run(lead_id=lead_id, config=config)


def enqueue_steps(*, lead_id: int, steps: list[Mapping[str, Any]], correlation_id: str) -> None:
    """Enqueue each step for the lead when the current transaction commits."""
    for config in steps:
        step_class(config["kind"])  # fail now, inside the transaction, on an unknown kind
        transaction.on_commit(
            partial(run_step.enqueue, config["kind"], lead_id, dict(config), correlation_id)
        )
