"""Read BPF maps by file descriptor and decode their entries into the layouts of layouts.py."""

from __future__ import annotations

import ctypes
import errno
import operator
from array import array
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Optional, Sequence

from exporter.ebpf import bpf_syscall, kernel
from exporter.ebpf.layouts import MAP_LAYOUTS

PERCPU_TYPES = {5, 6, 10}  # BPF_MAP_TYPE_PERCPU_HASH, _PERCPU_ARRAY, _LRU_PERCPU_HASH


# Entries per BPF_MAP_LOOKUP_BATCH call: few syscalls, and a buffer that stays small even with
# hundreds of CPUs (a per-CPU value is copied once per possible CPU).
CHUNK_ENTRIES = 1024
# Up to this many CPUs, per-entry totals are summed a CPU at a time, across a whole chunk.
COLUMNS_UP_TO = 16


class Chunk(NamedTuple):
    """Entries read at once: n keys back to back, and their values as 64-bit words.

    Entry i's key is keys[i * key_size:(i + 1) * key_size]; its value for CPU c starts at word
    (i * cpus + c) * words, where words is the value's size in 64-bit words (cpus is 1 for a map
    that is not per-CPU)."""

    n: int
    keys: bytes
    values: array

    def totals(self, word: int, cpus: int, words: int) -> Sequence[int]:
        """For each entry, one word of its value (0: the first) summed over its CPU slots."""
        step = cpus * words
        if cpus > COLUMNS_UP_TO:
            return [sum(self.values[start:start + step:words]) for start in range(word, self.n * step, step)]
        # A column per CPU, added up column by column: C loops, not one Python sum per entry.
        columns = [self.values[cpu * words + word::step] for cpu in range(cpus)]
        result = columns[0]
        for column in columns[1:]:
            result = list(map(operator.add, result, column))
        return result


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
        self.key_size = info.key_size
        self.words = self._stride // 8  # value words per CPU slot
        self.batch: Optional[bool] = None  # BPF_MAP_LOOKUP_BATCH: None until first tried

    def keys(self) -> Iterator[ctypes.Structure]:
        return bpf_syscall.map_keys(self.fd, self.key_type)

    def lookup(self, key: ctypes._CData) -> list:
        """The value of key, one element per CPU for a per-CPU map; [] if absent."""
        buf = (ctypes.c_uint8 * (self._stride * self._slots))()
        if not bpf_syscall.map_lookup(self.fd, key, buf):
            return []
        return [self.value_type.from_buffer_copy(buf, i * self._stride) for i in range(self._slots)]

    def delete(self, raw_key: bytes) -> bool:
        """Delete the entry of this key (its bytes); False if it was not there."""
        return bpf_syscall.map_delete(self.fd, (ctypes.c_uint8 * len(raw_key)).from_buffer_copy(raw_key))

    def slot_total(self, slot: int):
        """One array slot's value, summed over CPUs (a drop counter, say)."""
        return total(self.lookup(self.key_type(slot)))

    @property
    def slots(self) -> int:
        """Copies of each value: one per possible CPU for a per-CPU map, else one."""
        return self._slots

    def chunks(self, by_key: bool = False) -> Iterator[Chunk]:
        """Every entry, a chunk at a time: by BPF_MAP_LOOKUP_BATCH where the kernel has it
        (5.6+), else (or with by_key) by key, two syscalls per entry."""
        if not by_key and self.batch is not False:
            try:
                yield from self._batches()
                return
            except bpf_syscall.BatchUnsupported:
                if self.batch:  # it worked before, so this is no kernel without it
                    raise
                self.batch = False
        yield from self._by_key()

    def _batches(self) -> Iterator[Chunk]:
        count = CHUNK_ENTRIES
        keys = (ctypes.c_uint8 * (self.key_size * count))()
        values = (ctypes.c_uint8 * (self._stride * self._slots * count))()
        token, next_token = None, (ctypes.c_uint8 * 8)()
        while True:
            try:
                n, done = bpf_syscall.map_lookup_batch(self.fd, token, next_token, keys, values, count)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
                # One hash bucket holds more entries than fit: read it with room for all of them.
                count *= 2
                keys = (ctypes.c_uint8 * (self.key_size * count))()
                values = (ctypes.c_uint8 * (self._stride * self._slots * count))()
                continue
            self.batch = True
            if n:
                words = array("Q")
                words.frombytes(memoryview(values)[:n * self._stride * self._slots])
                yield Chunk(n, bytes(memoryview(keys)[:n * self.key_size]), words)
            if done:
                return
            token = (ctypes.c_uint8 * 8).from_buffer_copy(next_token)

    def _by_key(self) -> Iterator[Chunk]:
        keys, values, n = [], array("Q"), 0
        buf = (ctypes.c_uint8 * (self._stride * self._slots))()
        for key in self.keys():
            if not bpf_syscall.map_lookup(self.fd, key, buf):
                continue  # deleted meanwhile
            keys.append(bytes(key))
            values.frombytes(bytes(buf))
            n += 1
            if n == CHUNK_ENTRIES:
                yield Chunk(n, b"".join(keys), values)
                keys, values, n = [], array("Q"), 0
        if n:
            yield Chunk(n, b"".join(keys), values)

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
