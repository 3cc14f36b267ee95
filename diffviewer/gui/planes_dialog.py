"""File > Planes files of this pair…: each input's mask, variance or weight from a file of
its own, and how its mask's bits are read (what ``diffviewer run --science-mask ...``
gives on the command line)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PyQt6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QGridLayout,
    QLabel,
    QLineEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from diffviewer.companions import Companions, bits_text, parse_mask_bits
from diffviewer.errors import InputError
from diffviewer.paths import expand_user, parse_spec, require_file

#: The noise companions, one of which an input may have (:class:`Companions` refuses both).
NOISE_KINDS = ("variance", "weight")


@dataclass(frozen=True)
class PlaneFields:
    """What one input's row of the dialog holds.

    Attributes
    ----------
    label : str
        The input: ``Science``, ``Template`` or ``Piece 2``.
    mask : str
        The mask image spec typed or chosen (empty: none).
    noise_kind : str
        ``variance`` or ``weight``: what ``noise`` is.
    noise : str
        The variance or weight image spec (empty: none).
    """

    label: str
    mask: str
    noise_kind: str
    noise: str


def _spec(text: str, role: str) -> str | None:
    """A spec typed in a field, ``~`` expanded and its file checked to be one (empty:
    None)."""
    text = expand_user(text.strip())
    if not text:
        return None
    path, _ = parse_spec(text)
    require_file(path, role)
    return text


def companions_from_fields(rows: Sequence[PlaneFields], bits: str) -> list[Companions]:
    """The companions the dialog's fields give, one per row, with the bit map ``bits``.

    Parameters
    ----------
    rows : sequence of PlaneFields
        The science's row, then each template piece's.
    bits : str
        ``PLANE=BIT[,BIT...]`` terms apart (empty: every nonzero mask value is BAD).

    Returns
    -------
    list of Companions
        In the rows' order.

    Raises
    ------
    InputError
        Naming the row and the file when a field names no file, or the bits when they
        cannot be read (:func:`~diffviewer.companions.parse_mask_bits`).
    """
    mask_bits = parse_mask_bits(bits.split())
    out = []
    for row in rows:
        mask = _spec(row.mask, f"{row.label.lower()} mask")
        noise = _spec(row.noise, f"{row.label.lower()} {row.noise_kind}")
        variance, weight = (noise, None) if row.noise_kind == "variance" else (None, noise)
        out.append(Companions(mask, variance, weight, mask_bits))
    return out


class _FileField(QWidget):
    """A spec's line with a button that chooses its file."""

    def __init__(self, text: str, title: str, ask: Callable[[str], Path | None]) -> None:
        super().__init__()
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.line = QLineEdit(text)
        self.line.setPlaceholderText("none (file.fits or file.fits[EXT])")
        self.line.setMinimumWidth(260)
        button = QToolButton()
        button.setText("…")
        button.setToolTip(f"Choose the {title} file")
        button.clicked.connect(lambda: self._choose(ask, title))
        layout.addWidget(self.line, 0, 0)
        layout.addWidget(button, 0, 1)

    def _choose(self, ask: Callable[[str], Path | None], title: str) -> None:
        """Ask for the file (titled ``title``) and show its path (Cancel: unchanged)."""
        path = ask(title)
        if path is not None:
            self.line.setText(str(path))


class PlanesDialog(QDialog):
    """Each input's mask and variance or weight file, and the mask's bit map.

    OK reads the fields (:func:`companions_from_fields`); what it refuses is said in the
    dialog, which stays open with what was typed.

    Parameters
    ----------
    labels : sequence of str
        The inputs: ``Science``, then ``Template`` or each piece's.
    given : sequence of Companions
        Each input's companions now (the fields start with them).
    ask : callable
        Asks for a file, given the dialog's title (None: cancelled).
    parent : QWidget, optional
    """

    def __init__(
        self,
        labels: Sequence[str],
        given: Sequence[Companions],
        ask: Callable[[str], Path | None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Planes files of this pair")
        self.labels = list(labels)
        #: The companions accepted (empty until OK is taken).
        self.chosen: list[Companions] = []
        grid = QGridLayout()
        for column, heading in enumerate(("", "Mask", "Noise", "")):
            grid.addWidget(QLabel(f"<b>{heading}</b>"), 0, column)
        self.masks: list[_FileField] = []
        self.kinds: list[QComboBox] = []
        self.noises: list[_FileField] = []
        for row, (label, companions) in enumerate(zip(labels, given, strict=True), start=1):
            kind = "weight" if companions.weight is not None else "variance"
            noise = companions.weight or companions.variance or ""
            self.masks.append(_FileField(companions.mask or "", f"{label} mask", ask))
            combo = QComboBox()
            combo.addItems(NOISE_KINDS)
            combo.setCurrentText(kind)
            combo.setToolTip("variance: image units squared; weight: inverse variance")
            self.kinds.append(combo)
            self.noises.append(_FileField(noise, f"{label} variance or weight", ask))
            grid.addWidget(QLabel(label), row, 0)
            grid.addWidget(self.masks[-1], row, 1)
            grid.addWidget(combo, row, 2)
            grid.addWidget(self.noises[-1], row, 3)
        self.bits = QLineEdit(bits_text(given[0].mask_bits) if given else "")
        self.bits.setPlaceholderText("every nonzero value is BAD")
        self.problem = QLabel()
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet("color: #c62828")
        self.problem.hide()
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        explained = QLabel(
            "Mask bits, PLANE=BIT[,BIT...] terms apart, for masks without LSST's MP_* "
            "cards (planes BAD, SAT, CR, INTRP, SUSPECT, NO_DATA; e.g. CR=7 BAD=0,9):"
        )
        explained.setWordWrap(True)
        layout.addWidget(explained)
        layout.addWidget(self.bits)
        layout.addWidget(self.problem)
        layout.addWidget(buttons)

    def fields(self) -> list[PlaneFields]:
        """What each input's row holds now."""
        return [
            PlaneFields(label, mask.line.text(), kind.currentText(), noise.line.text())
            for label, mask, kind, noise in zip(
                self.labels, self.masks, self.kinds, self.noises, strict=True
            )
        ]

    def accept(self) -> None:
        """Keep the fields' companions and close, or say why they are refused."""
        try:
            self.chosen = companions_from_fields(self.fields(), self.bits.text())
        except InputError as exc:
            self.problem.setText(str(exc))
            self.problem.show()
            return
        super().accept()
