"""Reads for the alert service and the admin."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from orchestrator.monitoring.alerts.models import AlertRule, Delivery, Incident


def enabled_rules() -> QuerySet[AlertRule]:
    return AlertRule.objects.filter(enabled=True).prefetch_related("channels").order_by("pk")


def open_incidents(*, rule: AlertRule) -> dict[str, Incident]:
    return {i.key: i for i in Incident.objects.filter(rule=rule, state=Incident.State.OPEN)}


def due_delivery_ids(*, now: datetime, limit: int = 50) -> list[int]:
    """Pending deliveries whose (next) attempt is due, oldest first (partial index)."""
    return list(
        Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
