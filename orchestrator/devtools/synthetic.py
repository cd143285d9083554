"""The synthetic data of the audit benchmark: pipeline events and the leads they name.

Lead i is LEAD-<i:06d>, with a name and an email derived from i, so the
events (orchestrator/devtools/bench.py) and the lead rows the view phase fills
(orchestrator/devtools/bench_views.py) agree without storing anything.

Nothing here touches the database or needs Django set up: the spawned writer
processes (orchestrator/devtools/bench_writer.py) import it before django.setup().
"""

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from audit.types import ERROR

SPAN = timedelta(days=90)

# name, share of leads, lead source, CRM
Workflow = tuple[str, int, str, str]
WORKFLOWS: tuple[Workflow, ...] = (
    ("bench-inbound-web", 45, "web_form", "hubspot"),
    ("bench-webinar-followup", 25, "webinar", "hubspot"),
    ("bench-partner-referrals", 20, "partner_api", "salesforce"),
    ("bench-enterprise-outbound", 10, "csv_import", "salesforce"),
)
_WF_WEIGHTS = [w[1] for w in WORKFLOWS]
FIRST = ("ana", "ben", "chloe", "dev", "emma", "farid", "grace", "hugo", "ines", "jonas")
LAST = ("silva", "novak", "okafor", "schmidt", "tanaka", "garcia", "nguyen", "haddad", "rossi")
DOMAINS = ("acme.io", "globex.com", "initech.net", "umbrella.co", "hooli.com", "stark.dev")
REGIONS = ("emea", "na", "apac", "latam")
SUBJECTS = (
    "Welcome aboard",
    "Quick question about your pipeline",
    "How teams like yours cut onboarding time",
    "Following up",
    "A case study you might like",
    "Should I close your file?",
)
SDRS = ("user:sdr.maria", "user:sdr.tom", "user:sdr.aiko")

# Shares of event types among single writes: the steady-state mix of the journeys below.
WRITE_MIX: dict[str, float] = {
    "lead_ingested": 10,
    "lead_qualified": 10,
    "lead_routed": 10,
    "crm_create": 7,
    "crm_update": 9,
    "email_scheduled": 10,
    "email_sent": 30,
    "email_cancelled": 1,
    ERROR: 0.5,
    "workflow_started": 0.05,
    "workflow_stopped": 0.05,
}

# (error_type, message, traceback): what the pipeline's real failures look like.
ERRORS: dict[str, tuple[str, str, str]] = {
    "email": (
        "SMTPServerDisconnected",
        "Connection unexpectedly closed",
        """Traceback (most recent call last):
  File "/srv/orchestrator/leads/email/sending.py", line 88, in send_step
    connection.send_messages([message])
  File "/srv/venv/site-packages/django/core/mail/backends/smtp.py", line 137, in send_messages
    sent = self._send(message)
  File "/usr/lib/python3.12/smtplib.py", line 887, in sendmail
    (code, resp) = self.mail(from_addr, esmtp_opts)
  File "/usr/lib/python3.12/smtplib.py", line 405, in getreply
    raise SMTPServerDisconnected("Connection unexpectedly closed")
smtplib.SMTPServerDisconnected: Connection unexpectedly closed
""",
    ),
    "crm": (
        "TransportError",
        "CRM API timed out after 10.0 s (will retry)",
        """Traceback (most recent call last):
  File "/srv/venv/site-packages/requests/adapters.py", line 713, in send
    raise ReadTimeout(e, request=request)
requests.exceptions.ReadTimeout: HTTPSConnectionPool(host='crm.example', port=443): Read timed out.

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/srv/orchestrator/leads/crm/base.py", line 61, in create_record
    response = self.session.post(url, json=payload, timeout=self.timeout)
  File "/srv/orchestrator/leads/crm/base.py", line 74, in _raise_for
    raise TransportError(message, permanent=False) from exc
leads.crm.base.TransportError: CRM API timed out after 10.0 s (will retry)
""",
    ),
    "ingest": (
        "KeyError",
        "'email'",
        """Traceback (most recent call last):
  File "/srv/orchestrator/leads/services.py", line 42, in lead_ingest
    email = normalize_email(payload["email"])
KeyError: 'email'
""",
    ),
}


