"""Load on the real endpoint, loopback only and bounded in time: concurrent scrapers, and the server's RSS.

Shared by tests/kernel/test_http_load.py (pass/fail bounds) and tests/bench_http.py (the figures).
"""

from __future__ import annotations

import http.client
import resource
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from exporter.core import proc_status
from support import unique_comm, workload_command

LOOPBACK = "127.0.0.1"


@dataclass
class Scrapes:
    """What a run of scrapers saw: one latency per answered request, and the failures."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    bytes: int = 0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("inf")

    def summary(self) -> str:
        if not self.latencies:
            return f"no answers; {len(self.failures)} failures"
        return (f"{len(self.latencies)} scrapes in {self.seconds:.0f} s ({len(self.latencies) / self.seconds:.1f}/s, "
                f"{self.bytes / len(self.latencies) / 1024:.0f} KiB each), {len(self.failures)} failed; latency "
                f"p50 {self.percentile(50) * 1000:.0f} ms, p90 {self.percentile(90) * 1000:.0f} ms, "
                f"p99 {self.percentile(99) * 1000:.0f} ms, max {max(self.latencies) * 1000:.0f} ms")


def scrape_for(port: int, seconds: float, clients: int, path: str = "/metrics", timeout: float = 30) -> Scrapes:
    """`clients` threads, each on its own kept-alive connection as Prometheus holds one, for `seconds`."""
    result = Scrapes()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        connection: Optional[http.client.HTTPConnection] = None
        while time.monotonic() < stop_at:
            start = time.monotonic()
            try:
                if connection is None:
                    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
                connection.request("GET", path)
                response = connection.getresponse()
                body = response.read()
                if response.status != 200:
                    raise OSError(f"status {response.status}")
                with lock:
                    result.latencies.append(time.monotonic() - start)
                    result.bytes += len(body)
            except (OSError, http.client.HTTPException) as err:
                with lock:
                    result.failures.append(f"{type(err).__name__}: {err}")
                if connection is not None:
                    connection.close()
                connection = None
        if connection is not None:
            connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + timeout + 30)
    result.seconds = time.monotonic() - began
    return result


def process_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in bytes, and Threads, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        status = proc_status.parse(f.read())
    values = {key: int(status[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM") if key in status}
    if "Threads" in status:
        values["Threads"] = int(status["Threads"])
    return values


class Sampler:
    """The highest RSS and thread count of a process, read every `interval` while in a with block."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval = pid, interval
        self.max_rss = 0
        self.max_threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            status = process_status(self.pid)
            self.max_rss = max(self.max_rss, status["VmRSS"])
            self.max_threads = max(self.max_threads, status["Threads"])
            self._stop.wait(self.interval)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_prefix() -> str:
    """A comm prefix of this run's own: the exporter is told to serve only these comms, so that other
    processes on the machine do not change the size of the scrape."""
    return unique_comm("ld")[:6]


def series_workload(series: int, prefix: str) -> tuple[list[str], list[str]]:
    """A workload command that leaves `series` checks-map entries: one setuid(0) under each of as many comms."""
    comms = [unique_comm(prefix) for _ in range(series)]
    return comms, workload_command(*(f"{comm}=setuid:1" for comm in comms))


def setuid_loop_command(prefix: str, calls: int = 10**9) -> list[str]:
    """A process that makes capability checks without pause, until it is stopped."""
    return workload_command(f"{unique_comm(prefix)}=setuid:{calls}")


def idle_connections(port: int, count: int) -> list[socket.socket]:
    """`count` connections that send nothing; the caller closes them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 256:
        # No CAP_SYS_RESOURCE needed: only the soft limit moves, up to the hard one.
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 256), hard))
    sockets = []
    try:
        for _ in range(count):
            sockets.append(socket.create_connection((LOOPBACK, port), timeout=10))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def median(values: list[float]) -> float:
    return statistics.median(values)
