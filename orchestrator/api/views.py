"""The events API: other systems (a SIEM, a notebook) write and read the audit trail.

`POST /api/v1/events` stores events in the legacy line format (as `import_audit_log`
does, one at a time validated by audit.transfer.parse_record), `GET /api/v1/events`
pages through them with the event browser's filters, `GET /api/v1/leads/<id>/history`
gives one lead's, `GET /api/v1/schema` describes all of it.

Keys, rate limits and error bodies are the lead API's (leads.intake.api), so a
client handles both alike. Every call a key makes past authentication and the
rate limit is audited with actor `api:<key name>`: one api_events_written,
api_events_read or api_request_refused event per request. Rate-limited and
unauthenticated calls are not: they would let anyone flood the trail, the very
thing the limit is for (as with login_failed, orchestrator.accounts).
"""

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.views.decorators.csrf import csrf_exempt

from audit import selectors
from audit.jsonl import event_to_legacy
from audit.models import AuditEvent
from audit.services import audit_context, record_event
from audit.transfer import parse_record, save_new
from core import writes
from core.jsonvalues import storable_text, strict_loads
from core.paging import CursorError, Page
from leads.intake.api import ApiError, _check_rate, _error_response, check_request_head
from leads.intake.apikeys import ApiKeyError, authenticate
from leads.models import ApiKey
from orchestrator.api.schema import openapi_document
from orchestrator.dashboard.exports import merge_types
from orchestrator.dashboard.filters.events import EventFilter
from orchestrator.dashboard.render import UserInputError, get_period

log = logging.getLogger(__name__)

JSON_TYPE = "application/json"
JSON_LINES_TYPES = ("application/x-ndjson", "application/jsonl")
ACCEPTED_TYPES = (JSON_TYPE, *JSON_LINES_TYPES)
# Deeper events are refused before anything recurses over them (schema validation,
# signing, PostgreSQL's jsonb input, which stops at its stack depth limit with an error).
MAX_DEPTH = 32
# Query parameters of the event browser's live tail, which the API does not have.
TAIL_PARAMS = ("after", "live")
RATE_GROUP = "orchestrator.api.events"
# How many rejected lines an api_events_written event keeps (all are counted).
AUDITED_REJECTIONS = 20
# A reason quotes what it refuses (a 1 MB string "is too long"): the answer and
# the audit trail get the start of it.
MAX_REASON = 500


# --- Parsing -------------------------------------------------------------------------


def _loads(raw: bytes) -> Any:
    """JSON as both databases can store it; ValueError (or RecursionError) if not."""
    return strict_loads(raw)


def _unstorable(data: Any) -> str | None:
    """Why an event cannot be stored though it is valid JSON, or None.

    Iterative, so a deep event cannot exhaust the stack here either.
    """
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"{where or 'event'}: nested more than {MAX_DEPTH} levels deep"
        if isinstance(item, str) and not storable_text(item):
            # PostgreSQL refuses NUL in text and jsonb; a lone surrogate (valid as
            # a JSON escape) has no UTF-8 spelling for either database.
            return f"{where or 'event'}: contains a NUL character or invalid Unicode"
        if isinstance(item, dict):
            for key, value in item.items():
                path = f"{where}/{key}" if where else str(key)
                stack.append((key, path, depth + 1))
                stack.append((value, path, depth + 1))
        elif isinstance(item, list):
            stack.extend((v, f"{where}/{i}", depth + 1) for i, v in enumerate(item))
    return None


def _printable(text: str, *, limit: int = MAX_REASON) -> str:
    """`text` as the audit trail can store it: NUL and lone surrogates (which a
    sender controls, in a key or a path) escaped, and at most `limit` characters."""
    if not storable_text(text):
        text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read_body(request: HttpRequest) -> tuple[str, bytes]:
    """The content type and the body, within EVENTS_API_MAX_BYTES; ApiError (413, 415)."""
    limit = settings.EVENTS_API_MAX_BYTES
    too_big = ApiError(413, f"The request body is larger than {limit} bytes.")
    content_type = check_request_head(
        request, limit=limit, accepted=ACCEPTED_TYPES, too_big=too_big
    )
    # Read from the stream, not request.body: this limit, not Django's
    # DATA_UPLOAD_MAX_MEMORY_SIZE, is the one that applies here, and no more
    # than one byte past it is ever held in memory.
    body = request.read(limit + 1)
    if len(body) > limit:
        raise too_big
    return content_type, body


