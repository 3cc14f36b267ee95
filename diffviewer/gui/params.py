"""The parameter panel, generated from the config's field metadata.

One group per engine step (the sections of :class:`~diffviewer.config.SubtractionConfig`),
one editor per field: check boxes for booleans, spin boxes with the field's limits for
numbers (64-bit for integers: exposure ids exceed Qt's 32-bit ``QSpinBox``; a field of odd
values only steps by 2; a minimum that asks the engine to choose reads as the field's
``special`` text, "from the pair"; floats step in decimal), combo boxes for choices, text
for strings and lists. The field's doc, unit and limits are its tooltip; a value that
differs from the default is highlighted. Floats typed are read as a config file's
(:func:`~diffviewer.config.read_float`): one that no float holds (``1e-400``, ``1e400``) is
refused as the file's is, where ``float`` ran it as 0.0 or infinity.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from diffviewer.config import (
    SECTION_TYPES,
    OutOfRangeFloat,
    SubtractionConfig,
    field_specs,
    from_dict,
    read_float,
    toml_text,
)
from diffviewer.errors import ConfigError
from diffviewer.gui.spin_boxes import INT64, FloatSpinBox, LongSpinBox

_CHANGED_STYLE = "background-color: #fff2a8;"
# Spin-box bounds for fields without a declared limit: beyond any value a config holds
# (1e12 clamped a saved saturation_level of 5e12, which then read as an edit).
_UNBOUNDED = 1e300


def _tooltip(field: dataclasses.Field[Any]) -> str:
    """Doc, unit, limits and default of a field, for its tooltip."""
    meta = field.metadata
    parts = [str(meta.get("doc", ""))]
    if meta.get("unit"):
        parts.append(f"Unit: {meta['unit']}.")
    if meta.get("min") is not None or meta.get("max") is not None:
        lo, hi = meta.get("min"), meta.get("max")
        parts.append(f"Range: {'-inf' if lo is None else lo} to {'inf' if hi is None else hi}.")
    if meta.get("choices"):
        parts.append(f"Choices: {', '.join(meta['choices'])}.")
    parts.append(f"Default: {field.default!r}.")
    return "\n".join(parts)


def _format_list(value: tuple[Any, ...]) -> str:
    return ", ".join(str(v) for v in value)


class _Editor:
    """One field's widget with uniform get/set and a changed signal."""

    def __init__(self, section: str, field: dataclasses.Field[Any], kind: Any) -> None:
        self.section = section
        self.field = field
        self.kind = kind
        meta = field.metadata
        lo = meta.get("min")
        hi = meta.get("max")
        self.widget: QWidget
        if kind is bool:
            box = QCheckBox()
            self.widget = box
            self.changed = box.toggled
        elif kind is int:
            spin = LongSpinBox(
                int(lo if lo is not None else -INT64),
                int(hi if hi is not None else INT64),
                step=2 if meta.get("odd") else 1,
                special=meta.get("special") or "",
            )
            self.widget = spin
            self.changed = spin.valueChanged
        elif kind is float:
            dspin = FloatSpinBox(
                float(lo if lo is not None else -_UNBOUNDED),
                float(hi if hi is not None else _UNBOUNDED),
            )
            dspin.setSingleStep(0.1 if (hi is not None and hi <= 10) else 1.0)
            self.widget = dspin
            self.changed = dspin.numberChanged
        elif meta.get("choices"):
            combo = QComboBox()
            combo.addItems(list(meta["choices"]))
            self.widget = combo
            self.changed = combo.currentTextChanged
        else:
            line = QLineEdit()
            self.widget = line
            self.changed = line.editingFinished
        self.widget.setToolTip(_tooltip(field))
        self.widget.setObjectName(f"{section}.{field.name}")

    def value(self) -> Any:
        """The edited value, in the field's type (lists are parsed from text; a float no
        float holds is an :class:`~diffviewer.config.OutOfRangeFloat`, for the config to
        refuse)."""
        w = self.widget
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, LongSpinBox):
            return w.value()
        if isinstance(w, FloatSpinBox):
            return w.number()
        if isinstance(w, QComboBox):
            return w.currentText()
        assert isinstance(w, QLineEdit)
        text = w.text()
        if typing.get_origin(self.kind) is tuple:
            elem = typing.get_args(self.kind)[0]
            read = read_float if elem is float else elem
            try:
                return tuple(read(t.strip()) for t in text.split(",") if t.strip())
            except ValueError:
                raise ConfigError(
                    f"{self.section}.{self.field.name} = {toml_text(text)}: expected numbers "
                    "separated by commas, e.g. 4, 2, 2"
                ) from None
        return text

    def differs(self, config: SubtractionConfig) -> bool:
        """Whether the shown value differs from the field's value in ``config``.

        Parameters
        ----------
        config : SubtractionConfig
            The config to compare with (the defaults, or the config on screen).

        Returns
        -------
        bool
            True when the values differ (floats to the last digit: the editors keep
            them whole), the shown text cannot be parsed, or it holds a number that no
            float holds (1e-400 is not the 0.0 it reads as).
        """
        try:
            value = self.value()
        except ConfigError:
            return True
        items = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, OutOfRangeFloat) for v in items):
            return True
        return bool(value != getattr(getattr(config, self.section), self.field.name))

    def set_value(self, value: Any) -> None:
        """Show ``value`` without emitting change signals."""
        w = self.widget
        w.blockSignals(True)
        if isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, LongSpinBox):
            w.setValue(int(value))
        elif isinstance(w, FloatSpinBox):
            w.setValue(float(value))
        elif isinstance(w, QComboBox):
            w.setCurrentText(str(value))
        elif isinstance(w, QLineEdit):
            w.setText(_format_list(value) if isinstance(value, tuple) else str(value))
        w.blockSignals(False)


