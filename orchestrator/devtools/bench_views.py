"""The dashboard half of `manage.py audit_bench`: a lead fill and the server time of every view.

The issue's target: with 1M events and 100k leads, every dashboard page and
htmx fragment renders in <= 150 ms server time at p95. `fill_leads` gives the
synthetic events (orchestrator/devtools/synthetic.py) their leads, with the CRM records, email
sequences and workflow runs the pages show; `measure_views` walks the
dashboard URL conf, so a page added later is measured without touching this
module, and times each page and each fragment its HTML asks for through
Django's test Client (request in, response out, in-process: no network).
"""

import cProfile
import io
import pstats
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html.parser import HTMLParser
from time import perf_counter, thread_time
from typing import Any, TextIO
from urllib.parse import urlencode, urljoin, urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Count
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings
from django.urls import Resolver404, URLPattern, resolve, reverse
from django.utils import timezone
from tqdm import tqdm

from audit.models import AuditEvent
from audit.types import ERROR
from leads.crm.models import CrmCall, CrmConnection, CrmRecord
from leads.followups.models import Enrollment, OutboundEmail, Sequence, SequenceStep
from leads.models import Lead, LeadSource, Team, TeamMember
from leads.workflows.models import Workflow, WorkflowRun
from orchestrator.dashboard import urls as dashboard_urls
from orchestrator.dashboard.access import answers_posts
from orchestrator.devtools.sampling import Timing, sample_lead_ids
from orchestrator.devtools.synthetic import WORKFLOWS, email_for, lead_id_for, name_for

VIEW_TARGET = 0.150  # seconds, judged at p95
VIEW_WARMUP = 2
LEAD_BATCH = 2000
# Fragments measured per page at most: a table with an hx-get per row must
# not turn into hundreds of rows of the report.
MAX_FRAGMENTS = 8
RUN_EVERY = timedelta(minutes=15)  # a workflow's poll interval
BENCH_USER = "bench-admin"
SDR_USERS = ("sdr.maria", "sdr.tom", "sdr.aiko", "sdr.lena", "sdr.omar", "sdr.ravi")
TEAMS = ("emea", "na", "apac", "latam")
SEQUENCE_STEPS = 6
# Lead source of a synthetic.WORKFLOWS entry -> lead source kind; the benchmark's
# "webinar" and "partner API" sources post through the web form API.
SOURCE_KINDS = {"web_form": "web_form", "webinar": "web_form", "partner_api": "web_form"}

Log = Callable[[str], None]


# --- leads ------------------------------------------------------------------------------


@dataclass
class _Fixtures:
    """The rows every bench lead points at, by the names the synthetic events use."""

    workflows: dict[str, Any]
    sources: dict[str, Any]
    teams: dict[str, Any]
    members: dict[str, list[Any]]
    crm: dict[str, Any]
    sequences: dict[str, Any]
    steps: dict[str, list[Any]]


def _fixtures() -> _Fixtures:
    user_model = get_user_model()
    users = [user_model.objects.get_or_create(username=name)[0] for name in SDR_USERS]
    teams, members = {}, {}
    for i, slug in enumerate(TEAMS):
        team = Team.objects.get_or_create(slug=f"bench-{slug}", defaults={"name": slug.upper()})[0]
        teams[slug] = team
        # Two SDRs per team, overlapping, so an owner can appear in two teams.
        team_users = [users[(2 * i) % len(users)], users[(2 * i + 1) % len(users)]]
        for user in team_users:
            TeamMember.objects.get_or_create(team=team, user=user)
        members[slug] = team_users
    workflows, sources, crm, sequences, steps = {}, {}, {}, {}, {}
    for name, _share, source_name, crm_kind in WORKFLOWS:
        wf = Workflow.objects.get_or_create(name=name, defaults={"config": {"bench": True}})[0]
        workflows[name] = wf
        sources[name] = LeadSource.objects.get_or_create(
            slug=f"bench-{source_name.replace('_', '-')}",
            defaults={
                "name": source_name.replace("_", " ").title(),
                "kind": SOURCE_KINDS.get(source_name, "csv"),
                "workflow": wf,
            },
        )[0]
        crm[name] = CrmConnection.objects.get_or_create(
            name=f"bench-{crm_kind}", defaults={"kind": crm_kind}
        )[0]
        seq = Sequence.objects.get_or_create(
            slug=f"{name}-followup", defaults={"name": f"{name} follow-up"}
        )[0]
        sequences[name] = seq
        steps[name] = [
            SequenceStep.objects.get_or_create(
                sequence=seq,
                position=pos,
                defaults={
                    "delay": timedelta(days=0 if pos == 1 else 2),
                    "subject_template": f"Step {pos} for {{{{ lead.name }}}}",
                    "text_template": "Hello {{ lead.name }}",
                },
            )[0]
            for pos in range(1, SEQUENCE_STEPS + 1)
        ]
    return _Fixtures(workflows, sources, teams, members, crm, sequences, steps)


