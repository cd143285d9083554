"""Scripts written against the legacy module run unchanged: `automation_orchestrator.audit`
sets Django up for them and writes to the project's database."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audit.models import AuditEvent
from tests.conftest import database_url

LEGACY_MODULES = Path(__file__).resolve().parent / "legacy_modules"
LEGACY_KEYS = {"timestamp", "event_type", "actor", "lead_id", "workflow", "details"}
ERROR_KEYS = {"error_type", "error_message", "traceback"}


def run_plain(args, *, cwd, env=None):
    """A plain Python process, as a legacy script ran: no DJANGO_SETTINGS_MODULE,
    no PYTHONPATH, started outside the repository; only DATABASE_URL set."""
    full_env = {
        k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")
    }
    full_env.update(
        DATABASE_URL=database_url(), AUDIT_JSONL_PATH=str(cwd / "logs" / "audit.log"), **(env or {})
    )
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120
    )


def lead_run(lead_id, *, crm_update="crm_update"):
    return [
        ("lead_ingested", lead_id),
        ("lead_qualified", lead_id),
        ("lead_routed", lead_id),
        ("crm_create", lead_id),
        ("email_scheduled", lead_id),
        ("email_sent", lead_id),
        *([(crm_update, lead_id)] if crm_update == "crm_update" else []),
    ]


LEAD_004 = [
    *lead_run("LEAD-004", crm_update=None),
    ("error", "LEAD-004"),
    ("email_cancelled", "LEAD-004"),
]
SALES_RUN = [
    ("workflow_started", ""),
    *lead_run("LEAD-001"),
    ("lead_ingested", "LEAD-002"),
    ("lead_qualified", "LEAD-002"),
    ("error", "LEAD-003"),
    *LEAD_004,
]


@pytest.mark.django_db(transaction=True)
def test_legacy_modules_run_unchanged(tmp_path):
    done = run_plain([str(LEGACY_MODULES / "run_legacy.py")], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)

    rows = list(
        AuditEvent.objects.order_by("id").values_list("event_type", "lead_public_id", "workflow")
    )
    sales = [(t, lead) for t, lead, wf in rows if wf == "sales"]
    support = [(t, lead) for t, lead, wf in rows if wf == "support"]
    assert sales == [
        ("workflow_started", ""),
        ("workflow_stopped", ""),
        *SALES_RUN,
        ("workflow_stopped", ""),
    ]
    assert support == [("workflow_started", ""), *lead_run("LEAD-101"), ("workflow_stopped", "")]
    assert len(rows) == len(sales) + len(support)
    assert out["outcomes"] == {
        "LEAD-001": "team-emea",
        "LEAD-002": "disqualified",
        "LEAD-101": "team-emea",
        "LEAD-003": "rejected",
        "LEAD-004": "failed",
    }

    # The factory attached the logger to each connector, with its own CRM type.
    creates = AuditEvent.objects.filter(event_type="crm_create").order_by("id")
    assert [(e.lead_public_id, e.details["crm_type"]) for e in creates] == [
        ("LEAD-001", "hubspot"),
        ("LEAD-101", "salesforce"),
        ("LEAD-004", "hubspot"),
    ]
    rejected, failed = AuditEvent.objects.filter(event_type="error").order_by("id")
    # Captured from the except block: the script passed no traceback.
    assert rejected.error_type == "ValueError"
    assert rejected.error_message == "lead LEAD-003 has no email"
    assert 'raise ValueError(f"lead {lead_id} has no email")' in rejected.traceback
    assert "lead_ingest.py" in rejected.traceback
    # Passed explicitly, as traceback.format_exc().
    assert failed.error_type == "CRMError"
    assert "raise CRMError" in failed.traceback and "crm_connector.py" in failed.traceback

    history = out["history"]
    assert [(e["event_type"], e["lead_id"]) for e in history] == LEAD_004
    assert all(e.keys() >= LEGACY_KEYS for e in history)
    assert [e["timestamp"] for e in history] == sorted(e["timestamp"] for e in history)
    assert history[-2]["error_type"] == "CRMError"

    # since is the run's first event (counted), until its last (not counted);
    # the previous run and the support workflow are outside.
    stats = out["statistics"]
    assert stats["total_events"] == len(SALES_RUN) == 19
    assert stats["event_types"] == {
        "crm_create": 2,
        "crm_update": 1,
        "email_cancelled": 1,
        "email_scheduled": 2,
        "email_sent": 2,
        "error": 2,
        "lead_ingested": 3,
        "lead_qualified": 3,
        "lead_routed": 2,
        "workflow_started": 1,
    }
    assert stats["leads_processed"] == 4
    assert stats["errors"] == 2
    assert stats["error_rate"] == pytest.approx(2 / 19, abs=1e-6)
    assert stats["by_workflow"] == {"sales": 19}

    errors = out["errors"]
    assert [(e["lead_id"], e["error_type"]) for e in errors] == [
        ("LEAD-004", "CRMError"),
        ("LEAD-003", "ValueError"),
    ]
    assert all(e.keys() >= (LEGACY_KEYS | ERROR_KEYS) for e in errors)
    assert errors[0]["traceback"] == failed.traceback

    # From just before LEAD-004 to the stop event, which is excluded; newest first.
    assert [(e["event_type"], e["lead_id"]) for e in out["window"]] == LEAD_004[::-1]

    # The legacy JSON Lines log is still written, one line per event.
    lines = (tmp_path / "logs" / "audit.log").read_text().splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == [
        str(u) for u in AuditEvent.objects.order_by("id").values_list("uuid", flat=True)
    ]


COUNT_SETUPS = """
import json, os, django
calls = []
real_setup = django.setup
def counting_setup(*args, **kwargs):
    calls.append(1)
    real_setup(*args, **kwargs)
