"""SQLite, with a queue for writers that hands the write lock on at once.

SQLite lets one writer in at a time (settings: BEGIN IMMEDIATE). A writer
that finds the lock taken is put to sleep by SQLite's busy handler for 1, 2,
5, 10 ... up to 100 ms before it looks again, whether or not the lock was
freed a moment later. Under the intake benchmark (four gunicorn workers)
that left the CPU 43 % idle while requests waited, and made p99 latency
seconds.

Here each write transaction first takes an exclusive flock(2) on a file
beside the database, `<database>.writers`, and only then BEGINs; it drops the
flock after COMMIT or ROLLBACK. A writer waiting for the flock is polled
every 0.2-2 ms instead, so the next one starts as soon as the last commits.
The kernel drops a dead process's flock, so a killed writer blocks nobody.
SQLite's own lock still guards the data: a writer that does not take the
flock (another program, `sqlite3` in a shell) is only slower to get in.
Waiting gives up after the busy timeout (settings: SQLITE_BUSY_TIMEOUT) with
SQLite's own "database is locked".

Group commit. With synchronous=FULL SQLite fsyncs the WAL inside COMMIT,
while the writer still holds the write lock, so writers queue behind each
other's fsyncs: 8 writer processes got about 1,000 events/s here, the disk's
fsync rate. This backend instead runs WAL with synchronous=NORMAL (COMMIT
only writes) and fdatasyncs the WAL itself after the write lock is dropped,
before the commit returns. The next writer works while the last one syncs,
and one fdatasync carries every frame written before it, so writers waiting
on the disk share syncs. For the caller nothing changes: a commit that has
returned is on disk (durable across power loss, as with FULL); one that
raised is not. What changes: another connection can read a transaction in
the fdatasync's window (well under a millisecond) before it is durable.
Writes in autocommit mode (each statement its own transaction) are synced
the same way. `lazy_commits()` skips the sync for writes worth less than an
fsync (rate-limit counters): the next durable commit carries them.
"""

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from typing import Any

from django.db import OperationalError
from django.db.backends.sqlite3 import base, creation

POLL_FIRST = 0.0002
POLL_MAX = 0.002

# PRAGMA synchronous values.
SYNCHRONOUS_NORMAL = 1


class CursorWrapper(base.SQLiteCursorWrapper):
    """Notices a statement that committed itself (autocommit mode) after changing
    rows, so the WAL can be synced before the caller goes on."""

    wrapper: "DatabaseWrapper"

    def execute(self, query: str, params: Any = None) -> Any:
        return self._run(super().execute, query, params)

    def executemany(self, query: str, param_list: Any) -> Any:
        return self._run(super().executemany, query, param_list)

    def _run(self, method: Any, query: str, values: Any) -> Any:
        if self.connection.in_transaction:  # the COMMIT will sync
            return method(query, values)
        changes = self.connection.total_changes
        result = method(query, values)
        if not self.connection.in_transaction and self.connection.total_changes != changes:
            self.wrapper._committed()
        return result


class DatabaseCreation(creation.DatabaseCreation):
    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        super()._destroy_test_db(test_database_name, verbosity)  # type: ignore[misc]
        # The writers' lock file goes with the test database it belonged to.
        if test_database_name and not self.is_in_memory_db(test_database_name):
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{test_database_name}.writers")


