"""Preloaded in each local worker process: the signals a terminal sends its whole process
group are left to the batch's own process.

A terminal's Ctrl-C (SIGINT) and a lost session's hang-up (SIGHUP) reach every process
of its group. The batch's process stops the batch and closes its workers; a worker that
took the signal itself printed a KeyboardInterrupt traceback through multiprocessing
(two a batch on two workers). dask runs this module's :func:`dask_setup` in each worker
of the local cluster (``LocalCluster(preload=...)``) on the worker process's main
thread, where signal handlers are set. multiprocessing's resource tracker, which the
workers share, is started deaf to hang-ups (:func:`start_resource_tracker`): killed by
one, it took the workers' semaphores with it, and each worker's exit printed a KeyError
(12 tracebacks).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

#: What a terminal (Ctrl-C) or a lost session (SIGHUP) sends its whole process group.
GROUP_SIGNALS = ("SIGINT", "SIGHUP")


def dask_setup(worker: Any) -> None:
    """Ignore :data:`GROUP_SIGNALS` in this worker process (those a platform has)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in GROUP_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (if not running) with SIGHUP blocked, a
    mask it keeps (it blocks SIGINT and SIGTERM so itself), so a hang-up of the batch's
    process group leaves it to clean up after the workers."""
    from multiprocessing import resource_tracker

    block, hangup = getattr(signal, "pthread_sigmask", None), getattr(signal, "SIGHUP", None)
    if block is None or hangup is None:
        resource_tracker.ensure_running()
        return
    before = block(signal.SIG_BLOCK, {hangup})
    try:
        resource_tracker.ensure_running()
    finally:
        block(signal.SIG_SETMASK, before)