def _hex(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def lead_id_for(lead_no: int) -> str:
    return f"LEAD-{lead_no:06d}"


def email_for(lead_no: int) -> str:
    first = FIRST[lead_no % len(FIRST)]
    last = LAST[(lead_no // len(FIRST)) % len(LAST)]
    return f"{first}.{last}{lead_no}@{DOMAINS[(lead_no // 7) % len(DOMAINS)]}"


def name_for(lead_no: int) -> str:
    first = FIRST[lead_no % len(FIRST)]
    last = LAST[(lead_no // len(FIRST)) % len(LAST)]
    return f"{first.title()} {last.title()}"


def _crm_id(lead_no: int, crm: str) -> str:
    return f"{'00Q' if crm == 'salesforce' else 'hs-'}{lead_no:012d}"


def _event(
    event_type: str,
    *,
    rng: random.Random,
    lead_no: int | None,
    workflow: Workflow,
    timestamp: datetime | None,
    correlation_id: str,
    actor: str = "system",
    step: int = 1,
    steps: int = 3,
    qualified: bool = True,
) -> dict[str, Any]:
    """build_event/record_event keyword arguments, with the legacy details of each type."""
    wf_name, _share, source, crm = workflow
    details: dict[str, Any]
    n = lead_no or 0
    if event_type == "lead_ingested":
        details = {
            "source": source,
            "fields": ["email", "name", "company", "phone", "country"][: 3 + n % 3],
            "email": email_for(n),
        }
    elif event_type == "lead_qualified":
        score = rng.randint(60, 98) if qualified else rng.randint(5, 59)
        reason = f"score {score} >= 60" if qualified else f"score {score} < 60"
        details = {"qualified": qualified, "reason": reason}
    elif event_type == "lead_routed":
        region = REGIONS[n % len(REGIONS)]
        details = (
            {"destination": f"sales:{region}", "condition": f"qualified and region == {region}"}
            if qualified
            else {"destination": "nurture", "condition": "not qualified"}
        )
    elif event_type == "crm_create":
        details = {"crm_record_id": _crm_id(n, crm), "crm_type": crm}
    elif event_type == "crm_update":
        fields = rng.sample(["status", "last_contacted", "owner", "score", "stage"], 2)
        details = {"crm_record_id": _crm_id(n, crm), "fields_updated": fields}
    elif event_type == "email_scheduled":
        details = {"recipient": email_for(n), "sequence_length": steps}
    elif event_type == "email_sent":
        subject = SUBJECTS[min(step, len(SUBJECTS)) - 1]
        details = {"recipient": email_for(n), "subject": subject, "sequence_step": step}
    elif event_type == "email_cancelled":
        details = {"recipient": email_for(n), "reason": rng.choice(["replied", "unsubscribed"])}
    elif event_type == "workflow_stopped":
        details = {"reason": "deploy"}
    else:
        details = {}
    return {
        "event_type": event_type,
        "actor": actor,
        "lead_id": lead_id_for(lead_no) if lead_no else None,
        "workflow": wf_name,
        "correlation_id": correlation_id,
        "details": details,
        "timestamp": timestamp,
    }


def _error(
    kind: str,
    *,
    lead_no: int,
    workflow: Workflow,
    timestamp: datetime | None,
    correlation_id: str,
) -> dict[str, Any]:
    error_type, message, trace = ERRORS[kind]
    return {
        "event_type": ERROR,
        "lead_id": lead_id_for(lead_no),
        "workflow": workflow[0],
        "correlation_id": correlation_id,
        # The legacy log_error put type and message into details too.
        "details": {"error_type": error_type, "error_message": message, "step": kind},
        "error_type": error_type,
        "error_message": message,
        "traceback": trace,
        "timestamp": timestamp,
    }


def _journey(rng: random.Random, lead_no: int, start: datetime) -> Iterator[dict[str, Any]]:
    """One lead through the pipeline: ingest, qualify, route, CRM, an email sequence.

    Timestamps increase; the sequence spreads over days, so leads overlap in time.
    """
    wf = rng.choices(WORKFLOWS, weights=_WF_WEIGHTS)[0]
    event = partial(_event, rng=rng, lead_no=lead_no, workflow=wf)
    error = partial(_error, lead_no=lead_no, workflow=wf)
    t = start

    def at(delta_seconds: float) -> datetime:
        nonlocal t
        t += timedelta(seconds=delta_seconds)
        return t

    if rng.random() < 0.002:  # a deploy restarts the workflow now and then
        restart = partial(_event, rng=rng, lead_no=None, workflow=wf, correlation_id=_hex(rng))
        yield restart("workflow_stopped", timestamp=at(1))
        yield restart("workflow_started", timestamp=at(12))
    run = _hex(rng)
    if rng.random() < 0.003:
        yield error("ingest", timestamp=at(0.1), correlation_id=run)
        return
    yield event("lead_ingested", timestamp=at(0.1), correlation_id=run)
    qualified = rng.random() < 0.7
    actor = rng.choice(SDRS) if rng.random() < 0.1 else "system"
    yield event(
        "lead_qualified",
        timestamp=at(rng.uniform(0.2, 20)),
        correlation_id=run,
        qualified=qualified,
        actor=actor,
    )
    yield event(
        "lead_routed", timestamp=at(rng.uniform(0.05, 2)), correlation_id=run, qualified=qualified
    )
    if qualified:
        if rng.random() < 0.015:
            yield error("crm", timestamp=at(rng.uniform(10, 11)), correlation_id=run)
        yield event("crm_create", timestamp=at(rng.uniform(0.2, 5)), correlation_id=run)
    steps = rng.randint(2, 6) if qualified else rng.randint(1, 4)
    yield event(
        "email_scheduled", timestamp=at(rng.uniform(0.05, 1)), correlation_id=run, steps=steps
    )
    for step in range(1, steps + 1):
        # Each send is its own scheduled task run, with its own correlation id.
        send = _hex(rng)
        wait = rng.uniform(300, 3600) if step == 1 else rng.uniform(86_400, 3 * 86_400)
        if rng.random() < 0.01:
            yield error("email", timestamp=at(wait), correlation_id=send)
            wait = 900  # the retry
        yield event("email_sent", timestamp=at(wait), correlation_id=send, step=step, steps=steps)
        if qualified and rng.random() < 0.4:
            yield event(
                "crm_update",
                timestamp=at(rng.uniform(60, 6 * 3600)),
                correlation_id=send,
                actor="api:crm-sync",
            )
        if rng.random() < 0.06:
            yield event(
                "email_cancelled",
                timestamp=at(rng.uniform(3600, 48 * 3600)),
                correlation_id=_hex(rng),
            )
            return


def _mean_journey_length(seed: int, now: datetime) -> float:
    # Measured rather than derived, so changing the journey keeps ~N/10 leads
    # spread over the whole span; journeys cut off at `now` count as cut.
    rng = random.Random(seed ^ 0x5EED)
    total = 0
    samples = 2000
    for i in range(samples):
        start = now - SPAN * rng.random()
        total += sum(1 for e in _journey(rng, i + 1, start) if e["timestamp"] <= now)
    return total / samples


def synthetic_events(
    count: int, *, seed: int, now: datetime, first_lead: int = 1
) -> Iterator[dict[str, Any]]:
    """Exactly `count` events of whole journeys, ids roughly in time order, none after `now`.

    Lead i starts at the i-th slot of the 90 days, so events arrive in lead
    order, as a pipeline writes them; a journey still running at `now` is cut.
    """
    rng = random.Random(seed)
    leads = max(1, round(count / _mean_journey_length(seed, now)))
    origin = now - SPAN
    emitted = 0
    i = 0
    while True:
        u = rng.random()
        # Past the planned leads (the sample mean was a little high), start anywhere.
        start = origin + SPAN * ((i + u) / leads if i < leads else u)
        for kwargs in _journey(rng, first_lead + i, start):
            if kwargs["timestamp"] > now:
                break
            yield kwargs
            emitted += 1
            if emitted == count:
                return
        i += 1


def random_write(rng: random.Random, *, lead_id: str, correlation_id: str) -> dict[str, Any]:
    """One record_event call of the steady-state mix, timestamped by record_event itself."""
    event_type = rng.choices(list(WRITE_MIX), weights=list(WRITE_MIX.values()))[0]
    lead_no = int(lead_id.rsplit("-", 1)[-1])
    wf = rng.choices(WORKFLOWS, weights=_WF_WEIGHTS)[0]
    if event_type == ERROR:
        kwargs = _error(
            rng.choice(list(ERRORS)),
            lead_no=lead_no,
            workflow=wf,
            timestamp=None,
            correlation_id=correlation_id,
        )
    else:
        no_lead = event_type.startswith("workflow_")
        kwargs = _event(
            event_type,
            rng=rng,
            lead_no=None if no_lead else lead_no,
            workflow=wf,
            timestamp=None,
            correlation_id=correlation_id,
            step=rng.randint(1, 4),
            qualified=rng.random() < 0.7,
        )
    return kwargs