_SCORE_RE = re.compile(r"score (\d+)")


@dataclass
class _Rows:
    leads: list[Any] = field(default_factory=list)
    # Related rows are built once the leads have primary keys: (lead, builder) pairs.
    later: list[tuple[Any, Callable[[Any], Iterable[Any]]]] = field(default_factory=list)


def _lead_rows(
    numbers: list[int],
    events: dict[str, list[dict[str, Any]]],
    fx: _Fixtures,
    *,
    rng: random.Random,
    now: datetime,
) -> _Rows:
    """Leads, CRM rows and email rows consistent with each lead's synthetic events."""
    out = _Rows()
    origin = now - timedelta(days=90)
    for n in numbers:
        public_id = lead_id_for(n)
        evs = events.get(public_id, [])
        by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in evs:
            by_type[e["event_type"]].append(e)
        wf_name = evs[0]["workflow"] if evs else rng.choice(WORKFLOWS)[0]
        created = evs[0]["timestamp"] if evs else origin + (now - origin) * rng.random()
        lead = Lead(
            public_id=public_id,
            email=email_for(n),
            name=name_for(n),
            company=email_for(n).split("@")[1].split(".")[0].title(),
            country=rng.choice(["DE", "US", "JP", "BR", "FR", "GB", "IN"]),
            source=fx.sources[wf_name],
            workflow=fx.workflows[wf_name],
            created_at=created,
        )
        if by_type[ERROR] and not by_type["lead_ingested"]:
            lead.status = Lead.Status.FAILED
            lead.attempts = 3
            lead.last_error = by_type[ERROR][0]["error_message"]
        elif q := by_type["lead_qualified"]:
            details = q[0]["details"]
            match = _SCORE_RE.search(details.get("reason", ""))
            lead.score = int(match.group(1)) if match else None
            if details.get("qualified"):
                lead.status = Lead.Status.QUALIFIED
            elif (lead.score or 0) < 20:
                lead.status = Lead.Status.DISQUALIFIED
            else:
                lead.status = Lead.Status.NURTURE
            lead.score_breakdown = {
                "rules": [
                    {"rule": "company email", "points": min(lead.score or 0, 40)},
                    {"rule": "title seniority", "points": max((lead.score or 0) - 40, 0)},
                ],
                "decision": details.get("reason", ""),
            }
            lead.processed_at = q[0]["timestamp"]
        routed = by_type["lead_routed"]
        destination = routed[0]["details"].get("destination", "") if routed else ""
        if destination.startswith("sales:"):
            region = destination.split(":", 1)[1]
            if region in fx.teams:
                lead.team = fx.teams[region]
                lead.owner = rng.choice(fx.members[region])
        out.leads.append(lead)

        if created_crm := by_type["crm_create"]:
            crm_errors = [e for e in by_type[ERROR] if e["error_type"] == "TransportError"]
            build = _crm_rows(
                created_crm[0], crm_errors, fx.crm[wf_name], rng=rng, models=(CrmRecord, CrmCall)
            )
            out.later.append((lead, build))
        if scheduled := by_type["email_scheduled"]:
            out.later.append(
                (
                    lead,
                    _email_rows(
                        scheduled[0],
                        by_type["email_sent"],
                        by_type["email_cancelled"],
                        fx.sequences[wf_name],
                        fx.steps[wf_name],
                        email=email_for(n),
                        rng=rng,
                        now=now,
                        models=(Enrollment, OutboundEmail),
                    ),
                )
            )
    return out


