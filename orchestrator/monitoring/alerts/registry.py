"""The alert channel registry: kind -> dotted path of the channel class.

As with the CRM connectors (leads.crm.registry), classes are imported on
first use and AlertChannel.kind takes its choices from here, so a new kind of
channel needs no migration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.registry import ClassRegistry

if TYPE_CHECKING:
    from orchestrator.monitoring.alerts.channels import BaseChannel
    from orchestrator.monitoring.alerts.models import AlertChannel

CHANNELS: dict[str, str] = {
    "email": "orchestrator.monitoring.alerts.channels.mail.EmailChannel",
    "slack": "orchestrator.monitoring.alerts.channels.webhook.SlackChannel",
    "webhook": "orchestrator.monitoring.alerts.channels.webhook.WebhookChannel",
}
LABELS: dict[str, str] = {
    "email": "Email",
    "slack": "Slack (incoming webhook)",
    "webhook": "Generic webhook (signed JSON)",
}


REGISTRY: ClassRegistry[BaseChannel] = ClassRegistry("alert channel kind", CHANNELS, LABELS)


def kind_choices() -> list[tuple[str, str]]:
    return REGISTRY.choices()


def register_channel(kind: str, path: str, label: str = "") -> None:
    REGISTRY.register(kind, path, label)


def channel_class(kind: str) -> type[BaseChannel]:
    return REGISTRY.get(kind)


def get_channel(channel: AlertChannel) -> BaseChannel:
    return channel_class(channel.kind)(channel)
