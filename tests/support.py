"""Test helpers: run the real exporter, scrape its real endpoint, and drive the workload."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Optional

import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.core import privileges
from exporter.ebpf import kernel

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = ROOT / "tests" / "workload.py"
NOBODY = 65534
# Bounds a hang, not a speed: under emulation on a slow machine one exporter start has
# taken a minute. For whatever starts an exporter or a workload and waits for it.
HANG_TIMEOUT = 300


def kept_when_serving() -> int:
    """The capability mask a serving exporter keeps: none since 5.19, before it CAP_BPF, which
    reading its maps by fd still takes while unprivileged BPF is disabled."""
    return sum(1 << cap for cap in privileges.needed_to_read_maps())


def unique_comm(prefix: str = "cx") -> str:
    """A comm no other process on the machine has (comms are at most 15 bytes)."""
    return (prefix + uuid.uuid4().hex)[:15]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mode_under_test() -> Optional[str]:
    """The attach mode the kernel matrix is testing (CAPEXP_TEST_MODE); None means the default, auto."""
    return os.environ.get("CAPEXP_TEST_MODE") or None


# The start of probes.fexit_caveat(): what a configured fexit is warned of where it can lose checks.
FEXIT_CAVEAT = "fexit mode: the kernel preempts tracing programs"


def fexit_can_lose_checks() -> bool:
    """Whether this run tests fexit mode on a kernel that preempts tracing programs (7.2)."""
    return mode_under_test() == "fexit" and kernel.preemption()[0] in kernel.PREEMPTIBLE


TRACE_WARNING = "capability-exporter trace: warning: "


def trace_started(stderr) -> list[str]:
    """Read a starting trace's stderr up to its "Hit Ctrl-C" line; the warnings it printed before that."""
    warnings, line = [], stderr.readline()
    while line.startswith(TRACE_WARNING):
        warnings.append(line.removeprefix(TRACE_WARNING).strip())
        line = stderr.readline()
    assert "Hit Ctrl-C to end" in line, line + stderr.read()
    return warnings


def expected_modes() -> list[str]:
    """The attach modes the kernel matrix says this kernel must attach (CAPEXP_EXPECTED_MODES), in its order."""
    return os.environ.get("CAPEXP_EXPECTED_MODES", "").split()


def any_mode_share() -> tuple[int, int]:
    """(i, n): this run takes every n-th any_mode test from the i-th (CAPEXP_ANY_MODE_SHARE, default all)."""
    i, _, n = os.environ.get("CAPEXP_ANY_MODE_SHARE", "0/1").partition("/")
    return int(i), int(n)


def exporter_command(*args: str) -> list[str]:
    mode = mode_under_test()
    if mode and "--probe.mode" not in args:
        args = (*args, "--probe.mode", mode)
    return [sys.executable, "-m", "exporter", *args]