class ParameterPanel(QWidget):
    """Editors for every config field, grouped by step.

    Signals
    -------
    edited
        Emitted when the user changes any value.
    """

    edited = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._editors: dict[tuple[str, str], _Editor] = {}
        self._defaults = SubtractionConfig()
        self._base = self._defaults
        self._shown = False  # whether a run is on screen (set_base)
        self._running: SubtractionConfig | None = None  # the config of a run under way
        inner = QWidget()
        form_box = QVBoxLayout(inner)
        for section, cls in SECTION_TYPES.items():
            group = QGroupBox(section)
            group.setToolTip((cls.__doc__ or "").strip())
            form = QFormLayout(group)
            # In a narrow dock, long names put their editor on the next line instead of
            # cutting the value off or scrolling sideways.
            form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
            hints = typing.get_type_hints(cls)
            for field in field_specs(section):
                editor = _Editor(section, field, hints[field.name])
                editor.changed.connect(self._on_edit)
                unit = field.metadata.get("unit")
                label = QLabel(f"{field.name} [{unit}]" if unit else field.name)
                label.setToolTip(_tooltip(field))
                form.addRow(label, editor.widget)
                self._editors[(section, field.name)] = editor
            form_box.addWidget(group)
        form_box.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(inner)
        scroll.setWidgetResizable(True)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.reset_button = QPushButton("Reset to defaults")
        self.reset_button.setToolTip(
            "Show every parameter's default value, as an edit: press Run to apply"
        )
        self.reset_button.clicked.connect(self.reset)
        buttons = QHBoxLayout()
        buttons.addWidget(self.reset_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.set_config(self._defaults)

    def editor(self, section: str, name: str) -> QWidget:
        """The widget editing ``section.name``."""
        return self._editors[(section, name)].widget

    def set_value(self, section: str, name: str, value: Any) -> None:
        """Change one value as if the user had edited it."""
        self._editors[(section, name)].set_value(value)
        self._on_edit()

    def set_config(self, config: SubtractionConfig) -> None:
        """Show ``config`` (the config the window starts with, or a run's) and mark it as
        run."""
        self._base = config
        for (section, name), editor in self._editors.items():
            editor.set_value(getattr(getattr(config, section), name))
        self._refresh()

    def set_base(self, config: SubtractionConfig, *, from_panel: bool) -> None:
        """Mark ``config`` as the one on screen, keeping the user's pending edits.

        Pending edits keep their values (and so stay marked as edited); the other fields
        show ``config``'s values. For a run started from the panel (``from_panel``), the
        pending edits are the fields that differ from its config, typed while it ran (a
        value typed back to the previous run's was overwritten when only the previous
        config was compared with); for a run read back from its folder, those that differ
        from the previous config on screen.

        Parameters
        ----------
        config : SubtractionConfig
            The config of what is now on screen.
        from_panel : bool
            Whether the run was started with the panel's config.
        """
        since = config if from_panel else self._base
        for (section, name), editor in self._editors.items():
            if not editor.differs(since):
                editor.set_value(getattr(getattr(config, section), name))
        self._base = config
        self._shown = True
        self._refresh()

    def set_running(self, config: SubtractionConfig | None) -> None:
        """Say which config a run under way uses (None: no run is under way), so the
        status names it rather than asking to press Run for it."""
        self._running = config
        self._refresh()

    def set_nothing_shown(self) -> None:
        """Say that no run is on screen (a new pair, before its first run ends), so the
        status names the config Run will use, not views that show nothing."""
        self._shown = False
        self._refresh()

    def reset(self) -> None:
        """Set every field back to its default."""
        self.show_values(self._defaults)

    def show_values(self, config: SubtractionConfig) -> list[str]:
        """Show ``config``'s values as edits (press Run to apply them), field by field.

        Parameters
        ----------
        config : SubtractionConfig
            The values to show (a loaded config file, the defaults).

        Returns
        -------
        list of str
            The fields whose editor could not show their value, each with the reason;
            those editors keep what they showed, and every other field is shown.
        """
        failed = []
        for (section, name), editor in self._editors.items():
            try:
                editor.set_value(getattr(getattr(config, section), name))
            except (OverflowError, TypeError, ValueError) as exc:
                failed.append(f"{section}.{name} ({exc})")
        self._on_edit()
        return failed

    def config(self) -> SubtractionConfig:
        """The config as edited.

        Raises
        ------
        ConfigError
            When a value is invalid (the message names the field).
        """
        data: dict[str, dict[str, Any]] = {}
        for (section, name), editor in self._editors.items():
            data.setdefault(section, {})[name] = editor.value()
        return from_dict(data, self._defaults)

    def is_modified(self) -> bool:
        """Whether the edited config differs from the one on screen."""
        try:
            return self.config() != self._base
        except ConfigError:
            return True

    def _on_edit(self, *args: object) -> None:
        self._refresh()
        self.edited.emit()

    def _refresh(self) -> None:
        """Highlight values that differ from the defaults and state what is on screen."""
        for editor in self._editors.values():
            changed = editor.differs(self._defaults)
            editor.widget.setStyleSheet(_CHANGED_STYLE if changed else "")
        try:
            edited = self.config()
        except ConfigError as exc:
            self.status.setText(f"<b>Invalid:</b> {exc}")
            return
        running = self._running.digest() if self._running is not None else None
        self.status.setText(status_text(edited.digest(), self._base.digest(), self._shown, running))


def status_text(edited: str, base: str, shown: bool, running: str | None) -> str:
    """What the parameter panel's status line says of the config it shows.

    Parameters
    ----------
    edited : str
        Digest of the config the panel shows (what Run would run).
    base : str
        Digest of the config of the run on screen, or with none the config the panel was
        given.
    shown : bool
        Whether a run is on screen.
    running : str or None
        Digest of the run under way (None: no run is under way).

    Returns
    -------
    str
        Rich text: whether the panel's config is on screen, running, or an edit still to
        run, and what the views and the run under way hold.
    """
    views = f"the views show digest {base}" if shown else "no run on screen yet"
    if running is not None and running == edited:
        if shown and running == base:
            return f"<b>Running</b> digest {edited} again (the config on screen)."
        return f"<b>Running</b> digest {edited}; {views}."
    if running is not None:
        if shown and edited == base:
            return f"Config on screen (digest {edited}); digest {running} is running."
        return (
            f"<b>Edited</b> (digest {edited}); digest {running} is running and {views}: "
            "press Run to apply."
        )
    if edited == base:
        return (
            f"Config on screen (digest {edited})."
            if shown
            else f"No run on screen; Run uses digest {edited}."
        )
    still = f"the views still show digest {base}" if shown else "no run on screen"
    return f"<b>Edited</b> (digest {edited}); {still}: press Run to apply."
