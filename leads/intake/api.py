"""The web form API (`POST /api/v1/leads`) and the public form endpoint (`POST /f/<slug>`).

Views parse, authenticate and answer; the lead is stored by
leads.services.ingest_lead, which commits the lead and its lead_ingested event
before the response is built. Bad input of any kind is a 4xx, never a 500.
"""

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import DatabaseError, IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt
from django_ratelimit import ALL
from django_ratelimit.core import (
    EXPIRATION_FUDGE,
    _get_window,
    _make_cache_key,
    _split_rate,
    get_usage,
)

from audit.services import AuditValidationError, audit_context
from core import writes
from core.db.bulk import insert_all
from core.jsonvalues import storable_text, strict_loads
from leads.intake.apikeys import ApiKeyError, authenticate
from leads.models import ApiKey, IdempotencyRecord, LeadSource
from leads.services import IngestResult, LeadValidationError, ingest_lead, ingest_leads

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
JSON_TYPE = "application/json"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
ACCEPTED_TYPES = (JSON_TYPE, *FORM_TYPES)
# Deeper payloads are refused before anything recurses over them (schema
# validation, JSON encoding for the database), which would hit Python's limit.
MAX_DEPTH = 20
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x20-\x7e]{1,255}$")
HONEYPOT_FIELD = "website"
NEXT_FIELD = "next"
NON_FIELD = "non_field_errors"


