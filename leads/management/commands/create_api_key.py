from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from leads.intake.apikeys import api_key_create
from leads.models import ApiKey, LeadSource


class Command(BaseCommand):
    help = (
        "Create an API key and print it. The key is shown only this once (the "
        "database keeps a hash); it is the last line of output. A leads:write key "
        "(the default) sends leads for --source; events keys need no source."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--source", metavar="SLUG", help="the lead source's slug (for leads:write)"
        )
        parser.add_argument(
            "--scope",
            action="append",
            choices=ApiKey.Scope.values,
            dest="scopes",
            help="what the key may do; repeat for several (default: leads:write)",
        )
        parser.add_argument(
            "--name",
            default="",
            help="names the key in the audit trail (actor api:<name>); "
            "default <slug>-<prefix>, or api-<prefix> without a source",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        scopes = options["scopes"] or [ApiKey.Scope.LEADS_WRITE]
        slug = options["source"]
        source = None
        if slug:
            source = LeadSource.objects.filter(slug=slug).first()
            if source is None:
                known = ", ".join(
                    LeadSource.objects.order_by("slug").values_list("slug", flat=True)
                )
                raise CommandError(f"No lead source {slug!r}; known sources: {known or '(none)'}.")
        elif ApiKey.Scope.LEADS_WRITE in scopes:
            raise CommandError("A leads:write key needs --source SLUG (where its leads come from).")
        try:
            key, raw = api_key_create(source=source, name=options["name"], scopes=scopes)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if source is not None and not source.active:
            self.stderr.write(f"Note: source {slug!r} is inactive; the API refuses its leads.")
        where = f" for source {slug!r}" if source is not None else ""
        self.stdout.write(
            f"Created API key {key.name!r}{where} with scopes {', '.join(key.scope_list)}. "
            "It is shown only once; store it now:"
        )
        # Alone on the last line, so scripts can take it with `tail -n 1`.
        self.stdout.write(raw)
