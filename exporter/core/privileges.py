"""Drop the exporter's own capabilities once its programs are attached."""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass

from exporter.core import capabilities
from exporter.ebpf import kernel

log = logging.getLogger(__name__)

PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
UNPRIVILEGED_BPF_SYSCTL = "/proc/sys/kernel/unprivileged_bpf_disabled"

_libc = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class PrivilegeError(Exception):
    """The capabilities could not be dropped."""


@dataclass
class DropResult:
    kept: list[str]
    bounding_dropped: bool


def needed_to_read_maps(release: str | None = None, sysctl: str = UNPRIVILEGED_BPF_SYSCTL) -> list[int]:
    """Capabilities map reads by fd still need: none since 5.19; before, CAP_BPF (or CAP_SYS_ADMIN
    before 5.8) while unprivileged BPF is disabled."""
    version = kernel.version(release)
    if version >= (5, 19, 0):
        return []
    try:
        with open(sysctl, encoding="ascii") as f:
            if f.read().strip() == "0":
                return []
    except OSError:
        pass
    return [capabilities.number("CAP_BPF" if version >= (5, 8, 0) else "CAP_SYS_ADMIN")]


def drop_all(keep: list[int]) -> DropResult:
    """Clear ambient, bounding, inheritable; keep only `keep` in effective and permitted.

    Capabilities are per thread: call this before any other thread starts.
    """
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "clear the ambient set")
    bounding_dropped = _drop_bounding(set(keep))
    mask = _mask(keep)
    _capset(effective=mask, permitted=mask, inheritable=0)
    return DropResult([capabilities.name(c) for c in keep], bounding_dropped)


def become(uid: int, gid: int, caps: list[int]) -> None:
    """Turn root into uid/gid holding exactly caps, as systemd's User=, AmbientCapabilities=
    and CapabilityBoundingSet= do: the ambient set carries them through execve."""
    if not _drop_bounding(set(caps)):
        raise PrivilegeError("cannot shrink the bounding set (it takes root, or CAP_SETPCAP)")
    _prctl(PR_SET_KEEPCAPS, 1, "keep capabilities across setuid")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    mask = _mask(caps)
    _capset(effective=mask, permitted=mask, inheritable=mask)
    for cap in caps:
        if _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0:
            raise PrivilegeError(f"cannot raise {capabilities.name(cap)} in the ambient set: "
                                 f"{os.strerror(ctypes.get_errno())}")


def _mask(caps: list[int]) -> int:
    return sum(1 << cap for cap in caps)


def _capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise PrivilegeError(f"capset failed: {os.strerror(ctypes.get_errno())}")


def _drop_bounding(keep: set[int]) -> bool:
    """Empty the bounding set; False when the kernel refuses (no CAP_SETPCAP, e.g. in a container)."""
    for cap in range(capabilities.last_cap() + 1):
        if cap in keep:
            continue
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            log.info("bounding set left as it is: %s", os.strerror(ctypes.get_errno()))
            return False
    return True


def _prctl(option: int, arg: int, what: str) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        raise PrivilegeError(f"cannot {what}: {os.strerror(ctypes.get_errno())}")
