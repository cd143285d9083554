import logging
from typing import Any

from audit.integrity import seal_pending
from core.scheduled import ScheduledCommand

log = logging.getLogger(__name__)


class Command(ScheduledCommand):
    help = "Seal committed audit events into chained blocks (run every minute, or with --loop)."
    lock_name = "seal_audit"

    def run_once(self, **options: Any) -> None:
        sealed = 0
        while (seal := seal_pending()) is not None:
            sealed += seal.event_count
            # Logged so the head digest also lives outside the database: a copy
            # elsewhere is what shows a truncated chain.
            log.info(
                "audit seal %s covers %s events, digest %s",
                seal.number,
                seal.event_count,
                seal.digest,
            )
        if options["verbosity"] > 0:
            self.stdout.write(f"Sealed {sealed} events.")
