from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from leads.intake.apikeys import api_key_create
from leads.models import LeadSource


class Command(BaseCommand):
    help = (
        "Create an API key for a lead source and print it. The key is shown only "
        "this once (the database keeps a hash); it is the last line of output."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--source", required=True, metavar="SLUG", help="the source's slug")
        parser.add_argument(
            "--name",
            default="",
            help="names the key in the audit trail (actor api:<name>); default <slug>-<prefix>",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        slug = options["source"]
        source = LeadSource.objects.filter(slug=slug).first()
        if source is None:
            known = ", ".join(LeadSource.objects.order_by("slug").values_list("slug", flat=True))
            raise CommandError(f"No lead source {slug!r}; known sources: {known or '(none)'}.")
        try:
            key, raw = api_key_create(source=source, name=options["name"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if not source.active:
            self.stderr.write(f"Note: source {slug!r} is inactive; the API refuses its leads.")
        self.stdout.write(
            f"Created API key {key.name!r} for source {slug!r}. "
            "It is shown only once; store it now:"
        )
        # Alone on the last line, so scripts can take it with `tail -n 1`.
        self.stdout.write(raw)
