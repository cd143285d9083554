"""The record of full audit-trail verifications, for reports that must not verify
on every view (see IntegrityCheck)."""

from typing import Any

from audit.models import IntegrityCheck


def record_verification(result: Any) -> IntegrityCheck:
    """Keep the outcome of audit.integrity.verify() (its Report) as the latest check."""
    first = result.first_problem() if result.problems else None
    return IntegrityCheck.objects.create(
        ok=result.ok,
        events_checked=result.events_checked,
        seals_checked=result.seals_checked,
        unsealed=result.unsealed,
        first_problem=first.message if first else "",
    )


def last_verification() -> IntegrityCheck | None:
    return IntegrityCheck.objects.order_by("-checked_at", "-id").first()
