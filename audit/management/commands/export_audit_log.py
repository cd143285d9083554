import gzip
import sys
from pathlib import Path
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.management.commands._dates import parse_when
from audit.services import record_event
from audit.transfer import write_export
from audit.types import validate_event_type


class Command(BaseCommand):
    help = (
        "Export audit events as JSON Lines (the legacy format) or CSV, to a file "
        "(.gz compresses) or stdout. Streams in constant memory."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="From this date or datetime (inclusive, UTC).")
        parser.add_argument("--until", help="Up to this date or datetime (exclusive, UTC).")
        parser.add_argument("--type", action="append", dest="types", help="Event type; repeatable.")
        parser.add_argument("--lead", help="Lead public id, e.g. LEAD-000123.")
        parser.add_argument("--workflow")
        parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
        parser.add_argument("--output", "-o", type=Path, help="File to write; stdout if omitted.")

    def handle(self, *args: Any, **options: Any) -> None:
        since = parse_when(options["since"], "--since")
        until = parse_when(options["until"], "--until")
        for name in options["types"] or []:
            try:
                validate_event_type(name)
            except ValueError as exc:
                raise CommandError(f"--type: {exc}") from None
        filters = {
            "since": since,
            "until": until,
            "event_type": options["types"],
            "lead_id": options["lead"],
            "workflow": options["workflow"],
        }
        output: Path | None = options["output"]
        if output is None:
            # The stream under Django's OutputWrapper: export lines end themselves.
            out: IO[str] = getattr(self.stdout, "_out", sys.stdout)
            count = write_export(out, fmt=options["format"], **filters)
        else:
            tmp = output.with_name(output.name + ".partial")
            opener = gzip.open if output.suffix == ".gz" else open
            try:
                with opener(tmp, "wt", encoding="utf-8", newline="") as out:
                    count = write_export(out, fmt=options["format"], **filters)
            except OSError as exc:
                raise CommandError(f"{output}: cannot write ({exc.strerror or exc})") from None
            tmp.replace(output)
        record_event(
            event_type="audit_exported",
            details={
                "format": options["format"],
                "count": count,
                "output": str(output) if output else "stdout",
                "filters": {k: (str(v) if v else None) for k, v in filters.items()},
            },
        )
        if output is not None:
            self.stderr.write(f"Exported {count} events to {output}.")
