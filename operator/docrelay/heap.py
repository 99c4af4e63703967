"""The operator process's C heap (glibc's malloc), kept to what it holds.

A start lists every Integration and run at once and parses each list whole; what that burst
freed stays in the process (glibc keeps freed memory for reuse, in one arena per thread that
allocated it, up to 8 per core) unless it is given back. The operator runs dozens of threads
(the run workers, the caches' watches, kopf's executor), so it asks for few arenas before any
starts, and the runs machinery gives the free memory back every 30 s (docs/operator.md,
"Memory"). Elsewhere than glibc both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import cache

log = logging.getLogger("docrelay.operator")

M_ARENA_MAX = -8  # mallopt's parameter, from glibc's malloc.h
ARENAS = 2


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        return None
    return libc


def limit_arenas(count: int = ARENAS) -> bool:
    """Few malloc arenas for all threads (call before threads start); True if glibc agreed."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, count) == 1)


def give_back() -> bool:
    """Return the heap's free memory to the system; True if glibc released some."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0) == 1)
