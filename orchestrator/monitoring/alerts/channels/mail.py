"""Alerts by email, through the mailer ALERTS_MAILER names (Django's MAILERS setting).

The target is one address or several, comma-separated. SMTP refusals are
classified by their reply code: 5xx for every recipient is permanent, the
rest (4xx, a server we cannot reach, a connection dropped) is tried again on
a later pass.
"""

from __future__ import annotations

import smtplib
from email.utils import parseaddr

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, mailers
from django.core.validators import validate_email
from django.template.loader import render_to_string

from orchestrator.monitoring.alerts.channels import BaseChannel, ChannelError, Notice


def addresses(target: str) -> list[str]:
    return [part.strip() for part in target.split(",") if part.strip()]


class EmailChannel(BaseChannel):
    kind = "email"

    @classmethod
    def validate(cls, channel) -> dict[str, str]:
        found = addresses(channel.target)
        if not found:
            return {"target": "Give one or more email addresses, comma-separated."}
        for address in found:
            try:
                validate_email(parseaddr(address)[1] or address)
            except ValidationError:
                return {"target": f"{address!r} is not an email address."}
        return {}

    def message(self, notice: Notice) -> EmailMultiAlternatives:
        context = {"notice": notice, "details": notice.details}
        message = EmailMultiAlternatives(
            subject=notice.title[:250],
            body=render_to_string("alerts/notice.txt", context),
            from_email=settings.ALERTS_FROM_EMAIL or None,
            to=addresses(self.channel.target),
            headers={
                # Threads the opened and resolved notices of one incident together.
                "X-Orchestrator-Incident": str(notice.incident_id),
                "Auto-Submitted": "auto-generated",  # RFC 3834: no auto-replies
            },
        )
        message.attach_alternative(render_to_string("alerts/notice.html", context), "text/html")
        return message

    def send(self, notice: Notice) -> None:
        message = self.message(notice)
        mailer = mailers[settings.ALERTS_MAILER]
        try:
            mailer.send_messages([message])
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _msg in exc.recipients.values()]
            permanent = bool(codes) and all(code >= 500 for code in codes)
            raise ChannelError(
                f"recipients refused: {exc.recipients}", permanent=permanent
            ) from exc
        except smtplib.SMTPResponseException as exc:
            raise ChannelError(
                f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", permanent=exc.smtp_code >= 500
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise ChannelError(f"{type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # an address Django cannot put on the wire
            raise ChannelError(str(exc), permanent=True) from exc
