"""The email_sequence workflow step: enroll a routed lead in a sequence.

Config: {"kind": "email_sequence", "sequence": "<slug>"}, optionally
"by_status": {"nurture": "<slug>"} to pick another sequence by the lead's status.
"""

import logging
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from audit.services import record_event
from leads.followups.models import Enrollment, Sequence
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
        slug = _sequence_slug(lead, config)
        try:
            if not slug:
                raise SequenceError('email_sequence step needs "sequence": "<slug>"')
            try:
                sequence = Sequence.objects.get(slug=slug)
            except Sequence.DoesNotExist:
                known = ", ".join(Sequence.objects.values_list("slug", flat=True)) or "none"
                raise SequenceError(f"no sequence {slug!r} (known: {known})") from None
            enroll(lead=lead, sequence=sequence)
        except SequenceError as exc:
            # A person must act (create or activate the sequence); the
            # workflow runner's reconciliation enrolls the lead once it can.
            record_event(
                event_type="error",
                exc=exc,
                lead=lead,
                workflow=lead.workflow_name,
                details={"stage": "enroll", "sequence": slug or ""},
            )
            raise

    def missing(self, *, workflow: Any, config: Mapping[str, Any]) -> Iterator[int]:
        """Routed leads of the workflow this step should have enrolled and did not,
        with no run of it queued or running, that can be enrolled now.

        For the runner's reconciliation, which enqueues the step again for each:
        the task row is written with the lead, but a lead routed before that,
        a task that failed (its sequence did not exist yet) or one failed by
        repeatedly dying workers would otherwise stay unenrolled for good. Only
        leads processed within FOLLOWUPS_RECONCILE_DAYS: adding a step to a
        workflow does not mail its whole history. A failed run is retried at
        most every FOLLOWUPS_RECONCILE_RETRY_MINUTES.
        """
        now = timezone.now()
        grace = timedelta(minutes=settings.FOLLOWUPS_RECONCILE_RETRY_MINUTES)
        ready = {
            s.slug for s in Sequence.objects.filter(active=True, steps__isnull=False).distinct()
        }
        leads = (
            Lead.objects.filter(
                workflow=workflow,
                owner__isnull=False,
                processed_at__gte=now - timedelta(days=settings.FOLLOWUPS_RECONCILE_DAYS),
                processed_at__lt=now - grace,
            )
            .exclude(status__in=(Lead.Status.DISQUALIFIED, Lead.Status.FAILED))
            .exclude(pk__in=Enrollment.objects.values("lead_id"))
            .only("pk", "status")
        )
        runs = DBTaskResult.objects.filter(
            task_path="leads.workflows.steps.run_step", args_kwargs__args__0=self.kind
        )
        for lead in leads.iterator(chunk_size=500):
            if _sequence_slug(lead, config) not in ready:
                continue  # its error is recorded; nothing to do until someone fixes it
            mine = runs.filter(args_kwargs__args__1=lead.pk)
            if mine.filter(status__in=("READY", "RUNNING")).exists():
                continue
            if mine.filter(status="FAILED", finished_at__gte=now - grace).exists():
                continue
            yield lead.pk


def _sequence_slug(lead: Lead, config: Mapping[str, Any]) -> str:
    return (config.get("by_status") or {}).get(lead.status) or config.get("sequence") or ""
