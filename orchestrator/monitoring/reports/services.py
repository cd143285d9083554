"""Sending the scheduled reports: one send per period, recorded and audited."""

from datetime import date

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone

from audit.services import record_event
from orchestrator.monitoring.reports.builders import (
    Report,
    build_report,
    last_complete_day,
    report_period,
)
from orchestrator.monitoring.reports.kinds import REPORT_KINDS
from orchestrator.monitoring.reports.models import ReportSend
from orchestrator.monitoring.reports.render import chart_part, csv_filename, table_csv


class ReportError(ValueError):
    """A report that cannot be sent as asked; the message says why."""


class ReportAlreadySent(ReportError):
    pass


def report_message(report: Report, *, recipients: list[str]) -> EmailMultiAlternatives:
    base_url = settings.FOLLOWUPS_BASE_URL.rstrip("/")
    context = {"report": report, "base_url": base_url, "email": True}
    message = EmailMultiAlternatives(
        subject=f"[Orchestrator] {report.title}",
        body=render_to_string("reports/report_email.txt", context),
        from_email=settings.REPORTS_FROM_EMAIL or settings.DEFAULT_FROM_EMAIL,
        to=recipients,
    )
    message.attach_alternative(render_to_string("reports/report_email.html", context), "text/html")
    for chart in report.charts:
        message.attach(chart_part(chart))
    for table in report.tables:
        message.attach(csv_filename(report, table), table_csv(table), "text/csv")
    return message


def _claim(
    *, kind: str, start: date, end: date, recipients: list[str], actor: str, force: bool
) -> ReportSend:
    """Take the period's send; a concurrent or earlier send of it makes this raise."""
    with transaction.atomic():
        sends = list(ReportSend.objects.select_for_update().filter(kind=kind, period_start=start))
        if any(s.sent_at for s in sends) and not force:
            first = min((s for s in sends if s.sent_at), key=lambda s: s.sent_at)
            raise ReportAlreadySent(
                f"the {kind} report for {start} was already sent at "
                f"{first.sent_at:%Y-%m-%d %H:%M} UTC; use --force to send it again"
            )
        # A failed earlier attempt is retried in its own row.
        unsent = [s for s in sends if not s.sent_at]
        if unsent:
            send = unsent[0]
            send.recipients, send.actor, send.error = recipients, actor, ""
            send.save(update_fields=["recipients", "actor", "error"])
            return send
        number = max((s.number for s in sends), default=0) + 1
        try:
            with transaction.atomic():
                return ReportSend.objects.create(
                    kind=kind,
                    period_start=start,
                    period_end=end,
                    number=number,
                    recipients=recipients,
                    actor=actor,
                )
        except IntegrityError:
            raise ReportAlreadySent(
                f"the {kind} report for {start} is being sent by another run"
            ) from None


def report_send(
    *,
    kind: str,
    on: date | None = None,
    to: list[str] | None = None,
    force: bool = False,
    actor: str = "system",
) -> ReportSend:
    """Build and email the `kind` report for the period holding `on` (default: the last
    complete one). Raises ReportAlreadySent for a period already sent, unless `force`."""
    if kind not in REPORT_KINDS:
        raise ReportError(f"unknown report {kind!r}; choose {', '.join(REPORT_KINDS)}")
    today = timezone.now().date()
    on = on or last_complete_day(kind, today)
    start, end = report_period(kind, on)
    if start > today:
        raise ReportError(f"the {kind} report for {on} lies in the future")
    if end > today and not force:
        raise ReportError(
            f"the {kind} period {start} to {end} has not ended yet; use --force to send "
            "what there is so far"
        )
    recipients = list(to or settings.REPORTS_RECIPIENTS)
    if not recipients:
        raise ReportError("no recipients: set REPORTS_RECIPIENTS or pass --to")
    send = _claim(kind=kind, start=start, end=end, recipients=recipients, actor=actor, force=force)
    report = build_report(kind, on)
    try:
        report_message(report, recipients=recipients).send()
    except OSError as exc:  # SMTP errors are OSErrors: connection, refusal, timeout
        send.error = f"{type(exc).__name__}: {exc}"
        send.save(update_fields=["error"])
        raise ReportError(f"sending the {kind} report failed: {send.error}") from exc
    with transaction.atomic():
        send.sent_at = timezone.now()
        send.save(update_fields=["sent_at"])
        record_event(
            event_type="report_sent",
            actor=actor,
            details={
                "report": kind,
                "period_start": start.isoformat(),
                "period_end": end.isoformat(),
                "recipients": recipients,
                "forced": force,
                "send": send.number,
            },
        )
    return send
