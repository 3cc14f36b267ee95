"""The process's one QApplication, named so that every window shares its settings."""

from __future__ import annotations

import sys

from PyQt6.QtWidgets import QApplication


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
