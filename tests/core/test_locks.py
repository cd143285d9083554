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
