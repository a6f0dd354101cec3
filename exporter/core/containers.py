"""Container id and pod uid from a cgroup path, for the runtimes and cgroup drivers nodes use."""

from __future__ import annotations

import re
from typing import NamedTuple

_ID = r"(?P<container>[0-9a-f]{64})"
_POD = r"pod(?P<pod>[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"

# The same shapes appear under cgroup v1 controllers and under the v2 unified tree.
_PATTERNS = [
    # Kubernetes, systemd cgroup driver: .../kubepods-burstable-pod<uid>.slice/<runtime>-<id>.scope
    re.compile(rf"/kubepods[^/]*\.slice/(?:[^/]*/)*kubepods[^/]*-{_POD}\.slice/(?:cri-containerd|crio|docker)-{_ID}\.scope"),
    # Kubernetes, cgroupfs driver: /kubepods/[burstable|besteffort/]pod<uid>/<id>
    re.compile(rf"/kubepods/(?:[^/]+/)?{_POD}/{_ID}(?:/|$)"),
    # Docker, CRI-O or containerd without Kubernetes, systemd driver: /system.slice/docker-<id>.scope
    re.compile(rf"/(?:docker|crio|cri-containerd|libpod)-{_ID}\.scope"),
    # Docker, cgroupfs driver: /docker/<id>
    re.compile(rf"/docker/{_ID}(?:/|$)"),
    # podman, cgroupfs driver: /libpod_parent/libpod-<id>
    re.compile(rf"/libpod_parent/libpod-{_ID}(?:/|$)"),
]


class Workload(NamedTuple):
    container: str  # the runtime's 64-hex container id, or "" outside containers
    pod: str  # the Kubernetes pod uid, or "" outside pods


NONE = Workload("", "")


def from_cgroup(path: str) -> Workload:
    """The container and pod a cgroup path belongs to; empty strings when it is not a container's."""
    for pattern in _PATTERNS:
        match = pattern.search(path)
        if match:
            groups = match.groupdict()
            return Workload(groups["container"], (groups.get("pod") or "").replace("_", "-"))
    return NONE
