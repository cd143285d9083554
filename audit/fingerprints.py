"""Error fingerprints: which error events are "the same error", as Sentry groups them.

An error with a traceback is grouped by its exception type and the frame that
raised it (module file and function, not the line number, so an edit above
the raise does not split the group). Without a traceback, by the type and the
message with numbers, ids, hex strings and quoted values replaced, so
"timeout after 30s for LEAD-000123" and "... 31s for LEAD-000999" are one
group.

The fingerprint is derived from fields the event's MAC covers, so it is not
part of the MAC itself: verify_audit could recompute it, and changing the rule
later does not invalidate history.
"""

import hashlib
import re

_FRAME_RE = re.compile(r'^\s*File "(?P<file>[^"]+)", line \d+, in (?P<func>\S+)', re.MULTILINE)
_NORMALIZERS = [
    (re.compile(r"[\"'][^\"']{1,200}[\"']"), "<str>"),
    (
        re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
        "<uuid>",
    ),
    (re.compile(r"\b[0-9a-f]{12,}\b", re.I), "<hex>"),
    (re.compile(r"\b[A-Z]+-\d+\b"), "<id>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+(\.[\w-]+)+\b"), "<email>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
]


def normalize_message(message: str) -> str:
    text = message.strip().splitlines()[0] if message.strip() else ""
    for pattern, replacement in _NORMALIZERS:
        text = pattern.sub(replacement, text)
    return text[:300]


def top_frame(traceback: str) -> str:
    """'path/to/module.py:function' of the innermost frame, or '' without a traceback."""
    frames = list(_FRAME_RE.finditer(traceback or ""))
    if not frames:
        return ""
    last = frames[-1]
    # Only the path below the project or site-packages: the same code installed
    # in two places (two machines, two virtualenvs) is one group.
    path = re.sub(r"^.*/(site-packages|dist-packages)/", "", last["file"])
    path = re.sub(r"^.*/(orchestrator|audit|leads)/", r"\1/", path)
    return f"{path}:{last['func']}"


def fingerprint(*, error_type: str, error_message: str, traceback: str) -> str:
    """16 hex characters naming the group; '' for an event that carries no error."""
    if not (error_type or error_message):
        return ""
    frame = top_frame(traceback)
    basis = f"{error_type}|{frame}" if frame else f"{error_type}|{normalize_message(error_message)}"
    return hashlib.sha256(basis.encode()).hexdigest()[:16]
