"""Threads a caller lends the engine for independent pieces of one step.

The engine holds no thread. Its caller (``diffviewer run``, the GUI's worker) may lend
an executor's threads for the duration of a run (:func:`lend`); steps whose work falls
into independent pieces (the tiles of a convolution, the chunks of kernel stamps, the
batches of diagnostic stamps) run them through :func:`lent_map`, which is the builtin
``map`` (one after the other, on the calling thread) when nothing was lent. Each piece
writes only its own part of the results, so a run gives the same bits on any number of
threads.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")

#: ``map(function, items)`` of the run under way in this context.
_MAP: contextvars.ContextVar[Callable[..., Iterator[Any]]] = contextvars.ContextVar(
    "diffviewer_lent_map", default=map
)


def lent_map() -> Callable[..., Iterator[Any]]:
    """``map(function, items)`` over the lent threads (lazy, results in order).

    An executor's map submits every item at once and yields the results in order; when
    the consumer stops early (an error, a cancel), closing the iterator cancels the
    items not yet started. Without lent threads it is the builtin ``map``.
    """
    return _MAP.get()


def map_slices(function: Callable[[slice], T], count: int, size: int) -> list[T]:
    """``function`` of each run of ``size`` consecutive indices of ``range(count)``, over
    the lent threads (:func:`lent_map`), in order; one empty run when ``count`` is 0.

    Parameters
    ----------
    function : callable
        Called with a ``slice`` of the indices.
    count : int
        How many indices.
    size : int
        Indices per run (at least 1).

    Returns
    -------
    list
        ``function``'s results, run by run.
    """
    runs = [slice(start, start + size) for start in range(0, max(count, 1), size)]
    return list(lent_map()(function, runs))


@contextlib.contextmanager
def lend(executor: Executor | None) -> Iterator[None]:
    """Let the engine run independent pieces of work on ``executor``'s threads in the block.

    The pieces are numpy and scipy.fft work on arrays of 10^4 px and more, which
    release the interpreter, so two pieces run on two cores at once.

    Parameters
    ----------
    executor : concurrent.futures.Executor or None
        Whose ``map`` runs the pieces (threads: the pieces write into shared arrays).
        None runs them one after the other on the calling thread.
    """
    token = _MAP.set(map if executor is None else executor.map)
    try:
        yield
    finally:
        _MAP.reset(token)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_worth_lending(cores: int) -> int:
    """Threads worth lending a run: 2 when the process has two cores or more, else 1.

    From 1850^2 the tiles of the convolutions and the chunks of kernel stamps shortened
    the run by a tenth (GOTO 4.32 -> 3.90 s; 2048 x 4096 and 4096^2 by 8-16 %) at the
    same peak, the threads allocating from one heap
    (:func:`diffviewer.allocator.one_heap`). Smaller images gain from the kernel fit's
    chunks and cross-validation folds alone, their convolutions' few tiles running on one
    thread (:data:`~diffviewer.engine.tiles.SERIAL_TILES`): 1024^2 engine 3.01 -> 2.65
    s, peak 231 -> 233 MB (4 runs each in turn).
    """
    return 2 if cores >= 2 else 1
