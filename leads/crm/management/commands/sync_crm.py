from typing import Any

from django.core.management.base import CommandError, CommandParser

from core.scheduled import ScheduledCommand
from leads.crm.models import CrmConnection
from leads.crm.services import crm_sync_due


class Command(ScheduledCommand):
    help = (
        "Sync leads to the CRMs inline: pending records (including routed leads whose "
        "sync task never ran) and failed ones whose retry is due. With --retry-failed, "
        "also the records marked as needing attention."
    )
    lock_name = "sync_crm"
    default_interval = 60

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--retry-failed",
            action="store_true",
            help="Also retry records that need attention, and failed ones not yet due.",
        )
        parser.add_argument(
            "--connection",
            metavar="NAME",
            help="Sync this connection only (default: every active one).",
        )
        parser.add_argument(
            "--limit", type=int, default=None, help="At most this many records per connection."
        )

    def run_once(self, **options: Any) -> None:
        connections = CrmConnection.objects.filter(active=True).order_by("name")
        if options["connection"]:
            connections = CrmConnection.objects.filter(name=options["connection"])
            if not connections:
                raise CommandError(
                    f"--connection: no CRM connection named {options['connection']!r}"
                )
        if options["limit"] is not None and options["limit"] < 1:
            raise CommandError("--limit must be at least 1")
        for connection in connections:
            if self.stop.is_set():
                break
            counts = crm_sync_due(
                connection=connection,
                retry_failed=options["retry_failed"],
                limit=options["limit"],
                stop=self.stop,
            )
            summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v) or "nothing due"
            self.stdout.write(f"{connection.name}: {summary}")
