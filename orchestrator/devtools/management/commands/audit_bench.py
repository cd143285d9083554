import argparse
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from orchestrator.devtools import bench
from orchestrator.devtools.bench import count_arg


class Command(BaseCommand):
    help = (
        "Benchmark the audit store: fill N synthetic events, then measure durable write "
        "latency, concurrent writer throughput and the dashboard reads, against the same "
        "reads done by scanning a legacy JSON Lines export. It WRITES N events, plus those "
        "of the write tests, into the configured database: point DATABASE_URL at a scratch "
        "database (migrated). Benchmark events have workflows named 'bench-*'; a database "
        "holding other events is refused unless --force. The write tests go through the "
        "JSON Lines mirror as configured (AUDIT_JSONL_PATH; empty turns it off). The export "
        "goes to a temporary directory ($TMPDIR): about 370 MB per million events."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--events", type=count_arg(1), default=100_000, help="Events to fill (default 100000)."
        )
        parser.add_argument(
            "--reuse",
            action="store_true",
            help="Fill only what is missing for the database to hold --events events, "
            "so a large fill can be measured repeatedly.",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="Run even though the database holds events that are not benchmark events.",
        )
        parser.add_argument(
            "--writes",
            type=count_arg(0),
            default=2000,
            help="Durable single-event writes to time (default 2000; 0 skips).",
        )
        parser.add_argument(
            "--writers",
            type=count_arg(0),
            default=8,
            help="Concurrent writer processes (default 8; 0 skips).",
        )
        parser.add_argument(
            "--per-writer", type=count_arg(1), default=500, help="Events per writer (default 500)."
        )
        parser.add_argument(
            "--reads",
            type=count_arg(1),
            default=200,
            help="Repetitions of each read (default 200).",
        )
        parser.add_argument(
            "--legacy-runs",
            type=count_arg(0),
            default=3,
            help="Full scans of the legacy export per read (default 3; 0 skips the export).",
        )
        parser.add_argument("--seed", type=int, default=1, help="Seed of the synthetic data.")
        parser.add_argument(
            "--views",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="Time every dashboard page and htmx fragment through the test client, "
            "logged in as the superuser bench-admin (default on; --no-views skips it).",
        )
        parser.add_argument(
            "--leads",
            type=count_arg(0),
            default=100_000,
            help="Bench leads (LEAD-000001 up) to fill for the views, with CRM records, "
            "emails and workflow runs; only the missing ones are added (default 100000).",
        )
        parser.add_argument(
            "--view-reps",
            type=count_arg(1),
            default=30,
            help="Timed requests per view, after 2 warm-ups (default 30).",
        )
        parser.add_argument(
            "--view-profile",
            action="store_true",
            help="Print a cProfile of each view that misses its target.",
        )
        parser.add_argument(
            "--import-lines",
            type=count_arg(0),
            default=0,
            help="Synthetic legacy log lines to import through import_audit_log's path "
            "(default 0: skipped); the rate is judged against 20000 lines/s.",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print the results as JSON instead of a table."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = bench.BenchConfig(
            events=options["events"],
            reuse=options["reuse"],
            force=options["force"],
            writes=options["writes"],
            writers=options["writers"],
            per_writer=options["per_writer"],
            reads=options["reads"],
            legacy_runs=options["legacy_runs"],
            seed=options["seed"],
            views=options["views"],
            leads=options["leads"],
            view_reps=options["view_reps"],
            view_profile=options["view_profile"],
            import_lines=options["import_lines"],
        )
        try:
            # The raw stream: tqdm redraws its bar with "\r", which the wrapper
            # would break by appending a newline to every write.
            result = bench.run(config, stream=self.stderr._out)
        except bench.BenchError as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict(), indent=2))
        else:
            self.stdout.write(bench.format_table(result))
