"""Fixtures of the GUI tests: a window with throw-away settings, and one showing the demo run;
each test's windows deleted and its garbage collected after it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from PyQt6.QtCore import QEvent
from PyQt6.QtWidgets import QApplication

from diffviewer.gui.window import MainWindow, isolated_window
from tests.gui.helpers import demo, run


@pytest.fixture(autouse=True)
def _collect_outside_paint() -> Iterator[None]:
    """Each test's windows deleted after it, and its garbage collected with no paint running.

    pytest-qt closes a test's widgets and asks for their deletion (``deleteLater``), but
    processing events does not run deferred deletions: a closed window lived on until a
    later test's event loop, its Qt wrappers (graphics items, check boxes: a few hundred a
    window) left in reference cycles for CPython's automatic collector, which finalises them
    whenever its threshold is crossed, also while Python code runs inside a paint
    (pyqtgraph's ``paintEvent``): one CI run segfaulted there, in pytest-qt's event
    processing after a test's last line, every test having passed. Here the automatic
    collector is off during the test; after it (its widgets closed) the deferred deletions
    are run and the garbage collected.
    """
    gc.disable()
    try:
        yield
    finally:
        QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
        gc.collect()
        gc.enable()


@pytest.fixture
def window(qtbot, tmp_path: Path) -> Iterator[MainWindow]:
    """A shown window whose settings and outputs live in ``tmp_path``."""
    win = isolated_window(tmp_path)
    qtbot.addWidget(win)
    yield win
    win.jobs.shutdown()


@pytest.fixture
def demo_window(qtbot, window: MainWindow) -> MainWindow:
    """The window after running the demo pair."""
    run(qtbot, window, demo())
    return window
