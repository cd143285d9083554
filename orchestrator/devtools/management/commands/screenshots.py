"""Screenshots of every dashboard page for the README (`make screenshots`).

The demo data goes through the real pipeline (orchestrator.devtools.demo.load_demo), a
server runs in this process, and Debian's Chromium (driven by Playwright, a dev
dependency; no browser is downloaded) logs in through the form and saves one
PNG per page.
"""

import contextlib
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.handlers.wsgi import WSGIHandler
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.db import connections
from django.db.models import Count

from audit.models import AuditEvent
from leads.models import Lead
from orchestrator.devtools.demo import load_demo

VIEWPORT = {"width": 1280, "height": 860}
# Long pages (the event table) are cut here: the README shows the top of each.
MAX_HEIGHT = 1600
USERNAME = "screenshots"


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve() -> Iterator[str]:
    """This project on a free loopback port (static files included), for as long as needed."""
    server = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler, allow_reuse_address=False)
    server.set_app(StaticFilesHandler(WSGIHandler()))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class Shot:
    name: str
    path: str
    # Run on the loaded page before the picture is taken (open a row, ...).
    prepare: Callable[[Any], None] | None = None


def open_a_row(page: Any) -> None:
    """Open an error near the top of the event table (its traceback shows), else the first row."""
    rows = page.locator("tr.event-row")
    errors = rows.evaluate_all(
        "rows => rows.slice(0, 12).map(r => r.querySelector('pre.traceback') !== null)"
    )
    index = errors.index(True) if True in errors else 0
    if errors:
        rows.nth(index).locator("details.event-details summary").click()


class Command(BaseCommand):
    help = (
        "Load the demo data into an EMPTY database, serve it, and save a PNG of each dashboard "
        "page with Chromium (`make screenshots` gives it a throwaway SQLite database)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", default=str(Path(settings.BASE_DIR) / "docs/screenshots"))
        parser.add_argument("--days", type=int, default=21)
        parser.add_argument("--per-day", type=int, default=24)
        parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")

    def handle(self, *args: Any, **options: Any) -> None:
        # Demo leads in a real database would be a disaster; this wants one of its own.
        if Lead.objects.exists():
            raise CommandError(
                "screenshots loads demo data and needs an empty database "
                "(`make screenshots` makes one under var/)"
            )
        try:
            # A dev extra: imported here, so that without it this is a CommandError.
            from playwright.sync_api import sync_playwright
        except ImportError:
            raise CommandError(
                "screenshots needs the dev extras: pip install -e '.[dev]'"
            ) from None
        chromium = Path(options["chromium"])
        if not chromium.exists():
            raise CommandError(
                f"no Chromium at {chromium}: apt-get install --no-install-recommends chromium"
            )
        output = Path(options["output"])
        output.mkdir(parents=True, exist_ok=True)

        self.stdout.write("Loading the demo data through the pipeline ...")
        load_demo(days=options["days"], per_day=options["per_day"])
        password = secrets.token_urlsafe(16)
        get_user_model().objects.create_superuser(USERNAME, "", password)
        shots = self.shots()
        # Everything below runs under Playwright's event loop: no ORM calls in
        # this thread from here on (the server's threads do the queries).
        connections.close_all()

        with serve() as base, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(chromium))
            try:
                page = browser.new_context(viewport=VIEWPORT).new_page()
                page.set_default_timeout(15_000)
                page.goto(f"{base}/accounts/login/")
                page.get_by_label("Username").fill(USERNAME)
                self.save(page, output / "login.png")
                page.get_by_label("Password").fill(password)
                page.get_by_role("button", name="Log in").click()
                page.wait_for_url(lambda url: "/accounts/login/" not in url)
                for shot in shots:
                    response = page.goto(f"{base}{shot.path}")
                    if response is None or not response.ok:
                        status = response.status if response else "no response"
                        raise CommandError(f"{shot.name}: {shot.path} answered {status}")
                    page.wait_for_load_state("networkidle")
                    if shot.prepare:
                        shot.prepare(page)
                    self.save(page, output / f"{shot.name}.png")
            finally:
                browser.close()

    def shots(self) -> list[Shot]:
        lead = (
            Lead.objects.exclude(status=Lead.Status.NEW)
            .exclude(score__isnull=True)
            .order_by("-score", "created_at")
            .first()
        )
        group = (
            AuditEvent.objects.exclude(fingerprint="")
            .values("fingerprint")
            .annotate(n=Count("id"))
            .order_by("-n")
            .first()
        )
        shots = [
            Shot("overview", "/?range=30d"),
            Shot("events", "/events/?range=7d", open_a_row),
            Shot("leads", "/leads/?range=30d"),
            Shot("errors", "/errors/?range=30d"),
            Shot("analytics", "/analytics/?range=30d"),
            Shot("workflows", "/workflows/?range=7d"),
        ]
        if lead:
            shots.insert(3, Shot("lead-detail", f"/leads/{lead.public_id}/?range=30d"))
        if group:
            shots.insert(-2, Shot("error-group", f"/errors/{group['fingerprint']}/?range=30d"))
        return shots

    def save(self, page: Any, path: Path) -> None:
        height = min(page.evaluate("document.documentElement.scrollHeight"), MAX_HEIGHT)
        page.screenshot(
            path=str(path),
            full_page=True,
            clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height},
        )
        self.stdout.write(f"  {path}")