django.setup = counting_setup
{before}
import importlib
import automation_orchestrator.audit as legacy
from audit import get_audit_logger
get_audit_logger()
importlib.reload(legacy)
print(json.dumps({{"setups": len(calls), "settings": os.environ.get("DJANGO_SETTINGS_MODULE")}}))
"""


@pytest.mark.parametrize(
    ("before", "env", "expected"),
    [
        # A plain script: the drop-in sets Django up, once, with the project's settings.
        ("", {}, {"setups": 1, "settings": "orchestrator.settings"}),
        # A script that set Django up itself: the drop-in does not do it again.
        (
            "django.setup()",
            {"DJANGO_SETTINGS_MODULE": "orchestrator.settings"},
            {"setups": 1, "settings": "orchestrator.settings"},
        ),
    ],
)
@pytest.mark.django_db
def test_django_is_set_up_once_and_only_when_nobody_did(tmp_path, before, env, expected):
    done = run_plain(["-c", COUNT_SETUPS.format(before=before)], cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == expected


@pytest.mark.django_db
def test_the_settings_module_comes_from_the_environment(tmp_path):
    done = run_plain(
        ["-c", "import automation_orchestrator.audit"],
        cwd=tmp_path,
        env={"DJANGO_SETTINGS_MODULE": "no_such_settings"},
    )
    assert done.returncode == 1
    assert "No module named 'no_such_settings'" in done.stderr


@pytest.mark.django_db(transaction=True)
def test_the_short_import_also_works_in_a_plain_script(tmp_path):
    code = (
        "from audit import get_audit_logger\n"
        "get_audit_logger().log_lead_ingested('LEAD-9', 'csv', {'email': 'x@example.com'}, 'sales')"
    )
    done = run_plain(["-c", code], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    event = AuditEvent.objects.get()
    assert (event.event_type, event.lead_public_id, event.details["email"]) == (
        "lead_ingested",
        "LEAD-9",
        "x@example.com",
    )


@pytest.mark.django_db
def test_imported_inside_the_running_project_it_leaves_django_alone(monkeypatch):
    import django

    def no_second_setup(*args, **kwargs):
        raise AssertionError("django.setup() called again")

    monkeypatch.setattr(django, "setup", no_second_setup)
    legacy = importlib.reload(importlib.import_module("automation_orchestrator.audit"))

    from audit import get_audit_logger

    assert legacy.get_audit_logger() is get_audit_logger()
    legacy.get_audit_logger().log_workflow_started("sales")
    assert AuditEvent.objects.get().event_type == "workflow_started"
