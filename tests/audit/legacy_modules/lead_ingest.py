"""Lead intake as the legacy integration left it: the audit import and a
module-level audit instance added to an existing module."""

from automation_orchestrator.audit import get_audit_logger

audit = get_audit_logger()

FREE_MAIL = ("@gmail.com", "@yahoo.com")


class LeadIngest:
    def __init__(self, workflow):
        self.workflow = workflow

    def ingest(self, lead_id, source, lead_data):
        if not lead_data.get("email"):
            raise ValueError(f"lead {lead_id} has no email")
        audit.log_lead_ingested(lead_id, source, lead_data, self.workflow)
        return {"lead_id": lead_id, **lead_data}

    def qualify(self, lead):
        qualified = not lead["email"].endswith(FREE_MAIL)
        reason = "business domain" if qualified else "free mail"
        audit.log_lead_qualified(lead["lead_id"], qualified, reason, self.workflow)
        return qualified

    def route(self, lead):
        country = lead.get("country")
        destination = "team-emea" if country == "DE" else "team-americas"
        audit.log_lead_routed(lead["lead_id"], destination, f"country == {country}", self.workflow)
        return destination
