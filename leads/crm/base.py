"""What every CRM connector shares: the HTTP session, retries, error classes, call records.

A connector does two things for a lead: `upsert` (find the contact by the
lead's email or external key, create or update it, return its id) and
`update` (push the lead's fields to a known id). Both are retried as a whole
with exponential backoff and jitter on connection errors, timeouts, 429 and
5xx, waiting what Retry-After says when the CRM says it. The whole upsert is
retried, not its last request, so a create that timed out is preceded by a
fresh search on the next attempt and never makes a second contact.

Errors are classified where they are raised: `CrmError(permanent=True)` for
what a retry cannot fix (a 4xx validation error, a missing credential),
`permanent=False` for the rest. Every HTTP call writes a CrmCall row with its
latency and outcome.

Options common to all connectors (CrmConnection.options):

    {"timeout": [5, 30],        # connect, read seconds
     "max_attempts": 4,         # per upsert/update, first try included
     "backoff": 0.5,            # first wait in seconds; doubles, with jitter
     "max_backoff": 30,
     "max_retry_after": 60,     # a longer Retry-After ends the attempts at once
     "max_deferrals": 10,       # rate-limit postponements in a row before a failure
     "rate_limit": 10,          # requests per second in a sync_crm pass
     "concurrency": 4}          # records a sync_crm pass syncs at once

A sync that still meets 429 (or a Retry-After) when its tries run out is
postponed, not failed: the service reschedules the record for after the wait
(see services._record_deferral). `rate_limit` defaults to HubSpot's smallest
private-app allowance, 100 requests per 10 seconds; a pass never goes
faster than it, whatever `concurrency` says.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import requests
from tenacity import RetryCallState

from core.credentials import CredentialError, read_credential
from core.retry import parse_retry_after, retrying
from leads.crm.models import CrmCall

if TYPE_CHECKING:
    from leads.crm.models import CrmConnection
    from leads.crm.throttle import RateLimiter
    from leads.models import Lead

DEFAULT_TIMEOUT = (5.0, 30.0)
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_BACKOFF = 0.5
DEFAULT_MAX_BACKOFF = 30.0
DEFAULT_MAX_RETRY_AFTER = 60.0
DEFAULT_MAX_DEFERRALS = 10
DEFAULT_RATE_LIMIT = 10.0
DEFAULT_CONCURRENCY = 4
ERROR_BODY_CHARS = 500
USER_AGENT = "automation-orchestrator-crm/1"

T = TypeVar("T")


def sleep(seconds: float) -> None:
    """The retry policy's sleep; tests replace it so they do not wait."""
    time.sleep(seconds)


class CrmError(Exception):
    """A CRM call failed. `permanent` says whether trying again could help."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
        body: str = "",
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status
        self.retry_after = retry_after
        self.body = body

    @property
    def rate_limited(self) -> bool:
        """The CRM asked us to come back later: a reason to wait, not a failure."""
        return not self.permanent and (self.status == 429 or self.retry_after is not None)


class CrmConfigError(CrmError):
    """The connection is incomplete, or a credential it names is not set."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


class CrmNotFound(CrmError):
    """The contact the record points at is gone from the CRM (deleted or merged)."""


@dataclass(frozen=True)
class Upsert:
    external_id: str
    created: bool


def _timeout(value: Any) -> tuple[float, float]:
    if isinstance(value, int | float):
        return (float(value), float(value))
    if isinstance(value, list | tuple) and len(value) == 2:
        return (float(value[0]), float(value[1]))
    raise CrmConfigError(f"options.timeout must be seconds or [connect, read], not {value!r}")


