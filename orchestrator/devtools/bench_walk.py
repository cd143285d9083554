"""A staff member's walk through the dashboard, through gunicorn: what it costs
the web workers' memory.

Every GET route of the dashboard (the same request shapes the view timings
use, with the fragments and links each page asks for) is fetched once over
HTTP from gunicorn with deploy/gunicorn.conf.py, logged in as the benchmark's
superuser. Streamed answers (exports) are read to their first 64 KB and cut
off, as a browser that cancels a download would. Afterwards each worker's
resident memory is read from /proc: a view that loads a whole table into
Python shows up there, not in its timing.
"""

import http.client
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from time import perf_counter
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from orchestrator.devtools import bench_intake, bench_views
from orchestrator.devtools.sampling import Timing

# What is read of a streamed answer (an export) before the walk moves on.
STREAM_PEEK = 64 * 1024


@dataclass
class WalkResult:
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    slowest: list[tuple[float, str]] = field(default_factory=list)
    # Requests after which a worker's resident memory grew most: (MB, label).
    growth: list[tuple[float, str]] = field(default_factory=list)

    def summary(self, rss: list[float], anon: list[float]) -> dict[str, Any]:
        timing = Timing(self.seconds).summary() if self.seconds else {}
        return {
            "requests": self.requests,
            "failures": self.failures[:10],
            "p50_ms": timing.get("p50_ms"),
            "p95_ms": timing.get("p95_ms"),
            "slowest": [(round(s * 1000, 1), label) for s, label in self.slowest[:5]],
            "rss_growth": [(round(mb, 1), label) for mb, label in self.growth[:5]],
            "worker_rss_mb": sorted(rss),
            "worker_rss_mb_max": max(rss, default=0),
            # Without the database's mapped pages (page cache, shared by workers).
            "worker_anon_mb": sorted(anon),
            "worker_anon_mb_max": max(anon, default=0),
        }


def session_cookie() -> str:
    """A logged-in session of the benchmark's superuser, as its cookie header."""
    user_model = get_user_model()
    user = user_model.objects.filter(username=bench_views.BENCH_USER).first()
    if user is None:
        user = user_model.objects.create_superuser(
            bench_views.BENCH_USER, f"{bench_views.BENCH_USER}@bench.invalid", None
        )
    client = Client()
    client.force_login(user)
    morsel = client.cookies[settings.SESSION_COOKIE_NAME]
    cookie: SimpleCookie = SimpleCookie()
    cookie[settings.SESSION_COOKIE_NAME] = morsel.value
    return cookie.output(attrs=[], header="").strip()


def _fetch(port: int, case: bench_views.ViewCase, cookie: str) -> tuple[int, float, bytes]:
    headers = {"Cookie": cookie, "Host": "127.0.0.1"}
    if case.htmx:
        headers["HX-Request"] = "true"
        headers["HX-Current-URL"] = case.current_url or case.path
        if case.target:
            headers["HX-Target"] = case.target
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        started = perf_counter()
        conn.request("GET", case.path, headers=headers)
        response = conn.getresponse()
        if response.getheader("Content-Length") is None and response.chunked:
            body = response.read(STREAM_PEEK)  # streamed: an export, cut off
        else:
            body = response.read()
        return response.status, perf_counter() - started, body
    finally:
        conn.close()


def walk(port: int, *, seed: int, server_pid: int) -> WalkResult:
    """Fetch every page, and what each page asks for, once."""
    call_command("createcachetable", verbosity=0)
    cookie = session_cookie()
    cases, skipped = bench_views.page_cases(bench_views.view_samples(seed=seed))
    seen = {(c.path, False) for c in cases}
    unsampled = {r.name: r for r in skipped if r.note.startswith("no sample")}
    queue = list(cases)
    result = WalkResult()
    peak = max(bench_intake._children_rss_mb(server_pid), default=0.0)
    while queue:
        case = queue.pop(0)
        status, seconds, body = _fetch(port, case, cookie)
        result.requests += 1
        result.seconds.append(seconds)
        result.slowest.append((seconds, case.label))
        now = max(bench_intake._children_rss_mb(server_pid), default=0.0)
        if now > peak:
            result.growth.append((now - peak, case.label))
            peak = now
        if status in (301, 302, 303):
            continue  # an action's answer (an export queued): the walk does not follow
        if status != 200:
            result.failures.append(f"{case.label}: HTTP {status}")
            continue
        if case.origin:
            more = bench_views.discover(case, body, seen, unsampled)
            if (case.path, True) not in seen:
                seen.add((case.path, True))
                more.insert(
                    0,
                    bench_views.ViewCase(case.name, f"{case.label} [htmx]", case.path, htmx=True),
                )
            queue[0:0] = more
    result.slowest.sort(reverse=True)
    result.growth.sort(reverse=True)
    return result


def measure_dashboard_walk(*, workers: int, seed: int) -> dict[str, Any]:
    """Walk the dashboard through gunicorn; the walk's figures and the workers' RSS."""
    with bench_intake.gunicorn(workers=workers) as (port, server):
        result = walk(port, seed=seed, server_pid=server.pid)
        rss = bench_intake._children_rss_mb(server.pid)
        anon = bench_intake._children_rss_mb(server.pid, field="RssAnon")
    return {"workers": workers, **result.summary(rss, anon)}
