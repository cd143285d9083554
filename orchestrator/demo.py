"""Demo data: three weeks of leads through the real pipeline.

Leads arrive through the same services production uses (web form
ingestion, CSV import), the workflow runner qualifies and routes them four
times a day, and the sales inbox is "down" on two days so the poll fails for
real. The clock is moved with time_machine so the history spreads over the
weeks; nothing writes audit events directly.
"""

import contextlib
import csv
import json
import os
import random
import tempfile
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from audit.integrity import seal_all
from leads.models import Lead, LeadSource
from leads.services import LeadValidationError, ingest_lead
from orchestrator.models import Workflow
from orchestrator.runner import run_pass
from orchestrator.workflows import apply_config

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"  # printed by `make demo`; load_demo runs with DEBUG only
EXAMPLE_CONFIG = Path(settings.BASE_DIR) / "config" / "workflows.example.json"

FIRST = [
    "Ada",
    "Grace",
    "Linus",
    "Margaret",
    "Alan",
    "Barbara",
    "Ken",
    "Frances",
    "Edsger",
    "Radia",
]
LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Turing", "Liskov", "Thompson", "Allen"]
COMPANIES = ["Initech", "Globex", "Umbrella", "Hooli", "Stark Industries", "Wayne Enterprises"]
TITLES = ["CTO", "VP Engineering", "Head of Sales", "Developer", "Student", "Founder", "Analyst"]
COUNTRIES = ["DE", "FR", "GB", "US", "CA", "BR", "IN", "JP", "NL", "ES"]
FREE_MAIL = ["gmail.com", "yahoo.com", "outlook.com"]
PASSES = (8, 12, 16, 20)  # the runner's schedule, hours UTC
INBOX_DOWN_DAYS = {5, 12}


def ensure_demo_user() -> bool:
    User = get_user_model()
    if User.objects.filter(username=DEMO_USER).exists():
        return False
    User.objects.create_superuser(DEMO_USER, "demo@example.com", DEMO_PASSWORD)
    return True


def demo_config() -> dict:
    """The example config, with the inbox pointed at a port where nothing listens."""
    config = json.loads(EXAMPLE_CONFIG.read_text())
    for workflow in config["workflows"]:
        # A fresh machine has no CRM or mail server to talk to: the demo stops
        # at routing rather than filling the task queue with calls that fail.
        workflow.pop("steps", None)
        for source in workflow.get("sources", []):
            if source["kind"] == "email_inbox":
                source["inbox"].update(host="127.0.0.1", port=1, security="plain")
                source["inbox"].update(
                    username_env="DEMO_INBOX_USER", password_env="DEMO_INBOX_PASSWORD"
                )
    return config


def _person(rng: random.Random, n: int) -> dict[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    company = rng.choice(COMPANIES)
    domain = (
        rng.choice(FREE_MAIL)
        if rng.random() < 0.12
        else company.lower().replace(" ", "") + ".example"
    )
    return {
        "email": f"{first}.{last}.{n}@{domain}".lower(),
        "full_name": f"{first} {last}",
        "organisation": company,
        "title": rng.choice(TITLES),
        "country": rng.choice(COUNTRIES),
    }


def _csv_batch(rng: random.Random, start: int, rows: int) -> Path:
    with tempfile.NamedTemporaryFile(
        "w", suffix=".csv", delete=False, newline="", encoding="utf-8"
    ) as handle:
        writer = csv.writer(handle)
        writer.writerow(["E-mail", "Name", "Company", "Country", "Title"])
        for i in range(rows):
            p = _person(rng, start + i)
            email = "not-an-email" if rng.random() < 0.07 else p["email"]
            writer.writerow([email, p["full_name"], p["organisation"], p["country"], p["title"]])
    return Path(handle.name)


def load_demo(*, days: int = 21, per_day: int = 24, seed: int = 7) -> int:
    """Run `days` of simulated traffic through the pipeline; returns the number of leads."""
    import time_machine  # a dev dependency: the demo is for developer machines

    from leads.csv_import import import_csv

    rng = random.Random(seed)
    User = get_user_model()
    config = demo_config()
    for team in config["teams"]:
        for member in team["members"]:
            User.objects.get_or_create(username=member["username"])
    apply_config(config)
    os.environ.setdefault("DEMO_INBOX_USER", "sales@example.com")
    os.environ.setdefault("DEMO_INBOX_PASSWORD", "not-a-real-password")
    workflow = Workflow.objects.get(name="sales_lead_management")
    website = LeadSource.objects.get(slug="website")
    trade_shows = LeadSource.objects.get(slug="trade-shows")
    inbox = LeadSource.objects.get(slug="sales-inbox")

    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    n = 0
    for day in range(days, -1, -1):
        midnight = today - timedelta(days=day)
        inbox.active = (days - day) in INBOX_DOWN_DAYS
        inbox.save(update_fields=["active"])
        arrivals = sorted(
            midnight + timedelta(minutes=rng.randint(7 * 60, 21 * 60))
            for _ in range(rng.randint(per_day // 2, per_day))
        )
        for hour in PASSES:
            run_at = midnight + timedelta(hours=hour, minutes=rng.randint(0, 5))
            if run_at > timezone.now():
                break
            while arrivals and arrivals[0] < run_at:
                with time_machine.travel(arrivals.pop(0), tick=False):
                    with contextlib.suppress(LeadValidationError):
                        ingest_lead(source=website, payload=_person(rng, n))
                    n += 1
            if hour == 12 and day % 3 == 0:
                path = _csv_batch(rng, n, rng.randint(8, 15))
                with time_machine.travel(run_at - timedelta(minutes=20), tick=False):
                    report = import_csv(path=path, source=trade_shows, mapping=None)
                path.unlink()
                n += report.rows
            with time_machine.travel(run_at, tick=False):
                run_pass(workflow=workflow)
    inbox.active = False
    inbox.save(update_fields=["active"])
    seal_all()
    return Lead.objects.count()
