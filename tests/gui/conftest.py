"""Fixtures of the GUI tests: a window with throw-away settings, and one showing the demo run;
cyclic garbage collected between tests."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from diffviewer.gui.window import MainWindow, isolated_window
from tests.gui.helpers import demo, run


@pytest.fixture(autouse=True)
def _collect_outside_paint() -> Iterator[None]:
    """CPython's cyclic collector off during a GUI test; its garbage collected after it.

    A closed window leaves Qt wrappers (graphics items, check boxes: a few hundred a window)
    in reference cycles, which the automatic collector finalises whenever its threshold is
    crossed, also while Python code runs inside a paint (pyqtgraph's ``paintEvent``): one
    CI run segfaulted there, in pytest-qt's event processing after a test's last line,
    every test having passed. Collected here, no paint is in progress.
    """
    gc.disable()
    try:
        yield
    finally:
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
