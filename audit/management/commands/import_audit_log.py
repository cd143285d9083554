from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from audit.transfer import import_files


class Command(BaseCommand):
    help = (
        "Import legacy audit JSON Lines files (plain or .gz). Valid lines are imported, "
        "each bad line is reported with its number and reason; running it again imports "
        "nothing new. Exits non-zero if any line was bad."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
        parser.add_argument("--batch-size", type=int, default=2000)
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        paths: list[Path] = options["paths"]
        for path in paths:
            if not path.is_file():
                raise CommandError(f"{path}: no such file")
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

        report = import_files(paths, batch_size=options["batch_size"], progress=progress)
        for bad in report.bad:
            self.stderr.write(str(bad))
        for line in report.summary():
            self.stdout.write(line)
        if report.bad:
            raise CommandError(
                f"{len(report.bad)} bad lines were not imported (first: {report.bad[0]})"
            )
