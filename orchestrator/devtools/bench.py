"""The audit store benchmark behind `manage.py audit_bench`.

It fills the configured database with N synthetic pipeline events, then
measures what the design promises: durable single-writer latency, throughput
of several writer processes, the dashboard reads (lead history, a filtered
page and its keyset successor, 30-day statistics), and the same reads done the
legacy way, by scanning a JSON Lines file.

Benchmark events are the ones whose workflow starts with "bench-" (and those
the dashboard views write for the bench's own user); the benchmark refuses a
database holding anything else unless forced. The dashboard view timings live
in orchestrator/devtools/bench_views.py.

Models, services and selectors are imported inside the functions that use
them: spawned writer processes import this module to find their entry point
before they have run django.setup().
"""

import heapq
import json
import math
import multiprocessing
import os
import queue
import random
import sqlite3
import tempfile
import threading
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import Any, TextIO

from django.conf import settings
from django.db import connection, connections
from django.utils import timezone
from tqdm import tqdm

from audit.jsonl import event_to_legacy
from audit.signing import format_timestamp
from audit.types import ERROR, LEGACY_EVENT_TYPES

BENCH_PREFIX = "bench-"
SPAN = timedelta(days=90)
STATS_WINDOW = timedelta(days=30)
PAGE_SIZE = 50
WRITE_LEADS = 1000
# Rows per committed batch during the fill: few enough fsyncs that the fill
# measures building and inserting rows, not the disk.
FILL_BATCH = 10_000
EXPORT_CHUNK = 5000
WARMUP = 3
# Spawned writers import Django first; on a loaded 2-core machine that takes a
# while, so the start barrier waits minutes rather than failing spuriously.
BARRIER_TIMEOUT = 300.0

# Target name -> (percentile judged, limit in seconds).
TARGETS: dict[str, tuple[str, float]] = {
    "write_latency": ("p50", 0.001),
    "lead_history": ("p95", 0.010),
    "page": ("p95", 0.030),
    "page_next": ("p95", 0.030),
    "statistics": ("p95", 0.100),
}


class BenchError(Exception):
    """The benchmark cannot run, or a phase produced wrong results."""


@dataclass(frozen=True)
class BenchConfig:
    events: int = 100_000
    reuse: bool = False
    force: bool = False
    writes: int = 2000
    writers: int = 8
    per_writer: int = 500
    reads: int = 200
    legacy_runs: int = 3
    seed: int = 1
    # The dashboard: leads to fill, and repetitions of each page and fragment.
    views: bool = True
    leads: int = 100_000
    view_reps: int = 30
    view_profile: bool = False


@dataclass
class Timing:
    """Latency samples of one operation, in seconds."""

    samples: list[float]

    def pct(self, p: float) -> float:
        # Nearest rank: p99 of 2000 samples is the 1980th, an observed value.
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    def summary(self) -> dict[str, float | int]:
        return {
            "n": len(self.samples),
            "p50_ms": round(self.pct(50) * 1000, 4),
            "p95_ms": round(self.pct(95) * 1000, 4),
            "p99_ms": round(self.pct(99) * 1000, 4),
            "max_ms": round(max(self.samples) * 1000, 4),
        }


@dataclass
class BenchResult:
    database: str
    events_requested: int
    config: dict[str, Any] = field(default_factory=dict)
    events_in_database: int = 0
    mirror: str | None = None
    fill: dict[str, Any] = field(default_factory=dict)
    write_latency: dict[str, Any] = field(default_factory=dict)
    concurrent: dict[str, Any] = field(default_factory=dict)
    reads: dict[str, dict[str, Any]] = field(default_factory=dict)
    legacy: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    lead_fill: dict[str, Any] = field(default_factory=dict)
    views: list[dict[str, Any]] = field(default_factory=list)

    def target_status(self) -> dict[str, bool]:
        """PASS (True) or FAIL per target that was measured."""
        status = {}
        measured = {"write_latency": self.write_latency, **self.reads}
        for name, (pct, limit) in TARGETS.items():
            summary = measured.get(name) or {}
            if f"{pct}_ms" in summary:
                status[name] = summary[f"{pct}_ms"] <= limit * 1000
        return status

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = {
            name: {"judged": pct, "limit_ms": limit * 1000}
            for name, (pct, limit) in TARGETS.items()
        }
        data["passed"] = self.target_status()
        if self.views:
            data["views_passed"] = all(v["passed"] for v in self.views if "passed" in v)
        return data


