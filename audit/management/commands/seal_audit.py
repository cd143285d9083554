import logging
from typing import Any

from django.conf import settings
from django.core.management.base import CommandParser

from audit.anchors import anchor_path, anchor_pending, witness_pending
from audit.integrity import seal_pending
from core.scheduled import ScheduledCommand

log = logging.getLogger(__name__)


class Command(ScheduledCommand):
    help = (
        "Seal committed audit events into chained blocks (run every minute, or with --loop), "
        "and append each seal's digest to the anchor log (catching up on any it lacks)."
    )
    lock_name = "seal_audit"

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        # The cadence verify_audit holds the sealer to.
        parser.set_defaults(interval=settings.AUDIT_SEAL_MAX_AGE_SECONDS)
        parser.add_argument(
            "--new-anchor-log",
            action="store_true",
            help="Start a new anchor log from the database's chain although one existed and "
            "is now missing. Only after investigating the loss: it anchors whatever the "
            "database holds now.",
        )

    def run_once(self, **options: Any) -> None:
        sealed = 0
        while (seal := seal_pending()) is not None:
            sealed += seal.event_count
            log.info(
                "audit seal %s covers %s events, digest %s",
                seal.number,
                seal.event_count,
                seal.digest,
            )
        # Each seal anchors itself after commit; this catches up on the ones whose
        # write failed, and on first use anchors the chain that already exists.
        anchored = anchor_pending(new_log=options["new_anchor_log"])
        witnessed = witness_pending()
        if options["verbosity"] > 0:
            self.stdout.write(f"Sealed {sealed} events.")
            if anchored:
                self.stdout.write(f"Anchored {anchored} seals in {anchor_path()}.")
            if witnessed:
                self.stdout.write(f"The witness acknowledged {witnessed} seals.")
