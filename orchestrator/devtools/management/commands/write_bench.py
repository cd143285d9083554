import argparse
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from orchestrator.devtools import bench, bench_write
from orchestrator.devtools.bench import count_arg
from orchestrator.devtools.bench_intake import IntakeBenchError


class Command(BaseCommand):
    help = (
        "Benchmark the write path: fill the audit table up to --events and weigh it, "
        "time durable audit writes (one writer, then several processes), post leads "
        "through gunicorn one a request and in batches, and do the same writes the "
        "legacy way (fsync'd JSON lines) for comparison. Each figure is printed beside "
        "its target. It WRITES into the configured database: point DATABASE_URL at a "
        "scratch database (migrated); `make bench-write` does."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        defaults = bench_write.WriteBenchConfig()
        parser.add_argument(
            "--events",
            type=count_arg(1),
            default=defaults.events,
            help="Fill the audit table up to this many events first (default 1000000).",
        )
        parser.add_argument("--force", action="store_true", help="Run beside non-bench events.")
        parser.add_argument("--writes", type=count_arg(0), default=defaults.writes)
        parser.add_argument("--writers", type=count_arg(0), default=defaults.writers)
        parser.add_argument("--per-writer", type=count_arg(1), default=defaults.per_writer)
        parser.add_argument(
            "--api-leads",
            type=count_arg(0),
            default=defaults.api_leads,
            help="Leads to post one a request through gunicorn (0 skips).",
        )
        parser.add_argument(
            "--batch-leads",
            type=count_arg(0),
            default=defaults.batch_leads,
            help="Leads to post in batches through gunicorn (0 skips).",
        )
        parser.add_argument("--workers", type=count_arg(1), default=defaults.api_workers)
        parser.add_argument(
            "--walk",
            action=argparse.BooleanOptionalAction,
            default=defaults.walk,
            help="Fetch every dashboard page once through gunicorn, then weigh its "
            "workers (default on; --no-walk skips it).",
        )
        parser.add_argument("--seed", type=int, default=defaults.seed)
        parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        config = bench_write.WriteBenchConfig(
            events=options["events"],
            force=options["force"],
            writes=options["writes"],
            writers=options["writers"],
            per_writer=options["per_writer"],
            api_leads=options["api_leads"],
            batch_leads=options["batch_leads"],
            api_workers=options["workers"],
            walk=options["walk"],
            seed=options["seed"],
        )
        try:
            result = bench_write.run(config, stream=self.stderr._out)
        except (bench.BenchError, IntakeBenchError) as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict(), indent=2))
        else:
            self.stdout.write(bench_write.format_table(result))
