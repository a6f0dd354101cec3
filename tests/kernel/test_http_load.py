"""The endpoint under load and hostile clients, on loopback: scrapers, idle connections, slow headers.

The bounds are pass/fail bounds on a shared two-core machine, not performance figures:
tests/bench_http.py prints those.
"""

import socket
import subprocess
import time

import pytest

import load
from exporter.serve import httpd
from support import HANG_TIMEOUT

# Needs root and BPF, but no kernel changes how the HTTP server holds: on the host only.
pytestmark = pytest.mark.kernel_independent

SERIES = 1000
SCRAPERS = 100
WORKERS = httpd.Limits().workers  # the default: the load is held with what users run
MB = 1 << 20


@pytest.fixture(scope="module")
def loaded_exporter(tmp_path_factory):
    """An exporter whose checks map holds SERIES entries, each one comm's setuid(0) checks."""
    from support import starter

    start, started = starter(tmp_path_factory.mktemp("load"))
    prefix = load.run_prefix()
    exporter = start({"filters": {"comm_include": [f"{prefix}.*"]}})
    exporter.prefix = prefix
    comms, command = load.series_workload(SERIES, prefix)
    subprocess.run(command, check=True, capture_output=True, timeout=HANG_TIMEOUT)
    ours = exporter.series("capability_checks_total", capability="CAP_SETUID")
    assert len([labels for labels in ours if dict(labels)["comm"] in set(comms)]) == SERIES
    yield exporter
    for each in started:
        each.stop()


def test_100_scrapers_for_60_s_with_and_without_a_setuid_loop(loaded_exporter):
    """30 s of 100 kept-alive scrapers, then 30 s more while a setuid loop makes checks: no failure,
    p99 under 2 s in each half, and RSS under 60 MB throughout."""
    with load.Sampler(loaded_exporter.pid) as sampler:
        quiet = load.scrape_for(loaded_exporter.port, 30, SCRAPERS)
        loop = subprocess.Popen(load.setuid_loop_command(loaded_exporter.prefix), stdout=subprocess.DEVNULL)
        try:
            busy = load.scrape_for(loaded_exporter.port, 30, SCRAPERS)
        finally:
            loop.kill()
            loop.wait()
    for name, run in (("quiet", quiet), ("with a setuid loop", busy)):
        assert run.failures == [], f"{name}: {run.summary()}: {run.failures[:5]}"
        assert run.percentile(99) < 2.0, f"{name}: {run.summary()}"
        assert len(run.latencies) >= SCRAPERS, f"{name}: {run.summary()}"
    assert sampler.max_rss < 60 * MB, f"RSS peaked at {sampler.max_rss / MB:.1f} MB"
    assert sampler.max_threads <= WORKERS + 8, f"{sampler.max_threads} threads"


def test_2000_idle_connections_neither_block_a_scraper_nor_add_threads(loaded_exporter):
    threads_at_rest = load.process_status(loaded_exporter.pid)["Threads"]
    idle = load.idle_connections(loaded_exporter.port, 2000)
    try:
        start = time.monotonic()
        assert "capability_exporter_build_info" in loaded_exporter.get("/metrics", timeout=2)
        assert time.monotonic() - start < 2
        assert load.process_status(loaded_exporter.pid)["Threads"] == threads_at_rest <= WORKERS + 8
    finally:
        for sock in idle:
            sock.close()


def test_slowloris_is_dropped_within_the_header_timeout(start_exporter):
    exporter = start_exporter(None, "--web.read-header-timeout", "3s")
    request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 40 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", exporter.port), timeout=10) as sock:
        start = time.monotonic()
        sent = 0
        try:
            for byte in request:
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(1)
                if _closed(sock):
                    break
        except OSError:
            pass  # reset: dropped
        dropped_after = time.monotonic() - start
    assert sent < len(request), "the slow client was allowed to finish its headers"
    assert dropped_after < 3 + 2.5, f"dropped only after {dropped_after:.1f} s"


def _closed(sock: socket.socket) -> bool:
    """Whether the server has closed the connection (reads EOF), without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)
        sock.settimeout(10)