def _too_many(count: int) -> ApiError:
    limit = settings.EVENTS_API_MAX_EVENTS
    return ApiError(413, f"{count} events in one request; send at most {limit}.")


def _items(content_type: str, body: bytes) -> list[tuple[int, Any]]:
    """(index, decoded event) pairs; a line that is not JSON is (index, LineError).

    The index is an event's position in the array, or its line's (from 0) in
    JSON Lines, where blank lines are skipped but counted, so a client finds a
    rejected line by its number.
    """
    if content_type == JSON_TYPE:
        try:
            data = _loads(body)
        except RecursionError:
            raise ApiError(400, "Malformed JSON: nested too deeply.") from None
        except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for bad bytes
            raise ApiError(400, f"Malformed JSON: {exc}") from None
        if not isinstance(data, list):
            raise ApiError(400, f"Expected a JSON array of events, not {type(data).__name__}.")
        if len(data) > settings.EVENTS_API_MAX_EVENTS:
            raise _too_many(len(data))
        return list(enumerate(data))
    lines = [(i, line) for i, line in enumerate(body.split(b"\n")) if line.strip()]
    if len(lines) > settings.EVENTS_API_MAX_EVENTS:
        raise _too_many(len(lines))
    items: list[tuple[int, Any]] = []
    for index, line in lines:
        try:
            items.append((index, _loads(line.decode("utf-8"))))
        except UnicodeDecodeError as exc:
            items.append((index, LineError(f"not UTF-8 ({exc.reason})")))
        except RecursionError:
            items.append((index, LineError("not valid JSON (nested too deeply)")))
        except ValueError as exc:
            items.append((index, LineError(f"not valid JSON ({exc})")))
    return items


@dataclass(frozen=True)
class LineError:
    reason: str


@dataclass
class Batch:
    events: list[AuditEvent] = field(default_factory=list)
    # Ids sent twice in one request: the later copies are answered as already present.
    repeats: list[str] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def _parse(items: list[tuple[int, Any]], *, correlation_id: str) -> Batch:
    batch = Batch()
    seen: set[uuid.UUID] = set()
    for index, data in items:
        reason = data.reason if isinstance(data, LineError) else _unstorable(data)
        if reason is None:
            try:
                event = parse_record(data, correlation_id=correlation_id)
            except ValueError as exc:
                reason = str(exc)
            except OverflowError:
                # An offset moving the timestamp past year 1 or 9999 in UTC.
                reason = "timestamp: out of range"
        if reason is not None:
            batch.rejected.append({"index": index, "reason": _printable(reason)})
        elif event.uuid in seen:
            batch.repeats.append(str(event.uuid))
        else:
            seen.add(event.uuid)
            batch.events.append(event)
    return batch


# --- Storing -----------------------------------------------------------------------------


def _store(batch: Batch, *, actor: str, path: str) -> tuple[list[str], list[str]]:
    """Store the batch and its api_events_written event; (accepted, already present) ids.

    One transaction for the whole batch and its audit event: the answer lists
    every event as stored or not, and a failure (503) must mean nothing was, so
    the sender's retry is complete. A thousand events are one short transaction.
    """
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                # In id order, so two requests inserting overlapping batches take
                # the unique index's locks in the same order and cannot deadlock.
                _inserted, existing = save_new(sorted(batch.events, key=lambda e: e.uuid))
                accepted = [str(e.uuid) for e in batch.events if e.uuid not in existing]
                present = [str(e.uuid) for e in batch.events if e.uuid in existing]
                present += batch.repeats
                record_event(
                    event_type="api_events_written",
                    actor=actor,
                    details={
                        "path": path,
                        # The ids, so the trail tells which key wrote an event even
                        # when the event names another actor or correlation id.
                        "accepted": accepted,
                        "already_present": len(present),
                        "rejected": len(batch.rejected),
                        "rejections": batch.rejected[:AUDITED_REJECTIONS],
                    },
                )
            return accepted, present
        except IntegrityError:
            # A concurrent request stored some of these events between our check and
            # our insert (its transaction committed while ours waited on the unique
            # index). Once more from the top sees them as already present; a second
            # conflict is a 503 with Retry-After.
            if attempt == 2:
                raise
            log.info("events API: concurrent insert of the same events; retrying once")
    raise AssertionError("unreachable")


