"""One malloc arena for the serving process's threads: glibc's own count of its arenas, in a fresh process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
THREADS = 4
# Each thread allocates from malloc while all of them are alive, then malloc_stats() prints one
# "Arena N:" block per arena on stderr.
SCRIPT = f"""
import ctypes, sys, threading
from exporter.serve import malloc
if sys.argv[1] == "one":
    malloc.one_arena()
together = threading.Barrier({THREADS})
def work():
    blocks = [ctypes.create_string_buffer(1 << 16) for _ in range(8)]
    together.wait()
threads = [threading.Thread(target=work) for _ in range({THREADS})]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ctypes.CDLL(None).malloc_stats()
"""


def arenas(how: str, **env: str) -> int:
    environ = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
    done = subprocess.run([sys.executable, "-c", SCRIPT, how], cwd=ROOT, env={**environ, **env},
                          capture_output=True, text=True, timeout=60, check=True)
    return sum(1 for line in done.stderr.splitlines() if line.startswith("Arena "))


def test_every_thread_allocates_from_one_arena():
    assert arenas("default") == THREADS + 1  # glibc's own: an arena per thread, and the main one
    assert arenas("one") == 1


@pytest.mark.parametrize("env", [{"MALLOC_ARENA_MAX": "3"}, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=3"}])
def test_arenas_set_in_the_environment_are_left_as_set(env):
    assert arenas("one", **env) == 3
