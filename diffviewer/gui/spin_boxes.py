"""Spin boxes that hold every value a config field can: 64-bit integers, and floats to
their last digit.

``QSpinBox`` holds 32-bit integers; ``QDoubleSpinBox`` rounds to its ``decimals`` (4 in the
parameter panel before: a config's 0.03125 ran as 0.0313, and 5e-05 as 0.0001, so the
window's digest was not the file's and no command-line run reproduced the window's).
Keeping every digit, the arrows step in decimal (:func:`decimal_step`): in binary, 0.1 up,
up, down, down was 0.10000000000000003, an edit with a digest of its own. A float is read
as a config reads it (:func:`diffviewer.config.read_float`): a number no float holds
(``1e-400``, ``1e400``) is kept as typed, for the config to refuse, where ``float`` made it
0.0 or infinity.
"""

from __future__ import annotations

import math
from decimal import Decimal

from PyQt6.QtCore import QSize, pyqtSignal
from PyQt6.QtGui import QValidator
from PyQt6.QtWidgets import QAbstractSpinBox, QDoubleSpinBox, QLineEdit, QSizePolicy, QWidget

from diffviewer.config import OutOfRangeFloat, read_float

#: Integer bounds for fields without a declared limit: those of a signed 64-bit integer.
INT64 = 2**63 - 1
#: ``QDoubleSpinBox``'s most decimals (DBL_MAX_10_EXP + DBL_DIG): no rounding of a double.
ALL_DECIMALS = 323


class LongSpinBox(QAbstractSpinBox):
    """A spin box of integers up to 64 bits (``QSpinBox`` holds 32: 2**31 - 1 at most).

    Parameters
    ----------
    minimum, maximum : int
        The range of values; typed text outside it is clamped when editing ends.
    parent : QWidget, optional
        The parent widget.
    step : int
        What one step of the arrows adds (2 for a field of odd values only).
    special : str
        Shown in place of the minimum, where that value asks the engine to choose (Qt's
        special value text: ``"from the pair"`` for ``measurement.exposure_id`` -1); typed,
        it is the minimum. Empty: the minimum reads as its digits.

    Signals
    -------
    valueChanged(object)
        The value changed (a Python int: a Qt ``int`` signal would hold 32 bits).
    """

    valueChanged = pyqtSignal(object)

    def __init__(
        self,
        minimum: int,
        maximum: int,
        parent: QWidget | None = None,
        *,
        step: int = 1,
        special: str = "",
    ) -> None:
        super().__init__(parent)
        # Its size hint holds the range's longest value (19 digits for an exposure id):
        # preferred, not a minimum as a spin box's is, so that a narrow parameter panel
        # (1280 x 720) shrinks it rather than clipping every editor beside it.
        self.setSizePolicy(QSizePolicy.Policy.Preferred, self.sizePolicy().verticalPolicy())
        self._minimum, self._maximum = minimum, maximum
        self._step = step
        self.setSpecialValueText(special)
        self._value = min(max(0, minimum), maximum)
        self._line().setText(self._text(self._value))
        self._line().textEdited.connect(self._on_text)
        self.editingFinished.connect(lambda: self.setValue(self._value))

    def sizeHint(self) -> QSize:
        """Wide enough for the longest value of the range (as ``QSpinBox``'s)."""
        hint = super().sizeHint()
        digits = max(len(str(self._minimum)), len(str(self._maximum)))
        metrics = self.fontMetrics()
        widest = max(
            metrics.horizontalAdvance("9" * digits),
            metrics.horizontalAdvance(self.specialValueText()),
        )
        return QSize(hint.width() + widest, hint.height())

    def _line(self) -> QLineEdit:
        line = self.lineEdit()
        assert line is not None
        return line

    def minimum(self) -> int:
        """The smallest value."""
        return self._minimum

    def maximum(self) -> int:
        """The largest value."""
        return self._maximum

    def value(self) -> int:
        """The value shown."""
        return self._value

    def _text(self, value: int) -> str:
        """How ``value`` reads: the special value text at the minimum, else its digits."""
        special = self.specialValueText()
        return special if special and value == self._minimum else str(value)

    def setValue(self, value: int) -> None:
        """Show ``value``, clamped to the range (emits :attr:`valueChanged` on a change)."""
        value = min(max(int(value), self._minimum), self._maximum)
        if self._line().text() != self._text(value):
            self._line().setText(self._text(value))
        if value != self._value:
            self._value = value
            self.valueChanged.emit(value)

    def singleStep(self) -> int:
        """What one step of the arrows adds (2 for a field of odd values only)."""
        return self._step

    def stepBy(self, steps: int) -> None:
        """Step the value by ``steps`` single steps (arrows, Page Up/Down, the focused
        wheel), as many as the range holds (whole steps: an odd value stays odd)."""
        room_up = (self._maximum - self._value) // self._step
        room_down = (self._value - self._minimum) // self._step
        self.setValue(self._value + min(max(steps, -room_down), room_up) * self._step)

    def stepEnabled(self) -> QAbstractSpinBox.StepEnabledFlag:
        """Which of up and down can step, at the value shown."""
        flags = QAbstractSpinBox.StepEnabledFlag.StepNone
        if self._value + self._step <= self._maximum:
            flags |= QAbstractSpinBox.StepEnabledFlag.StepUpEnabled
        if self._value - self._step >= self._minimum:
            flags |= QAbstractSpinBox.StepEnabledFlag.StepDownEnabled
        return flags

    def validate(self, text: str | None, pos: int) -> tuple[QValidator.State, str, int]:
        """Digits with an optional sign, or the special value text; out-of-range numbers,
        and the special value text being typed, are intermediate."""
        text = text or ""
        parsed = self._parse(text)
        if parsed is None:
            special = self.specialValueText()
            partial = text.strip() in ("", "-", "+") or bool(special and special.startswith(text))
            state = QValidator.State.Intermediate if partial else QValidator.State.Invalid
        elif self._acceptable(parsed):
            state = QValidator.State.Acceptable
        else:
            state = QValidator.State.Intermediate
        return state, text, pos

    def _acceptable(self, value: int) -> bool:
        """In the range, and whole steps from its minimum (odd for a field of odd values
        only, stepped by 2 from 3: 12 typed was taken, and the arrows kept it even)."""
        on_grid = (value - self._minimum) % self._step == 0
        return self._minimum <= value <= self._maximum and on_grid

    def fixup(self, text: str | None) -> str:
        """The value shown, in place of text that is not a number in the range."""
        return self._text(self._value)

    def _parse(self, text: str) -> int | None:
        """The integer ``text`` holds (the minimum for the special value text), or None."""
        special = self.specialValueText()
        if special and text.strip() == special:
            return self._minimum
        return _parse_int(text)

    def _on_text(self, text: str) -> None:
        parsed = self._parse(text)
        if parsed is not None and self._acceptable(parsed):
            self.setValue(parsed)