# --- Responses -------------------------------------------------------------------------


def _authenticate(request: HttpRequest, scope: str) -> ApiKey:
    try:
        api_key = authenticate(request.headers.get("Authorization", ""), scope=scope)
    except ApiKeyError as exc:
        headers = {"WWW-Authenticate": 'Bearer realm="events"'} if exc.status == 401 else {}
        raise ApiError(exc.status, str(exc), headers) from None
    _check_rate(
        request,
        group=RATE_GROUP,
        key=lambda _group, _request: f"api-key:{api_key.pk}",
        rate=settings.EVENTS_API_RATE,
    )
    return api_key


def _unavailable(request: HttpRequest) -> ApiError:
    """The database refused (down, read-only, disk full): a JSON 503, never an HTML 500.

    A POST's transaction rolled back whole, so the sender's retry is the only copy.
    """
    log.exception("events API: the database refused the request")
    stored = "; nothing was stored" if request.method == "POST" else ""
    return ApiError(
        503,
        f"The audit trail cannot be reached right now{stored}. Retry later.",
        {"Retry-After": str(settings.LEADS_RETRY_AFTER_SECONDS)},
    )


def _refused(request: HttpRequest, actor: str, exc: ApiError) -> JsonResponse:
    """A key's refused request, audited."""
    with transaction.atomic():
        record_event(
            event_type="api_request_refused",
            actor=actor,
            details={
                "method": request.method,
                "path": _printable(request.path),
                "status": exc.status,
                "errors": {
                    _printable(name): [_printable(m) for m in messages]
                    for name, messages in exc.errors.items()
                },
            },
        )
    return _error_response(exc)


def _api_view(handler: Callable[..., JsonResponse], *, scope: str) -> Callable[..., HttpResponse]:
    """Authenticate, rate-limit and audit around `handler(request, actor, **kwargs)`."""

    def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        try:
            api_key = _authenticate(request, scope)
        except ApiError as exc:
            return _error_response(exc)
        except DatabaseError:
            return _error_response(_unavailable(request))
        actor = f"api:{api_key.name}"
        try:
            # The request's correlation id: on its audit event, and on every
            # posted event that brings none of its own.
            with audit_context(actor=actor):
                try:
                    return handler(request, actor, **kwargs)
                except ApiError as exc:
                    return _refused(request, actor, exc)
        except DatabaseError as exc:
            if request.method == "POST":
                writes.note_refused(exc)  # for /healthz
            return _error_response(_unavailable(request))

    return view


def _method_not_allowed(allowed: str) -> JsonResponse:
    return _error_response(ApiError(405, f"Only {allowed} is allowed here.", {"Allow": allowed}))


def _next_url(request: HttpRequest, page: Page) -> str | None:
    if page.next_cursor is None:
        return None
    query: QueryDict = request.GET.copy()
    query["cursor"] = page.next_cursor
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


def _page_size() -> int:
    return settings.EVENTS_API_PAGE_SIZE


# --- The views ---------------------------------------------------------------------------


def _post_events(request: HttpRequest, actor: str) -> JsonResponse:
    content_type, body = _read_body(request)
    # The request's correlation id (from _api_view's context), for events without one.
    with audit_context() as correlation_id:
        batch = _parse(_items(content_type, body), correlation_id=correlation_id)
    accepted, present = _store(batch, actor=actor, path=request.path)
    return JsonResponse(
        {"accepted": accepted, "already_present": present, "rejected": batch.rejected}
    )


