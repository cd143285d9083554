"""CRM connectors as the legacy integration left them: created by a factory,
so the audit logger is attached to each instance rather than to the module."""

import itertools

from automation_orchestrator.audit import get_audit_logger

_record_ids = itertools.count(1)


class CRMError(Exception):
    pass


class CRMConnector:
    KNOWN_FIELDS = ("email", "phone", "title")

    def __init__(self, crm_type, workflow):
        self.crm_type = crm_type
        self.workflow = workflow
        self.audit = None

    def create(self, lead):
        record_id = f"{self.crm_type}-{next(_record_ids)}"
        if self.audit:
            self.audit.log_crm_create(lead["lead_id"], record_id, self.crm_type, self.workflow)
        return record_id

    def update(self, lead_id, record_id, fields):
        unknown = sorted(set(fields) - set(self.KNOWN_FIELDS))
        if unknown:
            raise CRMError(f"{self.crm_type} rejected fields {unknown}")
        if self.audit:
            self.audit.log_crm_update(lead_id, record_id, sorted(fields), self.workflow)


def create_connector(crm_type, workflow):
    connector = CRMConnector(crm_type, workflow)
    connector.audit = get_audit_logger()
    return connector
