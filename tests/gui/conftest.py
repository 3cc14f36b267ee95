"""Fixtures of the GUI tests: a window with throw-away settings, and one showing the demo run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from diffviewer.gui.window import MainWindow, isolated_window
from tests.gui.helpers import demo, run


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