def _crm_rows(
    created: dict[str, Any],
    errors: list[dict[str, Any]],
    conn: Any,
    *,
    rng: random.Random,
    models: tuple[Any, Any],
) -> Callable[[Any], Iterable[Any]]:
    record_model, call_model = models
    ts = created["timestamp"]
    # A few records are stuck, as in production: the dashboard's retry button exists for them.
    stuck = rng.random() < 0.01

    def build(lead: Any) -> Iterable[Any]:
        status = record_model.Status.NEEDS_ATTENTION if stuck else record_model.Status.SYNCED
        yield record_model(
            lead=lead,
            connection=conn,
            external_id="" if stuck else created["details"].get("crm_record_id", ""),
            status=status,
            attempts=3 if stuck else 0,
            last_error="422 Unprocessable Entity: invalid email" if stuck else "",
            last_synced_at=None if stuck else ts,
            created_at=ts,
        )
        for e in errors:
            yield call_model(
                connection=conn,
                lead=lead,
                operation="create",
                method="POST",
                path="/crm/v3/objects/contacts",
                status_code=None,
                outcome=call_model.Outcome.RETRY,
                latency_ms=10_000,
                error=e["error_message"][:500],
                created_at=e["timestamp"],
            )
        yield call_model(
            connection=conn,
            lead=lead,
            operation="search",
            method="POST",
            path="/crm/v3/objects/contacts/search",
            status_code=200,
            outcome=call_model.Outcome.OK,
            latency_ms=int(rng.lognormvariate(5, 0.5)),
            created_at=ts - timedelta(milliseconds=400),
        )
        yield call_model(
            connection=conn,
            lead=lead,
            operation="create",
            method="POST",
            path="/crm/v3/objects/contacts",
            status_code=422 if stuck else 201,
            outcome=call_model.Outcome.PERMANENT if stuck else call_model.Outcome.OK,
            latency_ms=int(rng.lognormvariate(5.5, 0.5)),
            attempt=1 + len(errors),
            error="invalid email" if stuck else "",
            created_at=ts,
        )

    return build


def _email_rows(
    scheduled: dict[str, Any],
    sent: list[dict[str, Any]],
    cancelled: list[dict[str, Any]],
    sequence: Any,
    steps: list[Any],
    *,
    email: str,
    rng: random.Random,
    now: datetime,
    models: tuple[Any, Any],
) -> Callable[[Any], Iterable[Any]]:
    enrollment_model, email_model = models
    length = min(scheduled["details"].get("sequence_length", 3), len(steps))
    # One email per step: the write phases of earlier runs add random sends to
    # existing leads, steps included; the first send of a step is the one kept.
    by_step: dict[int, dict[str, Any]] = {}
    for e in sent:
        pos = e["details"].get("sequence_step", 0)
        if 1 <= pos <= length:
            by_step.setdefault(pos, e)
    sent = [by_step[pos] for pos in sorted(by_step)]
    last = max((e["timestamp"] for e in sent), default=scheduled["timestamp"])
    if cancelled:
        status = enrollment_model.Status.CANCELLED
        finished = cancelled[0]["timestamp"]
    elif len(sent) >= length:
        status, finished = enrollment_model.Status.COMPLETED, last
    else:
        status, finished = enrollment_model.Status.ACTIVE, None
    next_pos = next((pos for pos in range(1, length + 1) if pos not in by_step), length + 1)
    next_at = last + timedelta(days=2) if status == enrollment_model.Status.ACTIVE else None
    # Draws happen now, not when build runs, so the fill does not depend on batch order.
    opens = [rng.random() < 0.45 for _ in sent]
    clicks = [o and rng.random() < 0.2 for o in opens]

    def build(lead: Any) -> Iterable[Any]:
        enrollment = enrollment_model(
            lead=lead,
            sequence=sequence,
            status=status,
            cancel_reason=cancelled[0]["details"].get("reason", "") if cancelled else "",
            next_step=steps[next_pos - 1] if next_at else None,
            next_send_at=next_at,
            created_at=scheduled["timestamp"],
            finished_at=finished,
        )
        yield enrollment
        for i, e in enumerate(sent):
            pos = e["details"]["sequence_step"]
            ts = e["timestamp"]
            yield email_model(
                enrollment=enrollment,
                step=steps[pos - 1],
                message_id=f"<bench.{lead.public_id}.{sequence.pk}.{pos}@bench.invalid>",
                recipient=email,
                subject=e["details"].get("subject", ""),
                status=email_model.Status.SENT,
                due_at=ts,
                attempts=1,
                sent_at=ts,
                opened_at=ts + timedelta(hours=3) if opens[i] else None,
                clicked_at=ts + timedelta(hours=4) if clicks[i] else None,
                created_at=ts,
            )
        if next_at:
            yield email_model(
                enrollment=enrollment,
                step=steps[next_pos - 1],
                message_id=f"<bench.{lead.public_id}.{sequence.pk}.{next_pos}@bench.invalid>",
                recipient=email,
                status=email_model.Status.PENDING,
                due_at=max(next_at, now),
                created_at=last,
            )

    return build


