"""Filters and optional labels, checked against real workloads."""

import os
import subprocess
import tempfile
import uuid

import pytest

from exporter.ebpf import kernel
from support import NOBODY, WaitingWorkload, run_workload, unique_comm


@pytest.mark.any_mode
def test_comm_exclude_removes_that_programs_series(start_exporter):
    kept, dropped = unique_comm("keep"), unique_comm("drop")
    exporter = start_exporter({"filters": {"comm_exclude": ["drop.*"]}})
    run_workload(f"{kept}=setuid:10", f"{dropped}=setuid:10")
    assert exporter.value("capability_checks_total", comm=kept, capability="CAP_SETUID") == 10
    assert exporter.series("capability_checks_total", comm=dropped) == {}
    assert exporter.series("capability_denials_total", comm=dropped) == {}


@pytest.mark.any_mode
def test_comm_include_keeps_only_matching_programs(start_exporter):
    kept, other = unique_comm("incl"), unique_comm("othr")
    exporter = start_exporter({"filters": {"comm_include": [f"{kept}"]}})
    run_workload(f"{kept}=setuid:3", f"{other}=setuid:3")
    assert exporter.value("capability_checks_total", comm=kept, capability="CAP_SETUID") == 3
    assert exporter.series("capability_checks_total", comm=other) == {}
    assert {dict(k)["comm"] for k in exporter.series("capability_checks_total")} == {kept}


@pytest.mark.any_mode
def test_uid_filter_keeps_only_that_uid(start_exporter, root_owned_file):
    comm = unique_comm()
    exporter = start_exporter({"filters": {"uids": [NOBODY]}, "labels": {"uid": True}})
    run_workload(f"{comm}=setuid:20")  # as root: filtered out
    run_workload(f"{comm}=chown:30:{root_owned_file}", user=NOBODY)
    uids = {dict(k)["uid"] for k in exporter.series("capability_checks_total")}
    assert uids == {str(NOBODY)}
    assert exporter.series("capability_checks_total", comm=comm, capability="CAP_SETUID") == {}
    assert exporter.value("capability_checks_total", comm=comm, capability="CAP_CHOWN", uid=str(NOBODY)) == 30


def test_pid_filter_keeps_only_that_process(start_exporter):
    comm = unique_comm()
    target = WaitingWorkload(f"{comm}=setuid:40")
    exporter = start_exporter({"filters": {"pids": [target.pid]}})
    run_workload(f"{comm}=setuid:1000")  # same comm, another pid: filtered out
    target.go()
    assert exporter.value("capability_checks_total", comm=comm, capability="CAP_SETUID") == 40
    assert {dict(k)["comm"] for k in exporter.series("capability_checks_total")} == {comm}


@pytest.fixture
def test_cgroup():
    mount = kernel.cgroup2_mount()
    assert mount, "these machines mount cgroup v2"
    name = f"capexp-test-{uuid.uuid4().hex[:8]}"
    path = os.path.join(mount, name)
    os.mkdir(path)
    yield "/" + name, path
    os.rmdir(path)


@pytest.mark.any_mode
def test_cgroup_prefix_and_label(start_exporter, test_cgroup):
    relative, directory = test_cgroup
    inside, outside = unique_comm("in"), unique_comm("out")
    exporter = start_exporter({"filters": {"cgroup_prefix": relative}, "labels": {"cgroup": True}})
    run_workload(f"{inside}=setuid:25", cgroup=directory)
    run_workload(f"{outside}=setuid:25")
    assert exporter.value("capability_checks_total", comm=inside, capability="CAP_SETUID", cgroup=relative) == 25
    assert exporter.series("capability_checks_total", comm=outside) == {}


@pytest.fixture
def container_cgroup():
    """A cgroup shaped like a containerd container in a Kubernetes pod (systemd driver)."""
    mount = kernel.cgroup2_mount()
    pod, container = str(uuid.uuid4()), uuid.uuid4().hex * 2
    top = os.path.join(mount, f"kubepods-capexp{uuid.uuid4().hex[:6]}.slice")
    leaf = os.path.join(top, f"kubepods-besteffort-pod{pod.replace('-', '_')}.slice", f"cri-containerd-{container}.scope")
    os.makedirs(leaf)
    yield leaf, pod, container
    os.rmdir(leaf)
    os.rmdir(os.path.dirname(leaf))
    os.rmdir(top)


@pytest.mark.any_mode
def test_container_and_pod_labels_from_a_real_cgroup(start_exporter, container_cgroup):
    leaf, pod, container = container_cgroup
    inside, outside = unique_comm("ctr"), unique_comm("host")
    exporter = start_exporter({"labels": {"container": True, "pod": True}})
    run_workload(f"{inside}=setuid:12", cgroup=leaf)
    run_workload(f"{outside}=setuid:3")
    assert exporter.value("capability_checks_total", comm=inside, capability="CAP_SETUID",
                          container=container, pod=pod) == 12
    assert exporter.value("capability_checks_total", comm=outside, capability="CAP_SETUID", container="", pod="") == 3


V1_CONTROLLERS = ("memory", "pids", "cpu")


@pytest.fixture
def v1_hierarchy():
    """(mount, controller) of a cgroup v1 hierarchy: this machine's memory one, or one the test
    mounts (virtme guests have cgroup v2 only; 6.12 builds memcg v1 out, so try others too)."""
    for controller in V1_CONTROLLERS:
        mount = kernel.cgroup_v1_mount(controller)
        if mount:
            yield mount, controller
            return
    mount = tempfile.mkdtemp(prefix="capexp-cgroup-v1-")
    errors = []
    for controller in V1_CONTROLLERS:
        done = subprocess.run(["mount", "-t", "cgroup", "-o", controller, "cgroup", mount],
                              capture_output=True, text=True)
        if done.returncode == 0:
            break
        errors.append(f"{controller}: {done.stderr.strip()}")
    else:
        os.rmdir(mount)
        pytest.fail(f"cannot mount any cgroup v1 hierarchy: {'; '.join(errors)}")
    yield mount, controller
    subprocess.run(["umount", mount], check=True)
    os.rmdir(mount)


@pytest.fixture
def v1_container_cgroup(v1_hierarchy):
    """A cgroupfs-driver container cgroup in a cgroup v1 hierarchy."""
    mount, controller = v1_hierarchy
    pod, container = str(uuid.uuid4()), uuid.uuid4().hex * 2
    top = os.path.join(mount, f"capexp-{uuid.uuid4().hex[:6]}")
    leaf = os.path.join(top, "kubepods", "besteffort", f"pod{pod}", container)
    os.makedirs(leaf)
    yield leaf, pod, container, controller
    while leaf != mount:
        os.rmdir(leaf)
        leaf = os.path.dirname(leaf)


@pytest.mark.any_mode
def test_container_labels_from_a_cgroup_v1_hierarchy(start_exporter, v1_container_cgroup):
    leaf, pod, container, controller = v1_container_cgroup
    comm = unique_comm("v1")
    exporter = start_exporter({"labels": {"container": True, "pod": True, "cgroup": True,
                                          "cgroup_v1_controller": controller}})
    run_workload(f"{comm}=setuid:9", cgroup=leaf)
    (labels,) = exporter.series("capability_checks_total", comm=comm)
    labels = dict(labels)
    assert (labels["container"], labels["pod"]) == (container, pod)
    assert labels["cgroup"].endswith(f"/pod{pod}/{container}")
    assert exporter.value("capability_checks_total", **labels) == 9
