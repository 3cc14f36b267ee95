"""The process's one QApplication, named so that every window shares its settings."""

from __future__ import annotations

import sys

from PyQt6.QtCore import QTimer
from PyQt6.QtWidgets import QApplication
from threadpoolctl import threadpool_limits

from diffviewer.termination import quit_on_termination

#: How often (ms) the event loop lets Python run: a signal handler runs only then.
SIGNAL_POLL_MS = 250


def application() -> QApplication:
    """The running QApplication, or a new one named ``diffviewer`` (QSettings' scope).

    Returns
    -------
    PyQt6.QtWidgets.QApplication
    """
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setOrganizationName("diffviewer")
    app.setApplicationName("diffviewer")
    return app


def one_blas_thread() -> None:
    """Set one BLAS thread for the process, as ``diffviewer run`` does around the engine
    (the reason is in :func:`diffviewer.cli.run_pair`'s comment).

    A window calls it when it is made: in the GUI thread, before any of its workers
    exists (switching OpenBLAS's process-wide count from a worker thread deadlocked the
    GUI), once numpy's and scipy's BLAS are loaded (the window's modules load them; a
    library loaded later keeps its own count). Without it the engine's kernel fit on GOTO
    took 6-11 s in the window on a loaded machine, against 0.8 s in ``diffviewer run``,
    and a window made beside another QApplication than :func:`application`'s (pytest-qt's,
    a script's) measured catalog fluxes 4e-4 off the command line's (OpenBLAS's two
    threads sum in another order).
    """
    threadpool_limits(1, "blas")


def run_event_loop(app: QApplication) -> int:
    """Run ``app``'s event loop until its windows close or SIGTERM / SIGHUP arrives.

    Qt's loop runs no Python between events, so a timer gives the interpreter a moment
    every :data:`SIGNAL_POLL_MS` ms, and the signals quit the loop
    (:func:`~diffviewer.termination.quit_on_termination`): ``timeout 20 diffviewer
    review DIR`` ran on after the signal until it was killed.

    Returns
    -------
    int
        The event loop's exit code.
    """
    poll = QTimer(app)
    poll.timeout.connect(lambda: None)
    poll.start(SIGNAL_POLL_MS)
    try:
        with quit_on_termination(app.quit):
            return int(app.exec())
    finally:
        poll.stop()
