"""Downstream steps of a workflow (CRM sync, email sequences, ...), run as tasks.

A workflow's config lists steps by kind; after a lead is routed, the runner
enqueues one task per step once the lead's transaction commits. Step classes
sit in a registry (core.registry) and are imported lazily, like the CRM
connectors; each app registers its own in AppConfig.ready().
"""

from collections.abc import Mapping
from functools import partial
from typing import Any, Protocol

from django.db import router, transaction
from django.tasks import task, task_backends
from django_tasks_db.backend import DatabaseBackend
from django_tasks_db.models import DBTaskResult

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


def _queue_is_this_database() -> bool:
    backend = task_backends[run_step.backend]
    return isinstance(backend, DatabaseBackend) and router.db_for_write(DBTaskResult) == "default"


def enqueue_steps(*, lead_id: int, steps: list[Mapping[str, Any]], correlation_id: str) -> None:
    """Enqueue each step for the lead as part of the current transaction.

    With the database queue the task rows are written in the lead's own
    transaction: a routed lead and its steps commit together or not at all, so
    no step can go missing between the two (an enqueue after commit that
    failed left a routed lead that nothing would ever enroll). No worker sees
    the rows before the commit. Other backends (the immediate one runs the
    task at once) still wait for the commit.
    """
    in_transaction = _queue_is_this_database()
    for config in steps:
        step_class(config["kind"])  # fail now, inside the transaction, on an unknown kind
        enqueue = partial(run_step.enqueue, config["kind"], lead_id, dict(config), correlation_id)
        if in_transaction:
            enqueue()
        else:
            transaction.on_commit(enqueue)