Log = Callable[[str], None]


def run(config: BenchConfig, *, stream: TextIO) -> BenchResult:
    """Run every phase in order and return the measurements."""
    from audit.models import AuditEvent

    def log(message: str) -> None:
        tqdm.write(message, file=stream)

    result = BenchResult(
        database=describe_database(), events_requested=config.events, config=asdict(config)
    )
    if not config.force and foreign_events_exist():
        raise BenchError(
            "the database holds audit events that are not benchmark events (workflow not "
            f"starting with {BENCH_PREFIX!r}); point DATABASE_URL at a scratch database, "
            "or pass --force to add benchmark events beside them"
        )
    result.mirror = settings.AUDIT_JSONL_PATH or None
    rng = random.Random(config.seed)
    run_id = uuid.uuid4().hex[:12]

    result.fill = fill(config, stream=stream, log=log)
    leads = sample_lead_ids(max(config.reads, 1), rng=rng)
    if not leads:
        raise BenchError("no events with a lead id in the database; nothing to read")
    # The writes go to other, many more leads: thousands of writes piled onto
    # the leads the reads time would give them several times the usual history.
    timed = set(leads)
    write_leads = [lead for lead in sample_lead_ids(WRITE_LEADS, rng=rng) if lead not in timed]
    write_leads = write_leads or leads
    if config.writes:
        log(f"write latency: {config.writes} durable single-event commits")
        result.write_latency = measure_write_latency(
            config.writes, leads=write_leads, rng=rng, correlation_id=f"bench-{run_id}-latency"
        )
    if config.writers and config.per_writer:
        log(f"throughput: {config.writers} writer processes x {config.per_writer} events")
        result.concurrent = measure_concurrent_writes(
            writers=config.writers,
            per_writer=config.per_writer,
            leads=write_leads,
            seed=config.seed,
            run_id=run_id,
        )
    # The sealer runs every minute in production, so by the time anyone reads,
    # the events just written are in the rollups; reading now without sealing
    # would time the unsealed-tail path instead of the normal one.
    seal_everything(stream=stream)

    log(f"reads: {config.reads} repetitions each")
    types = [rng.choice(sorted(LEGACY_EVENT_TYPES)) for _ in range(config.reads)]
    result.reads = measure_reads(leads=leads, types=types, repetitions=config.reads)
    result.events_in_database = AuditEvent.objects.count()

    if config.legacy_runs:
        with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
            export_path = Path(tmp) / "audit.log"
            log(f"legacy: exporting {result.events_in_database} events to {export_path}")
            result.legacy = export_jsonl(export_path, stream=stream)
            log(f"legacy: {config.legacy_runs} scans of each read")
            legacy, checks = measure_legacy(
                export_path, leads=leads, types=types, runs=config.legacy_runs
            )
        result.legacy.update(legacy)
        result.checks.update(checks)
        for name in ("lead_history", "page", "statistics"):
            ours = result.reads[name]["p50_ms"] / 1000
            result.legacy[f"speedup_{name}"] = round(legacy[f"{name}_p50_s"] / ours, 1)

    if config.views:
        # Last, so the view phase never changes what the phases above measured.
        from orchestrator.devtools import bench_views

        if config.leads:
            result.lead_fill = bench_views.fill_leads(
                config.leads, seed=config.seed, stream=stream, log=log
            )
        log(f"views: every dashboard page and fragment, {config.view_reps} repetitions each")
        result.views = bench_views.measure_views(
            repetitions=config.view_reps,
            seed=config.seed,
            stream=stream,
            log=log,
            profile=config.view_profile,
        )
    return result


# --- setup ------------------------------------------------------------------------------