def run_exporter(*args: str, timeout: float = HANG_TIMEOUT) -> subprocess.CompletedProcess:
    """Run the exporter to completion (e.g. --config.check) and capture its output."""
    return subprocess.run(exporter_command(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


class Exporter:
    """The real exporter as a subprocess, on a free loopback port."""

    def __init__(self, config_path: Path, *args: str, tls: Optional[ssl.SSLContext] = None,
                 auth: Optional[tuple[str, str]] = None, prefix: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.tls, self.auth = tls, auth
        self.proc = subprocess.Popen(
            [*prefix, *exporter_command("--config.file", str(config_path), "--web.listen-address",
                                        f"127.0.0.1:{self.port}", *args)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = HANG_TIMEOUT) -> "Exporter":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exporter exited with {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                if self.get("/").startswith("<!DOCTYPE html>"):
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("exporter did not serve within the timeout")

    def get(self, path: str, timeout: float = 60, auth: Optional[tuple[str, str]] = None) -> str:
        request = urllib.request.Request(self.url + path)
        user, password = auth or self.auth or (None, None)
        if user is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=timeout, context=self.tls) as response:
            return response.read().decode()

    def scrape(self, path: str = "/metrics") -> dict[tuple[str, frozenset], float]:
        samples = {}
        for family in text_string_to_metric_families(self.get(path)):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples

    def value(self, name: str, **labels: str) -> Optional[float]:
        return self.scrape().get((name, frozenset(labels.items())))

    def series(self, name: str, **labels: str) -> dict[frozenset, float]:
        """Every sample of a metric whose labels include the given ones."""
        wanted = set(labels.items())
        return {lbls: v for (n, lbls), v in self.scrape().items() if n == name and wanted <= lbls}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        _, self.stderr = stop_process(self.proc, sig, timeout, "exporter")
        return self.proc.returncode


def stop_process(proc: subprocess.Popen, sig: int, timeout: float, what: str) -> tuple[str, str]:
    """Signal proc and collect its output; kill it and fail if it does not end within timeout."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"{what} did not stop on {signal.Signals(sig).name}: {err}")


def wait_for(condition, what: str, timeout: float = 60, context=lambda: ""):
    """condition()'s first true value, polled; fail if none comes within timeout, with context()."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{context()}".rstrip())


def write_config(directory: Path, data: dict, name: str = "config.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(data))
    return path


def workload_command(
    *steps: str, user: Optional[int] = None, cgroup: Optional[str] = None, wait: bool = False, program: str = "",
    from_thread: bool = False,
) -> list[str]:
    cmd = [sys.executable, str(WORKLOAD)]
    if program:
        cmd += ["--exec", program] + (["--from-thread"] if from_thread else [])
    if user is not None:
        cmd += ["--user", str(user)]
    if cgroup:
        cmd += ["--cgroup", cgroup]
    if wait:
        cmd.append("--wait")
    return cmd + list(steps)


def run_workload(*steps: str, **options) -> list[dict]:
    """Run tests/workload.py; one dict per step (result, Cap* lines before and after)."""
    done = subprocess.run(workload_command(*steps, **options), capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def run_workers(binary, *args: str) -> None:
    """Run tests/workers.c (the workers fixture) to its end."""
    done = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert done.returncode == 0, done.stderr


def run_command(tmp_path, command, *options, fmt="json", name="report", **popen):
    """capability-exporter run ... -- command; (exit code, the report's text, run's stderr)."""
    report = tmp_path / f"{name}.{fmt}"
    done = subprocess.run([*exporter_command("run", "--format", fmt, "-o", str(report), *options), "--", *command],
                          cwd=ROOT, capture_output=True, text=True, timeout=HANG_TIMEOUT, **popen)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, report.read_text() if report.exists() else "", done.stderr


def checks_of(doc, comm):
    """(capability, audited) -> (granted, denied), summed over the syscalls and callers that asked."""
    found: dict[tuple, tuple[int, int]] = {}
    for c in doc["checks"]:
        if c["comm"] == comm:
            granted, denied = found.get((c["capability"], c["audited"]), (0, 0))
            found[(c["capability"], c["audited"])] = (granted + c["granted"], denied + c["denied"])
    return found


class WaitingWorkload:
    """A workload started before the exporter (so its pid can go in a filter) that runs on go()."""

    def __init__(self, *steps: str, **options):
        self.proc = subprocess.Popen(
            workload_command(*steps, wait=True, **options), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout.readline().strip() == "ready"
        self.pid = self.proc.pid

    def go(self) -> str:
        out, _ = self.proc.communicate("go\n", timeout=HANG_TIMEOUT)
        assert self.proc.returncode == 0
        return out


def starter(directory: Path):
    """start(config_dict, *flags) -> a serving Exporter, and the list of those started.

    Change tracking is its own program (cap_changes.c), and compiling it doubles the
    start-up time under QEMU; tests load it only when their config says "changes".
    """
    started: list[Exporter] = []

    def start(config: dict | None = None, *args: str, **options) -> Exporter:
        config = {"changes": {"enabled": False}, **(config or {})}
        path = write_config(directory, config, name=f"config{len(started)}.yaml")
        exporter = Exporter(path, *args, **options)
        started.append(exporter)
        return exporter.wait_ready()

    return start, started


def openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(directory: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=directory)
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", cwd=directory)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", "san.ext", "-out", f"{name}.crt", cwd=directory)
    return directory
