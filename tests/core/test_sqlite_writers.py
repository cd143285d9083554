"""core.db.sqlite3: writers queue on a flock and start as soon as the last commits."""

import subprocess
import sys
import threading
import time

import pytest
from django.db import OperationalError, connection, connections, transaction

from core.models import CommandLock

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _sqlite_only():
    if connection.vendor != "sqlite":
        pytest.skip("the writer queue is SQLite's; .ci/run runs the suite on both")


def _write(name):
    CommandLock.objects.create(
        name=name, holder="t", acquired_at="2026-01-01T00:00Z", expires_at="2026-01-01T00:00Z"
    )


def _handover_delay(round_no: int) -> float:
    """Seconds between a holder's commit and the BEGIN of a writer queued behind it."""
    holding, release = threading.Event(), threading.Event()
    times: dict[str, float] = {}

    def holder():
        with transaction.atomic():
            _write(f"first-{round_no}")
            holding.set()
            release.wait(10)
            times["commit"] = time.monotonic()
        connections.close_all()

    def waiter():
        with transaction.atomic():
            times["began"] = time.monotonic()
            _write(f"second-{round_no}")
        connections.close_all()

    one = threading.Thread(target=holder)
    one.start()
    assert holding.wait(10)
    two = threading.Thread(target=waiter)
    two.start()
    # Past SQLite's first busy-handler sleeps: it now looks every 100 ms.
    time.sleep(0.4)
    assert "began" not in times  # queued behind the holder
    release.set()
    one.join()
    two.join()
    return times["began"] - times["commit"]


def test_a_waiting_writer_starts_as_soon_as_the_holder_commits():
    delays = sorted(_handover_delay(n) for n in range(5))
    # SQLite's busy handler alone: 50 ms on average, up to 100.
    assert delays[2] < 0.02, delays
    assert CommandLock.objects.count() == 10


def test_waiting_gives_up_after_the_busy_timeout():
    connection.settings_dict["OPTIONS"]["timeout"] = 0.3
    holding, release = threading.Event(), threading.Event()

    def holder():
        with transaction.atomic():
            _write("first")
            holding.set()
            release.wait(10)
        connections.close_all()

    one = threading.Thread(target=holder)
    one.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        with (
            pytest.raises(OperationalError, match="database is locked"),
            transaction.atomic(),
        ):
            _write("second")
        assert 0.25 < time.monotonic() - started < 5
    finally:
        release.set()
        one.join()
        connection.settings_dict["OPTIONS"]["timeout"] = 30
    # The refused writer holds nothing: the next write goes through.
    with transaction.atomic():
        _write("third")


def test_a_killed_holder_blocks_nobody():
    name = connection.settings_dict["NAME"]
    script = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({name + '.writers'!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        proc.kill()
        proc.wait(10)
        with transaction.atomic():
            _write("after")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert CommandLock.objects.filter(name="after").exists()


def test_destroying_a_test_database_takes_its_lock_file_along(tmp_path):
    db = tmp_path / "test-x.sqlite3"
    db.write_bytes(b"")
    (tmp_path / "test-x.sqlite3.writers").write_bytes(b"")
    connection.creation._destroy_test_db(str(db), verbosity=0)
    assert list(tmp_path.iterdir()) == []
