"""Base for commands run by cron, a systemd timer or in a loop.

One run at a time (a database lease, so it holds across machines); --loop
with an interval; SIGTERM finishes the current unit of work and exits.
"""

import signal
import threading
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from core import locks


class ScheduledCommand(BaseCommand):
    lock_name: str = ""
    lock_ttl = timedelta(minutes=30)
    default_interval = 60

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--loop", action="store_true", help="Keep running until SIGTERM.")
        parser.add_argument(
            "--interval",
            type=float,
            default=self.default_interval,
            help=f"Seconds between passes with --loop (default {self.default_interval}).",
        )

    def run_once(self, **options: Any) -> None:
        raise NotImplementedError

    def get_lock_name(self, **options: Any) -> str | None:
        """The lease to hold; None runs without one (for deliberate scale-out)."""
        return self.lock_name

    def handle(self, *args: Any, **options: Any) -> None:
        # run_once may watch self.stop to end its unit of work early on SIGTERM.
        self.stop = threading.Event()
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, lambda *_: self.stop.set())
        try:
            self._run(**options)
        finally:
            # Called through call_command (the demo, tests), the caller's own
            # Ctrl+C handling must come back.
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _run(self, **options: Any) -> None:
        lock_name = self.get_lock_name(**options)
        holder = locks.acquire(lock_name, ttl=self.lock_ttl) if lock_name else ""
        if holder is None:
            self.stdout.write(f"{lock_name}: another run holds the lock; skipping this one.")
            return
        try:
            while True:
                self.run_once(**options)
                if not options["loop"] or self.stop.is_set():
                    break
                close_old_connections()
                if lock_name:
                    locks.renew(lock_name, holder, ttl=self.lock_ttl)
                if self.stop.wait(options["interval"]):
                    break
        finally:
            if lock_name:
                locks.release(lock_name, holder)
