"""The workload a check or a live process belongs to, under unused.by: comm, process, unit or container."""

from __future__ import annotations

from . import containers, units
from .proc_status import ProcessCaps
from .runtimes import ContainerNames


def name(by: str, comm: str, process: str, cgroup: str, names: ContainerNames) -> str:
    """The workload's name; "" where the check or process is in none (no unit, no container).

    A container is named as its runtime named it, or by its id where the runtime gave no name."""
    if by == "comm":
        return comm
    if by == "process":
        return process
    if by == "unit":
        return units.from_cgroup(cgroup)
    container = containers.from_cgroup(cgroup).container
    return names.names(container).container or container


def of_process(by: str, names: ContainerNames, process: ProcessCaps) -> str:
    """A live process's workload. /proc/<pid>/comm is the thread group leader's comm: the same
    name the process label reads in the kernel."""
    return name(by, process.comm, process.comm, process.cgroup, names)


def needs_cgroup(by: str) -> bool:
    return by in ("unit", "container")
