from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from leads.intake.csv_import import CsvImportError, import_csv, parse_map_options
from leads.models import LeadSource


class Command(BaseCommand):
    help = (
        "Import leads from a CSV file into a source. Each row is validated and deduplicated "
        "as an API submission would be and commits on its own: good rows are imported, each "
        "bad row is reported with its line number (the header is row 1). Running it again "
        "merges rows already imported. Exits non-zero if any row was bad."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, metavar="FILE")
        parser.add_argument("--source", required=True, metavar="SLUG")
        parser.add_argument(
            "--map",
            action="append",
            default=[],
            metavar="COLUMN=FIELD",
            help="Column to lead field (or extra key); repeatable, overrides the source's mapping.",
        )
        parser.add_argument("--delimiter", help="One character or 'tab'; sniffed if not given.")
        parser.add_argument("--encoding", default="utf-8-sig")
        parser.add_argument("--no-progress", action="store_true")
        parser.add_argument("--actor", default="system", help="user:NAME for the audit trail.")
        parser.add_argument(
            "--any-kind", action="store_true", help="Allow a source that is not of kind csv."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"]
        slug: str = options["source"]
        source = LeadSource.objects.filter(slug=slug).first()
        if source is None:
            known = ", ".join(LeadSource.objects.order_by("slug").values_list("slug", flat=True))
            raise CommandError(f"--source {slug!r}: no such lead source (known: {known or 'none'})")
        if source.kind != LeadSource.Kind.CSV and not options["any_kind"]:
            raise CommandError(
                f"--source {slug!r} is a {source.get_kind_display()} source, not a CSV one; "
                "pass --any-kind to import into it anyway"
            )
        bar: tqdm | None = None

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if options["no_progress"]:
                return
            if bar is None:
                bar = tqdm(
                    total=total, unit="B", unit_scale=True, desc=path.name, file=self.stderr._out
                )
            bar.update(done - bar.n)

        try:
            report = import_csv(
                path=path,
                source=source,
                mapping=parse_map_options(options["map"]),
                delimiter=options["delimiter"],
                encoding=options["encoding"],
                progress=progress,
                actor=options["actor"],
            )
        except CsvImportError as exc:
            raise CommandError(f"{path}: {exc}") from None
        finally:
            if bar is not None:
                bar.close()
        for note in report.warnings:
            self.stderr.write(f"note: {note}")
        for bad in report.bad:
            self.stderr.write(str(bad))
        self.stdout.write(
            f"Read {report.rows} rows: {report.created} created, "
            f"{report.duplicates} duplicates merged, {len(report.bad)} bad."
        )
        self.stdout.write(f"Audit correlation id: {report.correlation_id}")
        if report.bad:
            good = report.created + report.duplicates
            raise CommandError(
                f"{len(report.bad)} bad rows were not imported; the {good} good rows were "
                f"(first bad: {report.bad[0]})"
            )
