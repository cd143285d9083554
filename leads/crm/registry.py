"""The CRM connector registry: kind -> dotted path of the connector class.

Classes are imported on first use, so a deployment that never talks to
Salesforce never imports its module; CrmConnection.kind takes its choices
from here, so adding a CRM needs no migration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.registry import ClassRegistry

if TYPE_CHECKING:
    from leads.crm.base import BaseConnector
    from leads.crm.models import CrmConnection

CONNECTORS: dict[str, str] = {
    "hubspot": "leads.crm.hubspot.HubSpotConnector",
    "pipedrive": "leads.crm.pipedrive.PipedriveConnector",
    "salesforce": "leads.crm.salesforce.SalesforceConnector",
    "webhook": "leads.crm.webhook.WebhookConnector",
}
# Labels live here rather than on the classes so that listing the choices
# imports no connector module.
LABELS: dict[str, str] = {
    "hubspot": "HubSpot",
    "pipedrive": "Pipedrive",
    "salesforce": "Salesforce",
    "webhook": "Generic webhook",
}


REGISTRY: ClassRegistry[BaseConnector] = ClassRegistry("CRM kind", CONNECTORS, LABELS)


def kind_choices() -> list[tuple[str, str]]:
    return REGISTRY.choices()


def register_connector(kind: str, path: str, label: str = "") -> None:
    REGISTRY.register(kind, path, label)


def connector_class(kind: str) -> type[BaseConnector]:
    return REGISTRY.get(kind)


def get_connector(connection: CrmConnection) -> BaseConnector:
    """A connector (with its own HTTP session) for one connection."""
    return connector_class(connection.kind)(connection)
