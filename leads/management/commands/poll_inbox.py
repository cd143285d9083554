from typing import Any

from django.core.management.base import CommandError, CommandParser

from core.scheduled import ScheduledCommand
from leads.intake.inbox import inbox_sources, poll_sources
from leads.models import LeadSource


class Command(ScheduledCommand):
    help = (
        "Read new mail of the email inbox sources over IMAP, make leads of it and move "
        "each message to the processed (or failed) folder. Credentials come from the "
        "environment variables the source's options name."
    )
    lock_name = "poll_inbox"
    default_interval = 60

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--source",
            metavar="SLUG",
            help="Poll this source only, active or not (default: every active one).",
        )

    def run_once(self, **options: Any) -> None:
        if options["source"]:
            source = LeadSource.objects.filter(slug=options["source"]).first()
            if source is None:
                raise CommandError(f"--source: no lead source {options['source']!r}")
            if source.kind != LeadSource.Kind.EMAIL_INBOX:
                raise CommandError(
                    f"--source: {source.slug} is a {source.get_kind_display()} source, "
                    "not an email inbox"
                )
            sources = [source]
        else:
            sources = inbox_sources()
            if not sources:
                self.stdout.write("No active email inbox sources.")
                return
        summaries, failures = poll_sources(sources)
        for summary in summaries:
            self.stdout.write(str(summary))
        if failures:
            message = "; ".join(f"{slug}: {exc}" for slug, exc in failures.items())
            if options["loop"]:
                # An outage is no reason to stop polling; the error events show it.
                self.stderr.write(message)
            else:
                raise CommandError(message)
