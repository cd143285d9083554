"""A step kind for tests: it records an audit event, so its run is visible."""

from audit.services import record_event
from leads.models import Lead


class MarkStep:
    kind = "mark"

    def run(self, *, lead_id, config):
        lead = Lead.objects.get(pk=lead_id)
        record_event(event_type="crm_update", lead=lead, details={"step": "mark", **config})
