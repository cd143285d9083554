"""What an operator can do to one lead from the dashboard.

Each action runs the service that does the work (which records its audit event
as `actor`) and returns the sentence the operator is shown; one that does not
apply raises NotApplicable with the reason.
"""

from leads.crm.services import crm_retry_lead
from leads.followups.services import sequence_cancel_by_hand
from leads.models import Lead
from leads.services import lead_requalify


def requalify(lead: Lead, actor: str) -> str:
    result = lead_requalify(lead=lead, actor=actor)
    return f"Re-qualified {lead.public_id}: {result.status}, score {result.score}."


def retry_crm(lead: Lead, actor: str) -> str:
    records = crm_retry_lead(lead=lead, actor=actor)
    names = ", ".join(r.connection.name for r in records)
    return f"CRM sync of {lead.public_id} queued ({names})."


def cancel_sequences(lead: Lead, actor: str) -> str:
    cancelled = sequence_cancel_by_hand(lead=lead, actor=actor)
    plural = "s" if cancelled != 1 else ""
    return f"Cancelled {cancelled} active sequence{plural} of {lead.public_id}."
