"""The audit store benchmark behind `manage.py audit_bench`.

It fills the configured database with N synthetic pipeline events, then
measures what the design promises: durable single-writer latency, throughput
of several writer processes, the dashboard reads (lead history, a filtered
page and its keyset successor, 30-day statistics), and the same reads done the
legacy way, by scanning a JSON Lines file.

Benchmark events are the ones whose workflow starts with "bench-" (and those
the dashboard views write for the bench's own user); the benchmark refuses a
database holding anything else unless forced. The dashboard view timings live
in orchestrator/devtools/bench_views.py, the synthetic data in
orchestrator/devtools/synthetic.py, and the entry point of the spawned writer
processes in orchestrator/devtools/bench_writer.py (which, unlike this module,
is imported before Django is set up).
"""

import argparse
import contextlib
import heapq
import json
import multiprocessing
import os
import queue
import random
import sqlite3
import tempfile
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import Any, TextIO

from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import Model
from django.utils import timezone
from tqdm import tqdm

from audit import selectors
from audit.integrity import seal_pending
from audit.jsonl import event_to_legacy
from audit.legacy import LEGACY_EVENT_TYPES
from audit.mirror import mirror
from audit.models import AuditEvent, AuditSeal
from audit.services import event_fields, insert_rows, record_event, storage_row
from audit.signing import format_timestamp
from audit.transfer import default_jobs, import_files
from orchestrator.devtools import bench_views
from orchestrator.devtools.bench_writer import BARRIER_TIMEOUT, WriterSpec, writer_process
from orchestrator.devtools.legacy_corpus import legacy_lines
from orchestrator.devtools.sampling import Timing, sample_lead_ids
from orchestrator.devtools.synthetic import random_write, synthetic_events

BENCH_PREFIX = "bench-"
STATS_WINDOW = timedelta(days=30)
PAGE_SIZE = 50
WRITE_LEADS = 1000
# Events per chunk of the fill, built in one go and committed as one batch:
# few enough fsyncs that the fill measures building and inserting rows.
FILL_CHUNK = 20_000
# A fill at least this large (and at least the size of the table) drops the
# secondary indexes and builds them after.
DEFER_INDEXES_FROM = 100_000
EXPORT_CHUNK = 5000
WARMUP = 3

# Target name -> (percentile judged, limit in seconds).
TARGETS: dict[str, tuple[str, float]] = {
    "write_latency": ("p50", 0.001),
    "lead_history": ("p95", 0.010),
    "page": ("p95", 0.030),
    "page_next": ("p95", 0.030),
    "statistics": ("p95", 0.100),
}


