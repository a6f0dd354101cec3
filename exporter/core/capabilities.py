"""Capability names and numbers, as the kernel spells them, and capability-set decoding."""

from __future__ import annotations

# include/uapi/linux/capability.h, in number order.
NAMES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

NUMBERS = {name: number for number, name in enumerate(NAMES)}


def name(number: int) -> str:
    """The kernel name of a capability; one newer than this table still gets a label."""
    if 0 <= number < len(NAMES):
        return NAMES[number]
    return f"CAP_UNKNOWN_{number}"


def number(cap_name: str) -> int:
    """The number of CAP_X, cap_x or X; KeyError for a name not in the table."""
    key = cap_name.upper()
    if not key.startswith("CAP_"):
        key = "CAP_" + key
    return NUMBERS[key]


def decode(mask: int) -> list[str]:
    """The names of the capabilities set in a mask such as /proc/<pid>/status CapEff."""
    return [name(bit) for bit in range(64) if mask >> bit & 1]


def last_cap(path: str = "/proc/sys/kernel/cap_last_cap") -> int:
    """The highest capability number the running kernel knows."""
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read())
    except (OSError, ValueError):
        return len(NAMES) - 1
