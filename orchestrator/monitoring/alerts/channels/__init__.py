"""What every alert channel shares: the notice it sends and how failures are classified.

A channel sends one Notice and returns, or raises ChannelError with
`permanent` saying whether another attempt could help (a 400 from the
receiver, a missing secret: no; a timeout, a 503, a 4xx SMTP reply: yes).
The delivery loop (services.deliver_due) records the error on the Delivery
and schedules the next attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from core.credentials import CredentialError, read_credential

if TYPE_CHECKING:
    from orchestrator.monitoring.alerts.models import AlertChannel


class ChannelError(Exception):
    def __init__(
        self, message: str, *, permanent: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


@dataclass(frozen=True)
class Notice:
    """One message about one incident: it opened (or fires again) or it resolved."""

    notice: str  # "opened" | "resolved"
    delivery_id: str
    rule_id: int
    rule_name: str
    rule_kind: str
    rule_label: str
    incident_id: int
    key: str
    summary: str
    opened_at: datetime
    resolved_at: datetime | None
    url: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def resolved(self) -> bool:
        return self.notice == "resolved"

    @property
    def title(self) -> str:
        state = "RESOLVED" if self.resolved else "ALERT"
        return f"[{state}] {self.rule_label}: {self.rule_name} ({self.key})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "event": f"alert.{self.notice}",
            "delivery_id": self.delivery_id,
            "rule": {"id": self.rule_id, "name": self.rule_name, "kind": self.rule_kind},
            "incident": {
                "id": self.incident_id,
                "key": self.key,
                "state": "resolved" if self.resolved else "open",
                "summary": self.summary,
                "opened_at": self.opened_at.isoformat(),
                "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
                "url": self.url,
                "details": self.details,
            },
        }


class BaseChannel:
    kind: ClassVar[str] = ""

    def __init__(self, channel: AlertChannel) -> None:
        self.channel = channel

    @classmethod
    def validate(cls, channel: AlertChannel) -> dict[str, str]:
        """Field -> message for what is wrong with the channel's settings."""
        return {}

    def send(self, notice: Notice) -> None:
        raise NotImplementedError

    def secret(self) -> str:
        return self.credential("secret_env", "the signing secret")

    def credential(self, field: str, what: str) -> str:
        """The value of the environment variable the channel's `field` names.

        Read through the credential rule (core.credentials) at send time too,
        so a row written past AlertChannel.clean cannot read SECRET_KEY.
        """
        name = getattr(self.channel, field)
        if not name:
            raise ChannelError(
                f"alert channel {self.channel.name!r} names no {field}", permanent=True
            )
        try:
            return read_credential(name, purpose=f"{what} of alert channel {self.channel.name!r}")
        except CredentialError as exc:
            raise ChannelError(str(exc), permanent=True) from None
