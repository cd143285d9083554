"""`import_audit_log --follow`: tail a legacy log the old system is still writing.

So both systems can run side by side during a migration. The follower reads
complete lines only (a line still being written waits for its newline), and
commits each batch of events together with its position (ImportPosition):
killed at any moment, it resumes where its last commit left it, with nothing
lost and nothing doubled. Event ids (the line's own, or one derived from its
content) make re-reading harmless too, which is what the rotation handling
leans on when in doubt.

Rotations, as logrotate does them:
- rename + new file: the follower drains the renamed file through its open
  handle, then opens the new one from the start;
- copytruncate: the file shrinks under the follower; the lines it had not
  read are in the copy, found by the digest of its first line (plain or
  gzip'd), and read from the old position before the new content;
- compressed old files: a follower that was stopped while its file was
  renamed and gzip'd finds it again by that digest and reads the rest from
  the decompressed stream, then every newer rotated file, then the live one.
"""

import hashlib
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from django.db import transaction
from django.db.models import F

from audit.models import AuditEvent, ImportPosition
from audit.transfer import BadLine, ImportReport, open_binary, parse_line, save_new
from audit.types import known_event_types

log = logging.getLogger(__name__)

BATCH_LINES = 2000
# A first line longer than this is identified by its first HEAD_BYTES.
HEAD_BYTES = 4096


def head_digest(handle: IO[bytes]) -> str:
    """sha256 of the file's first line (or first HEAD_BYTES); '' until it is complete."""
    first = handle.readline(HEAD_BYTES)
    if not first.endswith(b"\n") and len(first) < HEAD_BYTES:
        return ""
    return hashlib.sha256(first).hexdigest()


def _digest_of(path: Path) -> str:
    try:
        with open_binary(path) as handle:
            return head_digest(handle)
    except (OSError, EOFError):
        return ""


@dataclass
class _Reading:
    """The file being read: its handle (decompressing if gzip'd), identity and offset."""

    handle: IO[bytes]
    path: Path
    inode: int
    head: str
    offset: int


