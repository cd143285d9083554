"""Browser tests: Debian's Chromium driven by pytest-playwright against Django's live server.

No browser is downloaded (`playwright install` is never run): Playwright starts
/usr/bin/chromium (`apt-get install --no-install-recommends chromium`, which .ci/run
does). Without it the tests skip on a developer machine and fail under CI=true.
"""

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import django.utils.asyncio
import pytest
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.utils import timezone
from playwright.sync_api import expect

from audit.models import AuditEvent
from orchestrator.dashboard.access import ROLES

INSTALL_HINT = "Chromium not installed: apt-get install --no-install-recommends chromium"

# Every test here talks to the live server from another thread, so the data it
# seeds must be committed.
BROWSER_DB = pytest.mark.django_db(transaction=True)


def shown_ids(page) -> list[int]:
    return [
        int(i)
        for i in page.locator("tr.event-row").evaluate_all(
            "rows => rows.map(r => r.dataset.eventId)"
        )
    ]


def db_ids(**filters) -> list[int]:
    """Event ids matching the filters, newest first as the table lists them."""
    qs = AuditEvent.objects.filter(**filters).order_by("-timestamp", "-id")
    return list(qs.values_list("pk", flat=True))


def query(page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def chromium_path() -> str | None:
    return shutil.which("chromium") or next(
        (p for p in ("/usr/bin/chromium", "/usr/lib/chromium/chromium") if os.access(p, os.X_OK)),
        None,
    )


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    path = chromium_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    return {**browser_type_launch_args, "executable_path": path}


@pytest.fixture(autouse=True)
def fast_password_hasher(settings) -> None:
    # Users are made and logged in through the form in every test; PBKDF2's
    # deliberate slowness buys nothing here. The live server shares these settings.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def empty_cache_and_roles(request) -> None:
    request.getfixturevalue("transactional_db")
    # The dashboard caches aggregates for a minute in the database cache, which
    # a flush leaves alone: figures from the previous test's data would show.
    cache.clear()
    # The flush after a transactional test also empties what migrations made,
    # the role groups among it (serialized_rollback does not bring them back
    # once another module's transactional test has flushed without it).
    for role in ROLES:
        Group.objects.get_or_create(name=role)


@pytest.fixture(scope="session")
def playwright(playwright):
    # Playwright's sync API keeps its asyncio loop marked as running in this
    # thread for as long as it lives (between calls too), and Django then
    # refuses every ORM call from the test thread (SynchronousOnlyOperation):
    # seeding, the flush after each test, and every later test in this worker.
    # No Django code runs on that loop, so Django's check is told to overlook
    # that one loop, and only it. DJANGO_ALLOW_ASYNC_UNSAFE would do too, but it
    # switches the check off for any loop and leaks into the subprocesses tests
    # start (where `check --deploy` rightly complains about it).
    playwright_loop = asyncio.get_running_loop()

    def running_loop_unless_playwrights() -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if loop is playwright_loop:
            raise RuntimeError("only Playwright's loop, which runs no Django code")
        return loop

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(django.utils.asyncio, "get_running_loop", running_loop_unless_playwrights)
        yield playwright


@pytest.fixture
def browser_context_args(browser_context_args: dict) -> dict:
    return {**browser_context_args, "viewport": {"width": 1280, "height": 900}}


# Chromium reports a CSP violation on the console ("Refused to apply inline
# style ... Content Security Policy"); the DOM event is caught as well, in
# case a message's wording changes.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || "inline"}`);
});
"""


@pytest.fixture
def page(page) -> Iterator:
    """The page, failing the test on a CSP violation or an uncaught script error."""
    problems: list[str] = []

    def on_console(message) -> None:
        text = message.text
        csp = "Content Security Policy" in text or "Refused to" in text or "CSP violation" in text
        # Any script error too (htmx reports a bad hx-trigger as htmx:syntax:error
        # and carries on without it). A failed request is judged by its status
        # where a test expects one, not by Chromium's console line about it.
        script_error = message.type == "error" and not text.startswith("Failed to load resource")
        if csp or script_error:
            problems.append(f"console {message.type}: {text} ({message.location.get('url')})")

    page.add_init_script(CSP_LISTENER)
    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    # Generous: a live server's first request imports the whole project, and CI
    # machines run two workers (and Chromium each) on two cores. A pass is fast.
    page.set_default_navigation_timeout(30_000)
    page.set_default_timeout(15_000)
    expect.set_options(timeout=10_000)
    yield page
    if problems:
        pytest.fail("the browser reported:\n" + "\n".join(problems))


def submit_login(page, username: str, password: str) -> None:
    """Fill in and send the login form the page shows."""
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


@pytest.fixture
def login(live_server) -> Callable:
    """Log in through the real form; the password is the one tests/conftest.py sets."""

    def do_login(page, user) -> None:
        page.goto(f"{live_server.url}/accounts/login/")
        submit_login(page, user.get_username(), f"pw-{user.get_username()}")
        page.wait_for_url(lambda url: "/accounts/login/" not in url)

    return do_login


@pytest.fixture
def logged_in_page(page, login, auditor):
    login(page, auditor)
    return page


@pytest.fixture
def seeded(pipeline):
    """Leads and their events made by the real services, spread over the last days.

    Two leads were ingested three days ago and run through the workflow (qualified,
    routed); one of them also failed a CRM sync with an exception (an error event
    with a traceback). A third lead arrived today.
    """
    from audit.services import record_event
    from leads.services import ingest_lead
    from leads.workflows.runner import run_pass

    now = timezone.now()
    # Mid-morning three days ago: the events of that day never straddle midnight.
    earlier = (now - timedelta(days=3)).replace(hour=10, minute=0, second=0, microsecond=0)
    source = pipeline["source"]
    workflow = pipeline["workflow"]
    ann = ingest_lead(
        source=source,
        payload={
            "email": "ann@acme.example",
            "full_name": "Ann Acme",
            "title": "CTO",
            "country": "DE",
        },
        at=earlier,
    ).lead
    bob = ingest_lead(
        source=source,
        payload={"email": "bob@globex.example", "full_name": "Bob Globex", "country": "US"},
        at=earlier + timedelta(minutes=5),
    ).lead
    run_pass(workflow=workflow, poll=False)
    try:
        raise ConnectionError("CRM timed out after 30 s")
    except ConnectionError as exc:
        error = record_event(
            event_type="error",
            lead=ann,
            workflow=workflow.name,
            details={"step": "crm_sync", "connection": "hubspot"},
            exc=exc,
            timestamp=earlier + timedelta(minutes=30),
        )
    try:
        raise ValueError("mailbox full")
    except ValueError as exc:
        other_error = record_event(
            event_type="error",
            lead=bob,
            workflow=workflow.name,
            exc=exc,
            timestamp=earlier + timedelta(minutes=40),
        )
    cara = ingest_lead(
        source=source,
        payload={"email": "cara@initech.example", "full_name": "Cara Initech", "country": "FR"},
    ).lead
    for lead in (ann, bob, cara):
        lead.refresh_from_db()
    # A page opened before this fixture ran (the login lands on the overview)
    # cached its figures for the minute; the data has changed since.
    cache.clear()
    return {
        "ann": ann,
        "bob": bob,
        "cara": cara,
        "error": error,
        "other_error": other_error,
        "earlier": earlier,
        "now": now,
        **pipeline,
    }
