"""Workload identity on the real kernel: the process label of threads that rename themselves,
the unit label of a process in a systemd service's cgroup, and capability_unused and /profiles
kept per unit."""

import errno
import json
import os
import re
import subprocess
import urllib.error

import pytest

from exporter.core import units
from exporter.ebpf import kernel
from support import HANG_TIMEOUT, NOBODY, run_workers, run_workload, unique_comm, wait_for


CHECKS = "capability_checks_total"
CHANGES = "capability_set_changes_total"


def test_renamed_threads_are_counted_under_their_program(start_exporter, workers):
    exporter = start_exporter({"labels": {"process": True}})
    run_workers(workers, "1000")
    program = workers.name
    by_program = exporter.series(CHECKS, process=program, capability="CAP_SETUID")
    assert sum(by_program.values()) == 4000
    # The comm series are the threads' own names, as without the label.
    assert {dict(labels)["comm"]: value for labels, value in by_program.items()} == {
        f"worker-{i}": 1000 for i in range(4)
    }
    assert exporter.series(CHECKS, comm=program, capability="CAP_SETUID") == {}


def test_without_the_label_there_is_no_process_label(start_exporter, workers):
    exporter = start_exporter()
    run_workers(workers, "10")
    assert exporter.series(CHECKS, comm="worker-0")
    assert all("process" not in dict(labels) for labels in exporter.series(CHECKS))


