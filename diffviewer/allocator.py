"""The C library's memory allocator: what the engine and the command ask of glibc's malloc.

Both calls are no-ops on another C library (or where glibc cannot be loaded).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

#: glibc's ``mallopt`` parameter for the most heaps (arenas) threads may allocate from.
M_ARENA_MAX = -8


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, or None on another C library."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def release_free_memory() -> None:
    """Give the memory freed inside the heaps back to the system (``malloc_trim(0)``).

    glibc keeps freed image-sized arrays in its heap for reuse (it raises its mmap
    threshold after each large free), so the resident size of a run only grows: on
    GOTO it stood at 315 MB after the kernel fit and 567 MB after the score with 250 MB
    of it free. ``malloc_trim`` returns those pages (a few ms): 203 and 374 MB, and the
    peak of the run (the largest step over what earlier steps hold) falls with them.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def one_heap() -> None:
    """Let every thread of the process allocate from one heap (``M_ARENA_MAX`` = 1).

    Call it before the process starts a thread: a heap already made for a thread stays.
    glibc gives each thread that allocates its own heap, whose top goes back to the
    system only above twice the largest block it has unmapped (27 MB on GOTO), so
    threads lent to a run held 33-75 MB more at its peak; with one heap they hold what
    one thread does (GOTO, whole runs in turn on 2026-12-03: 372-381 MB with two threads
    against 416-434 MB with a heap each and 374-383 MB on one thread; README, issue 9).
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, 1)
