"""Background work: the one module of the GUI that owns threads.

A :class:`JobRunner` runs plain Python callables (``job(progress, token)``) in
``QThread`` s, one *lane* per kind of work ("run" for subtractions, "levels" for
display levels, ...). Every job carries an id; submitting a new job to a lane cancels
the previous one, and a late result of a superseded or cancelled job is dropped, so
the window only ever shows the newest answer. Workers never touch widgets: progress,
results and errors reach the GUI thread as queued signals. A thread is never destroyed
while it runs: :meth:`JobRunner.shutdown` waits for every thread, and :attr:`JobRunner.idle`
tells when the last one has ended (the window closes only then).
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Callable, Collection
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from PyQt6.QtCore import QObject, QThread, pyqtSignal, pyqtSlot

from diffviewer.engine.lent import usable_cores
from diffviewer.engine.progress import CancelToken, ProgressCallback
from diffviewer.errors import Cancelled, DiffviewerError

#: A unit of background work: called with a progress callback and a cancel token.
Job = Callable[[ProgressCallback, CancelToken], Any]

# Least interval between two progress signals of one job (s): keeps the GUI's event
# queue short when the engine reports from tight loops.
_PROGRESS_INTERVAL = 0.05

#: Most threads the GUI lends a run's tiles and kernel-stamp chunks: a 1850^2 image has
#: 9-25 tiles a convolution, and each piece in flight holds ~10-40 MB.
MAX_LENT_THREADS = 4


def default_threads() -> int:
    """The cores this process may run on, at most :data:`MAX_LENT_THREADS`.

    The GUI lends them to every run: the difference is on screen sooner (the
    subtraction and decorrelation are tiled), for 33-75 MB more at the run's peak
    (``diffviewer run`` lends at most a second thread, from one heap:
    :func:`diffviewer.engine.lent.threads_worth_lending`).
    """
    return max(1, min(MAX_LENT_THREADS, usable_cores()))


@dataclasses.dataclass(frozen=True)
class ErrorReport:
    """A failure of a job, ready to show.

    Attributes
    ----------
    title : str
        Short heading (the error class for expected errors).
    message : str
        The one-line message (for diffviewer's own errors, it names the file or value
        and says what to do).
    details : str
        The traceback, shown on demand.
    expected : bool
        True for :class:`~diffviewer.errors.DiffviewerError` (a problem with the input
        or config), False for a bug.
    """

    title: str
    message: str
    details: str
    expected: bool


def error_report(exc: BaseException) -> ErrorReport:
    """Describe an exception for the user.

    Parameters
    ----------
    exc : BaseException
        The exception raised by a job.

    Returns
    -------
    ErrorReport
    """
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, DiffviewerError):
        return ErrorReport(type(exc).__name__, str(exc), details, True)
    return ErrorReport(
        "Unexpected error",
        f"{type(exc).__name__}: {exc} (this is a bug in "
        "diffviewer; the details below help to report it)",
        details,
        False,
    )


class _Progress:
    """The progress callback handed to a job: ``progress(step, fraction)``,
    ``progress.partial(value)`` for a result shown before the job ends (a run's first
    images), and ``progress.executor``, threads the job may lend the engine.
    Jobs that do not know it call it as a plain callback."""

    def __init__(self, worker: _Worker, executor: Executor | None) -> None:
        self._worker = worker
        self.executor = executor

    def __call__(self, step: str, fraction: float) -> None:
        self._worker.report(step, fraction)

    def partial(self, value: object) -> None:
        """Send ``value`` to the GUI thread now (``JobRunner.partial``)."""
        self._worker.partial.emit(self._worker.job_id, value)


class _Worker(QObject):
    """Runs one job in its thread and reports through signals (never touches widgets)."""

    progress = pyqtSignal(int, str, float)
    partial = pyqtSignal(int, object)
    finished = pyqtSignal(int, object)
    failed = pyqtSignal(int, object)
    cancelled = pyqtSignal(int)

    def __init__(
        self, job_id: int, job: Job, token: CancelToken, executor: Executor | None
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self._job = job
        self._token = token
        self._executor = executor
        self._last = (0.0, "")
        self._home = self.thread()  # the GUI thread, where it is made and destroyed

    def report(self, step: str, fraction: float) -> None:
        """Forward progress, at most every ``_PROGRESS_INTERVAL`` unless the step changes."""
        now = time.monotonic()
        if step != self._last[1] or now - self._last[0] >= _PROGRESS_INTERVAL:
            self._last = (now, step)
            self.progress.emit(self.job_id, step, float(fraction))

    @pyqtSlot()
    def run(self) -> None:
        """Run the job, emit exactly one of finished, failed or cancelled, and end the thread.

        The thread is ended from itself, so its end never waits for the GUI thread's
        event loop (:meth:`JobRunner.shutdown` can block on it). The worker goes back to
        the GUI thread first, to be destroyed there: destroyed in its own thread, it
        disconnected from the Python-made ``QThread`` while holding one of Qt's
        connection locks and waited for the interpreter, which the GUI thread held while
        waiting for a lock of that pool (a save failing as a run ended froze the window).
        """
        try:
            self._run()
        finally:
            thread = QThread.currentThread()
            self.moveToThread(self._home)
            if thread is not None:
                thread.quit()

    def _run(self) -> None:
        try:
            result = self._job(_Progress(self, self._executor), self._token)
        except Cancelled:
            self.cancelled.emit(self.job_id)
        except BaseException as exc:  # every failure becomes a message, never a crash
            if self._token.cancelled:
                self.cancelled.emit(self.job_id)
            else:
                self.failed.emit(self.job_id, error_report(exc))
        else:
            if self._token.cancelled:
                self.cancelled.emit(self.job_id)
            else:
                self.finished.emit(self.job_id, result)


@dataclasses.dataclass
class _Running:
    """Bookkeeping of one live thread."""

    lane: str
    thread: QThread
    worker: _Worker
    token: CancelToken


class JobRunner(QObject):
    """Runs jobs in background threads, one current job per lane.

    Signals carry ``(lane, job_id, ...)``; only the lane's current job ever signals,
    so receivers need not check ids themselves. ``idle`` is emitted when the last live
    thread (current, cancelled or superseded) has ended.
    """

    started = pyqtSignal(str, int)
    progress = pyqtSignal(str, int, str, float)
    partial = pyqtSignal(str, int, object)
    finished = pyqtSignal(str, int, object)
    failed = pyqtSignal(str, int, object)
    cancelled = pyqtSignal(str, int)
    idle = pyqtSignal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._next_id = 1
        self._current: dict[str, int] = {}
        self._running: dict[int, _Running] = {}
        self._lent: ThreadPoolExecutor | None = None

    def _lent_threads(self) -> Executor | None:
        """The threads every job may lend the engine (made when first needed; None
        on one core). Shared: two runs at once (one cancelled, still ending) share them."""
        if self._lent is None and default_threads() > 1:
            self._lent = ThreadPoolExecutor(
                max_workers=default_threads(), thread_name_prefix="diffviewer-lent"
            )
        return self._lent

    def submit(self, lane: str, job: Job) -> int:
        """Start ``job`` in a new thread, superseding the lane's current job.

        Parameters
        ----------
        lane : str
            Kind of work; one current job per lane.
        job : callable
            ``job(progress, token) -> result``; runs in the background thread.

        Returns
        -------
        int
            The job id.
        """
        self.cancel(lane, notify=False)
        job_id = self._next_id
        self._next_id += 1
        token = CancelToken()
        thread = QThread()
        worker = _Worker(job_id, job, token, self._lent_threads())
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.progress.connect(self._on_progress)
        worker.partial.connect(self._on_partial)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        worker.cancelled.connect(self._on_cancelled)
        thread.finished.connect(self._reap)
        self._running[job_id] = _Running(lane, thread, worker, token)
        self._current[lane] = job_id
        self.started.emit(lane, job_id)
        thread.start()
        return job_id

    def cancel(self, lane: str, *, notify: bool = True) -> None:
        """Cancel the lane's current job; the lane is idle at once.

        The thread stops at the engine's next cancellation check; whatever it
        returns is dropped.

        Parameters
        ----------
        lane : str
            The lane.
        notify : bool
            Emit ``cancelled`` for the job (False when a new job supersedes it).
        """
        job_id = self._current.pop(lane, None)
        if job_id is None:
            return
        running = self._running.get(job_id)
        if running is not None:
            running.token.cancel()
        if notify:
            self.cancelled.emit(lane, job_id)

    def is_busy(self, lane: str) -> bool:
        """Whether the lane has a current job."""
        return lane in self._current

    def active_threads(self) -> int:
        """Number of threads still alive (including cancelled ones winding down)."""
        return len(self._running)

    def cancel_all(self, *, keep: Collection[str] = ()) -> None:
        """Cancel every lane's current job, except the lanes in ``keep`` (no signals).

        Parameters
        ----------
        keep : collection of str
            Lanes whose jobs go on (e.g. ``("save",)``: a save is let finish).
        """
        for lane in [lane for lane in self._current if lane not in keep]:
            self.cancel(lane, notify=False)

    def shutdown(self) -> None:
        """Cancel every job, wait without a time limit until every thread has ended, and
        forget them (their late signals are dropped); emits ``idle`` when any was alive.

        Blocks the calling thread: a run stops at the engine's next cancellation check
        (at least every 0.5 s), a save before its next file. No thread is left running
        for Qt to destroy, nor any of the threads lent to the engine.
        """
        self.cancel_all()
        alive = bool(self._running)
        for running in self._running.values():
            running.token.cancel()
            running.thread.quit()
            running.thread.wait()
            running.thread.deleteLater()
            running.worker.deleteLater()
        self._running.clear()
        if self._lent is not None:  # idle now that no job runs
            self._lent.shutdown(wait=True)
            self._lent = None
        if alive:
            self.idle.emit()

    def _lane_of(self, job_id: int) -> str | None:
        """The lane of a job when it is still its lane's current job, else None."""
        running = self._running.get(job_id)
        if running is None or self._current.get(running.lane) != job_id:
            return None
        return running.lane

    @pyqtSlot(int, str, float)
    def _on_progress(self, job_id: int, step: str, fraction: float) -> None:
        lane = self._lane_of(job_id)
        if lane is not None:
            self.progress.emit(lane, job_id, step, fraction)

    @pyqtSlot(int, object)
    def _on_partial(self, job_id: int, value: object) -> None:
        lane = self._lane_of(job_id)
        if lane is not None:
            self.partial.emit(lane, job_id, value)

    def _end(self, job_id: int) -> str | None:
        """Retire a lane's current job as it ends; its lane, or None for a superseded job."""
        lane = self._lane_of(job_id)
        if lane is not None:
            del self._current[lane]
        return lane

    @pyqtSlot(int, object)
    def _on_finished(self, job_id: int, result: object) -> None:
        if (lane := self._end(job_id)) is not None:
            self.finished.emit(lane, job_id, result)

    @pyqtSlot(int, object)
    def _on_failed(self, job_id: int, report: object) -> None:
        if (lane := self._end(job_id)) is not None:
            self.failed.emit(lane, job_id, report)

    @pyqtSlot(int)
    def _on_cancelled(self, job_id: int) -> None:
        if (lane := self._end(job_id)) is not None:
            self.cancelled.emit(lane, job_id)

    @pyqtSlot()
    def _reap(self) -> None:
        """Forget a thread that has ended (the sender), let Qt delete it and its worker in
        this thread, and emit ``idle`` when it was the last one."""
        thread = self.sender()
        for job_id, running in list(self._running.items()):
            if running.thread is thread:
                running.thread.wait()  # returns at once: the thread has emitted finished
                del self._running[job_id]
                running.thread.deleteLater()
                running.worker.deleteLater()  # back in this thread (_Worker.run)
                if not self._running:
                    self.idle.emit()