def _events_of(public_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The events of these leads that decide their rows, oldest first per lead."""
    wanted = {
        "lead_ingested",
        "lead_qualified",
        "lead_routed",
        "crm_create",
        "email_scheduled",
        "email_sent",
        "email_cancelled",
        ERROR,
    }
    # A range of zero-padded ids walks the audit_lead_ts index; an IN list with
    # an event_type filter lets SQLite pick the type index and scan most of the table.
    rows = AuditEvent.objects.filter(
        lead_public_id__gte=min(public_ids), lead_public_id__lte=max(public_ids)
    ).values(
        "lead_public_id",
        "event_type",
        "workflow",
        "timestamp",
        "id",
        "details",
        "error_type",
        "error_message",
    )
    wanted_ids = set(public_ids)
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["event_type"] in wanted and row["lead_public_id"] in wanted_ids:
            out[row["lead_public_id"]].append(row)
    for events in out.values():
        events.sort(key=lambda e: (e["timestamp"], e["id"]))
    return out


def fill_leads(count: int, *, seed: int, stream: TextIO, log: Log) -> dict[str, Any]:
    """Top the bench leads up to LEAD-000001..LEAD-<count>, with their related rows.

    Leads are matched by public id, so a rerun (or a larger --leads) adds only
    the missing ones; a lead's status, owner, CRM record and emails follow the
    synthetic events that carry its id, so its page and its timeline agree.
    """
    fx = _fixtures()
    existing = Lead.objects.filter(source__in=fx.sources.values()).count()
    info: dict[str, Any] = {"requested": count, "existing": existing, "inserted": 0}
    if existing < count:
        log(f"leads: topping up to {count} bench leads ({existing} already there)")
        started = perf_counter()
        now = timezone.now()
        with tqdm(total=count, unit="lead", desc="leads", file=stream, disable=None) as bar:
            for low in range(1, count + 1, LEAD_BATCH):
                numbers = list(range(low, min(low + LEAD_BATCH, count + 1)))
                ids = [lead_id_for(n) for n in numbers]
                have = set(
                    Lead.objects.filter(public_id__in=ids).values_list("public_id", flat=True)
                )
                missing = [n for n in numbers if lead_id_for(n) not in have]
                if missing:
                    # One generator per batch start: a top-up draws what a full fill would.
                    rng = random.Random(seed * 1_000_003 + low)
                    rows = _lead_rows(
                        missing, _events_of([lead_id_for(n) for n in missing]), fx, rng=rng, now=now
                    )
                    info["inserted"] += _insert(
                        rows, models=(CrmRecord, CrmCall, Enrollment, OutboundEmail, Lead)
                    )
                bar.update(len(numbers))
        elapsed = perf_counter() - started
        info.update(seconds=round(elapsed, 2), leads_per_s=round(info["inserted"] / elapsed))
    else:
        log(f"leads: skipped, {existing} bench leads already there")
    info["workflow_runs"] = fill_workflow_runs(fx, seed=seed)
    return info


def _insert(rows: _Rows, *, models: tuple[Any, ...]) -> int:
    crm_record, crm_call, enrollment_model, email_model, lead_model = models
    with transaction.atomic():
        # bulk_create sets the primary keys (SQLite >= 3.35 and PostgreSQL
        # return them), which the related rows need.
        lead_model.objects.bulk_create(rows.leads, batch_size=500)
        by_type: dict[type, list[Any]] = defaultdict(list)
        for lead, build in rows.later:
            for obj in build(lead):
                by_type[type(obj)].append(obj)
        for model in (crm_record, crm_call, enrollment_model):
            model.objects.bulk_create(by_type[model], batch_size=500)
        for obj in by_type[email_model]:
            obj.enrollment_id = obj.enrollment.pk
        email_model.objects.bulk_create(by_type[email_model], batch_size=500)
    return len(rows.leads)


def fill_workflow_runs(fx: _Fixtures, *, seed: int) -> int:
    """A run every 15 minutes per bench workflow over the 90 days, unless already there."""
    if WorkflowRun.objects.filter(workflow__in=fx.workflows.values()).exists():
        return 0
    rng = random.Random(seed ^ 0x7E57)
    now = timezone.now()
    runs = []
    for wf in fx.workflows.values():
        t = now - timedelta(days=90)
        while t < now:
            failed = rng.random() < 0.01
            polled = rng.randint(0, 30)
            qualified = int(polled * 0.7)
            duration = timedelta(seconds=rng.uniform(0.5, 40))
            runs.append(
                WorkflowRun(
                    workflow=wf,
                    started_at=t,
                    finished_at=t + duration,
                    heartbeat_at=t + duration,
                    status=WorkflowRun.Status.FAILED if failed else WorkflowRun.Status.SUCCEEDED,
                    counts={
                        "polled": polled,
                        "processed": polled,
                        "qualified": qualified,
                        "nurture": polled - qualified,
                        "disqualified": 0,
                        "routed": qualified,
                        "errors": int(failed),
                    },
                    error="OperationalError: database is locked" if failed else "",
                    correlation_id=f"{rng.getrandbits(128):032x}",
                )
            )
            t += RUN_EVERY
    with transaction.atomic():
        WorkflowRun.objects.bulk_create(runs, batch_size=1000)
    return len(runs)


# --- views ------------------------------------------------------------------------------

RANGE_30 = {"range": "30d"}
RANGE_90 = {"range": "90d"}
# URL name -> query strings measured; the default period (7d) is always the
# first one. A route missing here gets the three periods. "{lead}" and
# "{type}" are filled from the data (see view_samples).
VIEW_PARAMS: dict[str, list[dict[str, str]]] = {
    "event-list": [
        {},
        RANGE_30,
        RANGE_90,
        {"type": "{type}"},
        {"type": ERROR, "range": "30d"},
        {"lead": "{lead}", "range": "90d"},
        # Text search: a word in many events (the synthetic emails' domain), and one
        # in none, which a scan would read the whole range for.
        {"q": "acme", "range": "90d"},
        {"q": "no event says this", "range": "90d"},
    ],
    "event-export": [{}],
    "event-detail": [{}],
    "error-detail": [{}, RANGE_90],
    "lead-list": [{}, RANGE_30, RANGE_90, {"status": "qualified", "range": "90d"}],
    "lead-detail": [{}],
}
DEFAULT_PARAMS = [{}, RANGE_30, RANGE_90]
# Links found on a page that lead to more views worth timing: <a id> -> label.
LINK_IDS = {"next-page": "page 2 (cursor)", "export-csv": "CSV", "export-jsonl": "JSONL"}


@dataclass(frozen=True)
class ViewCase:
    name: str  # the URL name
    label: str
    path: str  # path and query string
    htmx: bool = False
    target: str = ""  # the HX-Target id an htmx request would send
    current_url: str = ""
    # Requests of the route table (and the first link to an unsampled route) are
    # searched for more; discovered ones are not, or page 2 would find page 3, ...
    origin: bool = False


@dataclass
class ViewRow:
    name: str
    label: str
    samples: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    status_code: int | None = None
    cold: float | None = None
    queries: int | None = None
    sql_ms: float | None = None
    note: str = ""
    error: str = ""  # the exception the view raised: the page is broken, not slow

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "view": self.label,
            "url_name": self.name,
            "status_code": self.status_code,
            "note": self.note,
        }
        if self.error:
            data.update(error=self.error, passed=False)
        elif self.samples:
            timing = Timing(self.samples)
            data.update(
                n=len(self.samples),
                p50_ms=round(timing.pct(50) * 1000, 2),
                p95_ms=round(timing.pct(95) * 1000, 2),
                max_ms=round(max(self.samples) * 1000, 2),
                cpu_p95_ms=round(Timing(self.cpu).pct(95) * 1000, 2),
                cold_ms=None if self.cold is None else round(self.cold * 1000, 2),
                queries=self.queries,
                sql_ms=self.sql_ms,
                passed=timing.pct(95) <= VIEW_TARGET and self.status_code == 200,
            )
        return data


class _Links(HTMLParser):
    """The hx-get requests and the LINK_IDS links of a rendered page."""

    def __init__(self) -> None:
        super().__init__()
        self.hx: list[tuple[str, str]] = []  # (url, target id)
        self.links: dict[str, str] = {}
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if a.get("hx-get"):
            target = a.get("hx-target", "")
            # htmx sends the id of the element it swaps into; "this" is the element itself.
            target = a.get("id", "") if target in ("", "this") else target.lstrip("#")
            self.hx.append((a["hx-get"], target if re.fullmatch(r"[\w-]+", target) else ""))
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
            if a.get("id") in LINK_IDS:
                self.links[a["id"]] = a["href"]


def dashboard_routes() -> list[URLPattern]:
    """Every named route of the dashboard URL conf, in its order (includes flattened)."""

    def walk(patterns: Iterable[Any]) -> Iterable[URLPattern]:
        for p in patterns:
            if isinstance(p, URLPattern):
                if p.name:
                    yield p
            else:
                yield from walk(p.url_patterns)

    return list(walk(dashboard_urls.urlpatterns))


def is_action(route: URLPattern) -> bool:
    # Operator actions and saved-view forms are POSTs that change state: not pages.
    return answers_posts(route.callback)


def view_samples(*, seed: int) -> dict[str, str]:
    """Realistic URL arguments: a lead with a long history, the biggest error group, ..."""
    rng = random.Random(seed)
    samples = {"type": "email_sent"}
    candidates = set(sample_lead_ids(200, rng=rng))
    candidates &= set(
        Lead.objects.filter(public_id__in=candidates).values_list("public_id", flat=True)
    )
    busiest = (
        AuditEvent.objects.filter(lead_public_id__in=candidates)
        .values("lead_public_id")
        .annotate(n=Count("id"))
        .order_by("-n", "lead_public_id")
        .first()
    )
    if busiest:
        samples["lead"] = samples["public_id"] = busiest["lead_public_id"]
    errors = AuditEvent.objects.exclude(fingerprint="")
    biggest = (
        errors.values("fingerprint").annotate(n=Count("id")).order_by("-n", "fingerprint").first()
    )
    if biggest:
        samples["fingerprint"] = biggest["fingerprint"]
        newest = errors.filter(fingerprint=biggest["fingerprint"]).order_by("-timestamp").first()
        samples["pk"] = str(newest.pk)  # an event with a traceback: the heaviest detail
    elif first := AuditEvent.objects.order_by("-id").first():
        samples["pk"] = str(first.pk)
    return samples


def _label(path: str, *, extra: str = "") -> str:
    """URL name, URL arguments, query string: "lead-detail LEAD-000457 ?range=30d"."""
    url = urlsplit(path)
    match = resolve(url.path)
    query = url.query if len(url.query) <= 60 else url.query[:57] + "..."
    parts = [match.url_name or "", *map(str, match.kwargs.values())]
    parts += [f"?{query}" if query else "", extra]
    return " ".join(p for p in parts if p)


def page_cases(samples: dict[str, str]) -> tuple[list[ViewCase], list[ViewRow]]:
    """The full-page requests of every GET route; rows for the routes that cannot be timed."""
    cases, skipped = [], []
    for route in dashboard_routes():
        if is_action(route):
            skipped.append(ViewRow(route.name, route.name, note="POST action, not timed"))
            continue
        names = list(route.pattern.regex.groupindex)
        missing = [n for n in names if n not in samples]
        if missing:
            note = f"no sample value for {', '.join(missing)}, nor a link to it on the pages"
            skipped.append(ViewRow(route.name, route.name, note=note))
            continue
        base = reverse(route.name, kwargs={n: samples[n] for n in names})
        for params in VIEW_PARAMS.get(route.name, DEFAULT_PARAMS):
            try:
                query = {k: v.format(**samples) for k, v in params.items()}
            except KeyError as exc:  # e.g. {lead} with no leads in the database
                note = f"no {exc.args[0]} in the data for ?{urlencode(params)}"
                skipped.append(ViewRow(route.name, route.name, note=note))
                continue
            path = f"{base}?{urlencode(query)}" if query else base
            cases.append(ViewCase(route.name, _label(path), path, origin=True))
    return cases, skipped


def _headers(case: ViewCase) -> dict[str, str]:
    if not case.htmx:
        return {}
    headers = {"HTTP_HX_REQUEST": "true", "HTTP_HX_CURRENT_URL": case.current_url or case.path}
    if case.target:
        headers["HTTP_HX_TARGET"] = case.target
    return headers


def _request(client: Any, case: ViewCase) -> tuple[float, float, Any, bytes]:
    """Wall and CPU seconds from request to response (to a streamed one's first chunk).

    CPU time is this thread's, which with SQLite includes the queries (they run
    in-process); on a busy machine it moves much less than the wall time.
    """
    started, cpu = perf_counter(), thread_time()
    response = client.get(case.path, **_headers(case))
    if response.streaming:
        body = next(iter(response.streaming_content), b"")
        elapsed, cpu = perf_counter() - started, thread_time() - cpu
        response.close()
    else:
        elapsed, cpu = perf_counter() - started, thread_time() - cpu
        body = response.content
    return elapsed, cpu, response, body


def _route_name(url: str) -> str | None:
    try:
        return resolve(urlsplit(url).path).url_name
    except Resolver404:
        return None


def discover(
    page: ViewCase, body: bytes, seen: set[tuple[str, bool]], unsampled: dict[str, ViewRow]
) -> list[ViewCase]:
    """What the rendered page asks for next: its fragments and its page-2 / export links.

    A link to a route the samples could not fill (say, a report by kind and
    day) is how that route gets its arguments: the first one found is timed.
    """
    parser = _Links()
    parser.feed(body.decode("utf-8", "replace"))
    # {% querystring %} gives "?a=b", relative to the page.
    parser.hrefs = [urljoin(page.path, h) for h in parser.hrefs]
    parser.links = {k: urljoin(page.path, h) for k, h in parser.links.items()}
    parser.hx = [(urljoin(page.path, u), t) for u, t in parser.hx]
    found: list[ViewCase] = []
    for href in parser.hrefs:
        name = _route_name(href)
        if name in unsampled and (href, False) not in seen:
            del unsampled[name]
            seen.add((href, False))
            found.append(ViewCase(name, _label(href), href, origin=True))
    for link_id, href in parser.links.items():
        name = _route_name(href)
        if name and (href, False) not in seen:
            seen.add((href, False))
            found.append(ViewCase(name, _label(href, extra=LINK_IDS[link_id]), href))
    fragments = 0
    for url, target in parser.hx:
        name = _route_name(url)
        if not name or (url, True) in seen or fragments >= MAX_FRAGMENTS:
            continue
        seen.add((url, True))
        fragments += 1
        extra = f"[htmx #{target}]" if target else "[htmx]"
        found.append(ViewCase(name, _label(url, extra=extra), url, True, target, page.path))
    return found


def _sql(queries: list[dict[str, Any]]) -> float:
    return round(sum(float(q.get("time") or 0) for q in queries) * 1000, 2)


def _profile(client: Any, case: ViewCase, *, top: int = 15) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(3):
        _request(client, case)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
    # Project code only: Django's own frames would crowd out the culprit.
    stats.print_stats(r"^(?!.*(site-packages|/lib/python3)).*\.py", top)
    return out.getvalue()


def measure_views(
    *, repetitions: int, seed: int, stream: TextIO, log: Log, profile: bool = False
) -> list[dict[str, Any]]:
    """Time every dashboard page and fragment; one row per request shape."""
    # The dashboard caches on the database cache; its table is made by
    # createcachetable, which a bench database may never have had run.
    call_command("createcachetable", verbosity=0)
    user_model = get_user_model()
    user = user_model.objects.filter(username=BENCH_USER).first()
    if user is None:
        user = user_model.objects.create_superuser(BENCH_USER, f"{BENCH_USER}@bench.invalid", None)
    samples = view_samples(seed=seed)
    cases, skipped = page_cases(samples)
    rows: list[ViewRow] = []
    # The test client talks to "testserver"; a command runs outside the test
    # environment that would allow it.
    with override_settings(ALLOWED_HOSTS=[*settings.ALLOWED_HOSTS, "testserver"]):
        client = Client(secure=True, raise_request_exception=True)
        client.force_login(user)
        seen = {(c.path, False) for c in cases}
        unsampled = {r.name: r for r in skipped if r.note.startswith("no sample")}
        queue = list(cases)
        measured: list[ViewCase] = []
        bar = tqdm(total=len(queue), unit="view", desc="views", file=stream, disable=None)
        while queue:
            case = queue.pop(0)
            row = ViewRow(case.name, case.label)
            rows.append(row)
            measured.append(case)
            try:
                # The first request after the cache is emptied: what the first
                # user of the minute waits for (views may cache up to 60 s).
                cache.clear()
                row.cold, _cpu, response, body = _request(client, case)
                row.status_code = response.status_code
                if response.status_code != 200:
                    row.note = f"HTTP {response.status_code}"
                if case.origin and response.status_code == 200:
                    more = discover(case, body, seen, unsampled)
                    # The page's own URL asked by htmx (a filter form or the
                    # range bar): timed when the view answers it with a fragment.
                    if (case.path, True) not in seen and not response.streaming:
                        seen.add((case.path, True))
                        hx = ViewCase(case.name, f"{case.label} [htmx]", case.path, htmx=True)
                        *_, hx_response, hx_body = _request(client, hx)
                        if hx_response.status_code == 200 and b"<html" not in hx_body[:2000]:
                            more.insert(0, hx)
                    queue[0:0] = more
                    bar.total += len(more)
                for _ in range(VIEW_WARMUP):
                    _request(client, case)
                for _ in range(repetitions):
                    elapsed, cpu, *_ = _request(client, case)
                    row.samples.append(elapsed)
                    row.cpu.append(cpu)
                with CaptureQueriesContext(connection) as captured:
                    _request(client, case)
                row.queries = len(captured.captured_queries)
                row.sql_ms = _sql(captured.captured_queries)
            except Exception as exc:  # noqa: BLE001 - a broken page is a result, not a crash
                row.error = f"{type(exc).__name__}: {exc}"[:200]
                row.samples, row.cpu = [], []
            bar.update(1)
        bar.close()
        data = [r.as_dict() for r in rows]
        if profile:
            for case, item in zip(measured, data, strict=True):
                # Slow ones only: a view that raised has its traceback in the row.
                if item.get("passed") is False and "p95_ms" in item:
                    log(f"profile of {case.label} (3 requests, project code):")
                    log(_profile(client, case))
    # Routes still unsampled stay in `skipped`; those found through a link were timed.
    skipped = [r for r in skipped if not r.note.startswith("no sample") or r.name in unsampled]
    return [*data, *(r.as_dict() for r in skipped)]


def format_view_table(rows: list[dict[str, Any]]) -> str:
    """view | p50 ms | p95 ms | target | status | cpu p95 | cold ms | queries | sql ms."""
    target = f"p95 <= {VIEW_TARGET * 1000:g} ms"
    header = (
        "view",
        "p50 ms",
        "p95 ms",
        "target",
        "status",
        "cpu p95",
        "cold ms",
        "queries",
        "sql ms",
    )
    table = [header]
    for row in rows:
        if "p95_ms" in row:
            status = "PASS" if row["passed"] else "FAIL"
            if row["status_code"] != 200:
                status += f" (HTTP {row['status_code']})"
            table.append(
                (
                    row["view"],
                    f"{row['p50_ms']:.1f}",
                    f"{row['p95_ms']:.1f}",
                    target,
                    status,
                    f"{row['cpu_p95_ms']:.1f}",
                    "-" if row["cold_ms"] is None else f"{row['cold_ms']:.1f}",
                    str(row["queries"]),
                    f"{row['sql_ms']:.1f}",
                )
            )
        elif row.get("error"):
            table.append((row["view"], "-", "-", target, f"FAIL: {row['error']}", *[""] * 4))
        else:
            table.append((row["view"], "-", "-", "-", f"not timed: {row['note']}", *[""] * 4))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    failed = [r["view"] for r in rows if r.get("passed") is False]
    lines.append("")
    lines.append(
        f"views: {sum(1 for r in rows if r.get('passed'))} pass, {len(failed)} fail, "
        f"{sum(1 for r in rows if 'passed' not in r)} not timed"
    )
    return "\n".join(lines)
