"""What live processes hold, per comm: /proc read at most once per refresh interval."""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable

from . import proc_status


class HeldCapabilities:
    """The union of the permitted sets of each comm's live processes, cached for a bounded time.

    Scrapes may run concurrently; one /proc scan serves them all within refresh_seconds."""

    def __init__(self, refresh_seconds: float,
                 scan: Callable[[], Iterable[proc_status.ProcessCaps]] = proc_status.processes,
                 clock: Callable[[], float] = time.monotonic):
        self.refresh_seconds = refresh_seconds
        self.scan = scan
        self.clock = clock
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._by_comm: dict[str, int] = {}

    def by_comm(self) -> dict[str, int]:
        with self._lock:
            now = self.clock()
            if self._read_at is None or now - self._read_at >= self.refresh_seconds:
                self._by_comm = permitted_by_comm(self.scan())
                self._read_at = now
            return self._by_comm


def permitted_by_comm(processes: Iterable[proc_status.ProcessCaps]) -> dict[str, int]:
    held: dict[str, int] = {}
    for process in processes:
        held[process.comm] = held.get(process.comm, 0) | process.permitted
    return held
