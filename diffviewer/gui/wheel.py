"""Spin boxes and drop-downs take the mouse wheel only when focused.

Scrolling a panel full of editors must scroll the panel, never change the value
under the cursor (a scroll through the parameters once turned ``detect_threshold``
from 10 into 3). :func:`guard_wheel` makes every spin box and combo box below a
widget pass an unfocused wheel on to its parent, and take focus only by click or Tab.
"""

from __future__ import annotations

from PyQt6.QtCore import QEvent, QObject, Qt
from PyQt6.QtWidgets import QAbstractSpinBox, QComboBox, QWidget


class _WheelGuard(QObject):
    """Event filter: an unfocused editor ignores the wheel, so its parent scrolls."""

    def eventFilter(self, obj: QObject | None, event: QEvent | None) -> bool:
        if (
            event is not None
            and event.type() == QEvent.Type.Wheel
            and isinstance(obj, QAbstractSpinBox | QComboBox)
            and not obj.hasFocus()
        ):
            event.ignore()  # handled here, not accepted: Qt passes it on to the parent
            return True
        return False


def guard_wheel(root: QWidget) -> None:
    """Guard every spin box and combo box under ``root`` (call again for editors added later).

    Parameters
    ----------
    root : QWidget
        A window or panel.
    """
    guard = root.findChild(_WheelGuard)
    if guard is None:
        guard = _WheelGuard(root)
    for kind in (QAbstractSpinBox, QComboBox):
        for editor in root.findChildren(kind):
            editor.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
            editor.removeEventFilter(guard)
            editor.installEventFilter(guard)
