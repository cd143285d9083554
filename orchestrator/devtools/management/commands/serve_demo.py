from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from orchestrator.devtools.demo import DemoError, demo_crm_online
from orchestrator.devtools.serving import (
    ChildDied,
    child_env,
    pipeline_children,
    supervise,
    web_child,
)


class Command(BaseCommand):
    help = (
        "Serve the demo (after load_demo) with its pipeline running: the task worker, the "
        "workflow runner, CRM sync and follow-up sending in loops, CRM calls to a fake "
        "HubSpot on a loopback port, emails to an in-memory mailbox. Ctrl+C stops it all "
        "(DEBUG only)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--log",
            default=str(Path(settings.BASE_DIR) / "var" / "demo-pipeline.log"),
            help="Where the pipeline's processes write (default var/demo-pipeline.log).",
        )
        parser.add_argument(
            "--no-web", action="store_true", help="Run the pipeline only, without runserver."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("serve_demo runs only with DEBUG=true (the demo has known logins)")
        port = options["port"]
        children = pipeline_children()
        if not options["no_web"]:
            children.append(web_child(port=port))
        log_path = Path(options["log"])
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with demo_crm_online() as crm_url, log_path.open("a") as log:
                self.stdout.write(
                    f"Pipeline running (worker, workflow runner, CRM sync, follow-ups; log: "
                    f"{log_path}), CRM calls to a fake HubSpot at {crm_url}, follow-ups to "
                    "an in-memory mailbox. To post a lead (the key is shown once):"
                )
                self.stdout.write(
                    "  KEY=$(DEBUG=true .venv/bin/python manage.py create_api_key "
                    "--source website | tail -n 1)\n"
                    f"  curl -X POST http://127.0.0.1:{port}/api/v1/leads "
                    '-H "Authorization: Bearer $KEY" -H "Content-Type: application/json" '
                    # A lead the demo workflow qualifies and routes, so it
                    # goes on to the CRM and the mailbox.
                    """-d '{"email": "ann@acme.example", "full_name": "Ann Smith", """
                    """"organisation": "Acme GmbH", "title": "CTO", "country": "DE"}'"""
                )
                self.stdout.flush()
                env = child_env(port=port)
                supervise(children, env=env, log=log)
        except DemoError as exc:
            raise CommandError(str(exc)) from exc
        except ChildDied as exc:
            raise CommandError(f"{exc}; see {log_path}") from exc
        self.stdout.write("Demo stopped; its CRM connection is inactive again.")
