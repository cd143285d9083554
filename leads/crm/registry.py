"""The CRM connector registry: kind -> (label, dotted path of the connector class).

Classes are imported on first use, so a deployment that never talks to
Salesforce never imports its module; CrmConnection.kind takes its choices
from here, so adding a CRM needs no migration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.registry import Registry

if TYPE_CHECKING:
    from leads.crm.base import BaseConnector
    from leads.crm.models import CrmConnection

CONNECTORS: Registry[type[BaseConnector]] = Registry(
    "CRM kind",
    {
        "hubspot": ("HubSpot", "leads.crm.hubspot.HubSpotConnector"),
        "pipedrive": ("Pipedrive", "leads.crm.pipedrive.PipedriveConnector"),
        "salesforce": ("Salesforce", "leads.crm.salesforce.SalesforceConnector"),
        "webhook": ("Generic webhook", "leads.crm.webhook.WebhookConnector"),
    },
)


def kind_choices() -> list[tuple[str, str]]:
    # Named in migrations (CrmConnection.kind): keep the name.
    return CONNECTORS.choices()


def register_connector(kind: str, path: str, label: str = "") -> None:
    CONNECTORS.register(kind, label, path)


def connector_class(kind: str) -> type[BaseConnector]:
    return CONNECTORS.load(kind)


def get_connector(connection: CrmConnection) -> BaseConnector:
    """A connector (with its own HTTP session) for one connection."""
    return connector_class(connection.kind)(connection)
