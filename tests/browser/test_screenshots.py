"""`manage.py screenshots` (what `make screenshots` runs), end to end on a small demo."""

import os
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.browser.conftest import BROWSER_DB, chromium_path
from tests.conftest import ROOT, database_url

PAGES = [
    "login",
    "overview",
    "events",
    "leads",
    "lead-detail",
    "errors",
    "error-group",
    "analytics",
    "workflows",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.browser
@BROWSER_DB
def test_screenshots_saves_a_png_of_every_page(tmp_path):
    if chromium_path() is None and os.environ.get("CI") != "true":
        pytest.skip("Chromium not installed")
    # Its own process: Playwright's sync API cannot start inside the loop the
    # other browser tests' Playwright keeps running in this one.
    # Six days: the demo inbox is down on the fifth, so there is an error group.
    command = ["screenshots", "--days", "6", "--per-day", "4", "--output", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": database_url(),
            "AUDIT_JSONL_PATH": str(tmp_path / "audit.log"),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in PAGES:
        png = (tmp_path / f"{name}.png").read_bytes()
        assert png.startswith(PNG_MAGIC), name
        assert len(png) > 5_000, f"{name}.png is suspiciously small"


@pytest.mark.django_db
def test_screenshots_refuses_a_database_that_holds_leads(web_source, tmp_path):
    from leads.services import ingest_lead

    ingest_lead(source=web_source, payload={"email": "ann@acme.example"})
    with pytest.raises(CommandError, match="needs an empty database"):
        call_command("screenshots", "--output", str(tmp_path), stdout=StringIO())
    assert list(tmp_path.iterdir()) == []
