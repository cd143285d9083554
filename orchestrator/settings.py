"""Settings for Automation Orchestrator, read from environment variables.

Every variable is documented in `.env.example`. Defaults are for a developer
machine (SQLite under var/); production sets DATABASE_URL, SECRET_KEY,
AUDIT_SIGNING_KEY, ALLOWED_HOSTS and HTTPS=true.
"""

import importlib.util
import os
from pathlib import Path

import dj_database_url
from django.utils.csp import CSP

from core.env import envbool, envfloat, envint, envlist, envstr

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = envbool("DEBUG", False)
# The "django-insecure-" prefix makes `check --deploy` flag a missing key.
SECRET_KEY = envstr("SECRET_KEY", "django-insecure-development-only-key-do-not-use-in-production")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "django_tasks_db",
    # Lowest layer first: core < audit < leads < orchestrator (docs/architecture.md).
    "core",
    "audit",
    "leads",
    "leads.crm",
    "leads.followups",
    "leads.workflows",
    "orchestrator",
    "orchestrator.monitoring.alerts",
    "orchestrator.monitoring.reports",
]
# The benchmark, the demo loader and the screenshots are development tools: a
# built package leaves them out, and then so does this list.
if importlib.util.find_spec("orchestrator.devtools") is not None:
    INSTALLED_APPS.append("orchestrator.devtools")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files straight from gunicorn, before sessions or auth run for them.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "orchestrator.middleware.UserInputErrorMiddleware",
    # Around the view alone; sessions and users are read from the primary anyway
    # (core.db.routers.PRIMARY_APPS).
    "orchestrator.middleware.ReplicaReadsMiddleware",
]

