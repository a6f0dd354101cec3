"""The workload a check or a live process belongs to, under unused.by: comm, process, unit or container."""

from __future__ import annotations

from exporter.core import containers, units
from exporter.core.proc_status import ProcessCaps
from exporter.core.runtimes import ContainerNames


def extra_labels(by: str) -> list[str]:
    """The labels capability_unused and /profiles add to a workload's: a container's name."""
    return ["container_name"] if by == "container" else []


def extra_values(by: str, workload: str, names: ContainerNames) -> tuple[str, ...]:
    return (names.names(workload).container,) if by == "container" else ()


def name(by: str, comm: str, process: str, cgroup: str) -> str:
    """The workload's name; "" where the check or process is in none (no unit, no container).

    A container is its id, as in the container label; names(id) has its runtime's name for it."""
    if by == "comm":
        return comm
    if by == "process":
        return process
    if by == "unit":
        return units.from_cgroup(cgroup)
    return containers.from_cgroup(cgroup).container


def of_process(by: str, process: ProcessCaps) -> str:
    """A live process's workload. /proc/<pid>/comm is the thread group leader's comm: the same
    name the process label reads in the kernel."""
    return name(by, process.comm, process.comm, process.cgroup)


def needs_cgroup(by: str) -> bool:
    return by in ("unit", "container")
