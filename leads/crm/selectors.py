"""Reads for the CRM performance analytics."""

from datetime import datetime
from typing import Any

from django.db.models import Avg, Count, Max, Q

from leads.crm.models import CrmCall


def crm_call_stats(*, since: datetime, until: datetime | None = None) -> list[dict[str, Any]]:
    """Per connection: calls, failures by kind and latency (average, worst) in a period."""
    qs = CrmCall.objects.filter(created_at__gte=since)
    if until is not None:
        qs = qs.filter(created_at__lt=until)
    Outcome = CrmCall.Outcome
    return list(
        qs.values("connection__name", "connection__kind")
        .annotate(
            calls=Count("id"),
            ok=Count("id", filter=Q(outcome=Outcome.OK)),
            retried=Count("id", filter=Q(outcome=Outcome.RETRY)),
            transient=Count("id", filter=Q(outcome=Outcome.TRANSIENT)),
            permanent=Count("id", filter=Q(outcome=Outcome.PERMANENT)),
            avg_latency_ms=Avg("latency_ms"),
            max_latency_ms=Max("latency_ms"),
        )
        .order_by("connection__name")
    )
