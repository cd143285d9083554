from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from core import locks


@pytest.mark.django_db
def test_second_holder_is_refused_until_release():
    first = locks.acquire("job", ttl=timedelta(minutes=5))
    assert first
    assert locks.acquire("job", ttl=timedelta(minutes=5)) is None
    locks.release("job", first)
    assert locks.acquire("job", ttl=timedelta(minutes=5))


@pytest.mark.django_db
def test_expired_lease_of_a_crashed_run_is_taken_over():
    crashed = locks.acquire("job", ttl=timedelta(minutes=5))
    with time_machine.travel(timezone.now() + timedelta(minutes=6)):
        taker = locks.acquire("job", ttl=timedelta(minutes=5))
        assert taker and taker != crashed
        # The crashed run cannot renew or release what it no longer holds.
        assert not locks.renew("job", crashed, ttl=timedelta(minutes=5))
        locks.release("job", crashed)
        assert locks.acquire("job", ttl=timedelta(minutes=5)) is None


def test_a_scheduled_command_gives_the_signal_handlers_back(db):
    import io
    import signal

    from django.core.management import call_command

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    call_command("seal_audit", stdout=io.StringIO())
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


@pytest.mark.django_db
def test_a_lease_whose_holder_on_this_machine_is_dead_is_taken_over_at_once():
    import socket
    import subprocess
    import sys

    from core.models import CommandLock

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    ttl = timedelta(minutes=30)
    assert locks.acquire("follow:x", ttl=ttl)
    # As a process killed with SIGKILL leaves it: its lease, unexpired.
    CommandLock.objects.filter(name="follow:x").update(
        holder=f"{socket.gethostname()}:{gone.pid}:deadbeef"
    )
    holder = locks.acquire("follow:x", ttl=ttl)
    assert holder is not None and holder.split(":")[1] != str(gone.pid)
    # A live holder here, or one on another machine, keeps it.
    assert locks.acquire("follow:x", ttl=ttl) is None
    CommandLock.objects.filter(name="follow:x").update(holder=f"elsewhere:{gone.pid}:deadbeef")
    assert locks.acquire("follow:x", ttl=ttl) is None
