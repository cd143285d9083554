from typing import Any

from django.conf import settings

from core.scheduled import ScheduledCommand
from orchestrator.dashboard.exports import cleanup_exports


class Command(ScheduledCommand):
    help = (
        "Hand exports abandoned by a stopped worker to another one, and delete finished "
        "exports (file and row) older than EXPORT_RETENTION_DAYS."
    )
    lock_name = "cleanup_exports"
    default_interval = 300

    def run_once(self, **options: Any) -> None:
        done = cleanup_exports()
        if options["verbosity"] > 0:
            self.stdout.write(
                f"Exports: {len(done.requeued)} queued again, {len(done.failed)} failed after "
                f"{settings.EXPORT_MAX_ATTEMPTS} attempts, {len(done.expired)} expired, "
                f"{len(done.files_removed)} files removed."
            )
