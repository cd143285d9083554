import sys

import pytest

from core.registry import Registry
from leads.crm.models import CrmConnection
from leads.crm.registry import CONNECTORS
from leads.intake import inbox
from leads.workflows.steps import STEP_KINDS
from orchestrator.monitoring.alerts import params
from orchestrator.monitoring.alerts.models import AlertChannel, AlertRule
from orchestrator.monitoring.alerts.registry import CHANNELS
from orchestrator.monitoring.reports.kinds import REPORT_KINDS
from orchestrator.monitoring.reports.models import ReportSend

PLUGIN = "tests.core.registry_plugin"


@pytest.fixture
def registry():
    sys.modules.pop(PLUGIN, None)
    return Registry("widget kind", {"plugin": ("A plugin", f"{PLUGIN}.Plugin")})


def test_listing_and_choices_import_nothing(registry):
    assert registry.choices() == [("plugin", "A plugin")]
    assert dict(registry) == {"plugin": ("A plugin", f"{PLUGIN}.Plugin")}
    assert "plugin" in registry
    assert PLUGIN not in sys.modules


def test_load_imports_on_first_use_and_keeps_the_object(registry):
    first = registry.load("plugin")
    assert first.__name__ == "Plugin"
    assert PLUGIN in sys.modules
    sys.modules.pop(PLUGIN)
    assert registry.load("plugin") is first  # cached: not imported again


def test_an_unknown_kind_names_the_known_ones(registry):
    with pytest.raises(ValueError, match=r"unknown widget kind 'nope' \(known: plugin\)"):
        registry.load("nope")
    with pytest.raises(ValueError, match="unknown widget kind 'nope'"):
        registry.label("nope")
    with pytest.raises(ValueError, match=r"\(known: none registered\)"):
        Registry("widget kind").load("plugin")


def test_register_adds_replaces_and_orders(registry):
    registry.register("other", "Other", "collections.OrderedDict")
    assert registry.choices() == [("plugin", "A plugin"), ("other", "Other")]
    first = registry.load("other")
    registry.register("other", "", "collections.Counter")  # a label defaults to the kind
    assert registry.load("other") is not first  # replacing drops the cached object
    assert registry.label("other") == "other"
    registry.register("early", "Early", "collections.deque", before="plugin")
    assert list(registry) == ["early", "plugin", "other"]
    with pytest.raises(ValueError, match="unknown widget kind 'missing'"):
        registry.register("late", "Late", "collections.deque", before="missing")
    registry.unregister("early")
    assert list(registry) == ["plugin", "other"]


def test_model_choices_come_from_the_registries():
    for model, field, kinds in [
        (CrmConnection, "kind", {"hubspot", "pipedrive", "salesforce", "webhook"}),
        (AlertChannel, "kind", {"email", "slack", "webhook"}),
        (AlertRule, "kind", set(params.RULE_KINDS)),
        (ReportSend, "kind", set(REPORT_KINDS)),
    ]:
        assert {k for k, _label in model._meta.get_field(field).choices} == kinds


def test_apps_register_their_steps_and_inbox_handlers():
    assert {"crm_sync", "email_sequence"} <= set(STEP_KINDS)
    # Bounce, reply and unsubscribe detection run before the lead parser, which is last.
    assert list(inbox.HANDLERS)[-4:] == ["bounce", "reply", "unsubscribe", inbox.LEAD_HANDLER]


def test_every_registered_path_imports():
    registries = (CONNECTORS, CHANNELS, STEP_KINDS, inbox.HANDLERS, params.RULE_KINDS, REPORT_KINDS)
    for registry in registries:
        for kind in registry:
            assert callable(registry.load(kind)), (registry, kind)
