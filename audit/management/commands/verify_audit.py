from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from tqdm import tqdm

from audit.anchors import anchor_path
from audit.integrity import verify
from audit.models import AuditEvent
from audit.verification import record_verification


class Command(BaseCommand):
    help = (
        "Verify the audit trail: every event's MAC, every seal, the chain between them, and "
        "the seals against the anchor log outside the database. Exits non-zero naming the "
        "first problem."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--progress", action="store_true", help="Show a progress bar.")
        parser.add_argument(
            "--no-anchors",
            action="store_true",
            help="Skip the anchor log: for a copy of the database checked where the log is not "
            "(a restore on another host). Truncation and re-sealing go unseen then.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        bar = None
        if options["progress"]:
            approx = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
            bar = tqdm(total=approx, unit="event", file=self.stderr._out)
        report = verify(progress=bar.update if bar else None, anchors=not options["no_anchors"])
        if bar:
            bar.close()
        # The dashboard's monthly report shows this result rather than verifying per view.
        record_verification(report)
        self.stdout.write(
            f"Checked {report.events_checked} events and {report.seals_checked} seals; "
            f"head digest {report.head_digest}."
        )
        if options["no_anchors"]:
            self.stdout.write("Anchor log not checked (--no-anchors).")
        elif report.anchors_checked:
            self.stdout.write(f"Compared with {report.anchors_checked} anchors in {anchor_path()}.")
        if report.unsealed:
            age = 0.0
            if report.unsealed_oldest is not None:
                age = max(0.0, (timezone.now() - report.unsealed_oldest).total_seconds())
            self.stdout.write(
                f"{report.unsealed} events are not sealed yet (from #{report.unsealed_first_id}); "
                f"the oldest is {age:.0f}s old; run seal_audit to cover them."
            )
            if age > settings.AUDIT_SEAL_MAX_AGE_SECONDS:
                report.warnings.append(
                    f"an event has waited {age:.0f}s for its seal, more than "
                    f"AUDIT_SEAL_MAX_AGE_SECONDS={settings.AUDIT_SEAL_MAX_AGE_SECONDS}: "
                    "is seal_audit running?"
                )
        if report.open_gaps:
            self.stdout.write(
                f"{report.open_gaps} id gaps are still open (transactions in flight)."
            )
        for warning in report.warnings:
            self.stdout.write(self.style.WARNING(f"WARNING: {warning}"))
        if report.ok:
            self.stdout.write(self.style.SUCCESS("Audit trail verified."))
            return
        for problem in sorted(report.problems)[:50]:
            self.stderr.write(problem.message)
        if len(report.problems) > 50:
            self.stderr.write(f"... and {len(report.problems) - 50} more problems.")
        first = report.first_problem()
        raise CommandError(f"Audit trail verification FAILED: {first.message if first else ''}")
