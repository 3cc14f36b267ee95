"""Fixtures of the GUI tests: a window with throw-away settings, and one showing the demo run;
each test's windows deleted and its garbage collected after it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PyQt6.QtCore import QEvent
from PyQt6.QtWidgets import QApplication

from diffviewer.engine.pipeline import run_subtraction
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


#: The engine's results on the demo pair, by config digest: the same inputs and config
#: give the same result, so each is computed once a session.
_DEMO_RESULTS: dict[str, Any] = {}


def _demo_runner(science: Any, template: Any, config: Any, **kwargs: Any) -> Any:
    """The engine as a window's runner (:func:`diffviewer.gui.model.run_job`), each config's
    result on the demo pair made once and handed to every window after (it is read-only:
    frozen arrays; the window keeps its verdicts and selections of its own)."""
    key = f"{config.digest()} {science.source} {getattr(template, 'source', template)}"
    if key not in _DEMO_RESULTS:
        _DEMO_RESULTS[key] = run_subtraction(science, template, config, **kwargs)
    return _DEMO_RESULTS[key]


@pytest.fixture
def demo_window(qtbot, window: MainWindow) -> MainWindow:
    """The window after running the demo pair (the engine's result shared by the tests that
    run the same config: 45 windows took a second each to make it again)."""
    window.runner = _demo_runner
    run(qtbot, window, demo())
    return window
