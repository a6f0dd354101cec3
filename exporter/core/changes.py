"""Capability-change transitions from the kernel map, expanded into per-capability changes."""

from __future__ import annotations

from typing import Iterator, NamedTuple

from exporter.core import capabilities

# enum change_syscall, enum cap_set and securebits in bpf/capability.h and linux/securebits.h.
SYSCALLS = (
    "capset", "prctl", "setuid", "setgid", "setreuid", "setregid",
    "setresuid", "setresgid", "setfsuid", "setfsgid", "execve", "execveat",
)
SETS = ("effective", "permitted", "inheritable", "bounding", "ambient")
SECUREBITS_SET = len(SETS)
SECUREBITS = (
    "SECBIT_NOROOT", "SECBIT_NOROOT_LOCKED", "SECBIT_NO_SETUID_FIXUP", "SECBIT_NO_SETUID_FIXUP_LOCKED",
    "SECBIT_KEEP_CAPS", "SECBIT_KEEP_CAPS_LOCKED", "SECBIT_NO_CAP_AMBIENT_RAISE",
    "SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED",
)


class Change(NamedTuple):
    """One bit that one syscall turned on (gained) or off (lost) in one set."""

    syscall: str
    set: str  # a capability set, or "securebits"
    name: str  # CAP_X, or SECBIT_X
    direction: str  # gained | lost


def syscall_name(number: int) -> str:
    return SYSCALLS[number] if 0 <= number < len(SYSCALLS) else f"syscall_{number}"


def bit_name(set_index: int, bit: int) -> str:
    if set_index == SECUREBITS_SET:
        return SECUREBITS[bit] if bit < len(SECUREBITS) else f"SECBIT_{bit}"
    return capabilities.name(bit)


def expand(syscall: int, set_index: int, before: int, after: int) -> Iterator[Change]:
    """Each bit that differs between before and after, with the way it went."""
    set_name = SETS[set_index] if set_index < len(SETS) else "securebits"
    changed = before ^ after
    for bit in range(64):
        if changed >> bit & 1:
            direction = "gained" if after >> bit & 1 else "lost"
            yield Change(syscall_name(syscall), set_name, bit_name(set_index, bit), direction)
