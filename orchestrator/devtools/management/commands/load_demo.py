import importlib.util
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from leads.models import Lead
from orchestrator.devtools.demo import DemoError, ensure_demo_users, load_demo, top_up_demo


class Command(BaseCommand):
    help = (
        "Run three weeks of simulated leads through the real pipeline (CRM sync to a fake "
        "HubSpot on a loopback port, follow-up emails to an in-memory mailbox) and create "
        "the demo logins (DEBUG only; needs the dev extras for time_machine)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=21)
        parser.add_argument("--per-day", type=int, default=24)

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("load_demo creates known logins; it runs only with DEBUG=true")
        if options["days"] < 1 or options["per_day"] < 2:
            raise CommandError("--days must be at least 1 and --per-day at least 2")
        if importlib.util.find_spec("time_machine") is None:
            raise CommandError("load_demo needs the dev extras: pip install -e '.[dev]'")
        for login in ensure_demo_users():
            what = "superuser" if login.role == "superuser" else f"user ({login.role})"
            self.stdout.write(
                f"Created {what} {login.username!r} with password {login.password!r}."
            )
        if Lead.objects.exists():
            self.top_up(per_day=options["per_day"])
            return
        try:
            leads = load_demo(days=options["days"], per_day=options["per_day"])
        except DemoError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"Loaded {leads} demo leads through the pipeline, with their audit trail."
        )

    def top_up(self, *, per_day: int) -> None:
        # Data loaded days ago would leave the dashboard's default periods empty.
        try:
            topped = top_up_demo(per_day=per_day)
        except DemoError as exc:
            self.stdout.write(f"Leads exist but {exc}; leaving them as they are.")
            return
        self.stdout.write(
            f"Demo data was loaded before; topped it up through the pipeline from "
            f"{topped.since:%Y-%m-%d %H:%M} UTC to now: {topped.leads} new leads."
        )
