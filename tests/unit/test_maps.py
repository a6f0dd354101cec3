"""Chunks of map entries: per-entry totals over CPU slots, whichever way they are summed."""

from array import array

import pytest

from exporter.ebpf import maps
from exporter.ebpf.maps import Chunk


@pytest.mark.parametrize("cpus", [1, 2, 3, maps.COLUMNS_UP_TO, maps.COLUMNS_UP_TO + 1, 64])
@pytest.mark.parametrize("words", [1, 2])
def test_totals_sum_each_word_over_cpus(cpus, words):
    n = 37
    values = array("Q", range(n * cpus * words))
    chunk = Chunk(n, b"", values)
    for word in range(words):
        expected = [sum(values[(i * cpus + c) * words + word] for c in range(cpus)) for i in range(n)]
        assert list(chunk.totals(word, cpus, words)) == expected
