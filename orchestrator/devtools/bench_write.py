"""The write half of the benchmark: `manage.py write_bench` (`make bench-write`).

Each figure is printed beside its target and beside what the legacy design
does on the same machine in the same run: one JSON line per event appended
under a lock and fsync'd (its report promised "< 1 ms per write, includes disk
sync" and "1000+ events/s concurrent"), measured here rather than quoted.

Phases: fill the audit table up to --events (bulk, MAC'd and sealed as in
production) and weigh it; time durable single-event writes and 8 writer
processes (orchestrator/devtools/bench.py); post leads through gunicorn, one
a request and in batches (orchestrator/devtools/bench_intake.py); then the
legacy equivalents.
"""

import fcntl
import json
import multiprocessing
import os
import random
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any, TextIO

from django.core.cache import cache
from django.db import connection
from tqdm import tqdm

from audit.jsonl import legacy_line_text
from audit.models import AuditEvent
from orchestrator.devtools import bench, bench_intake, bench_walk
from orchestrator.devtools.sampling import Timing, sample_lead_ids
from orchestrator.devtools.synthetic import random_write

TEN_MILLION = 10_000_000


@dataclass(frozen=True)
class WriteBenchConfig:
    events: int = 1_000_000
    force: bool = False
    writes: int = 2000
    writers: int = 8
    per_writer: int = 500
    api_leads: int = 3000
    api_clients: int = 16
    api_workers: int = 4
    batch_leads: int = 30_000
    batch_size: int = 500
    # Every dashboard page once through gunicorn, then the workers' memory.
    walk: bool = True
    seed: int = 1


@dataclass
class Row:
    metric: str
    ours: str
    target: str
    passed: bool | None
    legacy: str


@dataclass
class WriteBenchResult:
    database: str
    config: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run(config: WriteBenchConfig, *, stream: TextIO) -> WriteBenchResult:
    def log(message: str) -> None:
        tqdm.write(message, file=stream)

    if not config.force and bench.foreign_events_exist():
        raise bench.BenchError(
            "the database holds audit events that are not benchmark events; point "
            "DATABASE_URL at a scratch database, or pass --force"
        )
    result = WriteBenchResult(database=bench.describe_database(), config=asdict(config))
    fig = result.figures
    rng = random.Random(config.seed)

    fill_config = bench.BenchConfig(events=config.events, reuse=True, seed=config.seed)
    fig["fill"] = bench.fill(fill_config, stream=stream, log=log)
    fig["storage"] = storage_per_event()
    leads = sample_lead_ids(bench.WRITE_LEADS, rng=rng)
    run_id = uuid.uuid4().hex[:12]
    if config.writes:
        log(f"write latency: {config.writes} durable single-event commits")
        fig["write_latency"] = bench.measure_write_latency(
            config.writes, leads=leads, rng=rng, correlation_id=f"bench-{run_id}-latency"
        )
    if config.writers:
        log(f"throughput: {config.writers} writer processes x {config.per_writer} events")
        fig["concurrent"] = bench.measure_concurrent_writes(
            writers=config.writers,
            per_writer=config.per_writer,
            leads=leads,
            seed=config.seed,
            run_id=run_id,
        )
    if config.api_leads:
        log(f"lead API: {config.api_leads} leads, {config.api_clients} clients, gunicorn")
        fig["api"] = bench_intake.measure_lead_api(
            leads=config.api_leads, clients=config.api_clients, workers=config.api_workers
        )
    if config.batch_leads:
        log(f"batch API: {config.batch_leads} leads in batches of {config.batch_size}")
        fig["batch"] = bench_intake.measure_lead_api(
            leads=config.batch_leads,
            clients=config.api_workers,
            workers=config.api_workers,
            batch=config.batch_size,
        )
    if config.walk:
        log(f"dashboard walk: every page once through gunicorn, {config.api_workers} workers")
        # Cold: fresh workers, and no figure cached from an earlier run.
        cache.clear()
        fig["walk"] = bench_walk.measure_dashboard_walk(
            workers=config.api_workers, seed=config.seed
        )
    log("legacy design: the same writes as appended, fsync'd JSON lines")
    with tempfile.TemporaryDirectory(prefix="write-bench-") as tmp:
        fig["legacy"] = measure_legacy_writes(
            Path(tmp),
            writes=config.writes or 2000,
            writers=config.writers or 8,
            per_writer=config.per_writer,
            leads=leads,
            seed=config.seed,
        )
    result.rows = rows(result)
    return result


