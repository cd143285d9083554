from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from leads.models import Lead
from orchestrator.demo import DEMO_PASSWORD, DEMO_USER, ensure_demo_user, load_demo


class Command(BaseCommand):
    help = "Load a month of demo leads through the pipeline and create the demo login (DEBUG only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--leads", type=int, default=400)

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("load_demo creates a known login; it runs only with DEBUG=true")
        if ensure_demo_user():
            self.stdout.write(f"Created superuser {DEMO_USER!r} with password {DEMO_PASSWORD!r}.")
        if Lead.objects.exists():
            self.stdout.write("Demo data is already loaded; leaving it as it is.")
            return
        created = load_demo(leads=options["leads"])
        self.stdout.write(f"Loaded {created} demo leads with their audit trail.")
