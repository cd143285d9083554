"""Downstream steps of a workflow (CRM sync, email sequences, ...), run as tasks.

A workflow's config lists steps by kind; after a lead is routed, the runner
enqueues one task per step once the lead's transaction commits. Step classes
sit in a registry (core.registry) and are imported lazily, like the CRM
connectors; each app registers its own in AppConfig.ready().
"""

from collections.abc import Mapping
from functools import partial
from typing import Any, Protocol

from django.db import transaction
from django.tasks import task

from audit.services import audit_context
from core.registry import Registry


class Step(Protocol):
    kind: str

    def run(self, *, lead_id: int, config: Mapping[str, Any]) -> None:
        """Do the step's work for one lead. Raise to have the task marked failed."""


# kind -> (label, "dotted.path.Class"). Apps add theirs with register_step().
STEP_KINDS: Registry[type[Step]] = Registry("step kind")


def register_step(kind: str, path: str, label: str = "") -> None:
    STEP_KINDS.register(kind, label, path)


def step_class(kind: str) -> type[Step]:
    return STEP_KINDS.load(kind)


@task()
def run_step(kind: str, lead_id: int, config: dict[str, Any], correlation_id: str) -> None:
    with audit_context(correlation_id=correlation_id):
        step_class(kind)().run(lead_id=lead_id, config=config)


def enqueue_steps(*, lead_id: int, steps: list[Mapping[str, Any]], correlation_id: str) -> None:
    """Enqueue each step for the lead when the current transaction commits."""
    for config in steps:
        step_class(config["kind"])  # fail now, inside the transaction, on an unknown kind
        transaction.on_commit(
            partial(run_step.enqueue, config["kind"], lead_id, dict(config), correlation_id)
        )
