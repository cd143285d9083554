from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from leads.models import Lead
from orchestrator.demo import DEMO_PASSWORD, DEMO_USER, ensure_demo_user, load_demo


class Command(BaseCommand):
    help = (
        "Run three weeks of simulated leads through the real pipeline and create the demo "
        "login (DEBUG only; needs the dev extras for time_machine)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=21)
        parser.add_argument("--per-day", type=int, default=24)

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("load_demo creates a known login; it runs only with DEBUG=true")
        try:
            import time_machine  # noqa: F401
        except ImportError:
            raise CommandError("load_demo needs the dev extras: pip install -e '.[dev]'") from None
        if ensure_demo_user():
            self.stdout.write(f"Created superuser {DEMO_USER!r} with password {DEMO_PASSWORD!r}.")
        if Lead.objects.exists():
            self.stdout.write("Demo data is already loaded; leaving it as it is.")
            return
        leads = load_demo(days=options["days"], per_day=options["per_day"])
        self.stdout.write(
            f"Loaded {leads} demo leads through the pipeline, with their audit trail."
        )
