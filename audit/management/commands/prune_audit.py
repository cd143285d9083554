from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from audit.management.commands._dates import parse_when
from audit.retention import PruneRefused, prune, retention_archive_path, retention_cutoff
from core.scheduled import ScheduledCommand


class Command(ScheduledCommand):
    help = (
        "Delete audit events older than --before (default: AUDIT_RETENTION_DAYS ago), "
        "archiving them first with --archive. --retention is the scheduled form: the cut-off "
        "is the start of the UTC day AUDIT_RETENTION_DAYS ago and the events are archived "
        "under AUDIT_ARCHIVE_DIR first. The run is itself audited and the rest of the trail "
        "stays verifiable."
    )
    lock_name = "prune_audit"
    lock_ttl = timedelta(hours=6)
    default_interval = 86400

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        when = parser.add_mutually_exclusive_group()
        when.add_argument("--before", help="Cut-off date or datetime (UTC).")
        when.add_argument(
            "--retention",
            action="store_true",
            help="Apply the configured retention: AUDIT_RETENTION_DAYS, archived to "
            "AUDIT_ARCHIVE_DIR (for cron and the systemd timer).",
        )
        parser.add_argument("--archive", type=Path, help="Write the events here first (.jsonl.gz).")
        parser.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        # Checked before the lock is taken so that a misconfiguration fails loudly
        # on every run instead of being hidden behind "skipping".
        if options["retention"]:
            if options["archive"] is not None:
                raise CommandError(
                    "--retention archives under AUDIT_ARCHIVE_DIR; leave out --archive"
                )
            if settings.AUDIT_RETENTION_DAYS < 1:
                raise CommandError("AUDIT_RETENTION_DAYS must be at least 1 day")
            if not settings.AUDIT_ARCHIVE_DIR:
                raise CommandError(
                    "--retention archives before it deletes: set AUDIT_ARCHIVE_DIR to a directory"
                )
        super().handle(*args, **options)

    def run_once(self, **options: Any) -> None:
        archive: Path | None = options["archive"]
        if options["retention"]:
            # Recomputed on every pass so that --loop moves the cut-off along.
            before = retention_cutoff(now=timezone.now(), days=settings.AUDIT_RETENTION_DAYS)
            archive = retention_archive_path(Path(settings.AUDIT_ARCHIVE_DIR), before=before)
        else:
            before = parse_when(options["before"], "--before") or (
                timezone.now() - timedelta(days=settings.AUDIT_RETENTION_DAYS)
            )
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
