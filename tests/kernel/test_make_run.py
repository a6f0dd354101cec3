"""The README's first command: make run serves /metrics with config/default.yaml within a minute."""

import contextlib
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from support import ROOT

DEFAULT_URL = "http://127.0.0.1:9661/metrics"


# The kernel matrix's guests see this checkout read-only, and make run is about this machine.
@pytest.mark.host_kernel
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
        # make run may have ended on its own (an install that failed): its output says why.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            raise AssertionError(f"make run did not stop on SIGTERM: {output}")
    assert "capability_exporter_probe_info" in body, output
    assert "Traceback" not in output
