"""The email_sequence workflow step: enroll a routed lead in a sequence.

Config: {"kind": "email_sequence", "sequence": "<slug>"}, optionally
"by_status": {"nurture": "<slug>"} to pick another sequence by the lead's status.
"""

import logging
from collections.abc import Mapping
from typing import Any

from leads.followups.models import Sequence
from leads.followups.services import SequenceError, enroll
from leads.models import Lead

log = logging.getLogger(__name__)


class EmailSequenceStep:
    kind = "email_sequence"

    def run(self, *, lead_id: int, config: Mapping[str, Any]) -> None:
        lead = Lead.objects.select_related("workflow").get(pk=lead_id)
        if lead.status in (Lead.Status.DISQUALIFIED, Lead.Status.FAILED):
            log.info("lead %s is %s: not enrolled", lead.public_id, lead.status)
            return
        slug = (config.get("by_status") or {}).get(lead.status) or config.get("sequence")
        if not slug:
            raise SequenceError('email_sequence step needs "sequence": "<slug>"')
        try:
            sequence = Sequence.objects.get(slug=slug)
        except Sequence.DoesNotExist:
            known = ", ".join(Sequence.objects.values_list("slug", flat=True)) or "none"
            raise SequenceError(f"no sequence {slug!r} (known: {known})") from None
        enroll(lead=lead, sequence=sequence)
