"""The anchor log: every seal's digest, outside the database, as it is made.

The seal chain proves the database consistent with itself; it cannot show that
its newest seals were cut off, that everything was wiped, or that the chain was
rebuilt and re-sealed by someone holding the key. A copy of each seal's digest
kept elsewhere can (docs/audit-integrity.md has the threat model):

* After a seal commits (transaction.on_commit) its line is appended to the
  anchor log and fsync'd. A failed write never touches the seal; the next
  sealer run appends whatever the log lacks, in order, never twice.
* An AuditAnchorMark row records that anchors exist, so a deleted log is an
  alarm rather than an installation that has not anchored yet; the sealer
  refuses to start a new log over a lost one (``seal_audit --new-anchor-log``
  does, after an investigation).
* Optionally each line is also POSTed, signed, to a witness on another host
  (AUDIT_ANCHOR_WEBHOOK_URL): the one copy that root on this server cannot
  rewrite.

Retention never deletes seals or anchor lines, so they stay one-to-one.
"""

import fcntl
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from audit.models import AuditAnchorMark, AuditSeal
from audit.signing import format_timestamp
from core.signing import sign

log = logging.getLogger("audit.anchors")

DEFAULT_NAME = "audit-anchors.log"
# Enough to hold the last complete line whatever happened to the one after it.
_TAIL_BYTES = 64 * 1024
WITNESS_TIMEOUT = 10
# A witness switched on for an old chain catches up this many seals per run.
WITNESS_BATCH = 500

_lock = threading.Lock()


def anchor_path() -> Path | None:
    """Where the anchor log lives; None when both it and the mirror are turned off."""
    if settings.AUDIT_ANCHOR_PATH:
        return Path(settings.AUDIT_ANCHOR_PATH)
    if settings.AUDIT_JSONL_PATH:
        return Path(settings.AUDIT_JSONL_PATH).parent / DEFAULT_NAME
    return None


def witness_state_path(path: Path) -> Path:
    """The last seal number the witness acknowledged, in a file beside the log."""
    return path.with_name(path.name + ".witnessed")


def anchor_fields(seal: AuditSeal) -> dict[str, Any]:
    return {
        "number": seal.number,
        "high_water": seal.high_water,
        "event_count": seal.event_count,
        "digest": seal.digest,
        "prev_digest": seal.prev_digest,
        "created_at": format_timestamp(seal.created_at),
    }


def anchor_line(seal: AuditSeal) -> str:
    return json.dumps(anchor_fields(seal), separators=(",", ":"))


def _parse(raw: bytes | str) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if (
        isinstance(value, dict)
        and isinstance(value.get("number"), int)
        and isinstance(value.get("digest"), str)
    ):
        return value
    return None


