"""deploy/systemd: the unit verifies, grants what `capability-exporter run` recommends, and that is enough.

There is no systemd to start the unit here, so the test does what the unit does to the
process: its locked-memory limit, and a non-root uid with the unit's capabilities as its
ambient and bounding sets.
"""

import json
import subprocess

import pytest

from exporter.core import proc_status, profile
from exporter.ebpf import kernel
from support import (HANG_TIMEOUT, NOBODY, ROOT, Exporter, exporter_command, kept_when_serving, run_workload,
                     unique_comm)

UNIT = ROOT / "deploy" / "systemd" / "capability-exporter.service"


def unit_setting(key: str) -> list[str]:
    values = [line.split("=", 1)[1].split() for line in UNIT.read_text().splitlines() if line.startswith(f"{key}=")]
    assert len(values) == 1, f"{key} must be set once in {UNIT.name}"
    return values[0]


def as_service_user(caps: list[str]) -> list[str]:
    """prlimit and setpriv doing what systemd does with LimitMEMLOCK=, User= and
    AmbientCapabilities=/CapabilityBoundingSet=. LimitMEMLOCK= matters before 5.11 only, where BPF
    maps are charged to RLIMIT_MEMLOCK, which a non-root user cannot raise (nor can root here,
    on the CI host, which lacks CAP_SYS_RESOURCE)."""
    memlock = unit_setting("LimitMEMLOCK")[0].replace("infinity", "unlimited")
    limits = ["prlimit", f"--memlock={memlock}", "--"] if kernel.version() < (5, 11, 0) else []
    names = ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    return [*limits, "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            f"--inh-caps=-all,{names}", f"--ambient-caps=-all,{names}", f"--bounding-set=-all,{names}"]


@pytest.mark.any_mode
def test_unit_passes_systemd_analyze_verify(tmp_path):
    # verify insists that ExecStart's binary exists: point it at this checkout's.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/capability-exporter",
                                             str(ROOT / ".venv" / "bin" / "capability-exporter")))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.any_mode
def test_ambient_and_bounding_sets_agree():
    assert unit_setting("AmbientCapabilities") == unit_setting("CapabilityBoundingSet")


def paranoid_perf_events() -> bool:
    """perf_event_open() wants CAP_SYS_ADMIN: perf_event_paranoid 3 (a Debian and Ubuntu patch) or
    kernels before 5.8, which have no CAP_PERFMON."""
    with open("/proc/sys/kernel/perf_event_paranoid") as f:
        return int(f.read()) > 2 or kernel.version() < (5, 8, 0)


def recommended_here(tmp_path) -> dict:
    """run's report on the exporter started as the unit starts it: a non-root user holding every
    capability run has, so that each check is granted to the capability the kernel asks first."""
    report = tmp_path / "exporter.json"
    done = subprocess.run(
        [*exporter_command("run", "--user", "nobody", "--caps", "all", "--format", "json", "-o", str(report)),
         "--", *exporter_command("--config.check")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(report.read_text())


def sys_admin_needed(attach_mode: str) -> bool:
    """bpf() wants CAP_SYS_ADMIN before 5.8 (no CAP_BPF), and perf_event_open() wants it with
    paranoid perf events. Only kprobes and tracepoints attach through perf events: in fexit mode
    the checks and (on commit_creds) the changes attach by BPF links alone."""
    return kernel.version() < (5, 8, 0) or (paranoid_perf_events() and attach_mode != "fexit")


def test_the_unit_grants_exactly_what_run_recommends(tmp_path, attach_mode):
    """The unit's lines are run --format systemd's where CAP_SYS_ADMIN is needed (the 6.1 row of
    the matrix in kprobe mode); elsewhere run recommends the same without CAP_SYS_ADMIN."""
    doc = recommended_here(tmp_path)
    needed = doc["recommendation"]["needed"]
    for_other_kernels = set() if sys_admin_needed(attach_mode) else {"CAP_SYS_ADMIN"}
    assert set(unit_setting("AmbientCapabilities")) == set(needed) | for_other_kernels
    if not for_other_kernels:
        lines = profile.render("systemd", profile.from_document(doc)).splitlines()
        settings = [line for line in lines if not line.startswith("#")]
        assert settings == [line for line in UNIT.read_text().splitlines()
                            if line.startswith(("CapabilityBoundingSet=", "AmbientCapabilities="))]


def test_exporter_serves_as_non_root_with_only_the_units_capabilities(root_owned_file):
    exporter = Exporter(ROOT / "config" / "default.yaml", prefix=tuple(as_service_user(unit_setting("AmbientCapabilities"))))
    try:
        exporter.wait_ready()
        comm = unique_comm("svc")
        run_workload(f"{comm}=chown:7:{root_owned_file}", user=NOBODY)
        assert exporter.value("capability_denials_total", comm=comm, capability="CAP_CHOWN") == 7
        with open(f"/proc/{exporter.pid}/status") as f:
            status = proc_status.parse(f.read())
        assert status["Uid"].split()[0] == str(NOBODY)
        assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == kept_when_serving()
        assert status["CapAmb"] == "0000000000000000"
    finally:
        assert exporter.stop() == 0, exporter.stderr


def minimal_caps_here() -> list[str]:
    """The fewest that work here: tracefs is root-only (CAP_DAC_READ_SEARCH); with paranoid perf
    events CAP_SYS_ADMIN does everything else (bpf() falls back to it), elsewhere CAP_BPF and
    CAP_PERFMON do. run recommends more where the kernel asks CAP_BPF before CAP_SYS_ADMIN."""
    if paranoid_perf_events():
        return ["CAP_DAC_READ_SEARCH", "CAP_SYS_ADMIN"]
    return ["CAP_BPF", "CAP_PERFMON", "CAP_DAC_READ_SEARCH"]


def check_as_service_user(caps: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run([*as_service_user(caps), *exporter_command("--config.check")], cwd=ROOT,
                          capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert "Traceback" not in done.stderr
    return done


def test_the_unit_grants_what_this_kernel_needs_and_that_is_enough():
    minimal = minimal_caps_here()
    assert set(minimal) <= set(unit_setting("AmbientCapabilities"))
    done = check_as_service_user(minimal)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("missing", minimal_caps_here())
def test_each_capability_this_kernel_needs_is_necessary(missing):
    minimal = minimal_caps_here()
    done = check_as_service_user([c for c in minimal if c != missing])
    assert done.returncode != 0, f"works without {missing} on this kernel"
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("capability-exporter: error:")]
    assert len(errors) == 1, done.stderr
