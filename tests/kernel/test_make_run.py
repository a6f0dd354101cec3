"""The README's first command: make run serves /metrics with config/default.yaml within a minute."""

import os
import signal
import subprocess
import time
import urllib.request

from support import ROOT

DEFAULT_URL = "http://127.0.0.1:9661/metrics"


def test_make_run_serves_metrics_within_a_minute():
    proc = subprocess.Popen(
        ["make", "run"], cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    body = ""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(DEFAULT_URL, timeout=30) as response:
                    body = response.read().decode()
                break
            except OSError:
                time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert "capability_exporter_probe_info" in body, output
    assert "Traceback" not in output
