"""The HTTP endpoint's load figures for docs/http.md: latency percentiles, throughput and RSS (not a test).

usage: bench_http.py [--seconds S] [--scrapers N] [--series N]   (as root; make bench-http)
Starts the real exporter on loopback with a checks map of --series entries, then prints:
RSS at rest; --scrapers kept-alive scrapers for --seconds, quiet and then while a setuid
loop makes checks; and a scrape's latency while 2000 idle connections are open.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load  # noqa: E402
from support import HANG_TIMEOUT, starter  # noqa: E402

MB = 1 << 20


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--scrapers", type=int, default=100)
    p.add_argument("--series", type=int, default=1000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        start, started = starter(Path(directory))
        prefix = load.run_prefix()
        exporter = start({"filters": {"comm_include": [f"{prefix}.*"]}})
        try:
            _, command = load.series_workload(args.series, prefix)
            subprocess.run(command, check=True, capture_output=True, timeout=HANG_TIMEOUT)
            exporter.get("/metrics")
            time.sleep(1)
            rest = load.process_status(exporter.pid)
            print(f"at rest after one scrape: RSS {rest['VmRSS'] / MB:.1f} MB, {rest['Threads']} threads")
            _run("quiet", exporter, args)
            loop = subprocess.Popen(load.setuid_loop_command(prefix), stdout=subprocess.DEVNULL)
            try:
                _run("with a setuid loop", exporter, args)
            finally:
                loop.kill()
                loop.wait()
            _idle(exporter)
        finally:
            for each in started:
                each.stop()
    return 0


def _run(name: str, exporter, args) -> None:
    with load.Sampler(exporter.pid) as sampler:
        run = load.scrape_for(exporter.port, args.seconds, args.scrapers)
    print(f"{args.scrapers} scrapers, {args.series} series, {name}: {run.summary()}; "
          f"peak RSS {sampler.max_rss / MB:.1f} MB, {sampler.max_threads} threads")


def _idle(exporter) -> None:
    idle = load.idle_connections(exporter.port, 2000)
    try:
        start = time.monotonic()
        exporter.get("/metrics", timeout=10)
        took = time.monotonic() - start
        status = load.process_status(exporter.pid)
    finally:
        for sock in idle:
            sock.close()
    print(f"2000 idle connections open: a scrape took {took * 1000:.0f} ms; {status['Threads']} threads, "
          f"RSS {status['VmRSS'] / MB:.1f} MB")


if __name__ == "__main__":
    sys.exit(main())
