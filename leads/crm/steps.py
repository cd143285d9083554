"""The workflow step that syncs a routed lead to a CRM.

Config in a workflow's "steps": {"kind": "crm_sync", "connection": "<CrmConnection.name>"}.
The runner enqueues it as a task when the lead's transaction commits. A sync
the CRM postponed (429, Retry-After) ends the task successfully and enqueues
the next one to run after the wait: being told to wait is not a failure.
"""

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

from django.db import transaction

from audit.services import audit_context, record_event
from leads.crm.models import CrmConnection, CrmRecord
from leads.crm.services import STEP_KIND, crm_sync_lead
from leads.models import Lead
from leads.workflows.steps import run_step

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
        lead = Lead.objects.select_related("workflow").get(pk=lead_id)
        if not connection.active:
            # On the lead's timeline, not only in a log: someone looking for
            # the lead in the CRM must see why it is not there.
            record_event(
                event_type="crm_sync_skipped",
                lead=lead,
                workflow=lead.workflow_name,
                details={"connection": connection.name, "reason": "the connection is inactive"},
            )
            return
        record = crm_sync_lead(lead=lead, connection=connection)
        if record.deferrals and record.next_attempt_at is not None:
            log.info(
                "CRM sync of lead %s to %s postponed until %s",
                lead.pk,
                name,
                record.next_attempt_at,
            )
            with audit_context() as correlation_id:
                # `sync_crm` would find the pending record too; the task keeps
                # the sync prompt when no cron runs it.
                transaction.on_commit(
                    partial(
                        run_step.using(run_after=record.next_attempt_at).enqueue,
                        STEP_KIND,
                        lead_id,
                        dict(config),
                        correlation_id,
                    )
                )
            return
        if record.status in (CrmRecord.Status.FAILED, CrmRecord.Status.NEEDS_ATTENTION):
            raise CrmSyncFailed(
                f"lead {lead.public_id} to {connection.name}: {record.status}: {record.last_error}"
            )
