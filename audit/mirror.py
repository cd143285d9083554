"""The JSON Lines mirror: every committed event, one line each, for log shippers.

The database is the record; this file is a copy. Writing it happens after
commit, and a failure here (full disk, unwritable path) is logged and never
reaches the caller, so it cannot break or undo the database write.

Lines are written by one background thread per process: serializing and
appending took a quarter of a durable write's time (0.25 of 1.2 ms, measured
by audit_bench), and a pipeline step should not wait for a log shipper's
copy. The thread drains its queue at exit (atexit) and `flush()` waits for it;
a process killed with SIGKILL can lose the lines of its last few milliseconds,
which `export_audit_log` can regenerate from the database.
"""

import atexit
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from concurrent_log_handler import ConcurrentTimedRotatingFileHandler
from django.conf import settings

from audit.jsonl import legacy_line_text

log = logging.getLogger("audit.mirror")


class _MirrorHandler(ConcurrentTimedRotatingFileHandler):
    # The library's handler locks across processes, rotates at midnight UTC or
    # at maxBytes, and gzips the old files. Its default error path prints to
    # stderr; ours goes to the application log.
    def rotation_filename(self, default_name: str) -> str:
        # The library numbers same-day files .1, .2, ... and reuses a number once
        # its file is pruned, so its oldest-first cleanup can then delete the
        # newest file. Numbering by the time of rotation keeps the order true.
        return f"{default_name}.{datetime.now(UTC):%H%M%S%f}"

    def handleError(self, record: logging.LogRecord) -> None:
        log.exception("audit JSON Lines mirror: could not write %s", self.baseFilename)


Config = tuple[str, int, int]

# How long the writer thread waits for more lines before writing what it has:
# the mirror lags the database by at most about this much.
COALESCE_SECONDS = 0.05


def _current_config() -> Config:
    return (
        settings.AUDIT_JSONL_PATH,
        settings.AUDIT_JSONL_MAX_BYTES,
        settings.AUDIT_JSONL_BACKUP_COUNT,
    )


class Mirror:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handler: _MirrorHandler | None = None
        self._config: Config | None = None
        self._reset_writer()

    def _reset_writer(self) -> None:
        # Also called in a forked child, which inherits the queue but not the thread.
        # Entries: the config in force, then events to render or lines rendered already.
        self._queue: queue.SimpleQueue[tuple[Config, list, list[str]]] = queue.SimpleQueue()
        self._pending = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, events: list) -> None:
        """Queue committed events for the writer thread; returns at once."""
        self._put(events, [])

    def submit_lines(self, lines: list[str]) -> None:
        """Queue committed events' lines, rendered already (the legacy import
        renders them in its worker processes)."""
        self._put([], lines)

    def _put(self, events: list, lines: list[str]) -> None:
        config = _current_config()  # the settings in force when the event committed
        if not config[0] or not (events or lines):
            return
        with self._idle:
            self._pending += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._drain, name="audit-jsonl-mirror", daemon=True
                )
                self._thread.start()
        self._queue.put((config, events, lines))

    def _drain(self) -> None:
        while True:
            batch = [self._queue.get()]
            # Lines arriving within COALESCE_SECONDS go out in one write: the
            # handler locks, stats and reads its rollover state per write, which
            # cost a web worker a third of its time when each request wrote its
            # own line (py-spy under the intake benchmark).
            # Asleep meanwhile, rather than woken by each line: the writers'
            # threads keep the GIL.
            time.sleep(COALESCE_SECONDS)
            with contextlib.suppress(queue.Empty):
                while len(batch) < 10_000:
                    batch.append(self._queue.get_nowait())
            for config, lines in self._render(batch):
                self.write_lines(lines, config=config)
            with self._idle:
                self._pending -= len(batch)
                if self._pending == 0:
                    self._idle.notify_all()

    @staticmethod
    def _render(batch: list[tuple[Config, list, list[str]]]) -> list[tuple[Config, list[str]]]:
        """The batch's lines, one list per run of entries with the same config."""
        out: list[tuple[Config, list[str]]] = []
        for config, events, rendered in batch:
            try:
                lines = rendered or [legacy_line_text(e) for e in events]
            except (TypeError, ValueError):
                log.exception("audit JSON Lines mirror: could not serialize events")
                continue
            if out and out[-1][0] == config:
                out[-1][1].extend(lines)
            else:
                out.append((config, list(lines)))
        return out

    def flush(self, timeout: float | None = 30) -> bool:
        """Wait until every queued line is written; False if the timeout ran out first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _get_handler(self, config: Config) -> _MirrorHandler | None:
        if config != self._config:
            self._close_handler()
            self._config = config
        if not config[0]:
            return None
        if self._handler is None:
            path = Path(config[0])
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handler = _MirrorHandler(
                str(path),
                when="midnight",
                utc=True,
                maxBytes=config[1],
                backupCount=config[2],
                use_gzip=True,
                encoding="utf-8",
            )
            self._handler.setFormatter(logging.Formatter("%(message)s"))
        return self._handler

    def write_lines(self, lines: list[str], *, config: Config | None = None) -> None:
        config = config or _current_config()
        with self._lock:
            try:
                handler = self._get_handler(config)
            except OSError:
                log.exception("audit JSON Lines mirror: cannot open %s", config and config[0])
                self._config = None  # try again on the next event
                return
            if handler is None:
                return
            # Several lines to a record: the handler takes its cross-process
            # lock and checks rotation per record, which cost 0.6 ms a line
            # (an import of a million legacy lines spent most of its time
            # here).
            # A file may overshoot maxBytes by one chunk: at most an eighth of it.
            limit = min(RECORD_BYTES, config[1] // 8) if config[1] > 0 else RECORD_BYTES
            for chunk in _chunks(lines, max(limit, 1)):
                record = logging.LogRecord("audit.jsonl", logging.INFO, "", 0, chunk, None, None)
                handler.handle(record)

    def close(self) -> None:
        """Write what is queued, then close the file."""
        self.flush()
        with self._lock:
            self._close_handler()
            self._config = None

    def _close_handler(self) -> None:
        if self._handler is not None:
            self._handler.close()
            self._handler = None


RECORD_BYTES = 256 * 1024


def _chunks(lines: list[str], limit: int) -> Iterator[str]:
    """The lines joined into texts of about `limit` characters (the record's
    own terminator ends the last line of each)."""
    chunk: list[str] = []
    size = 0
    for line in lines:
        chunk.append(line)
        size += len(line) + 1
        if size >= limit:
            yield "\n".join(chunk)
            chunk, size = [], 0
    if chunk:
        yield "\n".join(chunk)


mirror = Mirror()
atexit.register(mirror.close)
os.register_at_fork(after_in_child=mirror._reset_writer)


def mirror_events(events: list) -> None:  # list[AuditEvent]
    """Append events to the mirror; called from transaction.on_commit."""
    mirror.submit(events)