def describe_database() -> str:
    name = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode")
            mode = cursor.fetchone()[0]
            cursor.execute("PRAGMA synchronous")
            sync = cursor.fetchone()[0]
        level = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(sync, str(sync))
        return f"SQLite {sqlite3.sqlite_version} ({mode}, synchronous={level}) {name}"
    if connection.vendor == "postgresql":
        connection.ensure_connection()
        major, minor = divmod(connection.pg_version, 10000)
        return f"PostgreSQL {major}.{minor} {name}"
    return f"{connection.display_name} {name}"


def foreign_events_exist() -> bool:
    from audit.models import AuditEvent
    from orchestrator.devtools.bench_views import BENCH_USER

    # The view phase's own events (an export audits itself) are not foreign.
    return (
        AuditEvent.objects.exclude(workflow__startswith=BENCH_PREFIX)
        .exclude(actor=f"user:{BENCH_USER}")
        .exists()
    )


# --- synthetic events -------------------------------------------------------------------

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


def _lead_id(lead_no: int) -> str:
    return f"LEAD-{lead_no:06d}"


def _email(lead_no: int) -> str:
    first = FIRST[lead_no % len(FIRST)]
    last = LAST[(lead_no // len(FIRST)) % len(LAST)]
    return f"{first}.{last}{lead_no}@{DOMAINS[(lead_no // 7) % len(DOMAINS)]}"


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
            "email": _email(n),
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
        details = {"recipient": _email(n), "sequence_length": steps}
    elif event_type == "email_sent":
        subject = SUBJECTS[min(step, len(SUBJECTS)) - 1]
        details = {"recipient": _email(n), "subject": subject, "sequence_step": step}
    elif event_type == "email_cancelled":
        details = {"recipient": _email(n), "reason": rng.choice(["replied", "unsubscribed"])}
    elif event_type == "workflow_stopped":
        details = {"reason": "deploy"}
    else:
        details = {}
    return {
        "event_type": event_type,
        "actor": actor,
        "lead_id": _lead_id(lead_no) if lead_no else None,
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
        "lead_id": _lead_id(lead_no),
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


# --- 1. fill ----------------------------------------------------------------------------


def fill(config: BenchConfig, *, stream: TextIO, log: Log) -> dict[str, Any]:
    from audit.models import AuditEvent
    from audit.services import build_event, insert_events

    existing = AuditEvent.objects.count()
    todo = max(0, config.events - existing) if config.reuse else config.events
    info: dict[str, Any] = {"existing": existing, "inserted": todo}
    if todo:
        log(f"fill: {todo} events in batches of {FILL_BATCH} ({existing} already there)")
        now = timezone.now()
        # A top-up (--reuse) numbers its leads past any lead already there:
        # there are fewer leads than events, so existing + 1 is always free.
        first_lead = existing + 1
        kwargs = synthetic_events(todo, seed=config.seed + existing, now=now, first_lead=first_lead)
        events = (build_event(**kw) for kw in kwargs)
        bar = tqdm(events, total=todo, unit="event", desc="fill", file=stream, disable=None)
        started = perf_counter()
        inserted = insert_events(bar, batch_size=FILL_BATCH, mirror=False)
        elapsed = perf_counter() - started
        bar.close()
        if inserted != todo:
            raise BenchError(f"fill inserted {inserted} events, expected {todo}")
        info.update(seconds=round(elapsed, 2), events_per_s=round(todo / elapsed))
    else:
        log(f"fill: skipped, the database already holds {existing} events (--reuse)")
    started = perf_counter()
    sealed = seal_everything(stream=stream)
    elapsed = perf_counter() - started
    info.update(sealed=sealed, seal_seconds=round(elapsed, 2))
    if sealed:
        info["seal_events_per_s"] = round(sealed / elapsed)
    return info


def seal_everything(*, stream: TextIO) -> int:
    """seal_all(), with a progress bar: seal blocks and fill the hourly rollups."""
    from audit.integrity import seal_pending
    from audit.models import AuditEvent, AuditSeal

    last = AuditSeal.objects.order_by("-number").values_list("high_water", flat=True).first()
    pending = AuditEvent.objects.filter(id__gt=last or 0).count()
    sealed = 0
    with tqdm(total=pending, unit="event", desc="seal", file=stream, disable=None) as bar:
        while (seal := seal_pending()) is not None:
            sealed += seal.event_count
            bar.update(seal.event_count)
    return sealed


def sample_lead_ids(k: int, *, rng: random.Random) -> list[str]:
    """k lead ids (distinct while the database has enough), found through random event ids."""
    from audit.models import AuditEvent

    bounds = AuditEvent.objects.order_by("id").values_list("id", flat=True)
    low, high = bounds.first(), bounds.last()
    if low is None or high is None:
        return []
    found: dict[str, None] = {}
    for _attempt in range(20):
        ids = [rng.randint(low, high) for _ in range(2 * k)]
        for lead in (
            AuditEvent.objects.filter(id__in=ids)
            .exclude(lead_public_id="")
            .values_list("lead_public_id", flat=True)
        ):
            found.setdefault(lead)
        if len(found) >= k:
            break
    leads = list(found)[:k]
    return [leads[i % len(leads)] for i in range(k)] if leads else []


# --- 2. durable write latency -------------------------------------------------------------


def measure_write_latency(
    count: int, *, leads: list[str], rng: random.Random, correlation_id: str
) -> dict[str, Any]:
    from audit.mirror import mirror
    from audit.models import AuditEvent
    from audit.services import record_event

    calls = [
        random_write(rng, lead_id=rng.choice(leads), correlation_id=correlation_id)
        for _ in range(count)
    ]
    samples = []
    # No transaction.atomic(): in autocommit each INSERT is its own transaction,
    # so each call pays one commit (an fsync of the WAL with synchronous=FULL)
    # and, with the mirror on, the hand-off of its line to the mirror's writer.
    for kwargs in calls:
        started = perf_counter()
        record_event(**kwargs)
        samples.append(perf_counter() - started)
    mirror.flush()
    landed = AuditEvent.objects.filter(correlation_id=correlation_id).count()
    if landed != count:
        raise BenchError(f"write latency: {landed} of {count} events landed")
    return {
        **Timing(samples).summary(),
        "landed": landed,
        "mirror": bool(settings.AUDIT_JSONL_PATH),
    }


# --- 3. concurrent writers ----------------------------------------------------------------


@dataclass(frozen=True)
class WriterSpec:
    index: int
    count: int
    leads: list[str]
    seed: int
    correlation_id: str
    settings_module: str
    # The parent's effective database and mirror: under tests (or any override)
    # they differ from what the environment would give a fresh process.
    db_name: str
    jsonl_path: str


def _writer_process(spec: WriterSpec, barrier: Any, results: Any) -> None:
    """Entry point of a spawned writer: set Django up, wait for the start, write."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", spec.settings_module)
    try:
        import django

        django.setup()
        from audit.mirror import mirror
        from audit.services import record_event

        # Nothing is inherited under spawn, but close anyway before switching
        # the database name: a connection opened by setup would keep the old one.
        connections.close_all()
        settings.DATABASES["default"]["NAME"] = spec.db_name
        connection.settings_dict["NAME"] = spec.db_name
        settings.AUDIT_JSONL_PATH = spec.jsonl_path
        rng = random.Random(spec.seed)
        calls = [
            random_write(rng, lead_id=rng.choice(spec.leads), correlation_id=spec.correlation_id)
            for _ in range(spec.count)
        ]
        connection.ensure_connection()
        barrier.wait(BARRIER_TIMEOUT)
        started = perf_counter()
        for kwargs in calls:
            record_event(**kwargs)
        mirror.flush()  # the mirror's lines count toward the throughput
        results.put((spec.index, "ok", perf_counter() - started))
    except BaseException:
        barrier.abort()
        results.put((spec.index, "error", traceback.format_exc()))
        raise
    finally:
        connections.close_all()


def measure_concurrent_writes(
    *, writers: int, per_writer: int, leads: list[str], seed: int, run_id: str
) -> dict[str, Any]:
    from audit.models import AuditEvent

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(writers + 1)
    results = ctx.Queue()
    specs = [
        WriterSpec(
            index=i,
            count=per_writer,
            leads=leads,
            seed=seed * 1000 + i,
            correlation_id=f"bench-{run_id}-w{i}",
            settings_module=settings.SETTINGS_MODULE,
            db_name=str(connection.settings_dict["NAME"]),
            jsonl_path=settings.AUDIT_JSONL_PATH,
        )
        for i in range(writers)
    ]
    # A connection must not cross into a child process; spawn does not copy it,
    # but the children's writes must also not queue behind a transaction of ours.
    connections.close_all()
    procs = [ctx.Process(target=_writer_process, args=(s, barrier, results)) for s in specs]
    for proc in procs:
        proc.start()
    per_process: dict[int, float] = {}
    errors: list[str] = []
    try:
        try:
            barrier.wait(BARRIER_TIMEOUT)
        except threading.BrokenBarrierError:
            errors.append("a writer failed before the start")
        started = finished = perf_counter()
        while not errors and len(per_process) < writers:
            try:
                index, status, payload = results.get(timeout=1)
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs):
                    errors.append("a writer process died")
                continue
            finished = perf_counter()
            if status == "ok":
                per_process[index] = payload
            else:
                errors.append(f"writer {index} failed:\n{payload}")
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.terminate()
                proc.join()
    if errors:
        # The failed writers' tracebacks say more than "died".
        while True:
            try:
                index, status, payload = results.get(timeout=0.5)
            except queue.Empty:
                break
            if status == "error":
                errors.append(f"writer {index} failed:\n{payload}")
    if errors:
        raise BenchError("concurrent writers: " + "\n".join(errors))
    wall = finished - started
    expected = writers * per_writer
    landed = AuditEvent.objects.filter(correlation_id__in=[s.correlation_id for s in specs]).count()
    if landed != expected:
        raise BenchError(f"concurrent writers: {landed} of {expected} events landed")
    return {
        "writers": writers,
        "per_writer": per_writer,
        "wall_seconds": round(wall, 3),
        "events_per_s": round(expected / wall),
        "slowest_writer_seconds": round(max(per_process.values()), 3),
        "landed": landed,
        "expected": expected,
    }


# --- 4. reads ---------------------------------------------------------------------------


def _timed(fn: Callable[[Any], object], args: Iterable[Any]) -> Timing:
    args = list(args)
    for arg in args[:WARMUP]:  # first queries pay for statement preparation and cold pages
        fn(arg)
    samples = []
    for arg in args:
        started = perf_counter()
        fn(arg)
        samples.append(perf_counter() - started)
    return Timing(samples)


def read_lead_history(lead_id: str) -> list[dict[str, Any]]:
    from audit import selectors

    return [event_to_legacy(e) for e in selectors.lead_history(lead_id=lead_id)]


def read_page(
    event_type: str, *, now: datetime, before: tuple[datetime, int] | None = None
) -> list:
    from audit import selectors

    qs = selectors.event_list(event_type=event_type, since=now - STATS_WINDOW, before=before)
    return list(qs[:PAGE_SIZE])


def read_statistics(now: datetime) -> dict[str, Any]:
    from audit import selectors

    return selectors.statistics(since=now - STATS_WINDOW, until=now).as_dict()


def measure_reads(
    *, leads: list[str], types: list[str], repetitions: int
) -> dict[str, dict[str, Any]]:
    now = timezone.now()
    history = _timed(read_lead_history, leads[:repetitions])
    page = _timed(lambda t: read_page(t, now=now), types)
    # Cursors come from real first pages, fetched before timing the second ones.
    cursors = [(t, rows[-1]) for t in types if (rows := read_page(t, now=now))]
    out = {
        "lead_history": history.summary(),
        "page": page.summary(),
        "statistics": _timed(
            lambda _: read_statistics(timezone.now()), range(repetitions)
        ).summary(),
    }
    if cursors:
        page_next = _timed(
            lambda c: read_page(c[0], now=now, before=(c[1].timestamp, c[1].id)), cursors
        )
        out["page_next"] = page_next.summary()
    return out


# --- 5. the legacy way --------------------------------------------------------------------


def export_jsonl(path: Path, *, stream: TextIO) -> dict[str, Any]:
    """Every event as a legacy JSON line, in id order, streamed in chunks."""
    from audit.models import AuditEvent

    total = AuditEvent.objects.count()
    started = perf_counter()
    written = 0
    qs = AuditEvent.objects.order_by("id").defer("mac")
    with (
        path.open("w", encoding="utf-8") as out,
        tqdm(total=total, unit="event", desc="export", file=stream, disable=None) as bar,
    ):
        for event in qs.iterator(chunk_size=EXPORT_CHUNK):
            out.write(json.dumps(event_to_legacy(event), ensure_ascii=False) + "\n")
            written += 1
            if written % EXPORT_CHUNK == 0:
                bar.update(EXPORT_CHUNK)
        bar.update(written % EXPORT_CHUNK)
    elapsed = perf_counter() - started
    return {
        "exported": written,
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "export_seconds": round(elapsed, 2),
    }


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def legacy_lead_history(path: Path, lead_id: str) -> list[dict[str, Any]]:
    return [e for e in _lines(path) if e.get("lead_id") == lead_id]


def legacy_page(path: Path, event_type: str, *, now: datetime) -> list[dict[str, Any]]:
    # Timestamps share one fixed UTC format, so strings compare like times;
    # that spares the legacy scan a datetime parse per line (it is the fast
    # version of the legacy reader). A 50-slot heap keeps memory constant.
    since = format_timestamp(now - STATS_WINDOW)
    newest: list[tuple[str, int, dict[str, Any]]] = []
    for n, e in enumerate(_lines(path)):
        if e["event_type"] == event_type and e["timestamp"] >= since:
            item = (e["timestamp"], n, e)
            if len(newest) < PAGE_SIZE:
                heapq.heappush(newest, item)
            else:
                heapq.heappushpop(newest, item)
    return [e for *_, e in sorted(newest, reverse=True)]


def legacy_statistics(path: Path, *, now: datetime) -> dict[str, Any]:
    since, until = format_timestamp(now - STATS_WINDOW), format_timestamp(now)
    by_type: Counter[str] = Counter()
    by_workflow: Counter[str] = Counter()
    by_day: Counter[str] = Counter()
    leads: set[str] = set()
    for e in _lines(path):
        ts = e["timestamp"]
        if since <= ts < until:
            by_type[e["event_type"]] += 1
            by_workflow[e.get("workflow") or ""] += 1
            by_day[ts[:10]] += 1
            if e.get("lead_id"):
                leads.add(e["lead_id"])
    return {
        "total_events": sum(by_type.values()),
        "event_types": dict(sorted(by_type.items())),
        "by_workflow": dict(sorted(by_workflow.items())),
        "by_day": dict(sorted(by_day.items())),
        "leads_processed": len(leads),
    }


def measure_legacy(
    path: Path, *, leads: list[str], types: list[str], runs: int
) -> tuple[dict[str, Any], dict[str, bool]]:
    """p50 of `runs` full scans per read, and whether the answers match the database's."""
    now = timezone.now()
    timings: dict[str, list[float]] = {"lead_history": [], "page": [], "statistics": []}
    for i in range(runs):
        reads: tuple[tuple[str, Callable[[], object]], ...] = (
            ("lead_history", partial(legacy_lead_history, path, leads[i % len(leads)])),
            ("page", partial(legacy_page, path, types[i % len(types)], now=now)),
            ("statistics", partial(legacy_statistics, path, now=now)),
        )
        for name, fn in reads:
            started = perf_counter()
            fn()
            timings[name].append(perf_counter() - started)
    out: dict[str, Any] = {f"{k}_p50_s": round(Timing(v).pct(50), 3) for k, v in timings.items()}

    # The same questions asked both ways must get the same answers, or the
    # comparison times two different things.
    lead, etype = leads[0], types[0]
    ours_history = [e["event_id"] for e in read_lead_history(lead)]
    ours_page = [str(e.uuid) for e in read_page(etype, now=now)]
    ours_stats = read_statistics(now)
    theirs_stats = legacy_statistics(path, now=now)
    keys = ("total_events", "event_types", "by_workflow", "by_day")
    checks = {
        "lead_history_matches": sorted(ours_history)
        == sorted(e["event_id"] for e in legacy_lead_history(path, lead)),
        "page_matches": ours_page == [e["event_id"] for e in legacy_page(path, etype, now=now)],
        "statistics_match": all(ours_stats[k] == theirs_stats[k] for k in keys),
    }
    from audit import selectors

    with_leads = selectors.statistics(since=now - STATS_WINDOW, until=now, with_leads=True)
    out["leads_processed"] = {
        "database": with_leads.leads_processed,
        "legacy_scan": theirs_stats["leads_processed"],
    }
    return out, checks


# --- 6. report --------------------------------------------------------------------------


def _ms(summary: dict[str, Any], a: str, b: str) -> str:
    if not summary:
        return "skipped"
    return f"{summary[f'{a}_ms']:.2f} / {summary[f'{b}_ms']:.2f}"


def _target(name: str) -> str:
    pct, limit = TARGETS[name]
    return f"{pct} <= {limit * 1000:g} ms"


def format_table(result: BenchResult) -> str:
    status = result.target_status()
    fill, conc, reads, legacy = result.fill, result.concurrent, result.reads, result.legacy
    mirror = f"on ({result.mirror})" if result.mirror else "off"

    def mark(name: str) -> str:
        return "" if name not in status else ("PASS" if status[name] else "FAIL")

    rows: list[tuple[str, str, str, str]] = [
        ("metric", "result", "target", "status"),
        (
            "fill rate (events/s, build + sign + insert)",
            f"{fill['events_per_s']}" if "events_per_s" in fill else "skipped (--reuse)",
            "-",
            "",
        ),
        (
            "seal + rollups (events/s)",
            f"{fill['seal_events_per_s']}" if "seal_events_per_s" in fill else "nothing to seal",
            "-",
            "",
        ),
        (
            f"write latency p50 / p99 (ms), mirror {'on' if result.mirror else 'off'}",
            _ms(result.write_latency, "p50", "p99"),
            _target("write_latency"),
            mark("write_latency"),
        ),
        (
            f"{result.config.get('writers', 0)} writers throughput (events/s)",
            f"{conc['events_per_s']} ({conc['landed']}/{conc['expected']} landed)"
            if conc
            else "skipped",
            "-",
            "",
        ),
        (
            "lead history p50 / p95 (ms)",
            _ms(reads.get("lead_history", {}), "p50", "p95"),
            _target("lead_history"),
            mark("lead_history"),
        ),
        (
            "filtered page p50 / p95 (ms)",
            _ms(reads.get("page", {}), "p50", "p95"),
            _target("page"),
            mark("page"),
        ),
        (
            "keyset 2nd page p50 / p95 (ms)",
            _ms(reads.get("page_next", {}), "p50", "p95"),
            _target("page_next"),
            mark("page_next"),
        ),
        (
            "30-day statistics p50 / p95 (ms)",
            _ms(reads.get("statistics", {}), "p50", "p95"),
            _target("statistics"),
            mark("statistics"),
        ),
    ]
    if legacy:
        rows += [
            (
                "legacy scan lead history / page / stats p50 (s)",
                f"{legacy['lead_history_p50_s']:.2f} / {legacy['page_p50_s']:.2f} / "
                f"{legacy['statistics_p50_s']:.2f}",
                "-",
                "",
            ),
            (
                "speed-up lead history / page / stats (x)",
                f"{legacy['speedup_lead_history']:g} / {legacy['speedup_page']:g} / "
                f"{legacy['speedup_statistics']:g}",
                "-",
                "",
            ),
            (
                "same answers as the legacy scan",
                "yes"
                if all(result.checks.values())
                else "NO: " + ", ".join(k for k, ok in result.checks.items() if not ok),
                "yes",
                "PASS" if all(result.checks.values()) else "FAIL",
            ),
        ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        f"database: {result.database}",
        f"events requested (N): {result.events_requested}; "
        f"events in database: {result.events_in_database}; JSON Lines mirror: {mirror}",
    ]
    if legacy:
        lines.append(f"legacy export: {legacy['exported']} lines, {legacy['file_mb']} MB")
    lines.append("")
    for row in rows:
        lines.append(
            " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        )
    if result.views:
        from orchestrator.devtools.bench_views import format_view_table

        leads = result.lead_fill
        about = (
            f"{leads['requested']} bench leads ({leads['inserted']} added now)"
            if leads
            else "lead fill skipped (--leads 0)"
        )
        lines += ["", f"dashboard views: server time through the test client; {about}"]
        lines.append(format_view_table(result.views))
    return "\n".join(lines)
