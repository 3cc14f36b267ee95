"""How many threads a run lends the engine's tiled convolutions (no heavy imports here)."""

from __future__ import annotations

import os

#: Most threads a run lends its tiled convolutions by default: a 1850^2 image has 9-25
#: tiles a convolution, and each tile in flight holds ~10-40 MB.
MAX_THREADS = 4


def default_threads() -> int:
    """The cores this process may run on, at most :data:`MAX_THREADS`.

    Returns
    -------
    int
        At least 1.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores))