ROOT_URLCONF = "orchestrator.urls"
WSGI_APPLICATION = "orchestrator.wsgi.application"
ASGI_APPLICATION = "orchestrator.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'var' / 'orchestrator.sqlite3'}",
        conn_max_age=envint("DB_CONN_MAX_AGE", 0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Without it a database host that drops packets blocks a connect (and a
    # /healthz probe) for the kernel's TCP timeout, minutes. A connect_timeout
    # in DATABASE_URL's query string wins.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", envint("DB_CONNECT_TIMEOUT", 5)
    )
# The audit INSERT is a prepared statement on PostgreSQL (audit/services.py);
# false for a pooler that cannot keep them (PgBouncer in transaction mode < 1.21).
DB_PREPARED_STATEMENTS = envbool("DB_PREPARED_STATEMENTS", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Django's SQLite backend with a queue for writers (core/db/sqlite3/base.py):
    # the next writer starts when the last commits, not after a busy-wait sleep.
    DATABASES["default"]["ENGINE"] = "core.db.sqlite3"
    DATABASES["default"]["OPTIONS"] = {
        # IMMEDIATE takes the write lock at BEGIN, so concurrent writers queue on
        # the busy timeout instead of failing with "database is locked" when a
        # read transaction tries to upgrade.
        "transaction_mode": "IMMEDIATE",
        "timeout": envint("SQLITE_BUSY_TIMEOUT", 30),
        # WAL lets readers run beside the writer. synchronous=NORMAL hands the
        # WAL's fsync to the backend, which makes it after dropping the write
        # lock and before the commit returns (group commit, core/db/sqlite3):
        # a committed audit event is on disk across a power loss, as with FULL.
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
            # 16 MB of pages per connection (the upper levels of the audit
            # indexes stay in it between writes; the rest is in the kernel's
            # page cache) and no mmap: with 64 MB and a 256 MB mmap a web
            # worker grew to 430 MB after one dashboard walk (write_bench), 140
            # now, with the same page times.
            "PRAGMA cache_size=-16384; PRAGMA mmap_size=0;"
        ),
    }
    # A file, not :memory:, so tests can start writer processes on the same
    # database; named by process so two test runs on one checkout do not clash.
    DATABASES["default"]["TEST"] = {
        "NAME": str(BASE_DIR / "var" / f"test-{os.getpid()}.sqlite3"),
    }
    # SQLite creates the file but not its folder: on a fresh clone every
    # command (check, migrate, ...) would die with "unable to open database
    # file". Only the default folder: a DATABASE_URL naming a folder that does
    # not exist is a mistake (or an outage) to report, not to paper over.
    (BASE_DIR / "var").mkdir(exist_ok=True)

# A streaming read replica (a hot standby of the PostgreSQL primary): dashboard and
# API pages read from it, everything else from the primary (core/db/routers.py,
# docs/scaling.md). Tests mirror it onto the primary.
if os.environ.get("DATABASE_REPLICA_URL"):
    DATABASES["replica"] = dj_database_url.parse(
        os.environ["DATABASE_REPLICA_URL"],
        conn_max_age=envint("DB_CONN_MAX_AGE", 0),
        conn_health_checks=True,
    )
    DATABASES["replica"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", envint("DB_CONNECT_TIMEOUT", 5)
    )
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
    DATABASE_ROUTERS = ["core.db.routers.ReplicaRouter"]
# After a browser writes, its pages read the primary for this long (read your own
# writes): more than a healthy replica's lag, which is milliseconds.
REPLICA_PIN_SECONDS = envint("REPLICA_PIN_SECONDS", 10)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache --------------------------------------------------------------------------
# In the database so rate limits hold across processes and machines with no
# extra service; `migrate` is followed by `createcachetable` (see Makefile).
CACHES = {
    "default": {
        # Django's DatabaseCache, storing JSON: nothing read back is unpickled.
        "BACKEND": "core.cache.JSONDatabaseCache",
        "LOCATION": "orchestrator_cache",
    }
}
RATELIMIT_USE_CACHE = "default"
# The counters live in the database: when it cannot count, it cannot store a
# lead or check a password either, and the request then fails with a 503 that
# says so instead of a 429 that would blame the client.
RATELIMIT_FAIL_OPEN = True
# Behind a proxy, the request header that holds the client's IP (HTTP_X_REAL_IP with
# deploy/nginx.conf); read by core.http.client_ip for rate limits and the audit
# trail alike. The variable keeps its first name, RATELIMIT_IP_META_KEY.
CLIENT_IP_META_KEY = envstr("RATELIMIT_IP_META_KEY")
RATELIMIT_IP_META_KEY = "core.http.client_ip"
# Failed logins (dashboard and admin) allowed per account and per client IP
# before the login form refuses to try (django-ratelimit rates: count/period).
LOGIN_FAILURES_PER_ACCOUNT = envstr("LOGIN_FAILURES_PER_ACCOUNT", "5/15m")
LOGIN_FAILURES_PER_IP = envstr("LOGIN_FAILURES_PER_IP", "30/h")

# --- Lead intake ------------------------------------------------------------------------
LEADS_API_RATE = envstr("LEADS_API_RATE", "120/m")  # per API key
LEADS_FORM_RATE = envstr("LEADS_FORM_RATE", "10/m")  # public form, per client IP
# Retry-After of the 503 the lead API answers when the database refuses writes.
LEADS_RETRY_AFTER_SECONDS = envint("LEADS_RETRY_AFTER_SECONDS", 30)

# --- Events API (orchestrator/api) ----------------------------------------------------
# A POST /api/v1/events holds at most this many events and bytes (413 beyond).
EVENTS_API_MAX_EVENTS = envint("EVENTS_API_MAX_EVENTS", 1000)
EVENTS_API_MAX_BYTES = envint("EVENTS_API_MAX_BYTES", 1024 * 1024)
EVENTS_API_RATE = envstr("EVENTS_API_RATE", "60/m")  # per API key, reads and writes
# Events per page of GET /api/v1/events and of a lead's history.
EVENTS_API_PAGE_SIZE = envint("EVENTS_API_PAGE_SIZE", 100)

# --- Follow-up emails ---------------------------------------------------------------
# Each run_workflow pass enqueues again the email step of routed leads processed
# within this many days that have no enrollment and no queued run (a run that
# failed is retried at most every RETRY_MINUTES, and only once its sequence exists).
FOLLOWUPS_RECONCILE_DAYS = envint("FOLLOWUPS_RECONCILE_DAYS", 7)
FOLLOWUPS_RECONCILE_RETRY_MINUTES = envint("FOLLOWUPS_RECONCILE_RETRY_MINUTES", 15)
# Where the unsubscribe, open and click links point (this site's public URL).
FOLLOWUPS_BASE_URL = envstr("FOLLOWUPS_BASE_URL", "http://localhost:8000")
# Domain for Message-IDs (default: the sender's domain).
FOLLOWUPS_MESSAGE_ID_DOMAIN = envstr("FOLLOWUPS_MESSAGE_ID_DOMAIN", "")
# A mailto: unsubscribe address; it must reach an inbox the poll reads.
FOLLOWUPS_UNSUBSCRIBE_MAILTO = envstr("FOLLOWUPS_UNSUBSCRIBE_MAILTO", "")
FOLLOWUPS_MAX_ATTEMPTS = envint("FOLLOWUPS_MAX_ATTEMPTS", 10)
FOLLOWUPS_RETRY_BASE_SECONDS = envint("FOLLOWUPS_RETRY_BASE_SECONDS", 60)
FOLLOWUPS_TRACKING_MAX_AGE_DAYS = envint("FOLLOWUPS_TRACKING_MAX_AGE_DAYS", 180)
# The open pixel and click links are public: one click event per email and link
# in this window, and at most this many recorded hits per client IP.
FOLLOWUPS_CLICK_DEDUPE_SECONDS = envint("FOLLOWUPS_CLICK_DEDUPE_SECONDS", 3600)
FOLLOWUPS_TRACKING_RATE = envstr("FOLLOWUPS_TRACKING_RATE", "60/m")
# Every send pass requeues emails claimed longer ago than this whose sender
# died mid-send (0: never). It must exceed the longest a live sender holds one
# email (a few EMAIL_TIMEOUTs), or a slow send could go out twice.
FOLLOWUPS_STUCK_SENDING_SECONDS = envint("FOLLOWUPS_STUCK_SENDING_SECONDS", 600)

# --- Background tasks ------------------------------------------------------------
TASKS = {
    "default": {
        "BACKEND": envstr("TASKS_BACKEND", "django_tasks_db.DatabaseBackend"),
        "QUEUES": ["default"],
    }
}

# --- Auth, i18n, static -------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = envstr("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(envstr("STATIC_ROOT", str(BASE_DIR / "var" / "static")))
# Hashed, compressed file names with far-future caching, served by WhiteNoise.
# Opt-in because the manifest exists only after `collectstatic`: without it
# every {% static %} would fail (tests, runserver). deploy/orchestrator.env sets it.
STATIC_MANIFEST = envbool("STATIC_MANIFEST", False)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if STATIC_MANIFEST
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# --- Security ---------------------------------------------------------------------
# HTTPS=true is the one switch for a deployment behind TLS.
HTTPS = envbool("HTTPS", False)
SECURE_SSL_REDIRECT = HTTPS
# Load balancers probe the backends over plain HTTP; a redirect would read as down.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", HTTPS)
if envbool("BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF, CSP.NONCE],
    "img-src": [CSP.SELF, "data:"],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}

# --- Email ----------------------------------------------------------------------------
MAILERS = {
    "default": {
        "BACKEND": envstr("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend"),
        "OPTIONS": {
            "host": envstr("EMAIL_HOST", "localhost"),
            "port": envint("EMAIL_PORT", 25),
            "username": envstr("EMAIL_HOST_USER"),
            "password": envstr("EMAIL_HOST_PASSWORD"),
            "use_tls": envbool("EMAIL_USE_TLS", False),
            "use_ssl": envbool("EMAIL_USE_SSL", False),
            "timeout": envint("EMAIL_TIMEOUT", 30),
        },
    }
}
if not MAILERS["default"]["BACKEND"].endswith("smtp.EmailBackend"):
    MAILERS["default"]["OPTIONS"] = {}
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "orchestrator@localhost")
SERVER_EMAIL = envstr("SERVER_EMAIL", DEFAULT_FROM_EMAIL)
ADMINS = [("Admin", addr) for addr in envlist("ADMINS")]

