"""The legacy workflow runner: intake, CRM and follow-ups, each step audited."""

import traceback

from crm_connector import CRMError, create_connector
from email_followup import EmailFollowup
from lead_ingest import LeadIngest

from automation_orchestrator.audit import get_audit_logger

audit = get_audit_logger()


class WorkflowRunner:
    def __init__(self, workflow, crm_type="hubspot"):
        self.workflow = workflow
        self.ingest = LeadIngest(workflow)
        self.crm = create_connector(crm_type, workflow)
        self.followup = EmailFollowup(workflow)

    def start(self):
        return audit.log_workflow_started(self.workflow)

    def stop(self, reason="manual"):
        return audit.log_workflow_stopped(self.workflow, reason)

    def process(self, lead_id, source, data):
        try:
            lead = self.ingest.ingest(lead_id, source, data)
        except ValueError as exc:
            # No traceback passed: the one being handled is recorded.
            audit.log_error("ValueError", str(exc), lead_id, self.workflow)
            return "rejected"
        if not self.ingest.qualify(lead):
            return "disqualified"
        destination = self.ingest.route(lead)
        record_id = self.crm.create(lead)
        self.followup.schedule(lead)
        self.followup.send_step(lead, 1, "Welcome")
        try:
            self.crm.update(lead_id, record_id, data.get("update", []))
        except CRMError as exc:
            audit.log_error(
                type(exc).__name__,
                str(exc),
                lead_id,
                self.workflow,
                traceback=traceback.format_exc(),
            )
            self.followup.cancel(lead, "crm sync failed")
            return "failed"
        return destination
