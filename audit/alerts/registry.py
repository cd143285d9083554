"""The alert channel registry: kind -> dotted path of the channel class.

As with the CRM connectors (leads.crm.registry), classes are imported on
first use and AlertChannel.kind takes its choices from here, so a new kind of
channel needs no migration.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from audit.alerts.channels import BaseChannel
    from audit.alerts.models import AlertChannel

CHANNELS: dict[str, str] = {
    "email": "audit.alerts.channels.mail.EmailChannel",
    "slack": "audit.alerts.channels.webhook.SlackChannel",
    "webhook": "audit.alerts.channels.webhook.WebhookChannel",
}
LABELS: dict[str, str] = {
    "email": "Email",
    "slack": "Slack (incoming webhook)",
    "webhook": "Generic webhook (signed JSON)",
}


def kind_choices() -> list[tuple[str, str]]:
    return [(kind, LABELS.get(kind, kind)) for kind in CHANNELS]


def register_channel(kind: str, path: str, label: str = "") -> None:
    CHANNELS[kind] = path
    LABELS[kind] = label or kind
    channel_class.cache_clear()


@cache
def channel_class(kind: str) -> type[BaseChannel]:
    try:
        path = CHANNELS[kind]
    except KeyError:
        known = ", ".join(sorted(CHANNELS))
        raise ValueError(f"unknown alert channel kind {kind!r} (known: {known})") from None
    return import_string(path)


def get_channel(channel: AlertChannel) -> BaseChannel:
    return channel_class(channel.kind)(channel)
