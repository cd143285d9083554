from argparse import ArgumentTypeError
from datetime import date, timedelta
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from core.scheduled import ScheduledCommand
from orchestrator.monitoring.reports.services import ReportAlreadySent, ReportError, report_send


class Command(ScheduledCommand):
    help = (
        "Email the daily, weekly or monthly report for the last complete period "
        "(or the period holding --date). One send per period unless --force."
    )
    default_interval = 3600

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("kind", choices=["daily", "weekly", "monthly"])
        parser.add_argument(
            "--date", type=_date, help="A day in the period: YYYY-MM-DD, today or yesterday."
        )
        parser.add_argument(
            "--to",
            action="append",
            default=[],
            help="Recipient (repeatable); overrides REPORTS_RECIPIENTS.",
        )
        parser.add_argument("--force", action="store_true", help="Send even if already sent.")

    def get_lock_name(self, **options: Any) -> str:
        return f"send_report:{options['kind']}"

    def run_once(self, **options: Any) -> None:
        try:
            send = report_send(
                kind=options["kind"], on=options["date"], to=options["to"], force=options["force"]
            )
        except ReportAlreadySent as exc:
            # Not a failure: cron may well run twice; the report went out once.
            self.stdout.write(f"skipped: {exc}")
            return
        except ReportError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"sent the {send.kind} report for {send.period_start} to {', '.join(send.recipients)}"
        )


RELATIVE_DAYS = {"today": 0, "yesterday": 1}


def _date(value: str) -> date:
    # Cron lines say "--date yesterday" for a report re-sent the morning after.
    if value.strip().lower() in RELATIVE_DAYS:
        return timezone.localdate() - timedelta(days=RELATIVE_DAYS[value.strip().lower()])
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ArgumentTypeError(
            f"--date must be YYYY-MM-DD, today or yesterday, not {value!r}"
        ) from None
