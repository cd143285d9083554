from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from leads.workflows.config import ConfigError, apply_config, read_config, validate_config


class Command(BaseCommand):
    help = (
        "Validate a workflows JSON file against config/workflow.schema.json and upsert its "
        "teams, workflows and sources. Errors name the JSON pointer of the bad field."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--check", action="store_true", help="Validate only; change nothing.")
        parser.add_argument(
            "--create-users",
            action="store_true",
            help="Create team members that do not exist yet as users without a password "
            "(set one in the admin, or with manage.py changepassword).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            data = read_config(options["path"])
            if options["check"]:
                validate_config(data)
                self.stdout.write(f"{options['path']} is valid.")
                return
            counts = apply_config(data, create_users=options["create_users"])
        except ConfigError as exc:
            for line in exc.errors:
                self.stderr.write(line)
            raise CommandError(
                f"{options['path']}: {len(exc.errors)} problem(s); nothing was changed"
            ) from None
        if counts["users_created"]:
            self.stdout.write(
                f"Created users without a password: {', '.join(counts['users_created'])}."
            )
        self.stdout.write(
            "Loaded {workflows} workflow(s), {sources} source(s), {teams} team(s) "
            "with {members} member(s).".format(**counts)
        )
