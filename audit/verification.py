"""The record of full audit-trail verifications, for reports that must not verify
on every view (see IntegrityCheck).

Each record is MAC'd with the audit signing key: someone who can write the
database but lacks the key cannot insert or alter a check so that it shows as
verified."""

from typing import Any

from django.utils import timezone

from audit.models import IntegrityCheck
from audit.signing import format_timestamp, record_mac

# How many of the newest checks last_verification() looks through for one whose MAC
# verifies: rows forged in bulk cannot make it read the whole table.
SCAN_LIMIT = 100


def check_fields(check: IntegrityCheck) -> dict:
    return {
        "record": "integrity_check",
        "checked_at": format_timestamp(check.checked_at),
        "ok": check.ok,
        "events_checked": check.events_checked,
        "seals_checked": check.seals_checked,
        "unsealed": check.unsealed,
        "first_problem": check.first_problem,
    }


def check_status(check: IntegrityCheck) -> str:
    """ "verified" when the MAC matches, "unmacd" for a check recorded before MACs,
    "tampered" otherwise."""
    if not check.mac:
        return "unmacd"
    return "verified" if record_mac(check_fields(check)) == check.mac else "tampered"


def record_verification(result: Any) -> IntegrityCheck:
    """Keep the outcome of audit.integrity.verify() (its Report) as the latest check."""
    first = result.first_problem() if result.problems else None
    check = IntegrityCheck(
        checked_at=timezone.now(),
        ok=result.ok,
        events_checked=result.events_checked,
        seals_checked=result.seals_checked,
        unsealed=result.unsealed,
        first_problem=first.message if first else "",
    )
    check.mac = record_mac(check_fields(check))
    check.save()
    return check


def latest_check() -> IntegrityCheck | None:
    """The newest recorded check, whatever its MAC says."""
    return IntegrityCheck.objects.order_by("-checked_at", "-id").first()


def last_verification() -> IntegrityCheck | None:
    """The newest check whose MAC verifies."""
    for check in IntegrityCheck.objects.order_by("-checked_at", "-id")[:SCAN_LIMIT]:
        if check_status(check) == "verified":
            return check
    return None