def _parse_int(text: str) -> int | None:
    """The integer written in ``text`` (surrounding space allowed), or None."""
    try:
        return int(text.strip())
    except ValueError:
        return None


#: Characters a float field is sized for (0.000123456, 1234567.8).
FLOAT_FIELD_CHARS = 10


class FloatSpinBox(QDoubleSpinBox):
    """A spin box of floats that keeps every digit, shows the shortest text that reads
    back as the value (``repr``: 0.03125, 5e-05, 3.0) and steps in decimal (0.2 up by 0.1
    is 0.3, not 0.30000000000000004).

    A number typed that no float holds (``1e-400``, ``1e400``) stays as typed and is its
    :meth:`number` (an :class:`~diffviewer.config.OutOfRangeFloat`, which a config refuses
    naming it), the value staying what it was; a number typed or set after it replaces it.

    Parameters
    ----------
    minimum, maximum : float
        The range of values.
    parent : QWidget, optional
        The parent widget.

    Signals
    -------
    numberChanged
        :meth:`number` changed: the value, or a number no float holds typed or replaced.
    """

    numberChanged = pyqtSignal()

    def __init__(self, minimum: float, maximum: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        #: A number typed that no float holds, shown in place of the value (None: none).
        self._out_of_range: OutOfRangeFloat | None = None
        self.setDecimals(ALL_DECIMALS)
        self.setRange(minimum, maximum)
        self.valueChanged.connect(self.numberChanged)
        # The value the arrows started from, the steps taken since, and the value they
        # left: stepping back to 0 steps is that value to the bit, however many digits
        # it has (0.12345678901234568 up and down was 0.12345678901234566).
        self._anchor, self._taken, self._stepped = 0.0, 0, math.nan

    def sizeHint(self) -> QSize:
        """Wide enough for :data:`FLOAT_FIELD_CHARS` characters, whatever the range: sized to
        the text of its ends, a field's width followed its bound (1e12 for a field without
        a limit, 138 px; 1e300, 76 px), and the parameter panel's rows wrapped around the
        narrowest."""
        hint = super().sizeHint()
        metrics = self.fontMetrics()
        ends = max(
            metrics.horizontalAdvance(_shortest(v)) for v in (self.minimum(), self.maximum())
        )
        width = hint.width() - ends + metrics.horizontalAdvance("9" * FLOAT_FIELD_CHARS)
        return QSize(width, hint.height())

    def minimumSizeHint(self) -> QSize:
        """As :meth:`sizeHint`."""
        return self.sizeHint()

    def _steps_from_anchor(self) -> tuple[float, int]:
        """The anchor and the steps taken from it, anew when the value was set otherwise
        (typed, loaded, reset) since the arrows last stepped."""
        if self.value() != self._stepped:
            return self.value(), 0
        return self._anchor, self._taken

    def _in_range(self, anchor: float, taken: int) -> bool:
        value = decimal_step(anchor, self.singleStep(), taken)
        return bool(self.minimum() <= value <= self.maximum())

    def stepBy(self, steps: int) -> None:
        """Step the value by ``steps`` single steps in decimal arithmetic from where the
        arrows started (arrows, Page Up/Down, the focused wheel), as many as the range
        holds (0.95 up on a field to 1 stays 0.95, so up and down is the value again);
        text being typed is read first, as ``QAbstractSpinBox`` does."""
        self.interpretText()
        anchor, taken = self._steps_from_anchor()
        direction = 1 if steps > 0 else -1
        take = 0
        while take != steps and self._in_range(anchor, taken + take + direction):
            take += direction
        if take == 0:
            return
        value = decimal_step(anchor, self.singleStep(), taken + take)
        self._anchor, self._taken, self._stepped = anchor, taken + take, value
        self.setValue(value)
        self.selectAll()

    def stepEnabled(self) -> QAbstractSpinBox.StepEnabledFlag:
        """Which of up and down can take a whole step within the range."""
        anchor, taken = self._steps_from_anchor()
        flags = QAbstractSpinBox.StepEnabledFlag.StepNone
        if self._in_range(anchor, taken + 1):
            flags |= QAbstractSpinBox.StepEnabledFlag.StepUpEnabled
        if self._in_range(anchor, taken - 1):
            flags |= QAbstractSpinBox.StepEnabledFlag.StepDownEnabled
        return flags

    def number(self) -> float:
        """The number typed: the value, or one that no float holds typed after it.

        Returns
        -------
        float
            The value, or an :class:`~diffviewer.config.OutOfRangeFloat` spelt as typed.
        """
        return self.value() if self._out_of_range is None else self._out_of_range

    def setValue(self, value: float) -> None:
        """Show ``value`` (in place of a number typed that no float holds)."""
        self._keep_out_of_range(None, announce=self._bounded(value) == self.value())
        super().setValue(value)

    def _bounded(self, value: float) -> float:
        """``value`` within the range, as the spin box keeps it."""
        return min(max(value, self.minimum()), self.maximum())

    def _keep_out_of_range(self, number: OutOfRangeFloat | None, announce: bool = True) -> None:
        """Keep ``number`` as typed in place of the value (None: show the value), and say
        that the number changed when it did, unless ``announce`` is False (the value is
        about to change, and its ``valueChanged`` says it once)."""
        # By spelling: 1e-400 is 0.0 as a float (falsy, and equal to 1e-500)
        before = None if self._out_of_range is None else self._out_of_range.text
        self._out_of_range = number
        if announce and before != (None if number is None else number.text):
            self.numberChanged.emit()

    def textFromValue(self, value: float) -> str:
        """The shortest text of ``value`` that reads back as it (a number typed that no
        float holds: as typed)."""
        if self._out_of_range is not None:
            return self._out_of_range.text
        return _shortest(value)

    def valueFromText(self, text: str | None) -> float:
        """The number ``text`` holds (the value shown when it holds none, or one that no
        float holds, which is kept as typed)."""
        parsed = _parse_float(text or "")
        if isinstance(parsed, OutOfRangeFloat):
            self._keep_out_of_range(parsed)
            return self.value()
        value = self.value() if parsed is None else parsed
        self._keep_out_of_range(None, announce=self._bounded(value) == self.value())
        return value

    def validate(self, text: str | None, pos: int) -> tuple[QValidator.State, str, int]:
        """A finite number, in the range (out of it: intermediate), or one that no float
        holds (kept as typed, for the config to refuse); a sign, a point or an exponent
        being typed are intermediate."""
        text = text or ""
        parsed = _parse_float(text)
        if isinstance(parsed, OutOfRangeFloat):
            state = QValidator.State.Acceptable
        elif parsed is None:
            partial = text.strip() == "" or text.strip()[-1:] in ("-", "+", ".", "e", "E")
            state = QValidator.State.Intermediate if partial else QValidator.State.Invalid
        elif self.minimum() <= parsed <= self.maximum():
            state = QValidator.State.Acceptable
        else:
            state = QValidator.State.Intermediate
        return state, text, pos


def decimal_step(value: float, step: float, steps: int) -> float:
    """``value`` plus ``steps`` times ``step``, in the decimals they are written with.

    Parameters
    ----------
    value, step : float
        The value and the single step (each read as its shortest text, ``repr``).
    steps : int
        How many steps (negative: down).

    Returns
    -------
    float
        The float nearest the decimal sum: 0.1 + 0.1 - 0.1 - 0.1 is 0.1 again, where
        binary sums drift (0.10000000000000003).
    """
    return float(Decimal(repr(float(value))) + steps * Decimal(repr(float(step))))


def _shortest(value: float) -> str:
    """The shortest text of ``value`` that reads back as it (``repr``)."""
    return repr(float(value))


def _parse_float(text: str) -> float | None:
    """The number written in ``text`` (surrounding space allowed) as a config reads it
    (:func:`~diffviewer.config.read_float`): finite, or one that no float holds spelt as
    written (an :class:`~diffviewer.config.OutOfRangeFloat`); else None."""
    try:
        value = read_float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) or isinstance(value, OutOfRangeFloat) else None
