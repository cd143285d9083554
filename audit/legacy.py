"""The legacy audit API, kept for code written against the old script.

    from audit import get_audit_logger
    audit = get_audit_logger()
    audit.log_lead_ingested("LEAD-001", "web_form", lead_data, "sales")
    history = audit.get_lead_history("LEAD-001")

Method names, arguments and the shape of the returned events are the legacy
ones; events now go to the database (in the caller's transaction, if any)
and reads use indexes instead of scanning a file. The logger holds no mutable
state, so one instance is safe to share between threads.
"""

import sys
import threading
import traceback as tb
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from typing import Any

from audit import selectors, services
from audit.jsonl import event_to_legacy
from audit.models import AuditEvent

# The eleven types the legacy script wrote. The apps that own them register
# them (audit.types); check_legacy_types makes a deployment without one fail
# its system checks instead of the first legacy call.
LEGACY_EVENT_TYPES = (
    "lead_ingested",
    "lead_qualified",
    "lead_routed",
    "crm_create",
    "crm_update",
    "email_sent",
    "email_scheduled",
    "email_cancelled",
    "workflow_started",
    "workflow_stopped",
    "error",
)


# What the legacy reads took for a time: a datetime, or the ISO text of its log
# lines ("2026-02-04T20:30:45.123456Z"), which callers copied from them.
Moment = datetime | date | str


def to_moment(value: Moment | None, *, name: str) -> datetime | None:
    """An aware datetime for a time given the legacy ways.

    The legacy log was written in UTC, so a time without a zone (a naive
    datetime, or text without "Z" or an offset) is read as UTC; a date means
    its midnight UTC. The selectors need aware datetimes: text or a date there
    failed with AttributeError.
    """
    if value is None or isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time.min)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not an ISO 8601 time") from None
    else:
        raise TypeError(f"{name}: expected a datetime, date or ISO 8601 text, not {value!r}")
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