class ApiError(Exception):
    """A refusal the view turns into a JSON error response."""

    def __init__(
        self,
        status: int,
        errors: dict[str, list[str]] | str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.errors = errors if isinstance(errors, dict) else {NON_FIELD: [errors]}
        self.headers = headers or {}
        super().__init__(f"{status}: {self.errors}")


def _error_response(exc: ApiError) -> JsonResponse:
    return JsonResponse({"errors": exc.errors}, status=exc.status, headers=exc.headers)


def _method_not_allowed() -> JsonResponse:
    return _error_response(ApiError(405, "Only POST is allowed here.", {"Allow": "POST"}))


# --- Parsing -------------------------------------------------------------------------


def _check_values(payload: dict[str, Any]) -> None:
    """Refuse what would fail in the database rather than in validation."""
    errors: dict[str, list[str]] = {}
    for field, value in payload.items():
        # Iterative, so a deep payload cannot exhaust the stack here either.
        stack: list[tuple[Any, int]] = [(field, 1), (value, 1)]
        while stack:
            item, depth = stack.pop()
            if depth > MAX_DEPTH:
                errors.setdefault(field, []).append(f"Nested more than {MAX_DEPTH} levels deep.")
                break
            if isinstance(item, str) and not storable_text(item):
                errors.setdefault(field, []).append("Contains a NUL character or invalid Unicode.")
                break
            if isinstance(item, dict):
                stack.extend((x, depth + 1) for pair in item.items() for x in pair)
            elif isinstance(item, list):
                stack.extend((x, depth + 1) for x in item)
    if errors:
        raise ApiError(400, errors)


def check_request_head(
    request: HttpRequest, *, limit: int, accepted: Sequence[str], too_big: ApiError
) -> str:
    """The request's content type, once its declared length and type are acceptable.

    Refused before a byte of the body is read, so a large upload costs us nothing."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise too_big
    content_type = (request.content_type or "").lower()
    if content_type not in accepted:
        raise ApiError(
            415,
            f"Unsupported Content-Type {content_type or '(none)'!r}; "
            f"send one of: {', '.join(accepted)}.",
        )
    return content_type


def read_payload(
    request: HttpRequest,
    *,
    limit: int = MAX_BODY_BYTES,
    accepted: Sequence[str] = ACCEPTED_TYPES,
) -> dict[str, Any]:
    """The body as a dict, from JSON or a form; raises ApiError (400, 413, 415)."""
    too_big = ApiError(413, f"The request body is larger than {limit // 1024} KB.")
    content_type = check_request_head(request, limit=limit, accepted=accepted, too_big=too_big)
    try:
        body = request.body
        if len(body) > limit:
            raise too_big
        payload = _parse_json(body) if content_type == JSON_TYPE else _parse_form(request)
    # Django's own limits (DATA_UPLOAD_MAX_*) raise these; left alone they
    # would be an HTML 400 page, or a 500 in the middle of a view.
    except RequestDataTooBig:
        raise too_big from None
    except (MultiPartParserError, SuspiciousOperation) as exc:
        raise ApiError(400, f"Malformed form body: {exc}") from None
    _check_values(payload)
    return payload


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = strict_loads(body)
    except RecursionError:
        raise ApiError(400, "Malformed JSON: nested too deeply.") from None
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for bad bytes
        raise ApiError(400, f"Malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"Expected a JSON object, not {type(data).__name__}.")
    return data


def _parse_form(request: HttpRequest) -> dict[str, Any]:
    if request.FILES:
        raise ApiError(400, {name: ["File uploads are not accepted."] for name in request.FILES})
    # A field sent once is a string, as in JSON; repeated, a list.
    return {k: v[0] if len(v) == 1 else v for k, v in request.POST.lists()}


def _request_hash(payload: dict[str, Any]) -> str:
    # Of the parsed payload, so key order and whitespace do not make a retry "different".
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _idempotency_key(request: HttpRequest) -> str | None:
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return None
    key = raw.strip()
    if not IDEMPOTENCY_KEY_RE.match(key):
        raise ApiError(
            400,
            {"Idempotency-Key": ["Must be 1-255 printable ASCII characters."]},
        )
    return key


# Both lead endpoints spend one budget per API key (LEADS_API_RATE).
LEADS_RATE_GROUP = "leads.intake.api"


def _rate_key(api_key: ApiKey) -> str:
    return f"api-key:{api_key.pk}"


# --- Rate limits -----------------------------------------------------------------------


def _check_rate(
    request: HttpRequest, *, group: str, key: str | Callable[[str, HttpRequest], str], rate: str
) -> None:
    """Count this request; raise a 429 with Retry-After once `rate` is exceeded.

    `key` is a django-ratelimit key ("ip", ...) or a function of (group, request).
    """
    usage = get_usage(request, group=group, key=key, rate=rate, increment=True)
    if usage and usage["should_limit"]:
        # django-ratelimit's window still includes its end second, so the
        # first request that gets through comes one second after time_left.
        retry_after = max(1, usage["time_left"] + 1)
        raise ApiError(
            429,
            f"Too many requests; retry in {retry_after} seconds.",
            {"Retry-After": str(retry_after)},
        )


# --- Ingestion ---------------------------------------------------------------------------


def _ingest(*, source: LeadSource, payload: dict[str, Any], actor: str) -> IngestResult:
    # ingest_lead's own actor default ("system") would win over audit_context's,
    # so the actor is passed explicitly; the context still gives a correlation id.
    with audit_context(actor=actor):
        try:
            return ingest_lead(source=source, payload=payload, actor=actor)
        except LeadValidationError as exc:
            raise ApiError(400, exc.errors) from None
        except AuditValidationError as exc:
            # The payload passed validation but the audit trail refused its
            # details (e.g. a key it mistakes for a NUL escape); still the
            # sender's input, so a 400, and logged because it should not happen.
            log.warning("lead from %s refused by the audit trail: %s", source.slug, exc)
            raise ApiError(400, "The payload contains text that cannot be recorded.") from None


def _lead_body(result: IngestResult) -> tuple[int, dict[str, Any]]:
    status = 201 if result.created else 200
    return status, {"lead_id": result.lead.public_id, "duplicate": result.duplicate}


def _replay(record: IdempotencyRecord, request_hash: str) -> JsonResponse:
    if record.request_hash != request_hash:
        raise ApiError(
            422,
            "This Idempotency-Key was already used with a different request body; "
            "use a new key for a new request.",
        )
    return JsonResponse(
        record.response, status=record.status_code, headers={"Idempotent-Replayed": "true"}
    )


def _ingest_once(
    *, source: LeadSource, key: str, payload: dict[str, Any], actor: str
) -> JsonResponse:
    """Ingest under an Idempotency-Key: the first request's response, for every repeat."""
    request_hash = _request_hash(payload)
    record = IdempotencyRecord.objects.filter(source=source, key=key).first()
    if record is not None:
        return _replay(record, request_hash)
    try:
        with transaction.atomic():
            status, body = _lead_body(_ingest(source=source, payload=payload, actor=actor))
            # In the lead's transaction. A concurrent request with the same key
            # (and so the same address) waited for this one's lock on the
            # address, or for SQLite's write lock; it then fails here, rolls
            # back its duplicate, and replays what this one stored.
            IdempotencyRecord.objects.create(
                source=source, key=key, request_hash=request_hash, status_code=status, response=body
            )
    except IntegrityError:
        record = IdempotencyRecord.objects.filter(source=source, key=key).first()
        if record is None:  # the conflict was not ours to replay
            raise
        return _replay(record, request_hash)
    return JsonResponse(body, status=status)


# --- The API -------------------------------------------------------------------------------


def _lead_writer(request: HttpRequest) -> ApiKey:
    """The API key of a lead-writing request, its source accepting leads; or ApiError."""
    try:
        api_key = authenticate(
            request.headers.get("Authorization", ""), scope=ApiKey.Scope.LEADS_WRITE
        )
    except ApiKeyError as exc:
        headers = {"WWW-Authenticate": 'Bearer realm="leads"'} if exc.status == 401 else {}
        raise ApiError(exc.status, str(exc), headers) from None
    if not api_key.source.active:
        raise ApiError(403, f"The source {api_key.source.slug!r} is not accepting leads.")
    return api_key


@csrf_exempt  # bearer-token auth: no cookies, so no CSRF to defend against
def api_leads(request: HttpRequest) -> HttpResponse:
    """POST /api/v1/leads with `Authorization: Bearer <key>`: store one lead."""
    if request.method != "POST":
        return _method_not_allowed()
    try:
        api_key = _lead_writer(request)
        source = api_key.source
        _check_rate(
            request,
            group=LEADS_RATE_GROUP,
            key=lambda _group, _request: _rate_key(api_key),
            rate=settings.LEADS_API_RATE,
        )
        idempotency_key = _idempotency_key(request)
        payload = read_payload(request)
        actor = f"api:{api_key.name}"
        if idempotency_key is not None:
            response = _ingest_once(
                source=source, key=idempotency_key, payload=payload, actor=actor
            )
        else:
            status, body = _lead_body(_ingest(source=source, payload=payload, actor=actor))
            response = JsonResponse(body, status=status)
        writes.note_accepted()
        return response
    except ApiError as exc:
        return _error_response(exc)
    except DatabaseError as exc:
        return _error_response(_unavailable(exc))


def _unavailable(exc: DatabaseError) -> ApiError:
    """The database refused the write (down, read-only, disk full): nothing was stored.

    The lead's transaction rolled back, so the sender's retry is the only copy:
    tell it so, like any API, instead of an HTML 500.
    """
    log.exception("lead not stored: the database refused the write")
    writes.note_refused(exc)  # for /healthz
    retry = str(settings.LEADS_RETRY_AFTER_SECONDS)
    return ApiError(
        503,
        "Leads cannot be stored right now; nothing was kept. Retry later.",
        {"Retry-After": retry},
    )


# --- The batch API ----------------------------------------------------------------------

MAX_BATCH_ITEMS = 500
MAX_BATCH_BYTES = 2 * 1024 * 1024
BATCH_ATTEMPTS = 8


def _charge(api_key: ApiKey, count: int) -> None:
    """Count `count` leads against the key's LEADS_API_RATE, the budget the one-lead
    endpoint spends one at a time (the same counter); 429 if they do not all fit,
    and then none are counted, so a smaller batch can still go.

    django-ratelimit counts one per request; its window and key functions are used
    here so that both endpoints share a counter."""
    rate = settings.LEADS_API_RATE
    limit, period = _split_rate(rate)
    if count > limit:
        raise ApiError(
            400,
            f"This batch holds {count} leads; this API key may send at most {limit} "
            f"every {period} seconds (LEADS_API_RATE). Send smaller batches.",
        )
    value = _rate_key(api_key)
    window = _get_window(value, period)
    key = _make_cache_key(LEADS_RATE_GROUP, window, rate, value, ALL)
    if not cache.add(key, count, period + EXPIRATION_FUDGE):
        try:
            used = cache.incr(key, count)
        except ValueError:  # expired between the two calls: a new window
            cache.add(key, count, period + EXPIRATION_FUDGE)
            used = count
        if used > limit:
            cache.incr(key, -count)
            retry_after = max(1, window - int(time.time()) + 1)
            raise ApiError(
                429,
                f"This batch of {count} leads would go past this API key's limit of "
                f"{limit} every {period} seconds; retry in {retry_after} seconds.",
                {"Retry-After": str(retry_after)},
            )


def _batch_items(payload: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """(idempotency key, lead) per item of a batch body; ApiError names what is wrong."""
    items = payload.get("leads")
    if not isinstance(items, list):
        raise ApiError(400, {"leads": ['Expected a list of leads: {"leads": [...]}.']})
    if not items:
        raise ApiError(400, {"leads": ["The batch is empty."]})
    if len(items) > MAX_BATCH_ITEMS:
        raise ApiError(
            400, {"leads": [f"{len(items)} leads; a batch holds at most {MAX_BATCH_ITEMS}."]}
        )
    if unknown := sorted(set(payload) - {"leads"}):
        raise ApiError(400, {name: ["Unknown field."] for name in unknown})
    out: list[tuple[str | None, dict[str, Any]]] = []
    errors: dict[str, list[str]] = {}
    for index, item in enumerate(items):
        where = f"leads[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("lead"), dict):
            errors[where] = ['Expected {"lead": {...}} with an optional "idempotency_key".']
            continue
        if unknown := sorted(set(item) - {"lead", "idempotency_key"}):
            errors[where] = [f"Unknown field {unknown[0]!r}."]
            continue
        key = item.get("idempotency_key")
        if key is not None and not (isinstance(key, str) and IDEMPOTENCY_KEY_RE.match(key)):
            errors[f"{where}.idempotency_key"] = ["Must be 1-255 printable ASCII characters."]
            continue
        out.append((key, item["lead"]))
    if errors:
        # The shape of the batch is wrong: nothing is stored, so a fixed batch
        # can be sent again whole.
        raise ApiError(400, errors)
    return out


def _ingest_batch(
    *, source: LeadSource, items: list[tuple[str | None, dict[str, Any]]], actor: str
) -> list[dict[str, Any]]:
    """Store a batch; one result per item, in order. Idempotent per item: a key
    stored before (by either endpoint) replays its first response."""
    results: list[dict[str, Any] | None] = [None] * len(items)
    hashes = [_request_hash(lead) for _, lead in items]
    keys = {key for key, _ in items if key is not None}
    stored = {r.key: r for r in IdempotencyRecord.objects.filter(source=source, key__in=keys)}
    first_of_key: dict[str, int] = {}
    todo: list[int] = []
    for index, (key, _) in enumerate(items):
        if key is None:
            todo.append(index)
        elif key in stored:
            results[index] = _replayed(stored[key], hashes[index])
        elif key in first_of_key:
            continue  # answered below, from the first item with this key
        else:
            first_of_key[key] = index
            todo.append(index)

    def store(outcomes: list[IngestResult | LeadValidationError]) -> None:
        records = []
        for index, outcome in zip(todo, outcomes, strict=True):
            if isinstance(outcome, LeadValidationError):
                results[index] = {"status": 400, "errors": outcome.errors}
                continue
            status, body = _lead_body(outcome)
            results[index] = {"status": status, **body}
            key = items[index][0]
            if key is not None:
                records.append(
                    IdempotencyRecord(
                        source=source,
                        key=key,
                        request_hash=hashes[index],
                        status_code=status,
                        response=body,
                    )
                )
        # In the leads' transaction. A concurrent request that stored one of
        # these keys first makes this fail: the whole batch rolls back and the
        # view sends it again, when the key replays.
        insert_all(records)

    with audit_context(actor=actor):
        ingest_leads(
            source=source,
            payloads=[items[i][1] for i in todo],
            actor=actor,
            before_commit=store,
        )
    for index, (key, _) in enumerate(items):
        if results[index] is None and key is not None:
            first = first_of_key[key]
            answer = dict(results[first] or {})
            if hashes[index] != hashes[first]:
                results[index] = _key_reused()
            elif answer.get("status") in (200, 201):
                results[index] = {**answer, "replayed": True}
            else:
                results[index] = answer
    return [{"index": i, **(r or {})} for i, r in enumerate(results)]


def _replayed(record: IdempotencyRecord, request_hash: str) -> dict[str, Any]:
    if record.request_hash != request_hash:
        return _key_reused()
    return {"status": record.status_code, **record.response, "replayed": True}


def _key_reused() -> dict[str, Any]:
    return {
        "status": 422,
        "errors": {
            "idempotency_key": ["Already used with a different lead; use a new key for a new lead."]
        },
    }


@csrf_exempt  # bearer-token auth: no cookies, so no CSRF to defend against
def api_leads_batch(request: HttpRequest) -> HttpResponse:
    """POST /api/v1/leads/batch: up to MAX_BATCH_ITEMS leads in one request.

    Body: {"leads": [{"lead": {...}, "idempotency_key": "..."}, ...]}. Answers 200
    with one result per item, in order: 201 created, 200 duplicate (or replayed),
    400 invalid, 422 key reused with another lead. Valid items are stored even
    when others are not; a batch that is malformed as a whole stores nothing.
    """
    if request.method != "POST":
        return _method_not_allowed()
    try:
        api_key = _lead_writer(request)
        payload = read_payload(request, limit=MAX_BATCH_BYTES, accepted=(JSON_TYPE,))
        items = _batch_items(payload)
        _charge(api_key, len(items))
        actor = f"api:{api_key.name}"
        # Each attempt that loses a race for one of its keys rolls back whole and
        # starts again from the keys stored by then, which it now replays; it can
        # lose only to a batch that committed meanwhile, so a few attempts do.
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            try:
                results = _ingest_batch(source=api_key.source, items=items, actor=actor)
                break
            except IntegrityError:
                if attempt == BATCH_ATTEMPTS:
                    raise
        writes.note_accepted()
    except ApiError as exc:
        return _error_response(exc)
    except LeadValidationError as exc:
        return _error_response(ApiError(400, exc.errors))
    except AuditValidationError as exc:
        log.warning("batch from %s refused by the audit trail: %s", api_key.source.slug, exc)
        return _error_response(ApiError(400, "A lead contains text that cannot be recorded."))
    except DatabaseError as exc:
        return _error_response(_unavailable(exc))
    return JsonResponse(
        {
            "created": sum(1 for r in results if r["status"] == 201 and not r.get("replayed")),
            "duplicates": sum(1 for r in results if r.get("duplicate") and not r.get("replayed")),
            "replayed": sum(1 for r in results if r.get("replayed")),
            "failed": sum(1 for r in results if r["status"] >= 400),
            "results": results,
        }
    )


# --- The public form ---------------------------------------------------------------------


def _wants_html(request: HttpRequest) -> bool:
    # Browsers posting a plain <form> ask for HTML; scripts get JSON.
    return request.get_preferred_type([JSON_TYPE, "text/html"]) == "text/html"


def _form_page(title: str, message: str, errors: dict[str, list[str]] | None = None) -> str:
    items = format_html_join(
        "", "<li>{}: {}</li>", ((k, " ".join(v)) for k, v in (errors or {}).items())
    )
    return format_html(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{}</title></head>'
        "<body><h1>{}</h1><p>{}</p><ul>{}</ul></body></html>",
        title,
        title,
        message,
        items,
    )


def _form_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    if _wants_html(request):
        page = _form_page("Not sent", "The form could not be sent.", exc.errors)
        return HttpResponse(page, status=exc.status, headers=exc.headers)
    return _error_response(exc)


def _form_thanks(request: HttpRequest, next_url: object) -> HttpResponse:
    # Same host only: anything else would make the form an open redirect.
    if isinstance(next_url, str) and url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return HttpResponseRedirect(next_url, status=303)
    if _wants_html(request):
        return HttpResponse(_form_page("Thank you", "We have received your details."), status=201)
    # No lead id and no "duplicate" for anonymous senders: either would tell
    # anyone whether an address was already submitted, and how many leads we have.
    return JsonResponse({"status": "received"}, status=201)


@csrf_exempt  # embedded in other sites' pages, which cannot have our CSRF token
def public_form(request: HttpRequest, slug: str) -> HttpResponse:
    """POST /f/<slug>: a lead from a form on a web page, no key, limited per IP."""
    if request.method != "POST":
        return _method_not_allowed()
    try:
        # "ip" is core.http.client_ip: behind the reverse proxy, the header it
        # sets (deploy/nginx.conf), so each visitor has a bucket of its own.
        _check_rate(
            request,
            group="leads.public_form",
            key="ip",
            rate=settings.LEADS_FORM_RATE,
        )
        source = LeadSource.objects.filter(
            slug=slug, kind=LeadSource.Kind.WEB_FORM, active=True
        ).first()
        if source is None:
            raise ApiError(404, f"No form called {slug!r}.")
        payload = read_payload(request)
        honeypot = payload.pop(HONEYPOT_FIELD, None)
        next_url = request.GET.get(NEXT_FIELD, payload.pop(NEXT_FIELD, None))
        # Only bots fill the hidden field: they get the usual thanks, and
        # nothing is stored or recorded, so they learn nothing.
        if not honeypot:
            _ingest(source=source, payload=payload, actor="system")
            writes.note_accepted()
    except ApiError as exc:
        return _form_error(request, exc)
    except DatabaseError as exc:
        return _form_error(request, _unavailable(exc))
    return _form_thanks(request, next_url)
