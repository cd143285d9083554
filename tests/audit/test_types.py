"""The event vocabulary: each app registers its own types; the store lists none of theirs."""

import re
from pathlib import Path

import pytest

from audit import checks, types
from audit.legacy import LEGACY_EVENT_TYPES
from audit.services import record_event

ROOT = Path(__file__).resolve().parents[2]
RECORDED = re.compile(r'event_type="([a-z_]+)"')


def test_every_type_the_code_records_is_registered_with_a_category():
    recorded = set()
    for app in ("core", "audit", "leads", "orchestrator"):
        for path in (ROOT / app).rglob("*.py"):
            recorded.update(RECORDED.findall(path.read_text()))
    assert len(recorded) > 20
    known = types.known_event_types()
    assert sorted(recorded - set(known)) == []
    for name in recorded:
        info = types.event_type_info(name)
        assert info.label and info.category in types.CATEGORIES, name


def test_the_audit_app_lists_only_its_own_vocabulary():
    source = (ROOT / "audit" / "types.py").read_text()
    for prefix in ("lead_", "crm_", "email_", "workflow_", "alert_", "report_"):
        assert f'"{prefix}' not in source, prefix
    assert types.event_type_info("lead_routed").category == "lead"
    assert types.event_type_info("crm_update").category == "crm"
    assert types.event_type_info("email_replied").category == "email"
    assert types.event_type_info("workflow_stopped").category == "workflow"


def test_legacy_types_are_all_registered_and_the_check_notices_a_missing_one(monkeypatch):
    assert set(LEGACY_EVENT_TYPES) <= set(types.known_event_types())
    assert checks.legacy_event_types(None) == []
    registry = dict(types._TYPES)
    del registry["crm_create"]
    monkeypatch.setattr(types, "_TYPES", registry)
    (error,) = checks.legacy_event_types(None)
    assert error.id == "audit.E001" and "crm_create" in error.msg


@pytest.mark.django_db
def test_a_type_registered_by_an_app_is_recordable_and_summarized(monkeypatch):
    monkeypatch.setattr(types, "_TYPES", dict(types._TYPES))
    with pytest.raises(types.UnknownEventType):
        record_event(event_type="invoice_sent")
    types.register_event_type(
        "invoice_sent",
        "An invoice was sent",
        category="crm",
        summary=lambda d, event: f"invoice {d['number']}",
    )
    event = record_event(event_type="invoice_sent", details={"number": "A-7"})
    info = types.event_type_info(event.event_type)
    assert (info.label, info.category) == ("An invoice was sent", "crm")
    assert info.summary(event.details, event) == "invoice A-7"


def test_bad_registrations_are_refused():
    with pytest.raises(ValueError, match="must match"):
        types.register_event_type("Bad-Name", "x")
    with pytest.raises(ValueError, match="category must be one of"):
        types.register_event_type("fine_name", "x", category="sales")


def test_unknown_types_still_fail_with_the_list_of_known_ones():
    with pytest.raises(types.UnknownEventType, match=r"known types: .*lead_ingested"):
        types.validate_event_type("nope")