class Follower:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.report = ImportReport()
        self.correlation_id = f"follow-{uuid.uuid4().hex[:24]}"
        self.position, _ = ImportPosition.objects.get_or_create(path=str(path.resolve()))
        self._known = known_event_types()
        self._reading: _Reading | None = None

    # --- the loop's one step ---------------------------------------------------------

    def poll(self) -> int:
        """Import what was written since the last call, through any rotation;
        returns the number of events imported."""
        imported = 0
        if self._reading is None:
            imported += self._resume()
            if self._reading is None:
                return imported  # no file yet
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            # Renamed away, the new file not there yet: what was appended
            # before the rename is still behind our handle.
            return imported + self._drain()
        # Checked before reading on: after a copytruncate the live file may
        # already hold new lines past our offset, which are not the rest of ours.
        truncated = current.st_ino == self._reading.inode and (
            current.st_size < self._reading.offset
            or bool(self._reading.head and _digest_of(self.path) != self._reading.head)
        )
        if truncated:
            # The unread lines went to the copy.
            copy = self._find_rotated(self._reading.head)
            if copy is not None:
                imported += self._read_rotated(copy, offset=self._reading.offset)
            else:
                log.warning("%s was truncated and no rotated copy starts like it", self.path)
            return imported + self._open_live(offset=0)
        imported += self._drain()
        if current.st_ino != self._reading.inode:
            # Renamed: drained above through our handle; then the new file
            # from its start.
            imported += self._drain()
            imported += self._open_live(offset=0)
        return imported

    def close(self) -> None:
        if self._reading is not None:
            self._reading.handle.close()
            self._reading = None

    # --- finding our place -----------------------------------------------------------

    def _resume(self) -> int:
        """Open the file the saved position names; catch up on rotations missed
        while no follower ran."""
        if not self.path.exists():
            return 0
        pos = self.position
        live = os.stat(self.path)
        if pos.inode is None:
            return self._open_live(offset=0)
        same_file = live.st_ino == pos.inode and live.st_size >= pos.offset
        if same_file and (not pos.head or _digest_of(self.path) == pos.head):
            return self._open_live(offset=pos.offset)
        imported = 0
        ours = self._find_rotated(pos.head) if pos.head else None
        if ours is None:
            log.warning(
                "%s: the file last read (inode %s) is gone; reading the live file from its "
                "start (lines already imported are skipped by id)",
                self.path,
                pos.inode,
            )
        else:
            imported += self._read_rotated(ours, offset=pos.offset)
            # Rotated after ours, while no follower ran: each whole, oldest first.
            for newer in self._rotated_newer_than(ours):
                imported += self._read_rotated(newer, offset=0)
        return imported + self._open_live(offset=0)

    def _siblings(self) -> list[Path]:
        """Rotated copies: name.1, name.2.gz, name-20260101, name.1.gz ..."""
        stem = self.path.name
        return [
            p
            for p in self.path.parent.iterdir()
            if p != self.path and p.is_file() and p.name.startswith((stem + ".", stem + "-"))
        ]

    def _find_rotated(self, head: str) -> Path | None:
        if not head:
            return None
        for candidate in sorted(self._siblings(), key=lambda p: p.stat().st_mtime, reverse=True):
            if _digest_of(candidate) == head:
                return candidate
        return None

    def _rotated_newer_than(self, ours: Path) -> list[Path]:
        since = ours.stat().st_mtime
        newer = [p for p in self._siblings() if p.stat().st_mtime > since]
        return sorted(newer, key=lambda p: p.stat().st_mtime)

    # --- reading -----------------------------------------------------------------------

    def _open_live(self, *, offset: int) -> int:
        self.close()
        try:
            # Kept open across polls (closed by close()): a renamed file is
            # drained through it.
            handle = open(self.path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return 0
        head = head_digest(handle)
        handle.seek(offset)
        self._reading = _Reading(handle, self.path, os.fstat(handle.fileno()).st_ino, head, offset)
        return self._drain()

    def _read_rotated(self, path: Path, *, offset: int) -> int:
        with open_binary(path) as handle:
            head = head_digest(handle)
            handle.seek(offset)  # gzip: decompresses up to the offset
            reading = _Reading(handle, path, path.stat().st_ino, head, offset)
            return self._read(reading, final=True)

    def _drain(self) -> int:
        assert self._reading is not None
        if not self._reading.head:
            # The first line was incomplete when the file was opened.
            where = self._reading.handle.tell()
            self._reading.handle.seek(0)
            self._reading.head = head_digest(self._reading.handle)
            self._reading.handle.seek(where)
        return self._read(self._reading, final=False)

    def _read(self, reading: _Reading, *, final: bool) -> int:
        """Complete lines from the reading's offset, committed batch by batch with
        the position after each; `final` (a rotated file, complete) takes a last
        line without its newline too."""
        imported = 0
        for batch, end in self._batches(reading, final=final):
            imported += self._commit(batch, reading, end)
        return imported

    def _batches(
        self, reading: _Reading, *, final: bool
    ) -> Iterator[tuple[list[tuple[int, str]], int]]:
        batch: list[tuple[int, str]] = []
        offset = reading.offset
        while True:
            raw = reading.handle.readline()
            if not raw:
                break
            if not raw.endswith(b"\n") and not final:
                # Still being written: read it again, whole, next time.
                reading.handle.seek(offset)
                break
            batch.append((offset, raw.decode("utf-8", errors="replace")))
            offset += len(raw)
            if len(batch) >= BATCH_LINES:
                yield batch, offset
                batch = []
        if batch or offset != reading.offset:
            yield batch, offset

    def _commit(self, lines: list[tuple[int, str]], reading: _Reading, end: int) -> int:
        events: dict[uuid.UUID, AuditEvent] = {}
        for offset, text in lines:
            self.report.lines += 1
            if not text.strip():
                continue
            try:
                event = parse_line(text, correlation_id=self.correlation_id)
            except ValueError as exc:
                bad = BadLine(f"{reading.path}@{offset}", 0, str(exc))
                self.report.bad.append(bad)
                log.warning("legacy line not imported: %s: %s", bad.path, bad.reason)
                continue
            events.setdefault(event.uuid, event)
        with transaction.atomic():
            imported, existing = save_new(list(events.values()))
            ImportPosition.objects.filter(pk=self.position.pk).update(
                inode=reading.inode,
                head=reading.head,
                offset=end,
                imported=F("imported") + imported,
            )
        reading.offset = end
        self.position.inode, self.position.head, self.position.offset = (
            reading.inode,
            reading.head,
            end,
        )
        self.report.imported += imported
        self.report.already_present += len(existing)
        for event in events.values():
            if event.uuid not in existing and event.event_type not in self._known:
                self.report.unknown_types[event.event_type] += 1
        return imported
