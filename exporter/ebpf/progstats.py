"""Run counts and run time of BPF programs, from /proc/self/fdinfo of the fds we hold."""

from __future__ import annotations

import logging
import os

from exporter.ebpf import bpf_syscall

log = logging.getLogger(__name__)

SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"


def read(fd: int) -> dict[str, int]:
    """The numeric fields of a program fd's fdinfo: run_cnt, run_time_ns, recursion_misses..."""
    return read_fdinfo("self", fd)


def read_fdinfo(pid: int | str, fd: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            value = value.strip()
            if value.isdigit():
                fields[key] = int(value)
    return fields


def enabled() -> bool:
    """Whether the kernel is counting program runs now (sysctl or a BPF_ENABLE_STATS fd)."""
    try:
        with open(SYSCTL, encoding="ascii") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def enable() -> int | None:
    """Turn run statistics on while the returned fd is open; None (logged) when refused."""
    try:
        return bpf_syscall.enable_stats()
    except OSError as err:
        log.warning("cannot enable BPF run statistics: %s (needs CAP_SYS_ADMIN and Linux 5.8+)", err.strerror)
        return None


def disable(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)
