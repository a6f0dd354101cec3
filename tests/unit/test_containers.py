"""Container and pod from real-world cgroup path shapes."""

import pytest

from exporter.core.containers import Workload, from_cgroup

CID = "4f1d3c5e8a9b0c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d"
POD = "0e3f5a1c-7b2d-4e6f-8a9b-1c2d3e4f5a6b"
POD_ = POD.replace("-", "_")


@pytest.mark.parametrize(
    "path, expected",
    [
        # containerd, systemd driver (cgroup v2 and the v1 controllers alike)
        (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_}.slice/cri-containerd-{CID}.scope",
         Workload(CID, POD)),
        (f"/kubepods.slice/kubepods-pod{POD_}.slice/cri-containerd-{CID}.scope", Workload(CID, POD)),  # guaranteed
        (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_}.slice/crio-{CID}.scope",
         Workload(CID, POD)),  # CRI-O
        (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_}.slice/docker-{CID}.scope",
         Workload(CID, POD)),  # dockershim / cri-dockerd
        # cgroupfs driver
        (f"/kubepods/besteffort/pod{POD}/{CID}", Workload(CID, POD)),
        (f"/kubepods/pod{POD}/{CID}", Workload(CID, POD)),
        (f"/kubepods/burstable/pod{POD}/{CID}/sub", Workload(CID, POD)),
        # a pod's sandbox-less slice: no container yet
        (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_}.slice", Workload("", "")),
        # plain containers
        (f"/system.slice/docker-{CID}.scope", Workload(CID, "")),
        (f"/docker/{CID}", Workload(CID, "")),
        (f"/machine.slice/libpod-{CID}.scope", Workload(CID, "")),
        # podman, cgroupfs driver (as on this project's CI hosts)
        (f"/libpod_parent/libpod-{CID}", Workload(CID, "")),
        (f"/libpod_parent/libpod-{CID}/container", Workload(CID, "")),
        (f"/libpod_parent/conmon", Workload("", "")),
        (f"/system.slice/crio-{CID}.scope", Workload(CID, "")),
        # CRI-O's monitor process is not the container
        (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_}.slice/crio-conmon-{CID}.scope",
         Workload("", "")),
        # systemd services and sessions, the root, unknown
        ("/system.slice/ssh.service", Workload("", "")),
        ("/user.slice/user-1000.slice/session-3.scope", Workload("", "")),
        ("/", Workload("", "")),
        ("unknown", Workload("", "")),
        (f"/system.slice/docker-{CID[:12]}.scope", Workload("", "")),  # not a full id
    ],
)
def test_from_cgroup(path, expected):
    assert from_cgroup(path) == expected
