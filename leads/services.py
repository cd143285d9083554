"""Writes for leads. Each one records its audit event in the same transaction."""

from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.services import record_event
from leads.models import Lead


@transaction.atomic
def lead_create(
    *,
    email: str,
    source: str,
    name: str = "",
    company: str = "",
    workflow: str = "",
    actor: str = "system",
    extra: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> Lead:
    """Create a lead and its lead_ingested event; `at` backdates both (backfills, demo data)."""
    at = at or timezone.now()
    lead = Lead.objects.create(
        email=email.strip().lower(), name=name, company=company, source=source, created_at=at
    )
    lead.public_id = Lead.format_public_id(lead.pk)
    Lead.objects.filter(pk=lead.pk).update(public_id=lead.public_id)
    data = {"email": lead.email, "name": name, "company": company, **(extra or {})}
    record_event(
        event_type="lead_ingested",
        actor=actor,
        lead=lead,
        workflow=workflow,
        timestamp=at,
        details={
            "source": source,
            "fields": sorted(k for k, v in data.items() if v),
            "email": lead.email,
        },
    )
    return lead
