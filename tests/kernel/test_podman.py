"""Container identity against a real podman container: its id from the cgroup, its name from
podman's own state, capability_unused and /profiles per container, and its series gone once the
container is removed."""

import json
import os
import resource
import shutil
import subprocess
import uuid

import pytest

from support import HANG_TIMEOUT, wait_for

pytestmark = [pytest.mark.podman, pytest.mark.any_mode]

CHECKS = "capability_checks_total"
N_CHROOT = 300


def podman(*args: str, timeout: float = HANG_TIMEOUT) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


@pytest.fixture(scope="module")
def busybox_image(tmp_path_factory):
    """An image of a busybox-static root filesystem (no registry is needed), removed afterwards."""
    root = tmp_path_factory.mktemp("rootfs")
    (root / "bin").mkdir()
    shutil.copy("/usr/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "sleep", "chroot", "true"):
        (root / "bin" / applet).symlink_to("busybox")
    archive = tmp_path_factory.mktemp("image") / "rootfs.tar"
    subprocess.run(["tar", "-C", str(root), "-cf", str(archive), "."], check=True, timeout=HANG_TIMEOUT)
    name = f"localhost/capexp-test-busybox-{uuid.uuid4().hex[:8]}:latest"
    podman("import", str(archive), name)
    yield name
    podman("rmi", "--force", name)


def run_flags() -> list[str]:
    """runc, since crun refuses hybrid cgroup hosts; rlimits root may set without CAP_SYS_RESOURCE."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return ["--runtime", "runc", f"--ulimit=nofile={hard}:{hard}", "--ulimit=nproc=32768:32768"]


@pytest.fixture
def container(busybox_image):
    """container(script, *podman_run_flags) -> (id, name) of a running container; every one is
    removed afterwards."""
    made = []

    def start(script: str, *flags: str) -> tuple[str, str]:
        name = f"capexp-test-{uuid.uuid4().hex[:10]}"
        cid = podman("run", "-d", *run_flags(), "--name", name, *flags, busybox_image, "/bin/sh", "-c", script)
        made.append(cid)
        return cid, name

    yield start
    for cid in made:
        subprocess.run(["podman", "rm", "--force", "--time", "0", cid], capture_output=True, timeout=HANG_TIMEOUT)


def test_a_podman_containers_checks_carry_its_id_and_name_and_go_with_it(start_exporter, container):
    exporter = start_exporter({"labels": {"container": True, "container_name": True},
                               "unused": {"by": "container", "refresh_seconds": 0}})
    # Each chroot(2) is one CAP_SYS_CHROOT check; the container also keeps CAP_NET_RAW and
    # never uses it.
    cid, name = container(f"i=0; while [ $i -lt {N_CHROOT} ]; do chroot / true; i=$((i+1)); done; "
                          "echo done; exec sleep 300", "--cap-drop=all", "--cap-add=sys_chroot,net_raw")
    # Its log, not podman exec: an exec would make checks of its own in the container.
    wait_for(lambda: podman("logs", cid) == "done", "the container's loop")
    ours = exporter.series(CHECKS, container=cid, capability="CAP_SYS_CHROOT")
    assert ours == {frozenset({"comm": "chroot", "capability": "CAP_SYS_CHROOT", "container": cid,
                               "container_name": name}.items()): N_CHROOT}
    wait_for(lambda: exporter.series("capability_unused", container=cid), f"capability_unused of {name}")
    assert exporter.series("capability_unused", container=cid) == {
        frozenset({"container": cid, "container_name": name, "capability": "CAP_NET_RAW"}.items()): 1.0
    }
    doc = json.loads(exporter.get(f"/profiles?container={name}"))
    assert json.loads(exporter.get(f"/profiles?container={cid}")) == doc
    assert doc["container"] == cid and doc["container_name"] == name
    assert doc["held"] == ["CAP_NET_RAW", "CAP_SYS_CHROOT"]
    assert "CAP_SYS_CHROOT" in doc["recommendation"]["needed"]
    assert doc["recommendation"]["unused"] == ["CAP_NET_RAW"]
    assert [(c["comm"], c["granted"]) for c in doc["checks"] if c["capability"] == "CAP_SYS_CHROOT"] == \
        [("chroot", N_CHROOT)]
    podman("rm", "--force", "--time", "0", cid)
    assert exporter.series(CHECKS, container=cid) == {}
    assert exporter.series("capability_unused", container=cid) == {}


def _missing(root, cid):
    pass


def _unreadable(root, cid):  # root reads any file: a directory where the file should be cannot be read
    os.makedirs(os.path.join(root, "var/lib/containers/storage/overlay-containers", cid, "userdata", "config.json"))


def _malformed(root, cid):
    path = os.path.join(root, "var/lib/containers/storage/overlay-containers", cid, "userdata", "config.json")
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write('{"annotations": ')


@pytest.mark.parametrize("spoil", [_missing, _unreadable, _malformed], ids=lambda f: f.__name__.strip("_"))
def test_bad_runtime_state_is_logged_once_and_the_names_are_empty(start_exporter, container, tmp_path, spoil):
    root = tmp_path / "host"
    root.mkdir()
    exporter = start_exporter({"labels": {"container": True, "container_name": True, "pod_name": True,
                                          "namespace": True, "container_state_root": str(root)}})
    cid, _ = container("i=0; while [ $i -lt 5 ]; do chroot / true; i=$((i+1)); done; echo done; exec sleep 300",
                       "--cap-drop=all", "--cap-add=sys_chroot")
    spoil(str(root), cid)  # before the first scrape: names are read when a container is first seen
    wait_for(lambda: podman("logs", cid) == "done", "the container's loop")
    for _ in range(2):  # a second scrape reads nothing again, and says nothing again
        assert exporter.series(CHECKS, container=cid, capability="CAP_SYS_CHROOT") == {
            frozenset({"comm": "chroot", "capability": "CAP_SYS_CHROOT", "container": cid, "container_name": "",
                       "pod_name": "", "namespace": ""}.items()): 5.0
        }
    exporter.stop()
    said = [line for line in exporter.stderr.splitlines() if f"no names for container {cid[:12]}" in line]
    assert len(said) == 1, exporter.stderr
