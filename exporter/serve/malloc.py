"""glibc's malloc set for the serving process: one arena for all its threads."""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # <malloc.h>


def one_arena() -> None:
    """Let every thread allocate from malloc's main arena. Call it before any thread starts:
    a thread that has an arena of its own keeps it.

    glibc gives each new thread an arena of its own, up to eight per core, and memory a thread
    frees stays in its arena for that arena's next allocations. The HTTP workers take turns
    serving scrapes, so each arena came to hold a scrape's worth of freed memory: measured,
    50-75 MB RSS after 10k-series scrapes with 64 workers, against 37-39 MB with one arena.
    Python runs one thread at a time (the GIL), so more arenas buy this process no parallelism.

    Left as it is where the environment sets arenas (MALLOC_ARENA_MAX, GLIBC_TUNABLES) or the C
    library has no mallopt (musl's does nothing)."""
    if "MALLOC_ARENA_MAX" in os.environ or "arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except AttributeError:
        log.debug("this C library has no mallopt; malloc arenas are left as they are")
        return
    if mallopt(M_ARENA_MAX, 1) != 1:
        log.debug("mallopt(M_ARENA_MAX, 1) failed; malloc arenas are left as they are")
