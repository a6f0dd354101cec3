"""Reading BPF maps: by BPF_MAP_LOOKUP_BATCH and key by key, the same entries and values."""

import ctypes
import os

import pytest

from exporter.ebpf import bpf_syscall, kernel
from exporter.ebpf.layouts import CheckKey, CheckValue
from exporter.ebpf.maps import BpfMap

PERCPU_HASH, HASH = 5, 1
ENTRIES = 12_345  # more than the default checks map holds, and than one batch reads


def entries_of(bpf_map: BpfMap, by_key: bool) -> dict[bytes, tuple[list[int], list[int]]]:
    """key -> (checks, denials) per CPU slot, from chunks."""
    found = {}
    for chunk in bpf_map.chunks(by_key=by_key):
        step = bpf_map.slots * bpf_map.words
        for i in range(chunk.n):
            words = chunk.values[i * step:(i + 1) * step]
            found[chunk.keys[i * bpf_map.key_size:(i + 1) * bpf_map.key_size]] = (list(words[0::2]), list(words[1::2]))
    return found


@pytest.fixture(params=[PERCPU_HASH, HASH], ids=["percpu_hash", "hash"])
def filled_map(request):
    cpus = kernel.possible_cpus() if request.param == PERCPU_HASH else 1
    fd = bpf_syscall.map_create(request.param, ctypes.sizeof(CheckKey), ctypes.sizeof(CheckValue), 16384)
    expected = {}
    value = (CheckValue * cpus)()
    for i in range(ENTRIES):
        key = CheckKey(f"c{i}".encode(), i % 41, i, i * 7, i % 3)
        for cpu in range(cpus):
            value[cpu] = CheckValue(i * 1000 + cpu, i + cpu)
        bpf_syscall.map_update(fd, key, value)
        expected[bytes(key)] = ([i * 1000 + c for c in range(cpus)], [i + c for c in range(cpus)])
    yield BpfMap("checks", fd, CheckKey, CheckValue, kernel.possible_cpus()), expected
    os.close(fd)


@pytest.mark.any_mode
def test_a_map_of_more_than_10k_entries_reads_the_same_by_batch_and_by_key(filled_map):
    bpf_map, expected = filled_map
    by_batch = entries_of(bpf_map, by_key=False)
    assert bpf_map.batch is True, "this kernel should have BPF_MAP_LOOKUP_BATCH (Linux 5.6+)"
    by_key = entries_of(bpf_map, by_key=True)
    assert len(by_batch) == ENTRIES
    assert by_batch == by_key == expected


@pytest.mark.any_mode
def test_sums_over_cpus_match_key_by_key_lookups(filled_map):
    bpf_map, expected = filled_map
    (chunk, *rest) = list(bpf_map.chunks())
    checks = chunk.totals(0, bpf_map.slots, bpf_map.words)
    for i in range(chunk.n):
        key = CheckKey.from_buffer_copy(chunk.keys, i * bpf_map.key_size)
        values = bpf_map.lookup(key)
        assert checks[i] == sum(v.checks for v in values) == sum(expected[bytes(key)][0])
