"""Gunicorn settings for the web service (deploy/orchestrator-web.service).

Every value can be overridden from the environment (GUNICORN_*), so one file
serves every web machine. Gunicorn reads this file itself; it is not imported
by Django.
"""

import multiprocessing
import os


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


wsgi_app = "orchestrator.wsgi:application"

# A unix socket for a local proxy (unix:/run/orchestrator/web.sock), or
# host:port when the load balancer talks to gunicorn directly.
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000").split(",")

# Sync workers: the views are short database queries; 2 per core + 1 is
# gunicorn's own rule of thumb. Each holds one database connection, so mind
# PostgreSQL's max_connections across all web machines (see README).
workers = _int("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1)
threads = _int("GUNICORN_THREADS", 1)
# Exports stream up to a few minutes of rows; anything longer is stuck.
timeout = _int("GUNICORN_TIMEOUT", 120)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Above the load balancer's idle timeout, so the balancer closes idle
# connections first and never sends on one gunicorn just closed.
keepalive = _int("GUNICORN_KEEPALIVE", 75)
# Recycle workers now and then so that a slow leak cannot grow forever;
# the jitter keeps them from restarting all at once.
max_requests = _int("GUNICORN_MAX_REQUESTS", 2000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 200)

# Proxies whose X-Forwarded-* headers are believed (comma-separated IPs or
# networks). Keep it to the load balancers: a client could otherwise claim
# to have come over HTTPS.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# Logs to stderr (journald under systemd). The access log says who, what,
# status, bytes, and how long in microseconds (%(D)s), the number to watch.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
access_log_format = (
    '%(h)s "%({x-forwarded-for}i)s" %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)sus'
)
# Let systemd's journal keep the worker's stdout/stderr too.
capture_output = True

# Request size limits; the largest legitimate request is a CSV lead import
# through the admin, which Django limits separately.
limit_request_line = 8190
limit_request_fields = 100
