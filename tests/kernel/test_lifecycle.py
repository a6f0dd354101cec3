"""Start-up and shutdown on the real kernel: attach modes, privileges, signals, a busy port."""

import errno
import os
import signal
import socket
import subprocess
import urllib.error

import pytest

from exporter.ebpf import bpf_syscall, kernel, progstats
from support import kept_when_serving, run_exporter, run_workload, unique_comm


def test_config_check_names_the_mode_it_attaches(attach_mode):
    done = run_exporter("--config.check", "--config.file", "config/default.yaml")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"config ok; attach mode {attach_mode}")
    assert "Traceback" not in done.stderr


@pytest.mark.host_kernel
def test_auto_mode_picks_the_tracepoint_on_this_kernel():
    done = run_exporter("--config.check", "--probe.mode", "auto")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("config ok; attach mode tracepoint (not used: fexit: ")
    assert "kprobe: this kernel has no kprobe support" in done.stdout


@pytest.mark.host_kernel
@pytest.mark.parametrize(
    "mode, reason",
    [
        ("kprobe", "no kprobe support"),
        ("fexit", "refused to load"),
    ],
)
def test_config_check_refuses_modes_this_kernel_lacks(mode, reason):
    done = run_exporter("--config.check", "--probe.mode", mode)
    assert done.returncode == 1
    assert done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("capability-exporter: error:")]
    assert len(errors) == 1, done.stderr
    assert f"{mode} mode cannot attach" in errors[0] and reason in errors[0]
    assert "Traceback" not in done.stderr


def _status_caps(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as f:
        return {k: int(v, 16) for k, _, v in (line.partition(":\t") for line in f) if k.startswith("Cap")}


@pytest.mark.any_mode
def test_exporter_drops_all_its_capabilities_and_keeps_serving(shared_exporter):
    exporter = shared_exporter
    caps = _status_caps(exporter.pid)
    kept = kept_when_serving()
    assert caps["CapEff"] == caps["CapPrm"] == kept
    assert caps["CapAmb"] == 0 and caps["CapInh"] == 0
    assert caps["CapBnd"] == kept  # root here has CAP_SETPCAP, so the rest of the bounding set goes too
    comm = unique_comm()
    run_workload(f"{comm}=setuid:10")
    assert exporter.value("capability_checks_total", comm=comm, capability="CAP_SETUID") == 10


def _program_ids(pid: int) -> list[int]:
    ids = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            fields = progstats.read_fdinfo(pid, int(fd))
        except OSError:
            continue
        if "prog_id" in fields:
            ids.append(fields["prog_id"])
    return ids


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_detaches_and_exits_cleanly(start_exporter, sig):
    exporter = start_exporter()
    ids = _program_ids(exporter.pid)
    assert ids, "the serving process holds its program fds"
    assert exporter.stop(sig) == 0
    assert "Traceback" not in exporter.stderr
    assert "detaching" in exporter.stderr
    for prog_id in ids:
        with pytest.raises(OSError) as err:
            bpf_syscall.prog_fd_by_id(prog_id)
        assert err.value.errno == errno.ENOENT


@pytest.mark.any_mode
def test_busy_port_is_a_clear_usage_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_exporter("--web.listen-address", f"127.0.0.1:{port}")
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.any_mode
def test_landing_page_links_to_metrics_and_unknown_paths_are_404(start_exporter, attach_mode):
    exporter = start_exporter(None, "--web.telemetry-path", "/capabilities")
    page = exporter.get("/")
    assert 'href="/capabilities"' in page and f"attach mode {attach_mode}" in page
    assert "capability_exporter_build_info" in exporter.get("/capabilities")
    with pytest.raises(urllib.error.HTTPError) as err:
        exporter.get("/metrics")
    assert err.value.code == 404


@pytest.mark.any_mode
def test_serving_process_never_maps_bcc_or_llvm(shared_exporter):
    exporter = shared_exporter
    with open(f"/proc/{exporter.pid}/maps") as f:
        mapped = f.read()
    assert "libbcc" not in mapped and "libLLVM" not in mapped and "libclang" not in mapped


# host_kernel: the matrix's guests run tests side by side, and another test may need tracefs meanwhile.
@pytest.mark.host_kernel
def test_tracefs_is_mounted_when_it_is_not():
    for mount_point in reversed(kernel.mounts("tracefs")):
        subprocess.run(["umount", "-l", mount_point], check=True)
    assert kernel.tracing_dir() is None
    done = run_exporter("--config.check")
    assert done.returncode == 0, done.stderr
    assert "mounted tracefs at /sys/kernel/tracing" in done.stderr
    assert kernel.mounts("tracefs") == ["/sys/kernel/tracing"]
