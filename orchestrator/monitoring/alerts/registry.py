"""The alert channel registry: kind -> (label, dotted path of the channel class).

As with the CRM connectors (leads.crm.registry), classes are imported on
first use and AlertChannel.kind takes its choices from here, so a new kind of
channel needs no migration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.registry import Registry

if TYPE_CHECKING:
    from orchestrator.monitoring.alerts.channels import BaseChannel
    from orchestrator.monitoring.alerts.models import AlertChannel

CHANNELS: Registry[type[BaseChannel]] = Registry(
    "alert channel kind",
    {
        "email": ("Email", "orchestrator.monitoring.alerts.channels.mail.EmailChannel"),
        "slack": (
            "Slack (incoming webhook)",
            "orchestrator.monitoring.alerts.channels.webhook.SlackChannel",
        ),
        "webhook": (
            "Generic webhook (signed JSON)",
            "orchestrator.monitoring.alerts.channels.webhook.WebhookChannel",
        ),
    },
)


def kind_choices() -> list[tuple[str, str]]:
    # Named in migrations (AlertChannel.kind): keep the name.
    return CHANNELS.choices()


def register_channel(kind: str, path: str, label: str = "") -> None:
    CHANNELS.register(kind, label, path)


def channel_class(kind: str) -> type[BaseChannel]:
    return CHANNELS.load(kind)


def get_channel(channel: AlertChannel) -> BaseChannel:
    return channel_class(channel.kind)(channel)
