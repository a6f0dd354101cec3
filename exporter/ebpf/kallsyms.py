"""Kernel function address ranges from /proc/kallsyms."""

from __future__ import annotations

import bisect

KALLSYMS = "/proc/kallsyms"
TEXT_TYPES = {"t", "T"}


def ranges(names: tuple[str, ...], path: str = KALLSYMS) -> dict[str, tuple[int, int]]:
    """[start, end) of each named function found: from its address to the next text symbol's.

    Empty where kallsyms hides addresses (they read as 0 without CAP_SYSLOG)."""
    starts: dict[str, int] = {}
    addresses = []
    with open(path, encoding="ascii", errors="replace") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3 or parts[1] not in TEXT_TYPES:
                continue
            address = int(parts[0], 16)
            addresses.append(address)
            if parts[2] in names and address:
                starts.setdefault(parts[2], address)
    addresses.sort()
    found = {}
    for name, start in starts.items():
        after = bisect.bisect_right(addresses, start)
        if after < len(addresses):
            found[name] = (start, addresses[after])
    return found