# --- Reports ---------------------------------------------------------------------------
# Who gets the daily, weekly and monthly reports (comma-separated addresses).
REPORTS_RECIPIENTS = envlist("REPORTS_RECIPIENTS")
REPORTS_FROM_EMAIL = envstr("REPORTS_FROM_EMAIL", "")

# --- Integration credentials ------------------------------------------------------------
# CRM connections, alert channels and inbox sources name the environment variables
# holding their secrets; only names matching these may be read (an entry ending in _
# is a prefix, others exact names). SECRET_KEY, AUDIT_SIGNING_KEY, DATABASE_*, PG*,
# DJANGO_* and EMAIL_HOST_* are refused whatever this says (core/credentials.py).
CREDENTIAL_ENV_PREFIXES = envlist(
    "CREDENTIAL_ENV_PREFIXES",
    "CRM_,HUBSPOT_,PIPEDRIVE_,SALESFORCE_,WEBHOOK_,ALERT_,SLACK_,INBOX_,IMAP_",
)

# --- Audit ----------------------------------------------------------------------------
# Key for the per-event MAC and the seal chain. It must not live in the database:
# whoever can write the database but not read this key cannot forge events.
AUDIT_SIGNING_KEY = envstr("AUDIT_SIGNING_KEY", "")
# Extra event types beyond the built-in ones, comma-separated.
AUDIT_EXTRA_EVENT_TYPES = envlist("AUDIT_EXTRA_EVENT_TYPES")
# JSON Lines mirror for log shippers; empty turns it off.
AUDIT_JSONL_PATH = envstr("AUDIT_JSONL_PATH", str(BASE_DIR / "logs" / "audit.log"))
AUDIT_JSONL_MAX_BYTES = envint("AUDIT_JSONL_MAX_BYTES", 100 * 1024 * 1024)
AUDIT_JSONL_BACKUP_COUNT = envint("AUDIT_JSONL_BACKUP_COUNT", 30)
# Most events one seal covers, and how long a gap in the id sequence may stay
# open (a transaction still running on PostgreSQL) before it counts as closed.
AUDIT_SEAL_BATCH = envint("AUDIT_SEAL_BATCH", 50_000)
AUDIT_SEAL_GRACE_SECONDS = envint("AUDIT_SEAL_GRACE_SECONDS", 3600)
# The sealer's cadence: verify_audit warns when an event has waited longer than
# this for its seal (seal_audit --loop also uses it as its default interval).
AUDIT_SEAL_MAX_AGE_SECONDS = envint("AUDIT_SEAL_MAX_AGE_SECONDS", 60)
# Anchor log: each seal's digest, appended after commit, outside the database
# (docs/audit-integrity.md). Empty means audit-anchors.log beside AUDIT_JSONL_PATH.
AUDIT_ANCHOR_PATH = envstr("AUDIT_ANCHOR_PATH", "")
# Optional external witness: each anchor line is POSTed here, signed with the secret.
AUDIT_ANCHOR_WEBHOOK_URL = envstr("AUDIT_ANCHOR_WEBHOOK_URL", "")
AUDIT_ANCHOR_WEBHOOK_SECRET = envstr("AUDIT_ANCHOR_WEBHOOK_SECRET", "")
AUDIT_RETENTION_DAYS = envint("AUDIT_RETENTION_DAYS", 730)
# Where `prune_audit --retention` writes the events before deleting them.
AUDIT_ARCHIVE_DIR = envstr("AUDIT_ARCHIVE_DIR", str(BASE_DIR / "var" / "archive"))

