import hashlib
import signal
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections
from tqdm import tqdm

from audit.follow import Follower
from audit.services import record_event
from audit.transfer import MAX_JOBS, PARALLEL_MIN_BYTES, ImportReport, import_files
from core import locks


class Command(BaseCommand):
    help = (
        "Import legacy audit JSON Lines files (plain or .gz). Valid lines are imported, "
        "each bad line is reported with its number and reason; running it again imports "
        "nothing new. Exits non-zero if any line was bad. With --follow FILE, keep "
        "importing what the legacy system appends, through log rotations, until SIGTERM."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=10_000,
            help="Lines per committed transaction (default 10000).",
        )
        parser.add_argument(
            "--jobs",
            type=int,
            default=None,
            help="Processes that parse and sign lines while this one inserts (default: "
            f"one per CPU up to {MAX_JOBS} for {PARALLEL_MIN_BYTES // 2**20} MB of input or "
            "more, else 1: parsed here).",
        )
        parser.add_argument("--no-progress", action="store_true")
        parser.add_argument(
            "--follow",
            action="store_true",
            help="Tail one file the legacy system is still writing (its position is kept "
            "in the database: stopped or killed, it resumes where it was).",
        )
        parser.add_argument(
            "--poll",
            type=float,
            default=1.0,
            help="With --follow: seconds between looks at an idle file (default 1).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        paths: list[Path] = options["paths"]
        if options["follow"]:
            if len(paths) != 1:
                raise CommandError("--follow takes exactly one file")
            if not options["poll"] > 0:
                raise CommandError("--poll must be a positive number of seconds")
            self.follow(paths[0], poll=options["poll"])
            return
        for path in paths:
            if not path.is_file():
                raise CommandError(f"{path}: no such file")
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        if options["jobs"] is not None and not 1 <= options["jobs"] <= 64:
            raise CommandError("--jobs must be between 1 and 64")
        bars: dict[Path, tqdm] = {}

        def progress(path: Path, done: int, total: int) -> None:
            if options["no_progress"]:
                return
            bar = bars.get(path)
            if bar is None:
                bar = bars[path] = tqdm(
                    total=total, unit="B", unit_scale=True, desc=path.name, file=self.stderr._out
                )
            bar.update(done - bar.n)
            if done >= total:
                bar.close()

        report = import_files(
            paths, batch_size=options["batch_size"], progress=progress, jobs=options["jobs"]
        )
        for bad in report.bad:
            self.stderr.write(str(bad))
        self.summarize(report)
        if report.bad:
            raise CommandError(
                f"{len(report.bad)} bad lines were not imported (first: {report.bad[0]})"
            )

    def summarize(self, report: ImportReport) -> None:
        for line in report.summary():
            self.stdout.write(line)

    def follow(self, path: Path, *, poll: float) -> None:
        stop = threading.Event()
        previous = {
            signum: signal.signal(signum, lambda *_: stop.set())
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        # One follower per file, across machines: a second would only race the first.
        name = "follow:" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:40]
        ttl = timedelta(minutes=5)
        holder = locks.acquire(name, ttl=ttl)
        if holder is None:
            raise CommandError(f"{path}: another import_audit_log --follow holds it")
        follower = Follower(path)
        self.stdout.write(f"Following {path} from byte {follower.position.offset}.")
        try:
            while not stop.is_set():
                imported = follower.poll()
                locks.renew(name, holder, ttl=ttl)
                if not imported:
                    close_old_connections()
                    stop.wait(poll)
        finally:
            follower.close()
            locks.release(name, holder)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        report = follower.report
        if report.imported:
            record_event(
                event_type="audit_imported",
                correlation_id=follower.correlation_id,
                details={
                    "files": [str(path)],
                    "follow": True,
                    "imported": report.imported,
                    "already_present": report.already_present,
                    "bad_lines": len(report.bad),
                },
            )
        self.summarize(report)
