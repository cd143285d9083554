from datetime import timedelta
from typing import Any

from django.core.management.base import CommandError, CommandParser

from audit.services import audit_context
from core.scheduled import ScheduledCommand
from leads.followups.services import requeue, send_due, stale_sending
from leads.followups.services.sending import SMTP_CONNECT


class Command(ScheduledCommand):
    help = (
        "Send the follow-up emails that are due. Each email is claimed before the SMTP "
        "call, so it goes out at most once; an unreachable server leaves it pending and the "
        "command fails. Emails a dead sender left in 'sending' for longer than "
        "FOLLOWUPS_STUCK_SENDING_SECONDS are sent again first."
    )
    lock_name = "send_followups"
    default_interval = 60

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--limit", type=int, help="Send at most N emails per pass.")
        parser.add_argument(
            "--parallel",
            action="store_true",
            help="Run beside other senders (emails are claimed one by one); without it an "
            "overlapping run skips.",
        )
        parser.add_argument(
            "--requeue-stale",
            type=float,
            metavar="MINUTES",
            help="First put emails stuck in 'sending' for longer than MINUTES back to pending. "
            "They may have been delivered (a crash mid-send): use after checking the mail log.",
        )

    def get_lock_name(self, **options: Any) -> str | None:
        return None if options["parallel"] else self.lock_name

    def handle(self, *args: Any, **options: Any) -> None:
        if options["limit"] is not None and options["limit"] < 1:
            raise CommandError("--limit must be a positive number")
        if options["requeue_stale"] is not None:
            if options["requeue_stale"] <= 0:
                raise CommandError("--requeue-stale must be a positive number of minutes")
            stale = stale_sending(older_than=timedelta(minutes=options["requeue_stale"]))
            self.stdout.write(f"Requeued {requeue(emails=stale)} stale email(s).")
        super().handle(*args, **options)

    def run_once(self, **options: Any) -> None:
        with audit_context(actor="system"):
            summary = send_due(limit=options["limit"], stop=self.stop)
        self.stdout.write(f"{summary.worker_id}: {summary}.")
        if summary.stopped:
            message = " ".join(
                f"follow-ups not sent: SMTP server {summary.stopped}; "
                f"{summary.left_pending} due email(s) left pending for the next pass "
                f"(error event stage {SMTP_CONNECT})".split()
            )
            if options["loop"]:
                # An outage is no reason to stop the loop; the error event shows it.
                self.stderr.write(message)
            else:
                # Cron and systemd see the failure; the emails wait for the next pass.
                raise CommandError(message)