# --- Dashboard ------------------------------------------------------------------------
# The event browser streams an export of at most this many events; a larger one
# runs as a task writing a file into EXPORT_DIR, offered on /dashboard/events/exports/.
EXPORT_STREAM_MAX_EVENTS = envint("EXPORT_STREAM_MAX_EVENTS", 100_000)
EXPORT_DIR = envstr("EXPORT_DIR", str(BASE_DIR / "var" / "exports"))
# `cleanup_exports` deletes finished exports (file and row) this many days old,
# and hands an export whose writer has shown no progress for EXPORT_STALE_SECONDS
# (a worker killed mid-write) to another worker, at most EXPORT_MAX_ATTEMPTS times.
EXPORT_RETENTION_DAYS = envint("EXPORT_RETENTION_DAYS", 7)
EXPORT_STALE_SECONDS = envint("EXPORT_STALE_SECONDS", 900)
EXPORT_MAX_ATTEMPTS = envint("EXPORT_MAX_ATTEMPTS", 3)
# An error-chart bucket is a spike when it exceeds the mean of the WINDOW buckets
# before it by K standard deviations and holds at least MIN_COUNT errors.
DASHBOARD_SPIKE_K = envfloat("DASHBOARD_SPIKE_K", 3.0)
DASHBOARD_SPIKE_MIN_COUNT = envint("DASHBOARD_SPIKE_MIN_COUNT", 5)
DASHBOARD_SPIKE_WINDOW = envint("DASHBOARD_SPIKE_WINDOW", 24)
# Text search in event details goes through a trigram index from three characters;
# shorter text reads every event of the range, so without a lead or correlation id
# to narrow it, the range may span at most this many days.
DASHBOARD_TEXT_SEARCH_MAX_DAYS = envint("DASHBOARD_TEXT_SEARCH_MAX_DAYS", 7)

