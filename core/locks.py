"""Leases for scheduled commands: overlapping runs skip instead of doubling work;
and locks on a value (not a row) for the length of a transaction.
"""

import hashlib
import os
import socket
import uuid
from collections.abc import Iterable
from datetime import timedelta

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from core.models import CommandLock


def acquire(name: str, *, ttl: timedelta) -> str | None:
    """Take the lease `name`; return the holder token, or None if someone else holds it.

    An expired lease (a crashed run) is taken over with a conditional UPDATE so
    that of two runs racing for it exactly one wins.
    """
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    now = timezone.now()
    try:
        with transaction.atomic():
            CommandLock.objects.create(
                name=name, holder=holder, acquired_at=now, expires_at=now + ttl
            )
        return holder
    except IntegrityError:
        taken = CommandLock.objects.filter(name=name, expires_at__lt=now).update(
            holder=holder, acquired_at=now, expires_at=now + ttl
        )
        if taken:
            return holder
    # Held by a process of this machine that no longer exists (killed, or
    # the machine rebooted): no need to wait out its lease.
    current = CommandLock.objects.filter(name=name).values_list("holder", flat=True).first()
    if current is None or not _dead_here(current):
        return None
    taken = CommandLock.objects.filter(name=name, holder=current).update(
        holder=holder, acquired_at=now, expires_at=now + ttl
    )
    return holder if taken == 1 else None


def _dead_here(holder: str) -> bool:
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def renew(name: str, holder: str, *, ttl: timedelta) -> bool:
    """Extend a held lease (long loops call this between units of work)."""
    return (
        CommandLock.objects.filter(name=name, holder=holder).update(expires_at=timezone.now() + ttl)
        == 1
    )


def release(name: str, holder: str) -> None:
    CommandLock.objects.filter(name=name, holder=holder).delete()


def lock_value(namespace: int, value: str) -> None:
    """Hold a lock on `value` (within `namespace`) until the current transaction ends.

    For work that must not run twice at once for the same value, such as
    creating a lead for one email address, while work for other values runs
    beside it. PostgreSQL: a transaction-scoped advisory lock on a 32-bit hash
    of the value (two values sharing a hash only wait for each other). SQLite
    needs nothing: BEGIN IMMEDIATE (settings) already lets one writer in at a
    time.
    """
    lock_values(namespace, [value])


def lock_values(namespace: int, values: Iterable[str]) -> None:
    """lock_value for several values, in one statement.

    Taken in the order of their hashes, so two transactions locking
    overlapping sets cannot deadlock."""
    if not connection.in_atomic_block:
        raise RuntimeError("lock_value holds its lock until commit: call it inside atomic()")
    if connection.vendor != "postgresql":
        return
    keys = sorted({_key(value) for value in values})
    if not keys:
        return
    with connection.cursor() as cursor:
        # unnest yields the sorted array in its order.
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, k) FROM unnest(%s::integer[]) AS k",
            [namespace, keys],
        )


def _key(value: str) -> int:
    digest = hashlib.blake2b(value.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)