# --- storage -------------------------------------------------------------------------------


def storage_per_event() -> dict[str, Any]:
    """Bytes on disk per audit event: the table and each of its indexes."""
    count = AuditEvent.objects.count()
    sizes: dict[str, int] = {}
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c "
                "WHERE c.oid = 'audit_auditevent'::regclass OR c.oid IN "
                "(SELECT indexrelid FROM pg_index WHERE indrelid = 'audit_auditevent'::regclass)"
            )
            sizes = dict(cursor.fetchall())
            cursor.execute("SELECT pg_total_relation_size('audit_auditevent')")
            total = cursor.fetchone()[0]
        else:
            cursor.execute(
                "SELECT name, SUM(pgsize) FROM dbstat WHERE name = 'audit_auditevent' OR name IN "
                "(SELECT name FROM sqlite_master WHERE tbl_name = 'audit_auditevent' "
                "AND type = 'index') GROUP BY name"
            )
            sizes = dict(cursor.fetchall())
            total = sum(sizes.values())
    return {
        "events": count,
        "bytes_per_event": round(total / count, 1) if count else 0,
        "by_relation": {
            name: round(size / count, 1) if count else 0
            for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])
        },
    }


# --- the legacy design --------------------------------------------------------------------


def _legacy_append(fd: int, line: bytes) -> None:
    # The legacy logger: one line, under its lock, synced before returning.
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _legacy_lines(count: int, *, leads: list[str], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        kwargs = random_write(rng, lead_id=rng.choice(leads), correlation_id="legacy")
        event = {
            "event_id": str(uuid.uuid4()),
            "timestamp": "2026-12-07T12:00:00.000000",
            "event_type": kwargs["event_type"],
            "lead_id": kwargs.get("lead_id"),
            "workflow": kwargs.get("workflow"),
            "actor": kwargs.get("actor", "system"),
            "details": kwargs.get("details", {}),
        }
        out.append((json.dumps(event) + "\n").encode())
    return out


def _legacy_writer(path: str, lines: list[bytes], barrier: Any, results: Any) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        barrier.wait(60)
        started = perf_counter()
        for line in lines:
            _legacy_append(fd, line)
        results.put(perf_counter() - started)
    finally:
        os.close(fd)


def measure_legacy_writes(
    tmp: Path, *, writes: int, writers: int, per_writer: int, leads: list[str], seed: int
) -> dict[str, Any]:
    lines = _legacy_lines(writes, leads=leads or ["LEAD-000001"], seed=seed)
    path = tmp / "legacy.log"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    samples = []
    try:
        for line in lines:
            started = perf_counter()
            _legacy_append(fd, line)
            samples.append(perf_counter() - started)
    finally:
        os.close(fd)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(writers + 1)
    results = ctx.Queue()
    shared = tmp / "legacy-concurrent.log"
    batches = [
        _legacy_lines(per_writer, leads=leads or ["LEAD-000001"], seed=seed + i)
        for i in range(writers)
    ]
    procs = [
        ctx.Process(target=_legacy_writer, args=(str(shared), batch, barrier, results))
        for batch in batches
    ]
    for proc in procs:
        proc.start()
    barrier.wait(60)
    started = perf_counter()
    for _ in procs:
        results.get(timeout=600)
    wall = perf_counter() - started
    for proc in procs:
        proc.join(60)
    written = sum(1 for _ in shared.open("rb"))
    if written != writers * per_writer:
        raise bench.BenchError(f"legacy writers: {written} of {writers * per_writer} lines")
    sample = list(AuditEvent.objects.order_by("-id")[:2000])
    line_bytes = [len(legacy_line_text(e).encode()) + 1 for e in sample]
    return {
        "write_latency": Timing(samples).summary(),
        "concurrent_events_per_s": round(writers * per_writer / wall),
        "bytes_per_event": round(sum(line_bytes) / len(line_bytes), 1) if line_bytes else 0,
    }


# --- the table ---------------------------------------------------------------------------


def rows(result: WriteBenchResult) -> list[Row]:
    fig = result.figures
    legacy = fig.get("legacy", {})
    pg = connection.vendor == "postgresql"
    out: list[Row] = []

    def add(
        metric: str, ours: Any, target: str, judge: Callable[[], bool] | None, legacy_text: str
    ) -> None:
        out.append(Row(metric, str(ours), target, judge() if judge else None, legacy_text))

    lat = fig.get("write_latency")
    if lat:
        add(
            f"audit write p50 / p99 (ms), mirror {'on' if lat['mirror'] else 'off'}",
            f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f}",
            "p50 <= 0.5",
            lambda: lat["p50_ms"] <= 0.5,
            f"{legacy['write_latency']['p50_ms']:.2f} / {legacy['write_latency']['p99_ms']:.2f}",
        )
    conc = fig.get("concurrent")
    if conc:
        need = 5000 if pg else 3000
        add(
            f"{conc['writers']} writer processes (events/s)",
            conc["events_per_s"],
            f">= {need}",
            lambda: conc["events_per_s"] >= need,
            str(legacy.get("concurrent_events_per_s", "-")),
        )
    storage = fig.get("storage", {})
    if storage.get("events"):
        add(
            f"bytes per event at {storage['events']:,} (table + indexes)",
            storage["bytes_per_event"],
            "<= 450 at 1M",
            lambda: storage["bytes_per_event"] <= 450,
            f"{legacy.get('bytes_per_event', '-')} (a line, no index)",
        )
    filled = fig.get("fill", {})
    if filled.get("events_per_s"):
        rate = filled["events_per_s"]
        seal = filled.get("seal_events_per_s") or rate
        minutes = TEN_MILLION / rate / 60 + TEN_MILLION / seal / 60
        add(
            "benchmark fill, 10M events projected (min, fill + seal)",
            f"{minutes:.1f} ({rate:,} + {seal:,} events/s)",
            "<= 15",
            lambda: minutes <= 15,
            "-",
        )
    api = fig.get("api")
    if api:
        add(
            f"lead API via gunicorn, {api['clients']} clients (leads/s; p99 ms)",
            f"{api['leads_per_s']}; {api['p99_ms']:.0f}",
            ">= 300; <= 250",
            lambda: api["leads_per_s"] >= 300 and api["p99_ms"] <= 250,
            "- (no API)",
        )
        add(
            "  server CPU per lead (ms)",
            api["server_cpu_ms_per_lead"],
            "-",
            None,
            "-",
        )
        add(
            "  RSS of the largest gunicorn worker after it (MB)",
            api["worker_rss_mb_max"],
            "<= 150",
            lambda: api["worker_rss_mb_max"] <= 150,
            "-",
        )
    batch = fig.get("batch")
    if batch:
        add(
            f"batch API, {batch['batch']} a request (leads/s)",
            batch["leads_per_s"],
            ">= 3000",
            lambda: batch["leads_per_s"] >= 3000,
            "-",
        )
        add(
            "  server CPU per lead (ms)",
            batch["server_cpu_ms_per_lead"],
            "-",
            None,
            "-",
        )
    walk = fig.get("walk")
    if walk:
        add(
            f"dashboard walk, {walk['requests']} pages and fragments once (p50 / p95 ms)",
            f"{walk['p50_ms']:.0f} / {walk['p95_ms']:.0f}"
            + (f", {len(walk['failures'])} failed" if walk["failures"] else ""),
            "no failure",
            lambda: not walk["failures"],
            "-",
        )
        add(
            "  largest gunicorn worker after it, RSS (MB)",
            walk["worker_rss_mb_max"],
            "<= 150",
            lambda: walk["worker_rss_mb_max"] <= 150,
            "-",
        )
        add(
            "  the same without mapped database pages (MB)",
            walk["worker_anon_mb_max"],
            "-",
            None,
            "-",
        )
    return out


def format_table(result: WriteBenchResult) -> str:
    header = ("metric", "ours", "target", "status", "legacy design, same run")
    body = [
        (
            r.metric,
            r.ours,
            r.target,
            "" if r.passed is None else ("PASS" if r.passed else "FAIL"),
            r.legacy,
        )
        for r in result.rows
    ]
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    lines = [f"database: {result.database}", ""]
    for row in [header, *body]:
        lines.append(" | ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
    storage = result.figures.get("storage", {})
    if storage.get("by_relation"):
        lines.append("")
        lines.append("bytes per event by relation:")
        for name, size in storage["by_relation"].items():
            lines.append(f"  {name}: {size}")
    return "\n".join(lines)
