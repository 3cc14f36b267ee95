"""The process's one QApplication, named so that every window shares its settings."""

from __future__ import annotations

import sys

from PyQt6.QtWidgets import QApplication
from threadpoolctl import threadpool_limits


def application() -> QApplication:
    """The running QApplication, or a new one named ``diffviewer`` (QSettings' scope).

    Also sets one BLAS thread for the process, as ``diffviewer run`` does around the
    engine (the reason is in :func:`diffviewer.cli.run_pair`'s comment): here, in the
    GUI thread before any worker exists, because switching OpenBLAS's process-wide count
    from a worker thread deadlocked the GUI. Without it the engine's kernel fit on GOTO
    took 6-11 s in the window on a loaded machine, against 0.8 s in ``diffviewer run``.

    Returns
    -------
    PyQt6.QtWidgets.QApplication
    """
    threadpool_limits(1, "blas")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setOrganizationName("diffviewer")
    app.setApplicationName("diffviewer")
    return app