def _last_number(fd: int) -> tuple[int, bool]:
    """The newest seal number in the log, and whether the log ends mid-line."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0, False
    tail = os.pread(fd, _TAIL_BYTES, max(0, size - _TAIL_BYTES))
    for raw in reversed(tail.split(b"\n")):
        anchor = _parse(raw)
        if anchor is not None:
            return anchor["number"], not tail.endswith(b"\n")
    return 0, not tail.endswith(b"\n")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AnchorLogLost(Exception):
    """The marker says anchors were written, but the log is gone or empty."""


def anchor_pending(*, new_log: bool = False) -> int:
    """Append every seal the anchor log lacks; the number of lines written.

    Never raises for a write failure: the seal is committed and stays, the error
    is logged, and the next call catches up. With new_log, starts a fresh log
    even though the marker says one existed (after investigating its loss).
    """
    path = anchor_path()
    if path is None:
        return 0
    try:
        with _lock:
            return _append_missing(path, new_log=new_log)
    except AnchorLogLost:
        log.error(
            "audit anchor log %s is missing or empty although anchors were written: not "
            "starting a new one over it. Restore it, or investigate and run "
            "`seal_audit --new-anchor-log`.",
            path,
        )
    except OSError:
        log.exception("audit anchor log: could not write %s; the next seal run catches up", path)
    return 0


def _append_missing(path: Path, *, new_log: bool) -> int:
    if not AuditSeal.objects.exists():
        return 0
    marked = AuditAnchorMark.objects.exists()
    created = not path.exists()
    if (created or path.stat().st_size == 0) and marked and not new_log:
        raise AnchorLogLost(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        # Another process (prune_audit, a sealer on another worker) may be
        # appending too: the lock makes read-tail-then-append one step.
        fcntl.flock(fd, fcntl.LOCK_EX)
        with open(path, "rb") as reader:
            last, torn = _last_number(reader.fileno())
        seals = AuditSeal.objects.filter(number__gt=last).order_by("number")
        data = "".join(anchor_line(seal) + "\n" for seal in seals.iterator()).encode()
        if data:
            # A line torn by a crash stays (the app never truncates the log) but
            # must not swallow the next one; verify_audit reports it.
            os.write(fd, (b"\n" if torn else b"") + data)
            os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(path.parent)
    if data and (new_log or not marked):
        AuditAnchorMark.objects.create(path=str(path))
    return data.count(b"\n")


# --- the witness --------------------------------------------------------------------------


def witness_pending() -> int:
    """POST the anchor lines the witness has not acknowledged yet; the number sent.

    Failures are logged; the next sealer run starts again from the first line
    not acknowledged (a receiver should treat a repeated number as a repeat).
    """
    url = settings.AUDIT_ANCHOR_WEBHOOK_URL
    path = anchor_path()
    if not url or path is None:
        return 0
    secret = settings.AUDIT_ANCHOR_WEBHOOK_SECRET
    if not secret:
        log.error("audit anchor witness: AUDIT_ANCHOR_WEBHOOK_SECRET is empty; nothing sent")
        return 0
    state = witness_state_path(path)
    try:
        done = int(state.read_text().strip() or 0)
    except FileNotFoundError:
        done = 0
    except (OSError, ValueError):
        log.exception("audit anchor witness: cannot read %s; nothing sent", state)
        return 0
    sent = 0
    for seal in AuditSeal.objects.filter(number__gt=done).order_by("number")[:WITNESS_BATCH]:
        body = anchor_line(seal).encode()
        stamp = str(int(time.time()))
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "X-Audit-Timestamp": stamp,
                "X-Audit-Signature": sign(secret, body, timestamp=stamp),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=WITNESS_TIMEOUT) as response:
                response.read()
        except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
            log.error(
                "audit anchor witness: seal %s not acknowledged by %s (%s); retried next run",
                seal.number,
                url,
                exc,
            )
            break
        sent += 1
        try:
            tmp = state.with_name(state.name + ".partial")
            tmp.write_text(f"{seal.number}\n")
            os.replace(tmp, state)
        except OSError:
            log.exception("audit anchor witness: cannot record progress in %s", state)
            break
    return sent


def after_seal() -> None:
    """Run after a seal commits: anchor it, then show it to the witness."""
    try:
        anchor_pending()
        witness_pending()
    except Exception:  # the seal is committed: its caller must not fail now
        log.exception("audit anchors: could not anchor after a seal; the next run catches up")


# --- checking -----------------------------------------------------------------------------


@dataclass
class AnchorCheck:
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_anchors(path: Path) -> tuple[dict[int, str], list[str]]:
    """Seal number -> anchored digest, and what is wrong with the log itself."""
    anchors: dict[int, str] = {}
    problems: list[str] = []
    expected = 1
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, raw in enumerate(f, 1):
            anchor = _parse(raw)
            if anchor is None:
                problems.append(f"anchor log line {lineno} is not a valid anchor (edited?)")
                continue
            number = anchor["number"]
            if number in anchors:
                problems.append(f"anchor log lists seal {number} twice (line {lineno})")
                continue
            if number != expected:
                problems.append(
                    f"anchor log: seal {expected} is missing or out of order "
                    f"(line {lineno} holds seal {number}; the log was edited)"
                )
            anchors[number] = anchor["digest"]
            expected = number + 1
    return anchors, problems


def check_anchors(seals: dict[int, str], *, has_events: bool) -> AnchorCheck:
    """Compare the database's seals (number -> digest) with the anchor log."""
    result = AnchorCheck()
    path = anchor_path()
    if path is None:
        result.warnings.append(
            "anchor log is off (AUDIT_ANCHOR_PATH and AUDIT_JSONL_PATH are empty): "
            "truncation and re-sealing cannot be detected"
        )
        return result
    mark = AuditAnchorMark.objects.order_by("id").first()
    if not path.exists() or path.stat().st_size == 0:
        if mark is not None:
            result.problems.append(
                f"anchor log missing: {path} is gone or empty, but anchors have been "
                f"written since {mark.created_at:%Y-%m-%d %H:%M} UTC"
            )
        elif seals:
            result.warnings.append(
                f"no anchors yet ({path}): run seal_audit once to anchor the existing chain"
            )
        return result
    anchors, result.problems = read_anchors(path)
    result.checked = len(anchors)
    top = max(anchors, default=0)
    db_top = max(seals, default=0)
    if top and not seals and not has_events:
        result.problems.append(
            f"audit trail wiped: the anchor log records seals 1 to {top}, "
            "the database has no events and no seals"
        )
    elif top > db_top:
        result.problems.append(
            f"tail truncated: the anchor log records seal {top}, the database's newest "
            f"seal is {db_top or 'none'} (seals {db_top + 1} to {top} and their events are gone)"
        )
    unanchored: list[int] = []
    for number, digest in sorted(seals.items()):
        anchored = anchors.get(number)
        if anchored is None:
            if number > top:
                unanchored.append(number)
        elif anchored != digest:
            result.problems.append(
                f"seal {number} differs from the anchor log (anchored {anchored[:16]}, "
                f"database {digest[:16]}): the chain was rewritten and re-sealed"
            )
    if unanchored:
        result.warnings.append(
            f"{len(unanchored)} seals are not in the anchor log yet (from seal "
            f"{unanchored[0]}); the next seal_audit run appends them"
        )
    return result