class DatabaseWrapper(base.DatabaseWrapper):
    creation_class = DatabaseCreation

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writers_fd: int | None = None
        self._writing = False
        # Set per connection: WAL with synchronous=NORMAL (see the module's doc).
        self._group_commit = False
        self._wal_fd: int | None = None
        self._sync_pending = False
        # False: commits return without the WAL's fsync (lazy_commits()).
        self.durable_commits = True
        self._changes_at_begin = -1

    def get_new_connection(self, conn_params: Any) -> Any:
        conn = super().get_new_connection(conn_params)
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
        self._group_commit = (
            str(journal).lower() == "wal"
            and synchronous == SYNCHRONOUS_NORMAL
            and self._writers_path() is not None
        )
        return conn

    def create_cursor(self, name: str | None = None) -> Any:
        cursor = self.connection.cursor(factory=CursorWrapper)
        cursor.wrapper = self
        return cursor

    @contextlib.contextmanager
    def lazy_commits(self) -> Iterator[None]:
        """Commits inside return without syncing the WAL: a crash of the machine
        (not of the process) may lose them, unless a later commit synced."""
        durable, self.durable_commits = self.durable_commits, False
        try:
            yield
        finally:
            self.durable_commits = durable

    def _committed(self) -> None:
        if not self._group_commit or not self.durable_commits:
            return
        self._sync_pending = True
        if not self._writing:
            self._sync_wal()

    def _sync_wal(self) -> None:
        self._sync_pending = False
        if self._wal_fd is None:
            # Opened once per connection: SQLite keeps the WAL file (same inode)
            # while any connection to the database is open, this one included.
            self._wal_fd = os.open(f"{self.settings_dict['NAME']}-wal", os.O_RDONLY)
        os.fdatasync(self._wal_fd)

    def _writers_path(self) -> str | None:
        name = str(self.settings_dict["NAME"])
        if self.is_in_memory_db() or name.startswith("file:"):
            return None
        return f"{name}.writers"

    def _take_writer_lock(self) -> None:
        if self._writing:
            return
        path = self._writers_path()
        if path is None:
            return
        if self._writers_fd is None:
            self._writers_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        timeout = float(self.settings_dict["OPTIONS"].get("timeout", 5))
        deadline = time.monotonic() + timeout
        pause = POLL_FIRST
        while True:
            try:
                fcntl.flock(self._writers_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OperationalError("database is locked") from None
                time.sleep(pause)
                pause = min(pause * 2, POLL_MAX)
        self._writing = True

    def _drop_writer_lock(self) -> None:
        if self._writing and self._writers_fd is not None:
            fcntl.flock(self._writers_fd, fcntl.LOCK_UN)
        self._writing = False
        if self._sync_pending:
            self._sync_wal()

    @contextlib.contextmanager
    def writer_queue(self) -> Iterator[None]:
        """Hold the writers' flock around statements that write in autocommit mode
        (each its own transaction), so they queue like transactions do."""
        if self._writing or not self.get_autocommit():
            yield
            return
        # Connected first: a failed connect must not leave the flock taken.
        self.ensure_connection()
        self._take_writer_lock()
        changes = self.connection.total_changes
        try:
            yield
        finally:
            # Statements run on the raw sqlite3 connection (the audit INSERT)
            # bypass CursorWrapper: what they committed is synced here.
            if self.connection is not None and self.connection.total_changes != changes:
                self._committed()
            self._drop_writer_lock()

    def _start_transaction_under_autocommit(self) -> None:
        self._take_writer_lock()
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]
            self._changes_at_begin = self.connection.total_changes
        except BaseException:
            self._drop_writer_lock()
            raise

    def _commit(self) -> None:
        try:
            # total_changes counts rows written since BEGIN: a transaction that
            # only read has nothing to sync.
            changed = (
                self.connection is not None
                and self.connection.total_changes != self._changes_at_begin
            )
            super()._commit()  # type: ignore[misc]
            if changed:
                self._committed()
        finally:
            self._drop_writer_lock()

    def _rollback(self) -> None:
        try:
            super()._rollback()  # type: ignore[misc]
        finally:
            self._drop_writer_lock()

    def _close(self) -> None:
        try:
            super()._close()  # type: ignore[misc]
        finally:
            self._sync_pending = False
            self._drop_writer_lock()
            for fd in (self._writers_fd, self._wal_fd):
                if fd is not None:
                    os.close(fd)
            self._writers_fd = self._wal_fd = None