def test_unused_and_profiles_per_process(start_exporter, workers):
    """Held sets from /proc (the leader's comm) and checks keyed in the kernel meet per process."""
    program = workers.name
    # Only this workload: capability_unused keeps the first max_comms by name (busy machines have many).
    exporter = start_exporter({"unused": {"by": "process", "refresh_seconds": 0, "comms": [program]}})
    lingering = subprocess.Popen([str(workers), "1000", "linger"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
    try:
        assert lingering.stdout.readline() == "done\n"
        unused = wait_for(lambda: exporter.series("capability_unused", process=program), f"capability_unused of {program}")
        held_unused = {dict(labels)["capability"] for labels in unused}
        assert "CAP_NET_RAW" in held_unused and "CAP_SETUID" not in held_unused  # root holds all; SETUID was used
        doc = json.loads(exporter.get(f"/profiles?process={program}"))
        assert doc["process"] == program and "CAP_SETUID" in doc["held"]
        assert {(c["comm"], c["granted"]) for c in doc["checks"] if c["capability"] == "CAP_SETUID"} == {
            (f"worker-{i}", 1000) for i in range(4)
        }
        assert "CAP_SETUID" in doc["recommendation"]["needed"]
    finally:
        lingering.communicate("", timeout=HANG_TIMEOUT)
    assert lingering.returncode == 0


def test_changes_carry_the_process_label(start_exporter, workers):
    exporter = start_exporter({"labels": {"process": True}, "changes": {"enabled": True}})
    run_workers(workers, "1", "drop-bounding")
    assert exporter.series(CHANGES, process=workers.name) == {
        frozenset({"comm": "worker-0", "process": workers.name, "syscall": "prctl", "set": "bounding",
                   "capability": "CAP_SYS_MODULE", "direction": "lost"}.items()): 1.0
    }


@pytest.fixture
def service_cgroup():
    """A cgroup v2 directory /system.slice/capexp-<unique>.service, as systemd would make it.

    One per test: tests running at once (xdist workers, other checkouts' suites) must not
    share it, or one's teardown removes the cgroup the other's checks are labelled by.
    A system.slice another run made, or still has a process in, is left to that run."""
    mount = kernel.cgroup2_mount()
    assert mount, "these machines mount cgroup v2"
    slice_dir = os.path.join(mount, "system.slice")
    directory = os.path.join(slice_dir, f"{unique_comm('capexp')}.service")
    made = [path for path in (slice_dir, directory) if _made(path)]
    yield directory
    for path in reversed(made):
        try:
            os.rmdir(path)
        except OSError as err:
            if err.errno not in (errno.EBUSY, errno.ENOTEMPTY, errno.ENOENT):
                raise


def _made(path: str) -> bool:
    try:
        os.mkdir(path)
        return True
    except FileExistsError:
        return False


@pytest.mark.any_mode
def test_a_service_cgroup_gives_the_unit_label(start_exporter, service_cgroup):
    inside, outside = unique_comm("svc"), unique_comm("out")
    service = os.path.basename(service_cgroup)
    exporter = start_exporter({"labels": {"unit": True}})
    run_workload(f"{inside}=setuid:37", cgroup=service_cgroup)
    run_workload(f"{outside}=setuid:5")
    assert exporter.series(CHECKS, comm=inside) == {
        frozenset({"comm": inside, "capability": "CAP_SETUID", "unit": service}.items()): 37.0
    }
    # Outside: whatever unit this suite runs in ("" where it is in none, as on the dev machines).
    assert exporter.series(CHECKS, comm=outside, capability="CAP_SETUID") == {
        frozenset({"comm": outside, "capability": "CAP_SETUID", "unit": units.from_cgroup(own_cgroup())}.items()): 5.0
    }


def own_cgroup() -> str:
    """This process's cgroup v2 path, as /proc/self/cgroup's "0::" line gives it."""
    with open("/proc/self/cgroup") as f:
        return next(line[3:].strip() for line in f if line.startswith("0::"))


@pytest.fixture
def hold_net_raw_in(request):
    """hold_net_raw_in(cgroup) -> a process in that cgroup, as nobody, holding only CAP_NET_RAW,
    which it never uses; setpriv's own checks (CAP_SETUID, ...) are made in the cgroup too."""
    holders = []

    def start(cgroup: str) -> subprocess.Popen:
        process = subprocess.Popen(
            ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup,
             "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             "--inh-caps=+net_raw", "--ambient-caps=+net_raw", "sleep", "300"])
        holders.append(process)
        # Until it has exec'd sleep it is sh or setpriv, root with every capability, in the
        # cgroup: a scrape then sees the unit hold them all (seen on a slow 6.1 guest in CI).
        wait_for(lambda: _comm(process.pid) == "sleep", f"the holder {process.pid} to exec sleep")
        return process

    yield start
    for process in holders:
        process.kill()
        process.wait()


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def unit_profile(exporter, unit: str, fmt: str = ""):
    try:
        return exporter.get(f"/profiles?unit={unit}" + (f"&format={fmt}" if fmt else ""))
    except urllib.error.HTTPError as err:
        assert err.code == 404
        return None


@pytest.mark.any_mode
def test_unused_and_profiles_per_unit(start_exporter, service_cgroup, hold_net_raw_in):
    comm = unique_comm("svc")
    service = os.path.basename(service_cgroup)
    exporter = start_exporter({"unused": {"by": "unit", "refresh_seconds": 0, "comms": [re.escape(service)]}})
    run_workload(f"{comm}=setuid:21", cgroup=service_cgroup)
    holder = hold_net_raw_in(service_cgroup)
    wait_for(lambda: exporter.series("capability_unused", unit=service), f"capability_unused of {service}")
    assert exporter.series("capability_unused", unit=service) == {
        frozenset({"unit": service, "capability": "CAP_NET_RAW"}.items()): 1.0
    }
    doc = json.loads(unit_profile(exporter, service))
    assert doc["unit"] == service and doc["held"] == ["CAP_NET_RAW"]
    ours = [check for check in doc["checks"] if check["comm"] == comm]
    assert [(c["capability"], c["granted"], c["denied"]) for c in ours] == [("CAP_SETUID", 21, 0)]
    assert "CAP_SETUID" in doc["recommendation"]["needed"]
    assert doc["recommendation"]["unused"] == ["CAP_NET_RAW"]
    systemd = unit_profile(exporter, service, "systemd")
    assert f"# capability-exporter /profiles: unit {service}\n" in systemd
    assert "CAP_SETUID" in next(line for line in systemd.splitlines() if line.startswith("CapabilityBoundingSet="))
    holder.kill()
    holder.wait()
    assert exporter.series("capability_unused", unit=service) == {}
