import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from audit.mirror import mirror

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def audit_mirror_path(settings, tmp_path):
    """Each test writes its JSON Lines mirror into its own folder."""
    path = tmp_path / "logs" / "audit.log"
    settings.AUDIT_JSONL_PATH = str(path)
    yield path
    mirror.close()


def database_url() -> str:
    """A URL for the test database, for processes the tests start."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"postgresql://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


@pytest.fixture
def run_python():
    """Run a Python snippet in a fresh process with Django set up on the test database."""

    def run(
        code: str, *, env: dict[str, str] | None = None, timeout: int = 120
    ) -> subprocess.Popen:
        full_env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "orchestrator.settings",
            "DATABASE_URL": database_url(),
            **(env or {}),
        }
        prelude = "import django; django.setup()\n"
        return subprocess.Popen(
            [sys.executable, "-c", prelude + code],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    return run


@pytest.fixture
def web_source(db):
    from leads.models import LeadSource

    return LeadSource.objects.create(name="Website", slug="website", kind="web_form")
