"""Follow-up emails as the legacy integration left them."""

from automation_orchestrator.audit import get_audit_logger

audit = get_audit_logger()


class EmailFollowup:
    def __init__(self, workflow, sequence_length=3):
        self.workflow = workflow
        self.sequence_length = sequence_length

    def schedule(self, lead):
        audit.log_email_scheduled(
            lead["lead_id"], lead["email"], self.sequence_length, self.workflow
        )

    def send_step(self, lead, step, subject):
        audit.log_email_sent(lead["lead_id"], lead["email"], subject, step, self.workflow)

    def cancel(self, lead, reason):
        audit.log_email_cancelled(lead["lead_id"], lead["email"], reason, self.workflow)
