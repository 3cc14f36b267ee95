"""The banner of a run's warnings above the tabs: the first in full, the others behind a link."""

from __future__ import annotations

import html
from collections.abc import Sequence

from PyQt6.QtWidgets import QLabel, QWidget

#: The colours of what the user should look at (this banner, a registration that needs it).
WARN_STYLE = "background: #fff3b0; color: #5a4500; padding: 3px;"


class WarningsBanner(QLabel):
    """A run's warnings, folded to the first one with a cue naming how many more there are.

    Folded, the banner shows the first warning and a link "… n more: show all"; unfolded,
    every warning on a line of its own and a link to fold them again. Hidden when the run
    gave no warning. Nothing is cut without a cue (a banner capped at two lines once cut
    its second warning mid-sentence).

    Parameters
    ----------
    parent : QWidget, optional
        The parent widget.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setStyleSheet(WARN_STYLE)
        self.linkActivated.connect(self._on_link)
        self.notes: list[str] = []
        self.unfolded = False
        self.hide()

    def set_notes(self, notes: Sequence[str]) -> None:
        """Show a run's warnings, folded (none: hide the banner).

        Parameters
        ----------
        notes : sequence of str
            The warnings, in plain text.
        """
        self.notes = list(notes)
        self.unfolded = False
        self._draw()

    def _on_link(self, link: str) -> None:
        self.unfolded = link == "unfold"
        self._draw()

    def _draw(self) -> None:
        notes = [html.escape(n, quote=False) for n in self.notes]
        if not notes:
            self.hide()
            return
        if len(notes) == 1:
            text = f"<b>Warning:</b> {notes[0]}"
        elif self.unfolded:
            items = "<br>".join(f"• {n}" for n in notes)
            text = f"<b>Warnings ({len(notes)}):</b> <a href='fold'>show fewer</a><br>{items}"
        else:
            more = len(notes) - 1
            text = (
                f"<b>Warnings ({len(notes)}):</b> {notes[0]} "
                f"<a href='unfold'>… {more} more: show all</a>"
            )
        self.setText(text)
        self.show()
