"""Writes for leads. Each one records its audit event in the same transaction."""

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connection, transaction
from django.utils import timezone
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from audit.models import AuditEvent
from audit.services import record_event, record_events
from core.db.bulk import insert_all
from core.locks import lock_value, lock_values
from leads.errors import NotApplicable
from leads.followups.services import lead_disqualified
from leads.models import LEAD_FIELDS, Lead, LeadSource
from leads.qualification import qualify
from leads.routing import choose_route

MAX_LENGTHS = {"email": 254, "name": 200, "company": 200, "phone": 50, "title": 200, "country": 2}


class LeadValidationError(ValueError):
    """Bad lead data; `errors` maps each field to its messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))


@dataclass
class IngestResult:
    lead: Lead
    created: bool
    merged_fields: list[str] = field(default_factory=list)

    @property
    def duplicate(self) -> bool:
        return not self.created


def normalize_email(raw: object) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise LeadValidationError({"email": ["This field is required."]})
    email = raw.strip().lower()
    try:
        validate_email(email)
    except ValidationError:
        raise LeadValidationError(
            {"email": [f"{raw.strip()!r} is not a valid email address."]}
        ) from None
    return email


@functools.lru_cache(maxsize=64)
def _validator(schema_json: str) -> Draft202012Validator:
    """A source's validator, built once per schema (by its JSON text, so an edited
    schema gets a new one): building it cost more than validating a lead."""
    try:
        return Draft202012Validator(json.loads(schema_json))
    except SchemaError as exc:  # a broken schema is the source's fault, not the sender's
        raise ValueError(f"the source's JSON Schema is invalid: {exc.message}") from None


def _schema_errors(schema: dict[str, Any], payload: Mapping[str, Any]) -> dict[str, list[str]]:
    if not schema:
        return {}
    validator = _validator(json.dumps(schema, sort_keys=True))
    errors: dict[str, list[str]] = {}
    for error in validator.iter_errors(dict(payload)):
        if error.validator == "required" and not error.absolute_path:
            for name in error.validator_value:
                if name not in payload:
                    errors.setdefault(name, []).append("This field is required.")
            continue
        key = str(error.absolute_path[0]) if error.absolute_path else "non_field_errors"
        errors.setdefault(key, []).append(error.message)
    return errors


def _unstorable(value: Any) -> str:
    """Why a value cannot be stored (databases refuse NUL and lone surrogates), or ""."""
    if isinstance(value, str):
        if "\x00" in value:
            return "Contains a NUL character."
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "Contains characters that are not valid Unicode."
        return ""
    if isinstance(value, Mapping):
        return next(
            (p for k, v in value.items() for p in (_unstorable(k), _unstorable(v)) if p), ""
        )
    if isinstance(value, list | tuple):
        return next((p for v in value if (p := _unstorable(v))), "")
    return ""


def clean_payload(
    source: LeadSource, payload: Mapping[str, Any]
) -> tuple[dict[str, str], dict[str, Any]]:
    """Validate a payload as the source sends it and split it into lead fields and extras.

    Raises LeadValidationError with messages per field (as the sender named it).
    """
    if not isinstance(payload, Mapping):
        raise LeadValidationError({"non_field_errors": ["Expected a JSON object."]})
    errors = _schema_errors(source.schema, payload)
    for key, value in payload.items():
        if problem := _unstorable(value):
            errors.setdefault(str(key), []).append(problem)
    mapping = source.field_mapping or {}
    fields: dict[str, str] = {}
    extra: dict[str, Any] = {}
    for key, value in payload.items():
        if key in errors:
            continue
        target = mapping.get(key, key)
        if target in LEAD_FIELDS:
            if value is None:
                continue
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                errors.setdefault(key, []).append("Expected text.")
                continue
            text = str(value).strip()
            if len(text) > MAX_LENGTHS[target]:
                errors.setdefault(key, []).append(
                    f"Ensure this value has at most {MAX_LENGTHS[target]} characters "
                    f"(it has {len(text)})."
                )
                continue
            fields[target] = text
        elif not target.startswith("_"):
            extra[target] = value
    if "email" not in errors:
        try:
            fields["email"] = normalize_email(fields.get("email"))
        except LeadValidationError as exc:
            email_key = next((k for k, v in mapping.items() if v == "email"), "email")
            errors.setdefault(email_key, []).extend(exc.errors["email"])
    country = fields.get("country", "")
    if country and not (len(country) == 2 and country.isalpha()):
        country_key = next((k for k, v in mapping.items() if v == "country"), "country")
        errors.setdefault(country_key, []).append("Use a two-letter country code (ISO 3166-1).")
    if country:
        fields["country"] = country.upper()
    if errors:
        raise LeadValidationError(errors)
    return fields, extra


# No savepoint of its own: inside ingest_lead's savepoint it only cost two
# statements per lead. A failure inside a caller's transaction spoils that
# transaction (Django refuses its next query), so nothing half-done commits.
@transaction.atomic(savepoint=False)
def lead_create(
    *,
    source: LeadSource,
    email: str,
    actor: str | None = None,
    at: datetime | None = None,
    extra: dict[str, Any] | None = None,
    **fields: str,
) -> Lead:
    """Create a lead and its lead_ingested event; `at` backdates both (backfills, demo data)."""
    at = at or timezone.now()
    lead = Lead.objects.create(
        email=email,
        source=source,
        # The instance, not its id: the event names the workflow, and a caller
        # that loaded it with the source (the API's key lookup) saves a query.
        workflow=source.workflow,
        extra=extra or {},
        created_at=at,
        **fields,
    )
    _set_public_ids([lead])
    record_event(**_ingested_event(lead, source, email, fields, extra or {}, actor, at))
    return lead


def _set_public_ids(leads: list[Lead]) -> None:
    """Give new leads their public id, which is made from the primary key.

    One prepared statement for all: through the ORM this UPDATE cost more than
    the INSERT before it (0.45 ms of query building for a 0.05 ms statement)."""
    for lead in leads:
        lead.public_id = Lead.format_public_id(lead.pk)
    table = connection.ops.quote_name(Lead._meta.db_table)
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET public_id = %s WHERE id = %s",
            [(lead.public_id, lead.pk) for lead in leads],
        )


def ingest_lead(
    *,
    source: LeadSource,
    payload: Mapping[str, Any],
    actor: str | None = None,
    at: datetime | None = None,
) -> IngestResult:
    """Validate, dedupe and store a lead from any source, with its lead_ingested event.

    A lead with the same normalized email from the same source within the
    source's dedupe window is a duplicate: its empty fields are filled and
    new extra keys added (what was there is kept), and the event says so.
    """
    fields, extra = clean_payload(source, payload)
    email = fields.pop("email")
    at = at or timezone.now()
    with transaction.atomic():
        # One ingestion per source and address at a time, so two copies of the
        # same lead arriving together cannot both be created; other leads of
        # the source go on beside it (a lock on the source row serialized them).
        lock_value(source.pk, email)
        existing = (
            Lead.objects.filter(
                source=source,
                email=email,
                created_at__gte=at - timedelta(hours=source.dedupe_window_hours),
            )
            .select_related("workflow")  # its event names the workflow
            .order_by("-created_at")
            .first()
        )
        if existing is None:
            lead = lead_create(
                source=source, email=email, actor=actor, at=at, extra=extra, **fields
            )
            return IngestResult(lead=lead, created=True)
        merged, update_fields = _merge_into(existing, fields, extra)
        if update_fields:
            existing.save(update_fields=[*update_fields, "updated_at"])
        record_event(
            **_ingested_event(existing, source, email, fields, extra, actor, at, merged=merged)
        )
        return IngestResult(lead=existing, created=False, merged_fields=merged)


def ingest_leads(
    *,
    source: LeadSource,
    payloads: list[Mapping[str, Any]],
    actor: str | None = None,
    at: datetime | None = None,
    before_commit: Callable[[list[IngestResult | LeadValidationError]], None] | None = None,
) -> list[IngestResult | LeadValidationError]:
    """ingest_lead for many payloads at once, in the caller's transaction (or one
    of its own), with the same validation, dedupe and events, in order.

    Each payload gets its IngestResult, or the LeadValidationError that kept it
    out; the valid ones are stored either way. A payload repeating an address
    that came earlier in the same list is a duplicate of that lead. Statements
    are per batch, not per lead: one dedupe query, one INSERT of the leads, one
    of their events. Validation runs before the transaction, so on SQLite other
    writers wait only for the writes; `before_commit(results)` runs inside it
    (the batch API stores its idempotency records there).
    """
    at = at or timezone.now()
    cleaned: list[tuple[dict[str, str], dict[str, Any], str] | LeadValidationError] = []
    for payload in payloads:
        try:
            fields, extra = clean_payload(source, payload)
        except LeadValidationError as exc:
            cleaned.append(exc)
            continue
        cleaned.append((fields, extra, fields.pop("email")))
    emails = {item[2] for item in cleaned if isinstance(item, tuple)}
    results: list[IngestResult | LeadValidationError] = []
    with transaction.atomic():
        lock_values(source.pk, emails)
        seen: dict[str, Lead] = {}
        for lead in (
            Lead.objects.filter(
                source=source,
                email__in=emails,
                created_at__gte=at - timedelta(hours=source.dedupe_window_hours),
            )
            .select_related("workflow")
            .order_by("email", "-created_at")
        ):
            seen.setdefault(lead.email, lead)
        new: list[Lead] = []
        changed: dict[int, set[str]] = {}  # existing lead's pk -> columns to save
        events: list[tuple[IngestResult, dict[str, str], dict[str, Any], str]] = []
        for item in cleaned:
            if isinstance(item, LeadValidationError):
                results.append(item)
                continue
            fields, extra, email = item
            lead = seen.get(email)
            if lead is None:
                lead = Lead(
                    email=email,
                    source=source,
                    workflow=source.workflow,
                    extra=dict(extra),
                    created_at=at,
                    **fields,
                )
                seen[email] = lead
                new.append(lead)
                result = IngestResult(lead=lead, created=True)
            else:
                merged, columns = _merge_into(lead, fields, extra)
                if columns and lead.pk is not None:
                    changed.setdefault(lead.pk, set()).update(columns)
                result = IngestResult(lead=lead, created=False, merged_fields=merged)
            results.append(result)
            events.append((result, fields, extra, email))
        insert_all(new)
        if new:
            _set_public_ids(new)
        for lead in seen.values():
            if lead.pk in changed:
                lead.save(update_fields=[*sorted(changed[lead.pk]), "updated_at"])
        record_events(
            [
                _ingested_event(
                    r.lead,
                    source,
                    email,
                    fields,
                    extra,
                    actor,
                    at,
                    merged=None if r.created else r.merged_fields,
                )
                for r, fields, extra, email in events
            ]
        )
        if before_commit is not None:
            before_commit(results)
    return results


def _merge_into(
    lead: Lead, fields: Mapping[str, str], extra: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    """A duplicate's news on the lead it repeats: empty fields filled, new extra keys
    added, nothing that is there overwritten. (what it added, the columns to save)"""
    merged = [name for name, value in fields.items() if value and not getattr(lead, name)]
    for name in merged:
        setattr(lead, name, fields[name])
    new_extra = [k for k in extra if k not in lead.extra]
    for key in new_extra:
        lead.extra[key] = extra[key]
    columns = [*merged, "extra"] if merged or new_extra else []
    return sorted([*merged, *new_extra]), columns


def _ingested_event(
    lead: Lead,
    source: LeadSource,
    email: str,
    fields: Mapping[str, str],
    extra: Mapping[str, Any],
    actor: str | None,
    at: datetime,
    *,
    merged: list[str] | None = None,
) -> dict[str, Any]:
    """record_event's arguments for a lead_ingested event: of a new lead, or with
    `merged` (what it added), of a duplicate."""
    details: dict[str, Any] = {"source": source.slug}
    if merged is None:
        details["fields"] = sorted([*(k for k, v in fields.items() if v), "email", *extra])
        details.update(email=email, duplicate=False)
    else:
        details["fields"] = sorted([*fields, "email", *extra])
        details.update(email=email, duplicate=True, merged_fields=merged)
    return {
        "event_type": "lead_ingested",
        "actor": actor,
        "lead": lead,
        "workflow": lead.workflow_name,
        "timestamp": at,
        "details": details,
    }


def lead_qualify(*, lead: Lead, config: Mapping[str, Any], actor: str = "system") -> Any:
    """Score and qualify the lead by the workflow's rules; the breakdown goes on the lead
    and into the lead_qualified event."""
    result = qualify(lead, config)
    lead.score = result.score
    lead.status = result.status
    lead.score_breakdown = {"rules": result.breakdown, "reason": result.reason}
    lead.save(update_fields=["score", "status", "score_breakdown", "updated_at"])
    record_event(
        event_type="lead_qualified",
        actor=actor,
        lead=lead,
        workflow=lead.workflow_name,
        details=result.as_details(),
    )
    if lead.status == Lead.Status.DISQUALIFIED:
        # A lead re-qualified as disqualified stops getting follow-ups.
        lead_disqualified(lead=lead, actor=actor or "system")
    return result


def lead_route(*, lead: Lead, config: Mapping[str, Any], actor: str = "system") -> Any:
    """Give the lead a team and owner by the workflow's routing rules; the lead_routed
    event names the rule that matched."""
    route = choose_route(lead, config)
    lead.team = route.team
    lead.owner = route.owner
    lead.save(update_fields=["team", "owner", "updated_at"])
    record_event(
        event_type="lead_routed",
        actor=actor,
        lead=lead,
        workflow=lead.workflow_name,
        details={
            "destination": route.destination,
            "condition": route.rule,
            "rule": route.rule,
            "team": route.team.slug if route.team else None,
            "owner": route.owner.get_username() if route.owner else None,
        },
    )
    return route


# --- Dashboard actions ------------------------------------------------------------------


def requalify_blocker(lead: Lead) -> str:
    """Why the lead cannot be re-qualified now, or "" if it can."""
    if lead.workflow_id is None:
        return f"{lead.public_id} belongs to no workflow, so there are no rules to score it by."
    if not (lead.workflow.config or {}).get("qualification"):
        return f"Workflow {lead.workflow.name} has no qualification rules."
    if lead.status == Lead.Status.NEW:
        # The runner only picks up new leads: qualifying one by hand would keep it
        # from ever being routed.
        return f"{lead.public_id} has not been processed yet; the workflow runner will qualify it."
    return ""


def lead_requalify(*, lead: Lead, actor: str) -> Any:
    """Score the lead again by its workflow's current rules (an operator's request).

    The row is locked first, so a runner working on the same lead waits.
    Raises NotApplicable when the lead has no rules to go by or is not processed yet.
    """
    with transaction.atomic():
        current = (
            Lead.objects.select_for_update(of=("self",)).select_related("workflow").get(pk=lead.pk)
        )
        if problem := requalify_blocker(current):
            raise NotApplicable(problem)
        return lead_qualify(
            lead=current, config=current.workflow.config["qualification"], actor=actor
        )


def lead_viewed(*, lead: Lead, actor: str, view: str = "lead_history") -> AuditEvent:
    """Record that someone looked at the lead's history (who saw what is audited too)."""
    return record_event(
        event_type="audit_viewed",
        actor=actor,
        lead=lead,
        workflow=lead.workflow_name,
        details={"view": view},
    )
