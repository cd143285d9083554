"""The pace of one `sync_crm` pass against one CRM, shared by its worker threads.

No dependency does this: django-ratelimit counts requests per cache window
and refuses the one over the limit, but a batch wants to wait for its turn;
tenacity retries, it does not pace. A token bucket holding one token is a
few lines: requests start at least 1/rate seconds apart, whichever thread
sends them, and a 429 holds every thread for what Retry-After says.
"""

from __future__ import annotations

import threading
import time


class RateLimiter:
    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate!r}")
        self.interval = 1.0 / rate
        self._lock = threading.Lock()
        # time.monotonic() at which the next request may start.
        self._next = 0.0
        # No request before this (a 429's wait, capped).
        self._held_until = 0.0
        # Until when the CRM asked us to stay away (may be later than _held_until).
        self._closed_until = 0.0

    def acquire(self) -> None:
        """Wait for this thread's turn to send one request."""
        while True:
            with self._lock:
                now = time.monotonic()
                start = max(now, self._next, self._held_until)
                self._next = start + self.interval
            # Sleep outside the lock: the slot is reserved, the next thread
            # takes the one after it.
            if start > now:
                time.sleep(start - now)
            with self._lock:
                # A 429 that came in while this thread slept holds it too.
                if self._held_until <= time.monotonic():
                    return

    def hold(self, seconds: float, *, at_most: float) -> None:
        """The CRM said to wait: no thread sends before then, but none waits longer than
        `at_most` (`closed_for` tells the pass to leave the rest for later)."""
        with self._lock:
            now = time.monotonic()
            self._closed_until = max(self._closed_until, now + seconds)
            self._held_until = max(self._held_until, now + min(seconds, at_most))

    def closed_for(self) -> float:
        """Seconds the CRM still wants us to stay away."""
        with self._lock:
            return max(0.0, self._closed_until - time.monotonic())
