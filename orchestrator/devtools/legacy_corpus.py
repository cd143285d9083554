"""Synthetic legacy audit logs: lines as the legacy logger wrote them (no event_id,
errors keeping their type, message and traceback inside details), for the
import benchmark and tests."""

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/opt/legacy/src/automation_orchestrator/crm_connector.py", line 88, in push\n'
    "    response.raise_for_status()\n"
    "requests.exceptions.HTTPError: 429 Client Error: Too Many Requests\n"
)


def legacy_lines(
    count: int,
    *,
    seed: int = 1,
    start: datetime | None = None,
    workflows: list[str] | None = None,
) -> Iterator[str]:
    """`count` JSON Lines, about one in ten an error, in time order."""
    rng = random.Random(seed)
    moment = start or datetime(2025, 1, 1, tzinfo=UTC)
    workflows = workflows or ["sales_lead_management", "partner_leads", "webinar"]
    for n in range(count):
        moment += timedelta(microseconds=rng.randrange(1, 20_000_000))
        lead = f"LEAD-{rng.randrange(1, max(count // 8, 2)):06d}"
        workflow = rng.choice(workflows)
        roll = rng.random()
        if roll < 0.1:
            event_type, details = (
                "error",
                {
                    "error_type": "HTTPError",
                    "error": "429 Client Error: Too Many Requests",
                    "traceback": TRACEBACK,
                    "context": {"step": "crm_create", "attempt": rng.randrange(1, 4)},
                },
            )
        elif roll < 0.35:
            event_type, details = (
                "lead_ingested",
                {
                    "source": rng.choice(["web_form", "email", "csv"]),
                    "fields": ["email", "name", "company"],
                    "email": f"prospect{n}@example.com",
                },
            )
        elif roll < 0.5:
            event_type, details = "lead_qualified", {"qualified": True, "reason": "score >= 50"}
        elif roll < 0.6:
            event_type, details = "lead_routed", {"destination": "team-a", "condition": "region"}
        elif roll < 0.7:
            event_type, details = "crm_create", {"crm_record_id": f"c{n}", "crm_type": "hubspot"}
        elif roll < 0.9:
            event_type, details = (
                "email_sent",
                {
                    "recipient": f"prospect{n}@example.com",
                    "subject": "Following up",
                    "sequence_step": rng.randrange(1, 4),
                },
            )
        else:
            event_type, details = (
                "email_scheduled",
                {
                    "recipient": f"prospect{n}@example.com",
                    "sequence_length": 3,
                },
            )
        line = {
            "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "event_type": event_type,
            "actor": "system",
            "lead_id": lead,
            "workflow": workflow,
            "details": details,
        }
        yield json.dumps(line) + "\n"