def _get_events(request: HttpRequest, actor: str) -> JsonResponse:
    tail = [name for name in TAIL_PARAMS if name in request.GET]
    if tail:
        raise ApiError(400, {name: ["Not supported here; page with `next`."] for name in tail})
    try:
        period = get_period(request)
        filterset = EventFilter(request.GET, period=period)
        message = filterset.error_message()
        if message:
            raise UserInputError(message)
        cursor = filterset.values.get("cursor") or None
        # As the event browser reads a page: the cursor's timestamp bounds the
        # period, one upper bound on the index (see EventFilter.filter_queryset).
        to_ts = selectors.EVENTS.decode(cursor)[0] if cursor else None
        page = selectors.event_page(
            events=filterset.events(to_ts=to_ts),
            cursor=cursor,
            size=_page_size(),
            merge_types=merge_types(filterset),
        )
    except (UserInputError, CursorError) as exc:
        raise ApiError(400, str(exc)) from None
    with transaction.atomic():
        record_event(
            event_type="api_events_read",
            actor=actor,
            details={
                "view": "events",
                "filters": filterset.active,
                "since": period.start.isoformat(),
                "until": period.end.isoformat(),
                "cursor": cursor,
                "returned": len(page.items),
            },
        )
    return JsonResponse(
        {
            "events": [event_to_legacy(e) for e in page.items],
            "next": _next_url(request, page),
        }
    )


def _get_history(request: HttpRequest, actor: str, lead_id: str) -> JsonResponse:
    # No lead has an id the event store could not hold (longer than its column,
    # NUL, lone surrogates): answered as unknown without asking the database.
    max_length = AuditEvent._meta.get_field("lead_public_id").max_length or 0
    known = storable_text(lead_id) and len(lead_id) <= max_length
    cursor = request.GET.get("cursor") or None
    try:
        page = (
            selectors.EVENTS_FORWARD.page(
                selectors.lead_history(lead_id=lead_id), size=_page_size(), cursor=cursor
            )
            if known
            else None
        )
    except CursorError as exc:
        raise ApiError(400, str(exc)) from None
    if page is None or (not page.items and cursor is None):
        raise ApiError(404, f"No events for lead {lead_id!r}.")
    with transaction.atomic():
        # Not on the lead (as the dashboard's audit_viewed is): there, each page's
        # read would extend the history being paged, without end at one per page.
        record_event(
            event_type="api_events_read",
            actor=actor,
            details={
                "view": "lead_history",
                "lead_id": lead_id,
                "cursor": cursor,
                "returned": len(page.items),
            },
        )
    return JsonResponse(
        {
            "lead_id": lead_id,
            "events": [event_to_legacy(e) for e in page.items],
            "next": _next_url(request, page),
        }
    )


_write_events = _api_view(_post_events, scope=ApiKey.Scope.EVENTS_WRITE)
_read_events = _api_view(_get_events, scope=ApiKey.Scope.EVENTS_READ)
_read_history = _api_view(_get_history, scope=ApiKey.Scope.EVENTS_READ)


@csrf_exempt  # bearer-token auth: no cookies, so no CSRF to defend against
def events(request: HttpRequest) -> HttpResponse:
    """GET (events:read) or POST (events:write) /api/v1/events."""
    if request.method == "POST":
        return _write_events(request)
    if request.method == "GET":
        return _read_events(request)
    return _method_not_allowed("GET, POST")


@csrf_exempt
def lead_history(request: HttpRequest, lead_id: str) -> HttpResponse:
    """GET /api/v1/leads/<lead id>/history (events:read): the lead's events, oldest first."""
    if request.method != "GET":
        return _method_not_allowed("GET")
    return _read_history(request, lead_id=lead_id)


@csrf_exempt  # so a POST gets the JSON 405, not the CSRF page
def schema(request: HttpRequest) -> HttpResponse:
    """GET /api/v1/schema: the OpenAPI description; public, it holds no data."""
    if request.method != "GET":
        return _method_not_allowed("GET")
    return JsonResponse(openapi_document(request.build_absolute_uri("/")))
