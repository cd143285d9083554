from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from audit.management.commands._dates import parse_when
from audit.retention import PruneRefused, prune
from orchestrator.scheduled import ScheduledCommand


class Command(ScheduledCommand):
    help = (
        "Delete audit events older than --before (default: AUDIT_RETENTION_DAYS ago), "
        "archiving them first with --archive. The run is itself audited and the rest of "
        "the trail stays verifiable."
    )
    lock_name = "prune_audit"
    lock_ttl = timedelta(hours=6)
    default_interval = 86400

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--before", help="Cut-off date or datetime (UTC).")
        parser.add_argument("--archive", type=Path, help="Write the events here first (.jsonl.gz).")
        parser.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")

    def run_once(self, **options: Any) -> None:
        before = parse_when(options["before"], "--before") or (
            timezone.now() - timedelta(days=settings.AUDIT_RETENTION_DAYS)
        )
        archive: Path | None = options["archive"]
        if archive is not None and archive.exists():
            raise CommandError(f"--archive: {archive} exists already; refusing to overwrite it")
        try:
            result = prune(before=before, archive=archive, dry_run=options["dry_run"])
        except PruneRefused as exc:
            raise CommandError(str(exc)) from None
        if options["dry_run"]:
            self.stdout.write(
                f"Dry run: {result.matched} events before {before:%Y-%m-%d %H:%M} would be deleted."
            )
            return
        archived = f", archived to {result.archive_path}" if result.archive_path else ""
        self.stdout.write(
            f"Deleted {result.deleted} events before {before:%Y-%m-%d %H:%M} "
            f"from {result.seals_touched} seals{archived}."
        )
