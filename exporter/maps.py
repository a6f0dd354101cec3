"""Read BPF maps by file descriptor and decode their entries into the layouts of layouts.py."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Iterator

from . import bpf_syscall, kernel
from .layouts import MAP_LAYOUTS

PERCPU_TYPES = {5, 6, 10}  # BPF_MAP_TYPE_PERCPU_HASH, _PERCPU_ARRAY, _LRU_PERCPU_HASH


class LayoutError(Exception):
    """A map whose key or value size is not what the Python layout expects."""


@dataclass
class BpfMap:
    """One map the exporter holds an fd for, with the ctypes layouts of its entries."""

    name: str
    fd: int
    key_type: type
    value_type: type
    cpus: int

    def __post_init__(self) -> None:
        info = bpf_syscall.map_info(self.fd)
        self.capacity = info.max_entries
        self.percpu = info.type in PERCPU_TYPES
        for what, size, ctype in (("key", info.key_size, self.key_type), ("value", info.value_size, self.value_type)):
            if size != ctypes.sizeof(ctype):
                raise LayoutError(
                    f"map {self.name}: {what} size is {size} in BPF but {ctypes.sizeof(ctype)} in Python"
                )
        # The kernel pads each CPU's copy of a per-CPU value to 8 bytes.
        self._stride = (ctypes.sizeof(self.value_type) + 7) & ~7
        self._slots = self.cpus if self.percpu else 1

    def keys(self) -> Iterator[ctypes.Structure]:
        return bpf_syscall.map_keys(self.fd, self.key_type)

    def lookup(self, key: ctypes._CData) -> list:
        """The value of key, one element per CPU for a per-CPU map; [] if absent."""
        buf = (ctypes.c_uint8 * (self._stride * self._slots))()
        if not bpf_syscall.map_lookup(self.fd, key, buf):
            return []
        return [self.value_type.from_buffer_copy(buf, i * self._stride) for i in range(self._slots)]

    def slot_total(self, slot: int):
        """One array slot's value, summed over CPUs (a drop counter, say)."""
        return total(self.lookup(self.key_type(slot)))

    def items(self) -> Iterator[tuple[ctypes.Structure, list]]:
        for key in self.keys():
            values = self.lookup(key)
            if values:
                yield key, values


def total(values: list):
    """The sum of per-CPU copies: field by field for a struct, else as numbers."""
    if values and isinstance(values[0], ctypes.Structure):
        result = type(values[0])()
        for name, _ in result._fields_:
            setattr(result, name, sum(getattr(v, name) for v in values))
        return result
    return sum(getattr(v, "value", v) for v in values)


def open_maps(fds: dict[str, int]) -> dict[str, BpfMap]:
    """BpfMaps for fds by map name, with their layouts from layouts.MAP_LAYOUTS."""
    cpus = kernel.possible_cpus()
    return {name: BpfMap(name, fd, *MAP_LAYOUTS[name], cpus) for name, fd in fds.items()}
