"""The JSON Lines mirror: every committed event, one line each, for log shippers.

The database is the record; this file is a copy. Writing it happens after
commit, and a failure here (full disk, unwritable path) is logged and never
reaches the caller, so it cannot break or undo the database write.
"""

import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path

from concurrent_log_handler import ConcurrentTimedRotatingFileHandler
from django.conf import settings

from audit.jsonl import event_to_legacy

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


class Mirror:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handler: _MirrorHandler | None = None
        self._config: tuple[str, int, int] | None = None

    def _get_handler(self) -> _MirrorHandler | None:
        config = (
            settings.AUDIT_JSONL_PATH,
            settings.AUDIT_JSONL_MAX_BYTES,
            settings.AUDIT_JSONL_BACKUP_COUNT,
        )
        if config != self._config:
            self.close()
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

    def write_lines(self, lines: list[str]) -> None:
        with self._lock:
            try:
                handler = self._get_handler()
            except OSError:
                log.exception("audit JSON Lines mirror: cannot open %s", settings.AUDIT_JSONL_PATH)
                self._config = None  # try again on the next event
                return
            if handler is None:
                return
            for line in lines:
                record = logging.LogRecord("audit.jsonl", logging.INFO, "", 0, line, None, None)
                handler.handle(record)

    def close(self) -> None:
        if self._handler is not None:
            self._handler.close()
            self._handler = None


mirror = Mirror()


def mirror_events(events: list) -> None:  # list[AuditEvent]
    """Append events to the mirror; called from transaction.on_commit."""
    try:
        lines = [json.dumps(event_to_legacy(e), ensure_ascii=False) for e in events]
    except (TypeError, ValueError):
        log.exception("audit JSON Lines mirror: could not serialize events")
        return
    mirror.write_lines(lines)
