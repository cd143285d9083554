"""core.db.sqlite3: writers queue on a flock and start as soon as the last commits."""

import fcntl
import os
import subprocess
import sys
import threading
import time

import pytest
from django.core.cache import cache
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


class _SyncSpy:
    """Wraps os.fdatasync: records which file each sync was for, and whether the
    writers' flock was free at that moment (the next writer could work)."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[str, bool]] = []
        self._real = os.fdatasync
        monkeypatch.setattr(os, "fdatasync", self)

    def __call__(self, fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        probe = os.open(connection.settings_dict["NAME"] + ".writers", os.O_RDWR)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(probe, fcntl.LOCK_UN)
            free = True
        except BlockingIOError:
            free = False
        finally:
            os.close(probe)
        self.calls.append((path, free))
        self._real(fd)


def test_connections_run_wal_with_the_backend_syncing_commits():
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA synchronous")
        assert cursor.fetchone()[0] == 1  # NORMAL: COMMIT itself does not sync
    assert connection._group_commit


def test_a_commit_returns_after_syncing_the_wal_outside_the_write_lock(monkeypatch):
    spy = _SyncSpy(monkeypatch)
    with transaction.atomic():
        _write("one")
        assert spy.calls == []  # nothing synced before COMMIT
    wal = os.path.realpath(connection.settings_dict["NAME"] + "-wal")
    assert spy.calls == [(wal, True)]


def test_a_write_in_autocommit_mode_is_synced_too(monkeypatch):
    spy = _SyncSpy(monkeypatch)
    _write("autocommit")  # Model.save() outside atomic(): SQLite commits the INSERT itself
    assert len(spy.calls) == 1
    CommandLock.objects.filter(name="autocommit").update(holder="u")
    assert len(spy.calls) == 2
    CommandLock.objects.filter(name="absent").update(holder="u")  # changed nothing
    assert len(spy.calls) == 2


def test_writes_queued_in_autocommit_sync_after_the_queue_lets_go(monkeypatch):
    spy = _SyncSpy(monkeypatch)
    with connection.writer_queue():
        _write("queued")
        assert spy.calls == []
    assert spy.calls == [(os.path.realpath(connection.settings_dict["NAME"] + "-wal"), True)]


def test_a_transaction_that_only_read_or_rolled_back_syncs_nothing(monkeypatch):
    _write("there")
    spy = _SyncSpy(monkeypatch)
    with transaction.atomic():
        assert CommandLock.objects.count() == 1
    with pytest.raises(RuntimeError), transaction.atomic():
        _write("undone")
        raise RuntimeError
    assert spy.calls == []
    assert not CommandLock.objects.filter(name="undone").exists()


def test_lazy_commits_skip_the_sync_and_rate_counters_use_them(monkeypatch):
    spy = _SyncSpy(monkeypatch)
    with connection.lazy_commits():
        _write("lazy")
        with transaction.atomic():
            _write("lazy-too")
    assert spy.calls == []
    assert connection.durable_commits
    _write("durable")  # carries the lazy frames to disk with its own
    assert len(spy.calls) == 1

    spy.calls.clear()
    assert cache.add("rl:key", 0, 60)
    assert cache.incr("rl:key") == 1
    assert spy.calls == []


def test_dashboard_figures_are_cached_without_waiting_for_the_disk(monkeypatch):
    from datetime import UTC, datetime, timedelta

    from orchestrator.dashboard.render import cached_figure

    spy = _SyncSpy(monkeypatch)
    end = datetime(2026, 3, 8, 9, 0, tzinfo=UTC)
    window = (end - timedelta(days=7), end)
    assert cached_figure("sync-test", compute=lambda: 41, window=window) == 41
    assert cached_figure("sync-test", compute=lambda: 42, window=window) == 41
    # The lock, the figure, the previous-minute copy and the unlock: no fsync.
    assert spy.calls == []


def test_an_audit_event_recorded_in_autocommit_mode_is_synced(monkeypatch):
    from audit.services import record_event

    spy = _SyncSpy(monkeypatch)
    record_event(event_type="workflow_started", workflow="w")  # raw sqlite3 INSERT, own commit
    assert spy.calls == [(os.path.realpath(connection.settings_dict["NAME"] + "-wal"), True)]
    with transaction.atomic():
        record_event(event_type="workflow_stopped", workflow="w")
    assert len(spy.calls) == 2
