"""Live processes' capability sets, from /proc/<pid>/status and /proc/<pid>/comm."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Iterator, Optional

from exporter.ebpf.layouts import decode_comm

PROC = "/proc"
KTHREADD_PID = 2


def parse(text: str) -> dict[str, str]:
    """The "Key:\\tvalue" lines of a status file."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    return fields


# The lines of a status file that read() uses.
WANTED = ("Kthread", "PPid", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def fields(text: str, names: tuple[str, ...]) -> dict[str, str]:
    """Only these "Key:\tvalue" lines of a status file: what parse() gives for them, found directly."""
    found = {}
    for name in names:
        key = name + ":"
        if text.startswith(key):
            at = 0
        else:
            at = text.find("\n" + key) + 1
            if at == 0:
                continue
        end = text.find("\n", at)
        found[name] = text[at + len(key):end if end >= 0 else len(text)].strip()
    return found


@dataclass(frozen=True)
class ProcessCaps:
    pid: int
    comm: str  # decoded as the checks map's comm is, so that the two match
    permitted: int
    effective: int
    bounding: int
    ambient: int
    cgroup: str = ""  # its cgroup path, read only when asked (processes(cgroup=...))


def processes(proc: str = PROC, cgroup: Optional[str] = None) -> Iterator[ProcessCaps]:
    """Every user-space process readable now; ones that exit while being read are skipped.

    Kernel threads are left out: they hold every capability and exec nothing. cgroup: read
    each process's cgroup path too, in cgroup v2 ("") or in this v1 controller's hierarchy."""
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            process = read(int(entry.name), proc)
            if process is not None and cgroup is not None:
                process = dataclasses.replace(process, cgroup=read_cgroup(int(entry.name), cgroup, proc))
        except (OSError, ValueError, KeyError):
            continue
        if process is not None:
            yield process


def read(pid: int, proc: str = PROC) -> ProcessCaps | None:
    """One process's sets; None for a kernel thread."""
    with open(f"{proc}/{pid}/status", encoding="utf-8", errors="replace") as f:
        status = fields(f.read(), WANTED)
    if status.get("Kthread") == "1" or pid == KTHREADD_PID or status.get("PPid") == str(KTHREADD_PID):
        return None
    with open(f"{proc}/{pid}/comm", "rb") as f:
        comm = decode_comm(f.read().rstrip(b"\n"))
    return ProcessCaps(
        pid, comm,
        permitted=int(status["CapPrm"], 16), effective=int(status["CapEff"], 16),
        bounding=int(status["CapBnd"], 16), ambient=int(status["CapAmb"], 16),
    )


def cgroup_path(text: str, controller: str = "") -> str:
    """The path of /proc/<pid>/cgroup's line for this v1 controller, or the v2 line ("0::")."""
    for line in text.splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if (controller in controllers.split(",")) if controller else (hierarchy == "0" and not controllers):
            return path
    return ""


def read_cgroup(pid: int, controller: str = "", proc: str = PROC) -> str:
    with open(f"{proc}/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
        return cgroup_path(f.read(), controller)
