"""The workflow step that syncs a routed lead to a CRM.

Config in a workflow's "steps": {"kind": "crm_sync", "connection": "<CrmConnection.name>"}.
The runner enqueues it as a task when the lead's transaction commits.
"""

import logging
from collections.abc import Mapping
from typing import Any

from leads.crm.models import CrmConnection, CrmRecord
from leads.crm.services import crm_sync_lead
from leads.models import Lead

log = logging.getLogger(__name__)


class CrmSyncFailed(Exception):
    """Raised so the task is marked failed; sync_crm retries the record later."""


class CrmSyncStep:
    kind = "crm_sync"

    def run(self, *, lead_id: int, config: Mapping[str, Any]) -> None:
        name = config.get("connection")
        connection = CrmConnection.objects.filter(name=name).first()
        if connection is None:
            raise ValueError(f"crm_sync step: no CRM connection named {name!r}")
        if not connection.active:
            log.info("CRM connection %s is inactive; lead %s not synced", name, lead_id)
            return
        lead = Lead.objects.select_related("workflow").get(pk=lead_id)
        record = crm_sync_lead(lead=lead, connection=connection)
        if record.status in (CrmRecord.Status.FAILED, CrmRecord.Status.NEEDS_ATTENTION):
            raise CrmSyncFailed(
                f"lead {lead.public_id} to {connection.name}: {record.status}: {record.last_error}"
            )
