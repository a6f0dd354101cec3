"""What live processes hold, per workload (comm, unit, ...): /proc read at most once per refresh interval."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Callable, Iterable, Optional

from exporter.core import proc_status

log = logging.getLogger(__name__)


class HeldCapabilities:
    """The union of the permitted sets of each workload's live processes, cached for a bounded time.

    workload_of names the workload of a process: its comm unless told otherwise.

    Scrapes may run concurrently; one /proc scan serves them all within refresh_seconds.
    With background, a scrape that finds the cache older than that is served the last scan
    and starts the next one in a thread of its own, off the scrape's path: what processes
    hold is then at most one refresh interval and one scan old, as it would be anyway
    between scans. Only a cache that was never filled is waited for; the first scan starts
    at once, in the background, so that the first scrape rarely waits long."""

    def __init__(self, refresh_seconds: float,
                 scan: Callable[[], Iterable[proc_status.ProcessCaps]] = proc_status.processes,
                 clock: Callable[[], float] = time.monotonic, background: bool = False,
                 workload_of: Callable[[proc_status.ProcessCaps], str] = lambda process: process.comm):
        self.refresh_seconds = refresh_seconds
        self.workload_of = workload_of
        self.scan = scan
        self.clock = clock
        self.background = background and refresh_seconds > 0
        self._lock = threading.Lock()
        self._read_at: Optional[float] = None
        self._by_workload: dict[str, int] = {}
        self._scanning: Optional[threading.Thread] = None
        if self.background:
            self._start_scan()

    def by_workload(self) -> dict[str, int]:
        if not self.background:
            with self._lock:
                now = self.clock()
                if self._read_at is None or now - self._read_at >= self.refresh_seconds:
                    self._by_workload = permitted_by(self.scan(), self.workload_of)
                    self._read_at = now
                return self._by_workload
        with self._lock:
            if self._read_at is not None and self.clock() - self._read_at >= self.refresh_seconds:
                self._start_scan()
            waiting_for = self._scanning if self._read_at is None else None
        if waiting_for is not None:
            waiting_for.join()
        with self._lock:
            return self._by_workload

    def _start_scan(self) -> None:
        """Start one background scan unless one is running (called with the lock held, or in __init__)."""
        if self._scanning is None:
            self._scanning = threading.Thread(target=self._scan, name="held-scan", daemon=True)
            # Signals are the main thread's (cli waits for SIGTERM there): a thread started
            # before it blocks them would take a SIGTERM's default action, death, instead.
            saved = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
            try:
                self._scanning.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, saved)

    def _scan(self) -> None:
        started = self.clock()
        try:
            held = permitted_by(self.scan(), self.workload_of)
        except Exception:  # noqa: BLE001  a failed scan keeps the last one; the next scrape retries
            log.exception("reading the capabilities of live processes failed")
            held = None
        with self._lock:
            if held is not None:
                self._by_workload = held
                self._read_at = started
            elif self._read_at is None:
                self._read_at = started  # never leave a first scrape waiting on a scan that failed
            self._scanning = None


def permitted_by(processes: Iterable[proc_status.ProcessCaps],
                 workload_of: Callable[[proc_status.ProcessCaps], str]) -> dict[str, int]:
    """Per workload, the union of its processes' permitted sets: a capability counts as held
    if any process of the workload holds it. Processes in no workload ("") are left out."""
    held: dict[str, int] = {}
    for process in processes:
        workload = workload_of(process)
        if workload:
            held[workload] = held.get(workload, 0) | process.permitted
    return held
