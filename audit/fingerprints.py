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

Strategies are versioned, as Sentry versions its grouping configs: stored
fingerprints were made by some strategy, and a new way of grouping is a new
entry in STRATEGIES (never an edit of an old one), with a backfill if its
values differ for events already stored. "2026-12" exists because code moved
between apps: a frame's file is first mapped back to where that code lived
when "2026-11" fingerprinted it (CODE_MOVES), so a moved function keeps its
groups. Moving code again means adding its new path to CODE_MOVES.

"2026-12-07" stops merging different failures of one call: masking every
number made "POST /crm/v3/objects/contacts returned 400" and "... returned
500" one group, and the raising frame (CrmConnector.request for both) could
not tell them apart either. It keeps HTTP status codes (a 3-digit code after
"HTTP", "status", "returned", "answered", ... or before its reason phrase) and
endpoints (paths and URLs, with the request method; id-like path segments and
query strings still masked). With a traceback the group is still the frame,
plus only those status codes and endpoints: other words of the message do
not split it. Without one, the message normalized this way. A group whose
message holds neither keeps the fingerprint "2026-12" gave it, so only the
groups that merged different failures change (migration 0011 rewrote them).

A migration that rewrites stored fingerprints must then call
audit.integrity.rebuild_error_rollups(): the error pages count groups from the
rollups the sealer keeps, which know each error by the fingerprint it had when sealed.
"""

import hashlib
import json
import re
from collections.abc import Callable
from http import HTTPStatus

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

# Where code lives now -> where it lived for strategy "2026-11": a file, a
# folder ending in "/" (to a folder, or to the one module it was split from).
# Longest match wins.
CODE_MOVES: dict[str, str] = {
    "core/env.py": "orchestrator/env.py",
    "core/registry.py": "orchestrator/registry.py",
    "core/scheduled.py": "orchestrator/scheduled.py",
    "core/locks.py": "orchestrator/locks.py",
    "core/periods.py": "orchestrator/periods.py",
    "audit/verification.py": "audit/reports/verification.py",
    "orchestrator/monitoring/alerts/": "audit/alerts/",
    "orchestrator/monitoring/reports/": "audit/reports/",
    "orchestrator/dashboard/views/reports.py": "audit/reports/views.py",
    "orchestrator/monitoring/spikes.py": "audit/spikes.py",
    "orchestrator/monitoring/health.py": "orchestrator/health.py",
    "orchestrator/monitoring/heartbeat.py": "orchestrator/heartbeat.py",
    "orchestrator/dashboard/views/events.py": "audit/views/events.py",
    "orchestrator/dashboard/views/errors.py": "audit/views/errors.py",
    "orchestrator/dashboard/views/leads.py": "leads/views.py",
    "orchestrator/dashboard/views/analytics.py": "orchestrator/views/analytics.py",
    "orchestrator/dashboard/views/overview.py": "orchestrator/views/overview.py",
    "orchestrator/dashboard/views/workflows.py": "orchestrator/views/workflows.py",
    "orchestrator/dashboard/filters/events.py": "audit/filters.py",
    "orchestrator/dashboard/filters/leads.py": "leads/filters.py",
    "orchestrator/dashboard/selectors/leads.py": "leads/selectors.py",
    "orchestrator/dashboard/selectors/overview.py": "orchestrator/overview_selectors.py",
    "orchestrator/dashboard/selectors/analytics.py": "orchestrator/analytics_selectors.py",
    "orchestrator/dashboard/selectors/workflows.py": "orchestrator/workflow_selectors.py",
    "orchestrator/dashboard/access.py": "orchestrator/access.py",
    "orchestrator/dashboard/charts.py": "orchestrator/charts.py",
    "orchestrator/dashboard/render.py": "orchestrator/dashboard.py",
    "orchestrator/dashboard/urls.py": "orchestrator/dashboard_urls.py",
    "orchestrator/devtools/bench.py": "audit/bench.py",
    "orchestrator/devtools/bench_views.py": "audit/bench_views.py",
    "orchestrator/devtools/demo.py": "orchestrator/demo.py",
    "orchestrator/devtools/management/commands/audit_bench.py": (
        "audit/management/commands/audit_bench.py"
    ),
    "orchestrator/devtools/management/commands/": "orchestrator/management/commands/",
    "leads/followups/": "leads/email/",
    "leads/followups/services/": "leads/email/services.py",
    "leads/intake/": "leads/",
    "leads/intake/inbox/": "leads/inbox.py",
    "leads/workflows/runner.py": "orchestrator/runner.py",
    "leads/workflows/config.py": "orchestrator/workflows.py",
    "leads/workflows/steps.py": "orchestrator/steps.py",
    "leads/workflows/admin.py": "orchestrator/admin.py",
    "leads/workflows/management/commands/": "orchestrator/management/commands/",
}
_MOVES_LONGEST_FIRST = sorted(CODE_MOVES.items(), key=lambda item: -len(item[0]))


def normalize_message(message: str) -> str:
    text = message.strip().splitlines()[0] if message.strip() else ""
    for pattern, replacement in _NORMALIZERS:
        text = pattern.sub(replacement, text)
    return text[:300]


def _innermost(traceback: str) -> tuple[str, str] | None:
    frames = list(_FRAME_RE.finditer(traceback or ""))
    if not frames:
        return None
    last = frames[-1]
    return last["file"], last["func"]


def _project_path_2026_11(path: str) -> str:
    # Only the path below the project or site-packages: the same code installed
    # in two places (two machines, two virtualenvs) is one group.
    path = re.sub(r"^.*/(site-packages|dist-packages)/", "", path)
    return re.sub(r"^.*/(orchestrator|audit|leads)/", r"\1/", path)


def _project_path(path: str) -> str:
    path = re.sub(r"^.*/(site-packages|dist-packages)/", "", path)
    return re.sub(r"^.*/(core|orchestrator|audit|leads)/", r"\1/", path)


def _project_path_2026_12(path: str) -> str:
    path = _project_path(path)
    for now, then in _MOVES_LONGEST_FIRST:
        if path == now:
            return then
        if now.endswith("/") and path.startswith(now):
            # A folder split out of one module maps back to that module.
            return then if then.endswith(".py") else then + path[len(now) :]
    return path


# --- "2026-12-07": status codes and endpoints survive the masking -----------------------

_METHODS = "GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS"
_STATUS_RE = re.compile(
    r"\b(?:HTTP(?:/\d(?:\.\d)?)?|status(?:[ _]code)?|returned|answered|responded(?: with)?"
    r"|response|code|error)[\s:=#]*[1-5]\d\d\b"
    r"|\b[1-5]\d\d\s+(?:"
    + "|".join(sorted({re.escape(s.phrase) for s in HTTPStatus if s.phrase}, key=len, reverse=True))
    + r")\b",
    re.I,
)
# A path needs a non-word character (or nothing) before its "/": "1/2" and "and/or" are
# not endpoints. A URL keeps its host; the query string is masked whole.
_PATH_RE = re.compile(
    rf"(?:\b(?:{_METHODS})\s+)?"
    r"(?:(?<![\w.\-/:@<>])(?:https?://[\w.\-]+(?::\d+)?)(?:/[\w.~%@+\-]*)*"
    r"|(?<![\w.\-/:@<>])(?:/[\w.~%@+\-]+)+/?)"
    r"(?:\?[^\s#]*)?"
)
_NAMED_SEGMENT_RE = re.compile(r"^[A-Za-z][A-Za-z_.\-]*\d{0,2}$")  # v3, oauth2, contacts
_UUID_RE = _NORMALIZERS[1][0]
_HEX_RE = re.compile(r"^[0-9a-f]{12,}$", re.I)
_FREE_TEXT = [
    _NORMALIZERS[1],  # uuid
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    *_NORMALIZERS[2:],  # hex, LEAD-123, email, numbers
]


def _segment(segment: str) -> str:
    if not segment or _NAMED_SEGMENT_RE.match(segment):
        return segment
    if "@" in segment:
        return "<email>"
    if _UUID_RE.fullmatch(segment):
        return "<uuid>"
    if _HEX_RE.match(segment):
        return "<hex>"
    return "<id>"


def _endpoint(text: str) -> str:
    """An endpoint with what names one record masked: "PATCH /contacts/<id>?<query>"."""
    method, _, rest = text.rpartition(" ") if not text.startswith(("/", "http")) else ("", "", text)
    rest, mark, _query = rest.partition("?")
    host = ""
    if rest.startswith(("http://", "https://")):
        scheme, _, after = rest.partition("://")
        netloc, slash, path = after.partition("/")
        name, colon, port = netloc.partition(":")
        name = "<host>" if re.search(r"\d", name) and not re.search(r"[a-z]", name, re.I) else name
        host = f"{scheme}://{name}{colon}{'<n>' if port else ''}"
        rest = slash + path
    path = "/".join(_segment(s) for s in rest.split("/"))
    return f"{method.upper() + ' ' if method else ''}{host}{path}{'?<query>' if mark else ''}"


def _status(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _kept(text: str) -> list[tuple[int, int, str]]:
    """(start, end, normalized text) of each status code and endpoint, in order."""
    spans = [(m.start(), m.end(), _status(m.group())) for m in _STATUS_RE.finditer(text)]
    spans += [(m.start(), m.end(), _endpoint(m.group())) for m in _PATH_RE.finditer(text)]
    kept: list[tuple[int, int, str]] = []
    for start, end, value in sorted(spans):
        if kept and start < kept[-1][1]:
            continue  # a status code inside a path, or a path inside a status match
        kept.append((start, end, value))
    return kept


def _mask(text: str) -> str:
    for pattern, replacement in _FREE_TEXT:
        text = pattern.sub(replacement, text)
    return text


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else ""


def normalize_message_2026_12_07(message: str) -> str:
    """The message's first line with ids, emails, uuids, hex, quoted values and numbers
    masked, but HTTP status codes and endpoints kept (id-like path segments masked)."""
    text = _NORMALIZERS[0][0].sub(_NORMALIZERS[0][1], _first_line(message))
    out, at = [], 0
    for start, end, value in _kept(text):
        out += [_mask(text[at:start]), value]
        at = end
    out.append(_mask(text[at:]))
    return "".join(out)[:300]


def message_signature(message: str) -> str:
    """Only the status codes and endpoints of a message ("" if it has none)."""
    text = _NORMALIZERS[0][0].sub(_NORMALIZERS[0][1], _first_line(message))
    return " ".join(value for _s, _e, value in _kept(text))


def _strategy_2026_12_07(error_type: str, error_message: str, traceback: str) -> str:
    if not (error_type or error_message):
        return ""
    frame = _innermost(traceback)
    if frame:
        basis = f"{error_type}|{_project_path_2026_12(frame[0])}:{frame[1]}"
        signature = message_signature(error_message)
        if signature:
            basis += f"|{signature}"
    else:
        basis = f"{error_type}|{normalize_message_2026_12_07(error_message)}"
    return hashlib.sha256(basis.encode()).hexdigest()[:16]


_MASKED_RUN = re.compile(r"([{\[])\s*(?:<(?:str|n|id|hex|uuid|email)>[\s:,;=]*)+([}\]])")


# Keys an API's JSON error body names its reason with, most telling first.
_REASON_KEYS = ("message", "detail", "error_description", "error", "title")


def _embedded_json(text: str) -> tuple[str, object] | None:
    """(text before it, value) of the JSON object or array `text` ends with, if any."""
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return None
    at = min(starts)
    try:
        return text[:at], json.loads(text[at:])
    except ValueError:
        return None


def _api_reason(value: object, depth: int = 0) -> str | None:
    """The innermost reason a JSON error body gives: HubSpot's 400 nests the one that
    matters ("Email address ... is invalid") in a JSON array inside its "message"."""
    if depth > 4:
        return None
    if isinstance(value, list):
        return _api_reason(value[0], depth + 1) if value else None
    if not isinstance(value, dict):
        return None
    for key in _REASON_KEYS:
        text = value.get(key)
        if isinstance(text, str) and text.strip():
            inner = _embedded_json(text)
            deeper = _api_reason(inner[1], depth + 1) if inner else None
            return deeper or text
        if isinstance(text, dict | list):
            deeper = _api_reason(text, depth + 1)
            if deeper:
                return deeper
    return None


def group_title(error_type: str, error_message: str) -> str:
    """A group's name: "CrmError: POST /crm/v3/objects/contacts returned 400: Email
    address <email> is invalid". An API's JSON error body is replaced by the reason it
    gives (or {…} when it gives none): the body itself, masked, reads as noise.
    For display only; the fingerprint does not depend on it."""
    first = _first_line(error_message)
    body = _embedded_json(first)
    reason = None
    if body is not None:
        head, value = body
        reason = _api_reason(value)
        first = head + (reason.strip().splitlines()[0] if reason else "")
    message = normalize_message_2026_12_07(first)
    if body is not None and not reason:
        message = f"{message.rstrip()} {{…}}".strip()
    message = _MASKED_RUN.sub(r"\1…\2", message)
    if error_type and message:
        return f"{error_type}: {message}"
    return error_type or message


def _strategy(project_path: Callable[[str], str]) -> Callable[[str, str, str], str]:
    def compute(error_type: str, error_message: str, traceback: str) -> str:
        if not (error_type or error_message):
            return ""
        frame = _innermost(traceback)
        if frame:
            basis = f"{error_type}|{project_path(frame[0])}:{frame[1]}"
        else:
            basis = f"{error_type}|{normalize_message(error_message)}"
        return hashlib.sha256(basis.encode()).hexdigest()[:16]

    return compute


# id -> strategy. Never edit an entry: add one and point CURRENT at it.
STRATEGIES: dict[str, Callable[[str, str, str], str]] = {
    "2026-11": _strategy(_project_path_2026_11),
    "2026-12": _strategy(_project_path_2026_12),
    "2026-12-07": _strategy_2026_12_07,
}
CURRENT = "2026-12-07"


def top_frame(traceback: str) -> str:
    """'path/to/module.py:function' of the innermost frame, where the code is now, or ''
    without a traceback (for display; grouping maps moved code back, see above)."""
    frame = _innermost(traceback)
    return f"{_project_path(frame[0])}:{frame[1]}" if frame else ""


def fingerprint(
    *, error_type: str, error_message: str, traceback: str, strategy: str = CURRENT
) -> str:
    """16 hex characters naming the group; '' for an event that carries no error."""
    return STRATEGIES[strategy](error_type, error_message, traceback)
