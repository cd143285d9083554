"""Reads for the dashboard's lead pages.

The list pages with a keyset over (created_at, id), newest first, and counts
only up to a cap: a page costs the same on a hundred leads and on a million.
"""

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Q, QuerySet
from django.db.models.functions import Lower

from audit.models import AuditEvent
from audit.types import event_type_info, known_event_types, text
from core.paging import Page, paginate
from leads.crm.models import CrmCall, CrmRecord
from leads.followups.models import Enrollment, OutboundEmail
from leads.models import PUBLIC_ID_PREFIX, Lead

PAGE_SIZE = 50
# Served by the (created_at, id) indexes the lead filters end in.
LEAD_KEYS = ("-created_at", "-id")
SEARCH_MIN_LENGTH = 2
SEARCH_MAX_LENGTH = 100
# A lead with more events than this shows its latest ones; the event browser has the rest.
# 100 keeps the page fast (each entry costs template time) and still shows weeks of a
# busy lead's history.
TIMELINE_LIMIT = 100
CRM_CALLS_SHOWN = 10
PUBLIC_ID_RE = re.compile(rf"^{PUBLIC_ID_PREFIX}\d+$", re.IGNORECASE)


# --- The list ---------------------------------------------------------------------------


def lead_search(qs: QuerySet[Lead], *, text: str) -> QuerySet[Lead]:
    """Leads whose public id is `text` (any case), or whose email, name or company
    contains it, ignoring case: "acme" finds ann@acme.example and "Acme GmbH".

    No index serves a substring, so the list's newest-first walk tests each lead
    of the date range until a page is full: a common word fills it within the
    first rows, a rare one reads the range's leads once (bounded by the range,
    and the created filter says how far)."""
    text = text.strip().lower()
    if PUBLIC_ID_RE.match(text):
        return qs.filter(public_id=text.upper())
    # Emails are stored lower-case (leads.services.normalize_email): no Lower() needed.
    return qs.alias(name_lower=Lower("name"), company_lower=Lower("company")).filter(
        Q(email__contains=text) | Q(name_lower__contains=text) | Q(company_lower__contains=text)
    )


# Totals above this read "10,000+": counting on would cost more than the page.
def lead_page(
    qs: QuerySet[Lead], *, cursor: str | None = None, size: int = PAGE_SIZE
) -> Page[Lead]:
    """One page of `qs`, newest first, after `cursor` (core.paging; a cursor this list
    did not write raises CursorError)."""
    return paginate(qs.select_related("source", "owner"), keys=LEAD_KEYS, size=size, cursor=cursor)


# --- One lead ---------------------------------------------------------------------------


def lead_by_public_id(*, public_id: str) -> Lead | None:
    return (
        Lead.objects.select_related("source", "workflow", "owner", "team")
        .filter(public_id=public_id)
        .first()
    )


CATEGORY_ICONS = {
    "lead": "◆",
    "crm": "⇄",
    "email": "✉",
    "error": "⚠",
    "workflow": "⚙",
    "user": "👤",
}


def event_category(event_type: str) -> str:
    """The timeline's colour group of an event type (type-<category> in dashboard.css)."""
    return event_type_info(event_type).category


def event_summary(event: AuditEvent) -> str:
    """One line saying what happened, from the event's details (each app says how)."""
    return event_type_info(event.event_type).summary(event.details or {}, event)


@dataclass
class TimelineEntry:
    event: AuditEvent
    category: str
    icon: str
    label: str
    summary: str
    # The window the event browser is asked for when following the correlation id.
    window_since: datetime
    window_until: datetime
    # Display strings and links, filled by the view (dashboard.views.leads) once per
    # entry: plain lookups render far faster than the equivalent tags and filters.
    iso: str = ""
    utc_text: str = ""
    ago: str = ""
    detail_url: str = ""
    correlation_url: str = ""


@dataclass
class Timeline:
    entries: list[TimelineEntry]
    # Older events left out (more than TIMELINE_LIMIT); the event browser shows them.
    truncated: bool


def timeline_entry(event: AuditEvent, labels: dict[str, str]) -> TimelineEntry:
    category = event_category(event.event_type)
    day = event.timestamp.astimezone(UTC)
    return TimelineEntry(
        event=event,
        category=category,
        icon=CATEGORY_ICONS[category],
        label=labels.get(event.event_type, event.event_type),
        summary=event_summary(event),
        # A correlation's events follow from one run or request: the day before to
        # a month after (sequences send for weeks) holds them.
        window_since=day - timedelta(days=1),
        window_until=day + timedelta(days=30),
    )


def lead_timeline(*, lead_id: str, limit: int | None = None) -> Timeline:
    """The lead's events oldest first; the latest `limit` (TIMELINE_LIMIT) if it has more."""
    limit = limit or TIMELINE_LIMIT
    # Newest first with a limit walks the audit_lead_ts index from its end.
    newest = list(
        AuditEvent.objects.filter(lead_public_id=lead_id)
        .defer("traceback", "mac")
        .order_by("-timestamp", "-id")[: limit + 1]
    )
    truncated = len(newest) > limit
    labels = known_event_types()
    events = reversed(newest[:limit])
    return Timeline(entries=[timeline_entry(e, labels) for e in events], truncated=truncated)


@dataclass
class ScoreView:
    score: int | None
    status: str
    rules: list[dict[str, Any]]
    reason: str
    thresholds: dict[str, Any]
    decided: AuditEvent | None


