"""The main window's status-bar message: one line that gives way to the room it has."""

from __future__ import annotations

from PyQt6.QtCore import QTimer
from PyQt6.QtWidgets import QSizePolicy, QWidget

from diffviewer.gui.views import ElidedTitle


class StatusMessage(ElidedTitle):
    """The status bar's message, shown for a time in the room its permanent widgets (the
    markers' note, the run's step, the progress bar) leave, in the status bar's plain font.

    Where that room cannot hold it whole, it gives way as a view's title does
    (:class:`~diffviewer.gui.views.ElidedTitle`): the part it names (a saved run's folder)
    shortened in the middle first, then its end cut; the tooltip holds it whole. It is
    fitted again whenever its room changes (a run's step or the markers' note taking more).
    QStatusBar's own message was cut at the right, unmarked, where its room ended: at
    1280 x 720 a saved run kept as A lost its folder's end, its config digest and what
    keeping it means.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        font = self.font()
        font.setBold(False)
        self.setFont(font)
        # the room the permanent widgets leave, whatever the message's length
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        # apart from the markers' note that follows it (a shortened "…" ran into "markers:")
        self.setContentsMargins(0, 0, 12, 0)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(lambda: self.say(""))

    @property
    def whole(self) -> str:
        """The message said (the text shown may be shortened); empty when none is."""
        return self._title

    def say(self, message: str, timeout_ms: int = 0, part: str = "") -> None:
        """Show ``message`` in place of the one shown.

        Parameters
        ----------
        message : str
            The message, plain text (empty: none).
        timeout_ms : int
            How long it stays (ms); 0, until the next one.
        part : str
            The part of it that gives way first to a narrow room, shortened in the middle
            (a saved run's folder name); empty, its end gives way.
        """
        self.set_title(message, part)
        if timeout_ms > 0:
            self._timer.start(timeout_ms)
        else:
            self._timer.stop()