# --- Health check --------------------------------------------------------------------
# /healthz answers 503 when no task worker has beaten for this long.
HEALTHZ_WORKER_MAX_AGE_SECONDS = envint("HEALTHZ_WORKER_MAX_AGE_SECONDS", 120)
# ... or when the next task in line has waited longer than this (0: report only).
HEALTHZ_QUEUE_MAX_WAIT_SECONDS = envint("HEALTHZ_QUEUE_MAX_WAIT_SECONDS", 0)
# ... or when an enabled workflow's last run started longer ago than this (0: report only).
HEALTHZ_WORKFLOW_MAX_AGE_SECONDS = envint("HEALTHZ_WORKFLOW_MAX_AGE_SECONDS", 0)
# How long the database check may take before it counts as down.
HEALTHZ_DB_TIMEOUT_SECONDS = envint("HEALTHZ_DB_TIMEOUT_SECONDS", 3)
# SQLite: the database counts as unwritable with less than this free on its disk.
HEALTHZ_MIN_FREE_MB = envint("HEALTHZ_MIN_FREE_MB", 64)
# ... and, on any database, while the last lead write refused was this recent.
HEALTHZ_WRITE_REFUSAL_SECONDS = envint("HEALTHZ_WRITE_REFUSAL_SECONDS", 120)
# A monitor sending "Authorization: Bearer <token>" gets every check's details;
# anonymous callers get ok/fail only. Empty: details for dashboard users only.
HEALTHZ_TOKEN = envstr("HEALTHZ_TOKEN", "")
# A task whose worker stopped mid-run (no heartbeat for HEALTHZ_WORKER_MAX_AGE_SECONDS)
# is handed back to the queue by the live workers; after this many workers died
# on it, it fails with that reason instead.
TASK_MAX_ATTEMPTS = envint("TASK_MAX_ATTEMPTS", 3)

# --- Alerts (manage.py check_alerts) ------------------------------------------------
# Where alert links point (the dashboard's public URL); defaults to FOLLOWUPS_BASE_URL.
ALERTS_BASE_URL = envstr("ALERTS_BASE_URL", FOLLOWUPS_BASE_URL)
ALERTS_FROM_EMAIL = envstr("ALERTS_FROM_EMAIL", DEFAULT_FROM_EMAIL)
ALERTS_MAILER = envstr("ALERTS_MAILER", "default")
ALERTS_MAX_ATTEMPTS = envint("ALERTS_MAX_ATTEMPTS", 10)
ALERTS_RETRY_BASE_SECONDS = envint("ALERTS_RETRY_BASE_SECONDS", 60)
ALERTS_RETRY_MAX_SECONDS = envint("ALERTS_RETRY_MAX_SECONDS", 3600)
ALERTS_HTTP_ATTEMPTS = envint("ALERTS_HTTP_ATTEMPTS", 3)  # per pass, first try included
ALERTS_HTTP_TIMEOUT = envint("ALERTS_HTTP_TIMEOUT", 10)
# The first in-pass wait in seconds; doubles, with jitter, up to ten times it.
ALERTS_HTTP_BACKOFF = envfloat("ALERTS_HTTP_BACKOFF", 0.5)

# --- Logging ----------------------------------------------------------------------------
# LOG_FORMAT=json: one JSON object per line, for journald/log shippers.
LOG_FORMAT = envstr("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ValueError(f"LOG_FORMAT={LOG_FORMAT!r} is not a log format (use plain or json)")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            # ISO 8601 in UTC with microseconds, unlike asctime.
            "timestamp": "time",
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
    },
}
