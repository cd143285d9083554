"""Reads to a streaming read replica, for the code that asks for them.

With DATABASE_REPLICA_URL set (orchestrator.settings), the database alias
"replica" is a hot standby of the primary, and this router sends reads there
only inside `replica_reads()`: the web middleware opens it for the GET and
HEAD requests of a browser that has not just written anything
(orchestrator.middleware.ReplicaReadsMiddleware). Everything else reads and
writes the primary: workers, management commands, the sealer, every write, and
every read inside a transaction (it must see the transaction's own writes).

Some data is read from the primary even then, because a replica a few
milliseconds behind would be wrong about it: who is logged in (sessions, users
and permissions), the task queue, and command locks.
"""

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

REPLICA = "replica"
# App labels always read from the primary.
PRIMARY_APPS = frozenset({"sessions", "auth", "contenttypes", "django_tasks_database", "core"})

_replica_reads: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "replica_reads", default=False
)


def replica_configured() -> bool:
    return REPLICA in settings.DATABASES


@contextmanager
def replica_reads() -> Iterator[None]:
    """Let the ORM reads in this block go to the replica (when one is configured)."""
    token = _replica_reads.set(True)
    try:
        yield
    finally:
        _replica_reads.reset(token)


class ReplicaRouter:
    """The primary for every write and for reads outside replica_reads(); see the module."""

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        if not _replica_reads.get() or not replica_configured():
            return None
        if model._meta.app_label in PRIMARY_APPS:
            return DEFAULT_DB_ALIAS
        if connections[DEFAULT_DB_ALIAS].in_atomic_block:
            return DEFAULT_DB_ALIAS
        return REPLICA

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        # One database, two copies of it: any two rows may be related.
        return True

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        # The replica follows the primary's schema through replication.
        return db == DEFAULT_DB_ALIAS