def _rules(raw: Any) -> list[dict[str, Any]]:
    """Rules as [{"rule", "points"}]; legacy events kept them as {name: points}."""
    if isinstance(raw, dict):
        return [{"rule": str(k), "points": v} for k, v in raw.items()]
    if isinstance(raw, list):
        return [r for r in raw if isinstance(r, dict)]
    return []


# The events the lead page shows the latest of (score_view, routing_event).
DECISION_TYPES = ("lead_qualified", "lead_routed")
DECISION_SCAN_LIMIT = 20_000


def latest_lead_events(
    *, lead_id: str, event_types: tuple[str, ...] = DECISION_TYPES
) -> dict[str, AuditEvent]:
    """The latest event of each of `event_types` for the lead, by type (absent: none).

    One walk of the lead's own index (lead_public_id, -timestamp, -id), newest
    first, reading only id and type, stopping once each type is found. Filtering
    by type in SQL instead lets SQLite (no statistics on the events table) pick
    the event-type index and walk every event of that type in the database; a
    lead with thousands of events and no routing decision took 300 ms that way.
    The walk stops after DECISION_SCAN_LIMIT events: a decision older than that
    many of the lead's events is reported as absent (the page links the rest).
    """
    wanted = set(event_types)
    ids: dict[str, int] = {}
    rows = (
        AuditEvent.objects.filter(lead_public_id=lead_id)
        .order_by("-timestamp", "-id")
        .values_list("id", "event_type")[:DECISION_SCAN_LIMIT]
    )
    for pk, event_type in rows.iterator(chunk_size=500):
        if event_type in wanted and event_type not in ids:
            ids[event_type] = pk
            if len(ids) == len(wanted):
                break
    events = AuditEvent.objects.defer("traceback", "mac").in_bulk(list(ids.values()))
    return {event_type: events[pk] for event_type, pk in ids.items()}


def _latest(
    lead_id: str, event_type: str, latest: dict[str, AuditEvent] | None
) -> AuditEvent | None:
    if latest is None:
        latest = latest_lead_events(lead_id=lead_id)
    return latest.get(event_type)


def score_view(*, lead: Lead, latest: dict[str, AuditEvent] | None = None) -> ScoreView:
    """How the lead got its score: the rules stored on the lead (or, for leads scored
    before that, in the last lead_qualified event) and the workflow's thresholds now.
    `latest`: latest_lead_events() of the lead, when the caller has it already."""
    decided = _latest(lead.public_id, "lead_qualified", latest)
    stored = lead.score_breakdown or {}
    details = decided.details if decided is not None else {}
    rules = _rules(stored.get("rules")) or _rules(details.get("breakdown") or details.get("rules"))
    config = (lead.workflow.config or {}) if lead.workflow_id else {}
    return ScoreView(
        score=lead.score if lead.score is not None else details.get("score"),
        status=lead.status,
        rules=rules,
        reason=text(stored.get("reason") or details.get("reason")),
        thresholds=(config.get("qualification") or {}).get("thresholds") or {},
        decided=decided,
    )


def routing_event(*, lead: Lead, latest: dict[str, AuditEvent] | None = None) -> AuditEvent | None:
    """The last lead_routed event: which rule gave the lead its owner."""
    return _latest(lead.public_id, "lead_routed", latest)


@dataclass
class CrmView:
    records: list[CrmRecord]
    calls: list[CrmCall]


def lead_crm(*, lead: Lead) -> CrmView:
    records = list(
        CrmRecord.objects.filter(lead=lead)
        .select_related("connection")
        .order_by("connection__name")
    )
    calls = list(
        CrmCall.objects.filter(lead=lead)
        .select_related("connection")
        .order_by("-created_at", "-id")[:CRM_CALLS_SHOWN]
    )
    return CrmView(records=records, calls=calls)


@dataclass
class EmailRow:
    email: OutboundEmail
    replied: bool = False
    bounced: bool = False


@dataclass
class EnrollmentView:
    enrollment: Enrollment
    emails: list[EmailRow] = field(default_factory=list)


def lead_sequences(*, lead: Lead) -> list[EnrollmentView]:
    """The lead's enrollments, newest first, each with its emails in step order; replies
    and bounces come from their events (they name the email's Message-ID)."""
    enrollments = list(
        Enrollment.objects.filter(lead=lead)
        .select_related("sequence", "next_step")
        .order_by("-created_at", "-id")
    )
    if not enrollments:
        return []
    emails = (
        OutboundEmail.objects.filter(enrollment__in=enrollments)
        .select_related("step")
        .defer("links")
        .order_by("step__position", "id")
    )
    answered: dict[str, set[str]] = {}
    for event_type, details in AuditEvent.objects.filter(
        lead_public_id=lead.public_id, event_type__in=["email_replied", "email_bounced"]
    ).values_list("event_type", "details"):
        message_id = (details or {}).get("message_id")
        if message_id:
            answered.setdefault(message_id, set()).add(event_type)
    views = {e.pk: EnrollmentView(enrollment=e) for e in enrollments}
    for email in emails:
        seen = answered.get(email.message_id, set())
        views[email.enrollment_id].emails.append(
            EmailRow(email=email, replied="email_replied" in seen, bounced="email_bounced" in seen)
        )
    return list(views.values())
