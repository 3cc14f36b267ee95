"""Shared helpers of the GUI tests: the demo pair and waiting for a lane's job."""

from __future__ import annotations

from collections.abc import Callable

from PyQt6.QtCore import QPointF

from diffviewer.gui.model import Pair
from diffviewer.gui.window import MainWindow
from diffviewer.io import demo_pair

# The demo pair runs in ~1-3 s; generous for a loaded shared machine (a time-out, not a
# timing assertion: the wait ends as soon as the signal arrives).
RUN_TIMEOUT_MS = 120_000


def demo() -> Pair:
    """The bundled demo pair."""
    sci, tmpl = demo_pair()
    return Pair(str(sci), str(tmpl), "demo")


def finish(qtbot, win: MainWindow, lane: str, action: Callable[[], object]) -> None:
    """Call ``action`` and wait until the window's job of ``lane`` has finished."""
    with qtbot.waitSignal(
        win.jobs.finished,
        timeout=RUN_TIMEOUT_MS,
        check_params_cb=lambda which, *args: which == lane,
    ):
        action()


def run(qtbot, win: MainWindow, pair: Pair | None = None) -> None:
    """Open ``pair`` (or re-run the current one) and wait for the result on screen."""
    finish(qtbot, win, "run", win.run if pair is None else lambda: win.open_pair(pair))


class Click:
    """A mouse click at (x, y) in an item's coordinates, as pyqtgraph hands it to an
    item's ``mouseClickEvent``."""

    def __init__(self, x: float, y: float) -> None:
        self._pos = QPointF(x, y)
        self.accepted = False

    def pos(self) -> QPointF:
        """Where the click was."""
        return self._pos

    def accept(self) -> None:
        """Mark the click as handled."""
        self.accepted = True