class AuditLogger:
    def log_event(
        self,
        event_type: str,
        details: Mapping[str, Any] | None = None,
        lead_id: str | None = None,
        workflow: str | None = None,
        actor: str | None = None,
    ) -> dict[str, Any]:
        event = services.record_event(
            event_type=event_type, details=details, lead_id=lead_id, workflow=workflow, actor=actor
        )
        return event_to_legacy(event)

    def log_lead_ingested(
        self, lead_id: str, source: str, lead_data: Mapping[str, Any], workflow: str
    ) -> dict[str, Any]:
        return self.log_event(
            "lead_ingested",
            {
                "source": source,
                "fields": list(lead_data.keys()),
                "email": lead_data.get("email", "N/A"),
            },
            lead_id,
            workflow,
        )

    def log_lead_qualified(
        self, lead_id: str, qualified: bool, reason: str, workflow: str
    ) -> dict[str, Any]:
        return self.log_event(
            "lead_qualified", {"qualified": qualified, "reason": reason}, lead_id, workflow
        )

    def log_lead_routed(
        self, lead_id: str, destination: str, condition: str, workflow: str
    ) -> dict[str, Any]:
        return self.log_event(
            "lead_routed", {"destination": destination, "condition": condition}, lead_id, workflow
        )

    def log_crm_create(
        self, lead_id: str, crm_record_id: str, crm_type: str, workflow: str
    ) -> dict[str, Any]:
        return self.log_event(
            "crm_create", {"crm_record_id": crm_record_id, "crm_type": crm_type}, lead_id, workflow
        )

    def log_crm_update(
        self, lead_id: str, crm_record_id: str, fields_updated: list[str], workflow: str
    ) -> dict[str, Any]:
        return self.log_event(
            "crm_update",
            {"crm_record_id": crm_record_id, "fields_updated": list(fields_updated)},
            lead_id,
            workflow,
        )

    def log_email_sent(
        self, lead_id: str, recipient: str, subject: str, sequence_step: int, workflow: str
    ) -> dict[str, Any]:
        return self.log_event(
            "email_sent",
            {"recipient": recipient, "subject": subject, "sequence_step": sequence_step},
            lead_id,
            workflow,
        )

    def log_email_scheduled(
        self, lead_id: str, recipient: str, sequence_length: int, workflow: str
    ) -> dict[str, Any]:
        return self.log_event(
            "email_scheduled",
            {"recipient": recipient, "sequence_length": sequence_length},
            lead_id,
            workflow,
        )

    def log_email_cancelled(
        self, lead_id: str, recipient: str, reason: str, workflow: str
    ) -> dict[str, Any]:
        return self.log_event(
            "email_cancelled", {"recipient": recipient, "reason": reason}, lead_id, workflow
        )

    def log_workflow_started(self, workflow: str) -> dict[str, Any]:
        return self.log_event("workflow_started", {}, workflow=workflow)

    def log_workflow_stopped(self, workflow: str, reason: str = "manual") -> dict[str, Any]:
        return self.log_event("workflow_stopped", {"reason": reason}, workflow=workflow)

    def log_error(
        self,
        error_type: str | BaseException,
        error_message: str | None = None,
        lead_id: str | None = None,
        workflow: str | None = None,
        traceback: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record an error with its traceback.

        Pass the exception itself, or its type name and message as the legacy
        API did; called inside an `except` block without a traceback, the one
        being handled is captured.
        """
        exc = error_type if isinstance(error_type, BaseException) else None
        if exc is None and traceback is None and sys.exc_info()[1] is not None:
            exc = sys.exc_info()[1]
            traceback = "".join(tb.format_exception(exc))
        type_name = type(exc).__qualname__ if isinstance(error_type, BaseException) else error_type
        message = error_message if error_message is not None else (str(exc) if exc else "")
        event = services.record_event(
            event_type="error",
            lead_id=lead_id,
            workflow=workflow,
            details={"error_type": type_name, "error_message": message, **(context or {})},
            exc=exc,
            error_type=type_name,
            error_message=message,
            traceback=traceback or "",
        )
        return event_to_legacy(event)

    # --- reads ---------------------------------------------------------------------------

    def query_events(
        self,
        event_type: str | None = None,
        lead_id: str | None = None,
        workflow: str | None = None,
        since: Moment | None = None,
        until: Moment | None = None,
        actor: str | None = None,
        limit: int = 100,
        *,
        start_time: Moment | None = None,
        end_time: Moment | None = None,
    ) -> list[dict[str, Any]]:
        """Matching events in [since, until), newest first, at most `limit`.

        start_time and end_time are the legacy names of since and until.
        """
        if limit < 0:
            raise ValueError("limit must be zero or more")
        qs = selectors.event_list(
            event_type=event_type,
            lead_id=lead_id,
            workflow=workflow,
            actor=actor,
            since=to_moment(since if since is not None else start_time, name="since"),
            until=to_moment(until if until is not None else end_time, name="until"),
        )
        return [event_to_legacy(e) for e in qs[:limit]]

    def get_lead_history(self, lead_id: str) -> list[dict[str, Any]]:
        """Every event of the lead, oldest first."""
        return [event_to_legacy(e) for e in selectors.lead_history(lead_id=lead_id)]

    def get_statistics(
        self,
        workflow: str | None = None,
        since: Moment | None = None,
        until: Moment | None = None,
    ) -> dict[str, Any]:
        """Counts of the events in [since, until), in the legacy keys (total_events,
        event_types, leads_processed, errors) and a few more (see Statistics.as_dict)."""
        return selectors.statistics(
            workflow=workflow,
            since=to_moment(since, name="since"),
            until=to_moment(until, name="until"),
            with_leads=True,
        ).as_dict()

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        event = AuditEvent.objects.filter(uuid=event_id).first()
        return event_to_legacy(event) if event else None


_logger: AuditLogger | None = None
_lock = threading.Lock()


def get_audit_logger() -> AuditLogger:
    global _logger
    with _lock:
        if _logger is None:
            _logger = AuditLogger()
        return _logger