def count_arg(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number, at least `minimum`."""

    def parse(raw: str) -> int:
        value = int(raw)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return parse


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
    # Synthetic legacy log lines to import (import_audit_log's path); 0 skips.
    import_lines: int = 0


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
    legacy_import: dict[str, Any] = field(default_factory=dict)

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
    if config.import_lines:
        log(f"legacy import: {config.import_lines} synthetic legacy lines")
        result.legacy_import = measure_legacy_import(config.import_lines, seed=config.seed)
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
    # The view phase's own events (an export audits itself) are not foreign, nor
    # the keys the intake benchmark makes for its bench- source.
    return (
        AuditEvent.objects.exclude(workflow__startswith=BENCH_PREFIX)
        .exclude(actor=f"user:{bench_views.BENCH_USER}")
        .exclude(event_type="api_key_created", details__source__startswith=BENCH_PREFIX)
        .exists()
    )


# --- 1. fill ----------------------------------------------------------------------------


def fill(config: BenchConfig, *, stream: TextIO, log: Log) -> dict[str, Any]:
    with _bulk_load_pragmas():
        return _fill(config, stream=stream, log=log)


# SQLite page cache of the filling connection (KiB, as cache_size takes it).
FILL_CACHE_KIB = 1024 * 1024


@contextlib.contextmanager
def _bulk_load_pragmas() -> Iterator[None]:
    """On SQLite, a 1 GB page cache and sorter threads for the fill's connection.

    The uuid index stays in place during a fill and takes each event at a
    random leaf: at 10M events it is 460 MB, and with the 16 MB a web worker
    keeps (settings) nearly every insert read a page back from the kernel.
    CREATE INDEX sorts in memory up to the same limit, and with helper threads
    on the second core (the event builders are done by then)."""
    if connection.vendor != "sqlite":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA cache_size")
        cache_size = cursor.fetchone()[0]
        cursor.execute(f"PRAGMA cache_size = -{FILL_CACHE_KIB}")
        cursor.execute(f"PRAGMA threads = {os.cpu_count() or 1}")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA cache_size = {int(cache_size)}")
            cursor.execute("PRAGMA threads = 0")


def _fill(config: BenchConfig, *, stream: TextIO, log: Log) -> dict[str, Any]:
    restore_missing_indexes()  # a fill killed while its indexes were dropped
    existing = AuditEvent.objects.count()
    todo = max(0, config.events - existing) if config.reuse else config.events
    info: dict[str, Any] = {"existing": existing, "inserted": todo}
    if todo:
        jobs = fill_jobs(todo)
        defer = todo >= max(existing, DEFER_INDEXES_FROM)
        log(
            f"fill: {todo} events ({existing} already there), built by {jobs} "
            f"process{'es' if jobs > 1 else ''}" + (", indexes built after" if defer else "")
        )
        now = timezone.now()
        # A top-up (--reuse) numbers its leads past any lead already there:
        # there are fewer leads than events, so existing + 1 is always free.
        chunks = [
            (min(FILL_CHUNK, todo - start), config.seed + existing + n, now, existing + 1 + start)
            for n, start in enumerate(range(0, todo, FILL_CHUNK))
        ]
        bar = tqdm(total=todo, unit="event", desc="fill", file=stream, disable=None)
        started = perf_counter()
        inserted = 0
        with indexes_deferred(AuditEvent) if defer else contextlib.nullcontext():
            for rows in _built_chunks(chunks, jobs=jobs):
                with transaction.atomic():
                    inserted += insert_rows(rows)
                bar.update(len(rows))
            indexed = perf_counter()
        elapsed = perf_counter() - started
        bar.close()
        if inserted != todo:
            raise BenchError(f"fill inserted {inserted} events, expected {todo}")
        info.update(seconds=round(elapsed, 2), events_per_s=round(todo / elapsed), jobs=jobs)
        if defer:
            info["index_seconds"] = round(perf_counter() - indexed, 2)
    else:
        log(f"fill: skipped, the database already holds {existing} events (--reuse)")
    started = perf_counter()
    sealed = seal_everything(stream=stream)
    elapsed = perf_counter() - started
    info.update(sealed=sealed, seal_seconds=round(elapsed, 2))
    if sealed:
        info["seal_events_per_s"] = round(sealed / elapsed)
    return info


def fill_jobs(todo: int) -> int:
    """Processes that build events while this one inserts: one per CPU for a big fill."""
    return 1 if todo < FILL_CHUNK * 2 else max(1, min(os.cpu_count() or 1, 4))


def build_chunk(count: int, seed: int, now: datetime, first_lead: int) -> list[tuple[Any, ...]]:
    """`count` synthetic events, validated and MAC'd, as rows for insert_rows.

    Each chunk is a population of whole journeys of its own (leads from
    `first_lead`, fewer than `count` of them) spread over the 90 days."""
    return [
        storage_row(event_fields(**kw))
        for kw in synthetic_events(count, seed=seed, now=now, first_lead=first_lead)
    ]


def _built_chunks(
    chunks: list[tuple[int, int, datetime, int]], *, jobs: int
) -> Iterator[list[tuple[Any, ...]]]:
    """build_chunk of each chunk, in order: here, or in `jobs` forked processes a
    few chunks ahead (as the legacy import parses), so both cores work."""
    if jobs <= 1:
        for chunk in chunks:
            yield build_chunk(*chunk)
        return
    # Forked: the workers start with Django set up; they inherit this process's
    # connection, never use it, and leave through os._exit.
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        window: deque[Future[list[tuple[Any, ...]]]] = deque()
        for chunk in chunks:
            window.append(pool.submit(build_chunk, *chunk))
            if len(window) > 2 * jobs:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


@contextlib.contextmanager
def indexes_deferred(model: type[Model]) -> Iterator[None]:
    """Drop the model's secondary indexes for a bulk load, build them again after.

    Building an index from a full table sorts once; keeping it during the load
    updates a B-tree per row at a random place (the uuid and correlation ids)."""
    with connection.schema_editor() as editor:
        for index in model._meta.indexes:
            editor.remove_index(model, index)
    try:
        yield
    finally:
        restore_missing_indexes(model)


def restore_missing_indexes(model: type[Model] = AuditEvent) -> list[str]:
    """Create any of the model's Meta.indexes the database lacks; their names."""
    with connection.cursor() as cursor:
        present = set(connection.introspection.get_constraints(cursor, model._meta.db_table))
    missing = [index for index in model._meta.indexes if index.name not in present]
    if missing:
        with connection.schema_editor() as editor:
            for index in missing:
                editor.add_index(model, index)
    return [index.name for index in missing]


def seal_everything(*, stream: TextIO) -> int:
    """seal_all(), with a progress bar: seal blocks and fill the hourly rollups."""
    last = AuditSeal.objects.order_by("-number").values_list("high_water", flat=True).first()
    pending = AuditEvent.objects.filter(id__gt=last or 0).count()
    sealed = 0
    with tqdm(total=pending, unit="event", desc="seal", file=stream, disable=None) as bar:
        while (seal := seal_pending()) is not None:
            sealed += seal.event_count
            bar.update(seal.event_count)
    return sealed


# --- 2. durable write latency -------------------------------------------------------------


def measure_write_latency(
    count: int, *, leads: list[str], rng: random.Random, correlation_id: str
) -> dict[str, Any]:
    calls = [
        random_write(rng, lead_id=rng.choice(leads), correlation_id=correlation_id)
        for _ in range(count)
    ]
    samples = []
    # No transaction.atomic(): in autocommit each INSERT is its own transaction,
    # so each call pays one commit (an fdatasync of the WAL, core/db/sqlite3)
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


def measure_concurrent_writes(
    *, writers: int, per_writer: int, leads: list[str], seed: int, run_id: str
) -> dict[str, Any]:
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
    procs = [ctx.Process(target=writer_process, args=(s, barrier, results)) for s in specs]
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
    return [event_to_legacy(e) for e in selectors.lead_history(lead_id=lead_id)]


def read_page(
    event_type: str, *, now: datetime, before: tuple[datetime, int] | None = None
) -> list:
    qs = selectors.event_list(event_type=event_type, since=now - STATS_WINDOW, before=before)
    return list(qs[:PAGE_SIZE])


def read_statistics(now: datetime) -> dict[str, Any]:
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


IMPORT_TARGET_LINES_PER_S = 20_000


def measure_legacy_import(lines: int, *, seed: int) -> dict[str, Any]:
    """import_audit_log's import of a legacy log as the legacy logger wrote it
    (no event ids, one line in ten an error with its fields in details), then
    the same file again (what a resumed import reads past)."""
    with tempfile.TemporaryDirectory(prefix="audit-bench-import-") as tmp:
        path = Path(tmp) / "audit.log"
        with open(path, "w", encoding="utf-8") as out:
            out.writelines(
                legacy_lines(lines, seed=seed, workflows=[f"{BENCH_PREFIX}legacy-{seed}"])
            )
        jobs = default_jobs([path])
        started = perf_counter()
        first = import_files([path], jobs=jobs)
        first_s = perf_counter() - started
        started = perf_counter()
        again = import_files([path], jobs=jobs)
        again_s = perf_counter() - started
    return {
        "lines": lines,
        "jobs": jobs,
        "imported": first.imported,
        "already_present": first.already_present,
        "bad": len(first.bad),
        "seconds": round(first_s, 2),
        "lines_per_s": round(lines / first_s),
        "reimport_lines_per_s": round(lines / again_s),
        "reimport_imported": again.imported,
    }


def format_table(result: BenchResult) -> str:
    status = result.target_status()
    fill, conc, reads, legacy = result.fill, result.concurrent, result.reads, result.legacy
    mirror_state = f"on ({result.mirror})" if result.mirror else "off"

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
    if result.legacy_import:
        imp = result.legacy_import
        rows += [
            (
                f"legacy import, {imp['lines']} lines, {imp['jobs']} parsing processes (lines/s)",
                f"{imp['lines_per_s']} (again: {imp['reimport_lines_per_s']})",
                f">= {IMPORT_TARGET_LINES_PER_S}",
                "PASS" if imp["lines_per_s"] >= IMPORT_TARGET_LINES_PER_S else "FAIL",
            )
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
        f"events in database: {result.events_in_database}; JSON Lines mirror: {mirror_state}",
    ]
    if legacy:
        lines.append(f"legacy export: {legacy['exported']} lines, {legacy['file_mb']} MB")
    lines.append("")
    for row in rows:
        lines.append(
            " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        )
    if result.views:
        leads = result.lead_fill
        about = (
            f"{leads['requested']} bench leads ({leads['inserted']} added now)"
            if leads
            else "lead fill skipped (--leads 0)"
        )
        lines += ["", f"dashboard views: server time through the test client; {about}"]
        lines.append(bench_views.format_view_table(result.views))
    return "\n".join(lines)
