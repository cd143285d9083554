from typing import Any

from django.core.management.base import CommandError, CommandParser

from core.scheduled import ScheduledCommand
from leads.workflows.models import Workflow
from leads.workflows.runner import run_pass


class Command(ScheduledCommand):
    help = (
        "Run a pass of a workflow: poll its inboxes, qualify and route new leads, enqueue "
        "the downstream steps. --loop keeps going; SIGTERM finishes the current lead."
    )
    default_interval = 30

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Workflow name.")
        super().add_arguments(parser)
        parser.add_argument("--dry-run", action="store_true", help="Decide, then roll back.")
        parser.add_argument("--limit", type=int, help="Process at most N leads per pass.")
        parser.add_argument(
            "--parallel",
            action="store_true",
            help="Run beside other runners of this workflow (leads are claimed one by one); "
            "without it an overlapping run of the same workflow skips.",
        )

    def get_lock_name(self, **options: Any) -> str | None:
        return None if options["parallel"] else f"run_workflow:{options['name']}"

    def handle(self, *args: Any, **options: Any) -> None:
        if options["limit"] is not None and options["limit"] < 1:
            raise CommandError("--limit must be a positive number")
        try:
            self.workflow = Workflow.objects.get(name=options["name"])
        except Workflow.DoesNotExist:
            known = ", ".join(Workflow.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"no workflow named {options['name']!r} (known: {known})") from None
        if not self.workflow.enabled:
            raise CommandError(f"workflow {self.workflow.name!r} is disabled")
        super().handle(*args, **options)

    def run_once(self, **options: Any) -> None:
        run = run_pass(
            workflow=self.workflow,
            dry_run=options["dry_run"],
            limit=options["limit"],
            stop=self.stop,
        )
        counts = ", ".join(f"{k} {v}" for k, v in sorted(run.counts.items())) or "nothing to do"
        prefix = "Dry run: " if options["dry_run"] else ""
        self.stdout.write(f"{prefix}{self.workflow.name} run {run.pk} {run.status}: {counts}.")
