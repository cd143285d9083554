"""Demo data: a month of leads moving through the pipeline, every step audited.

It goes through the same services as production code (lead_create,
record_event, the seal), so the demo shows the real trail, not fixtures.
"""

import random
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from audit.integrity import seal_all
from audit.services import audit_context, record_event
from leads.models import Lead, LeadSource
from leads.services import lead_create

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"

FIRST = ["Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Ken", "Frances", "Edsger"]
LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Turing", "Liskov", "Thompson", "Allen"]
COMPANIES = ["Initech", "Globex", "Umbrella", "Hooli", "Stark Industries", "Wayne Enterprises"]
SOURCES = ["web_form", "email_inbox", "csv_import"]
WORKFLOWS = ["sales_lead_management", "partner_referrals"]
TEAMS = ["emea", "americas", "apac"]


def ensure_demo_user() -> bool:
    User = get_user_model()
    if User.objects.filter(username=DEMO_USER).exists():
        return False
    User.objects.create_superuser(DEMO_USER, "demo@example.com", DEMO_PASSWORD)
    return True


def _lead_journey(rng: random.Random, n: int, at: datetime) -> None:
    workflow = rng.choice(WORKFLOWS)
    first, last = rng.choice(FIRST), rng.choice(LAST)
    company = rng.choice(COMPANIES)
    domain = company.lower().replace(" ", "") + ".example"
    with transaction.atomic(), audit_context(actor="system"):
        source, _ = LeadSource.objects.get_or_create(
            slug=rng.choice(SOURCES).replace("_", "-"),
            defaults={"name": "Demo", "kind": "web_form"},
        )
        lead = lead_create(
            source=source,
            email=f"{first}.{last}{n}@{domain}".lower(),
            name=f"{first} {last}",
            company=company,
            at=at,
        )
        step = at
        score = rng.randint(5, 95)
        qualified = score >= 50
        step += timedelta(seconds=rng.randint(1, 30))
        record_event(
            event_type="lead_qualified",
            lead=lead,
            workflow=workflow,
            timestamp=step,
            details={"qualified": qualified, "score": score, "reason": f"score {score}"},
        )
        lead.status = Lead.Status.QUALIFIED if qualified else Lead.Status.NURTURE
        lead.save(update_fields=["status"])
        if not qualified:
            return
        team = rng.choice(TEAMS)
        step += timedelta(seconds=rng.randint(1, 10))
        record_event(
            event_type="lead_routed",
            lead=lead,
            workflow=workflow,
            timestamp=step,
            details={"destination": f"team-{team}", "condition": f"territory {team}"},
        )
        step += timedelta(seconds=rng.randint(1, 20))
        if rng.random() < 0.06:
            try:
                raise ConnectionError("HubSpot API timed out after 10s")
            except ConnectionError as exc:
                record_event(
                    event_type="error", exc=exc, lead=lead, workflow=workflow, timestamp=step
                )
            return
        record_event(
            event_type="crm_create",
            lead=lead,
            workflow=workflow,
            timestamp=step,
            details={"crm_record_id": f"hs-{100000 + n}", "crm_type": "hubspot"},
        )
        record_event(
            event_type="email_scheduled",
            lead=lead,
            workflow=workflow,
            timestamp=step,
            details={"recipient": lead.email, "sequence_length": 3},
        )
        for seq in range(1, 4):
            step += timedelta(days=2 * seq, minutes=rng.randint(0, 120))
            if step > timezone.now():
                return
            record_event(
                event_type="email_sent",
                lead=lead,
                workflow=workflow,
                timestamp=step,
                details={"recipient": lead.email, "subject": f"Step {seq}", "sequence_step": seq},
            )
            if rng.random() < 0.15:
                step += timedelta(hours=rng.randint(1, 30))
                if step > timezone.now():
                    return
                record_event(
                    event_type="email_replied", lead=lead, workflow=workflow, timestamp=step
                )
                record_event(
                    event_type="email_cancelled",
                    lead=lead,
                    workflow=workflow,
                    timestamp=step,
                    details={"recipient": lead.email, "reason": "replied"},
                )
                return


def load_demo(*, leads: int = 400, days: int = 30, seed: int = 7) -> int:
    """Create demo leads spread over the last `days`; returns how many were created."""
    rng = random.Random(seed)
    now = timezone.now()
    start = now - timedelta(days=days)
    for day in range(days + 1):
        run_at = start + timedelta(days=day, hours=6)
        if run_at > now:
            break
        for event_type in ("workflow_started", "workflow_stopped"):
            for workflow in WORKFLOWS:
                record_event(
                    event_type=event_type,
                    workflow=workflow,
                    timestamp=run_at
                    if event_type == "workflow_started"
                    else run_at + timedelta(hours=16),
                    details={} if event_type == "workflow_started" else {"reason": "schedule"},
                )
    times = sorted(start + timedelta(seconds=rng.randint(0, days * 86400)) for _ in range(leads))
    for n, at in enumerate(times):
        _lead_journey(rng, n, at)
    seal_all()
    return leads