class BaseConnector:
    kind: ClassVar[str] = ""
    default_base_url: ClassVar[str] = ""
    # Lead field -> CRM property, used when the connection maps nothing.
    default_field_mapping: ClassVar[Mapping[str, str | list[str]]] = {}

    def __init__(self, connection: CrmConnection) -> None:
        self.connection = connection
        options = connection.options or {}
        self.base_url = (connection.base_url or self.default_base_url).rstrip("/")
        if not self.base_url:
            raise CrmConfigError(
                f"CRM connection {connection.name!r} needs a base URL for {self.kind}"
            )
        self.timeout = _timeout(options.get("timeout", DEFAULT_TIMEOUT))
        self.max_attempts = int(options.get("max_attempts", DEFAULT_MAX_ATTEMPTS))
        self.backoff = float(options.get("backoff", DEFAULT_BACKOFF))
        self.max_backoff = float(options.get("max_backoff", DEFAULT_MAX_BACKOFF))
        self.max_retry_after = float(options.get("max_retry_after", DEFAULT_MAX_RETRY_AFTER))
        self.max_deferrals = int(options.get("max_deferrals", DEFAULT_MAX_DEFERRALS))
        self.rate_limit = float(options.get("rate_limit", DEFAULT_RATE_LIMIT))
        self.concurrency = max(1, int(options.get("concurrency", DEFAULT_CONCURRENCY)))
        if self.rate_limit <= 0:
            raise CrmConfigError(f"options.rate_limit must be positive, not {self.rate_limit!r}")
        # Shared by the threads of a sync_crm pass; None for a lone task.
        self.limiter: RateLimiter | None = None
        # Called just before a create is sent, so the record remembers it even
        # if the process dies waiting for the answer.
        self.before_create: Callable[[], None] | None = None
        # A create was sent by an earlier sync and its answer never came.
        self.create_attempted = False
        # One session per connection: keep-alive across the calls of a sync
        # and across the leads of a sync_crm pass.
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers["Accept"] = "application/json"
        self.lead: Lead | None = None
        self.attempt = 0
        # Set when a create was sent but its answer never came: the contact
        # may exist now, so the next attempt finding it still means "created".
        self.create_maybe_sent = False
        self.calls = 0
        self._last_call: CrmCall | None = None

    # --- Credentials ----------------------------------------------------------------

    def secret(self, key: str, what: str) -> str:
        """The value of the environment variable that credentials[key] names."""
        name = (self.connection.credentials or {}).get(key)
        if not name:
            raise CrmConfigError(
                f"CRM connection {self.connection.name!r}: credentials.{key} must name the "
                f"environment variable that holds the {what}"
            )
        try:
            # Checked again here, not only on save: a row written past the
            # validators (raw SQL, a restored dump) must not read SECRET_KEY either.
            return read_credential(
                name,
                purpose=f"the {what} for CRM connection {self.connection.name!r}, "
                f"credentials.{key}",
            )
        except CredentialError as exc:
            raise CrmConfigError(str(exc)) from None

    # --- Lead fields ------------------------------------------------------------------

    def properties(self, lead: Lead) -> dict[str, Any]:
        """The lead's fields under the CRM's property names."""
        mapping = self.connection.field_mapping or self.default_field_mapping
        props: dict[str, Any] = {}
        for field, target in mapping.items():
            if field.startswith("extra."):
                value = (lead.extra or {}).get(field.removeprefix("extra."))
            else:
                value = getattr(lead, field, None)
            # Blank means "unknown here", not "erase it in the CRM".
            if value is None or value == "":
                continue
            if isinstance(target, list):
                first, _, rest = str(value).strip().partition(" ")
                if rest.strip():
                    props[target[0]] = first
                    props[target[1]] = rest.strip()
                else:
                    props[target[1]] = first
            else:
                props[target] = value
        return props

    # --- The operations, retried ------------------------------------------------------

    def upsert(self, lead: Lead) -> Upsert:
        """Create the lead's contact, or update the one that exists; return its id."""
        return self._retried(lead, self.upsert_once, lead)

    def update(self, external_id: str, lead: Lead) -> None:
        """Push the lead's fields to the contact with this id (CrmNotFound if gone)."""
        self._retried(lead, self.update_once, external_id, lead)

    def upsert_once(self, lead: Lead) -> Upsert:
        raise NotImplementedError

    def update_once(self, external_id: str, lead: Lead) -> None:
        raise NotImplementedError

    def _retried(self, lead: Lead, fn: Callable[..., T], *args: Any) -> T:
        self.attempt = 0
        self.calls = 0
        # A contact an earlier sync may have created and that is found now
        # still counts as created by this system.
        self.create_maybe_sent = self.create_attempted
        self.lead = lead

        def before(state: RetryCallState) -> None:
            self.attempt = state.attempt_number

        policy = retrying(
            transient=lambda e: isinstance(e, CrmError) and not e.permanent,
            attempts=self.max_attempts,
            base=self.backoff,
            cap=self.max_backoff,
            # Waiting minutes inside a task helps nobody: a longer Retry-After
            # ends the tries and the record-level retry (sync_crm) comes back later.
            max_retry_after=self.max_retry_after,
            # Looked up at call time so tests can replace base.sleep.
            sleep=lambda seconds: sleep(seconds),
            before=before,
            before_sleep=self._mark_retried,
        )
        return policy(fn, *args)

    def _mark_retried(self, state: RetryCallState) -> None:
        self.mark_last_call_retried()

    def mark_last_call_retried(self) -> None:
        """The last call failed but will be tried again (now, or by a postponed sync)."""
        if self._last_call is not None and self._last_call.outcome == CrmCall.Outcome.TRANSIENT:
            self._last_call.outcome = CrmCall.Outcome.RETRY
            CrmCall.objects.filter(pk=self._last_call.pk).update(outcome=CrmCall.Outcome.RETRY)

    # --- HTTP -----------------------------------------------------------------------

    def request(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        creates: bool = False,
        passthrough: Mapping[int, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send one request; return the response or raise a classified CrmError.

        `passthrough` maps statuses the caller handles itself (HubSpot's 409,
        Salesforce's 401) to the outcome their call row records. `creates`
        marks a request that makes a contact, so an answer lost on the way
        back is remembered (see create_maybe_sent).
        """
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        if creates and self.before_create is not None:
            self.before_create()
        if self.limiter is not None:
            self.limiter.acquire()
        started = time.perf_counter()
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.Timeout as exc:
            self.create_maybe_sent |= creates
            error = CrmError(f"{method} {urlsplit(url).path} timed out: {exc}")
            self._record(operation, method, url, None, started, error)
            raise error from exc
        except requests.ConnectionError as exc:
            self.create_maybe_sent |= creates
            error = CrmError(f"{method} {urlsplit(url).path} could not connect: {exc}")
            self._record(operation, method, url, None, started, error)
            raise error from exc
        except requests.RequestException as exc:
            # InvalidURL, MissingSchema, ...: the configuration, not the network.
            error = CrmError(f"{method} {url}: {exc}", permanent=True)
            self._record(operation, method, url, None, started, error)
            raise error from exc
        if passthrough and response.status_code in passthrough:
            outcome = passthrough[response.status_code]
            self._record(operation, method, url, response.status_code, started, None, outcome)
            return response
        error = self.classify(response)
        if error is not None and error.rate_limited and self.limiter is not None:
            # Every thread of the pass waits, not only the one that was told.
            self.limiter.hold(
                error.retry_after if error.retry_after is not None else self.backoff,
                at_most=self.max_retry_after,
            )
        if error is not None and not error.permanent and response.status_code >= 500:
            self.create_maybe_sent |= creates
        self._record(operation, method, url, response.status_code, started, error)
        if error is not None:
            raise error
        return response

    def classify(self, response: requests.Response) -> CrmError | None:
        """None for a success; otherwise the error, permanent or not."""
        status = response.status_code
        if status < 300:
            return None
        body = response.text[:ERROR_BODY_CHARS]
        path = urlsplit(response.url).path
        message = f"{response.request.method} {path} returned {status}: {body}"
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status == 429 or status == 408 or status >= 500:
            return CrmError(message, status=status, retry_after=retry_after, body=body)
        if status == 404:
            return CrmNotFound(message, permanent=True, status=status, body=body)
        # 400 (validation), 401/403 (credentials), 409, 3xx: the same request
        # would fail the same way.
        return CrmError(message, permanent=True, status=status, body=body)

    def id_from(self, response: requests.Response, key: str = "id") -> str:
        """The record id in a JSON object answer, or a CrmError saying it is missing."""
        data = self.json(response)
        if not isinstance(data, dict) or data.get(key) in (None, ""):
            raise CrmError(
                f"{response.request.method} {urlsplit(response.url).path} answered "
                f"{response.status_code} without {key!r}: {response.text[:ERROR_BODY_CHARS]}",
                permanent=True,
                status=response.status_code,
            )
        return str(data[key])

    def json(self, response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            # A proxy's HTML error page with a 200: worth another try.
            raise CrmError(
                f"{response.request.method} {urlsplit(response.url).path} returned "
                f"{response.status_code} with a body that is not JSON: "
                f"{response.text[:ERROR_BODY_CHARS]}",
                status=response.status_code,
            ) from None

    def _record(
        self,
        operation: str,
        method: str,
        url: str,
        status: int | None,
        started: float,
        error: CrmError | None,
        outcome: str | None = None,
    ) -> None:
        latency_ms = round((time.perf_counter() - started) * 1000)
        if outcome is None:
            if error is None:
                outcome = CrmCall.Outcome.OK
            elif error.permanent:
                outcome = CrmCall.Outcome.PERMANENT
            else:
                # Becomes "retry" if the policy tries again (_mark_retried).
                outcome = CrmCall.Outcome.TRANSIENT
        self.calls += 1
        self._last_call = CrmCall.objects.create(
            connection=self.connection,
            lead=self.lead if self.lead is not None and self.lead.pk else None,
            operation=operation,
            method=method,
            path=urlsplit(url).path[:500],
            status_code=status,
            outcome=outcome,
            latency_ms=latency_ms,
            attempt=max(self.attempt, 1),
            error=str(error)[:500] if error else "",
        )
