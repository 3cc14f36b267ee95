"""The DIA source catalog as a sortable, filterable table linked to the image views."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy.table import Table
from PyQt6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QSortFilterProxyModel,
    Qt,
    pyqtSignal,
)
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from diffviewer.engine.columns import COLUMNS
from diffviewer.gui import columns
from diffviewer.gui.verdicts import Verdict

#: Columns of the verdicts, shown after the most used catalog columns, with what they hold.
VERDICT_COLUMNS: dict[str, str] = {
    "verdict": "your verdict on the source: real (R), bogus (B) or unsure (U)",
    "comment": "the comment typed with the verdict",
}
#: Rows the table always has room for: on a 1280 x 720 screen the dock's share of the
#: height left two rows beside its filter bar, header and tabs.
MIN_ROWS = 3
# Last line of every header tooltip.
_HEADER_HINT = "Right-click a header to show or hide columns."
_Index = QModelIndex | QPersistentModelIndex


def hidden_by_default(name: str) -> bool:
    """Columns hidden until asked for (header menu): the footprint label, the sky-source
    mark (sky sources are filtered out unless asked for), and the single flags, which the
    ``flagged`` column summarises (its tooltip names the flags set)."""
    return name in ("label", "sky_source") or name.startswith("flag_")


class CatalogModel(QAbstractTableModel):
    """An astropy table of DIA sources (plus the verdicts) as a Qt table model.

    Column values are kept as numpy arrays; sorting uses them (``Qt.UserRole``),
    the display role shows them formatted (:mod:`diffviewer.gui.columns`), headers carry
    the units. The most used columns come first, then the verdict and comment, then the
    rest in catalog order.
    """

    def __init__(self) -> None:
        super().__init__()
        self._table = Table()
        self._columns: list[str] = []
        self._arrays: dict[str, np.ndarray] = {}
        self._headers: list[str] = []
        self._tips: list[str] = []
        self.verdicts: dict[int, Verdict] = {}

    def set_table(self, table: Table) -> None:
        """Show a new catalog (1-D columns only)."""
        self.beginResetModel()
        self._table = table
        names = columns.order_columns([c for c in table.colnames if np.ndim(table[c]) == 1])
        split = len([c for c in names if c in columns.FIRST_COLUMNS])
        self._columns = [*names[:split], *VERDICT_COLUMNS, *names[split:]]
        self._arrays = {c: np.asarray(table[c]) for c in names}
        self._headers = [
            columns.header(c, table[c].unit if c in table.colnames else None) for c in self._columns
        ]
        self._tips = [
            columns.tooltip(c, table[c].unit, table[c].description)
            if c in names
            else columns.tooltip(c, None, VERDICT_COLUMNS[c])
            for c in self._columns
        ]
        self.endResetModel()

    def column(self, name: str) -> np.ndarray | None:
        """A catalog column as a numpy array (None when absent)."""
        return self._arrays.get(name)

    def set_verdicts(self, verdicts: Mapping[int, Verdict]) -> None:
        """Show these verdicts in the verdict column."""
        self.verdicts = dict(verdicts)
        if self.rowCount():
            for name in VERDICT_COLUMNS:
                col = self._columns.index(name)
                self.dataChanged.emit(self.index(0, col), self.index(self.rowCount() - 1, col))

    @property
    def table(self) -> Table:
        """The catalog shown."""
        return self._table

    @property
    def columns(self) -> list[str]:
        """Columns in display order (catalog columns and :data:`VERDICT_COLUMNS`)."""
        return list(self._columns)

    def source_id(self, row: int) -> int:
        """The DIA source id of a row (the row number when there is no id column)."""
        return int(self._table["id"][row]) if "id" in self._table.colnames else row

    def row_of(self, source_id: int) -> int | None:
        """The row of a DIA source id."""
        if "id" not in self._table.colnames:
            return source_id if 0 <= source_id < len(self._table) else None
        rows = np.flatnonzero(np.asarray(self._table["id"]) == source_id)
        return int(rows[0]) if rows.size else None

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._table)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._columns)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Vertical:
            return str(section) if role == Qt.ItemDataRole.DisplayRole else None
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{self._tips[section]}<br><i>{_HEADER_HINT}</i>"
        return self._headers[section] if role == Qt.ItemDataRole.DisplayRole else None

    def flags_set(self, row: int) -> list[str]:
        """Names of the single flags set on a row (``flag_...`` columns that are true)."""
        return [
            name.removeprefix("flag_")
            for name, values in self._arrays.items()
            if name.startswith("flag_") and bool(values[row])
        ]

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row, name = index.row(), self._columns[index.column()]
        if name in VERDICT_COLUMNS:
            verdict = self.verdicts.get(self.source_id(row))
            text = (
                "" if verdict is None else (verdict.label if name == "verdict" else verdict.comment)
            )
            return text if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.UserRole) else None
        value = self._arrays[name][row]
        if role == Qt.ItemDataRole.UserRole:
            return value.item() if hasattr(value, "item") else value
        if role == Qt.ItemDataRole.DisplayRole:
            return columns.format_value(name, value, self._table[name].unit)
        if role == Qt.ItemDataRole.ToolTipRole and name == "flagged" and bool(value):
            return "flags: " + (", ".join(self.flags_set(row)) or "(none set)")
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


class CatalogFilter(QSortFilterProxyModel):
    """Sorts by value and filters by sign, least S/N, flags, dipoles and sky sources."""

    def __init__(self, source: CatalogModel) -> None:
        super().__init__()
        self.setSourceModel(source)
        self.setSortRole(Qt.ItemDataRole.UserRole)
        self.catalog = source
        self.sign = "all"
        self.min_snr = 0.0
        self.hide_flagged = False
        self.dipoles = "all"
        self.sky = False

    def set_filter(
        self, *, sign: str, min_snr: float, hide_flagged: bool, dipoles: str, sky: bool
    ) -> None:
        """Change the filter: ``sign`` in all/positive/negative, ``dipoles`` in all/only/none,
        ``sky``: include the sky sources (blank-sky positions, not detections)."""
        self.sign, self.min_snr = sign, min_snr
        self.hide_flagged, self.dipoles, self.sky = hide_flagged, dipoles, sky
        self.invalidateFilter()

    def lessThan(self, left: _Index, right: _Index) -> bool:
        """Order by value, with NaN (no measurement) at the bottom in either direction."""
        a, b = left.data(Qt.ItemDataRole.UserRole), right.data(Qt.ItemDataRole.UserRole)
        a_nan, b_nan = _is_nan(a), _is_nan(b)
        if a_nan or b_nan:
            descending = self.sortOrder() == Qt.SortOrder.DescendingOrder
            return not b_nan if descending else not a_nan
        return bool(a < b)

    def filterAcceptsRow(self, row: int, parent: _Index) -> bool:
        col = self.catalog.column
        sign, snr, flagged, dipole = col("sign"), col("snr"), col("flagged"), col("is_dipole")
        sky = col("sky_source")
        if not self.sky and sky is not None and bool(sky[row]):
            return False
        # a sky source's sign is 0: neither positive nor negative
        wanted = 1 if self.sign == "positive" else -1
        if self.sign != "all" and sign is not None and int(np.sign(sign[row])) != wanted:
            return False
        if snr is not None and self.min_snr > 0 and not abs(snr[row]) >= self.min_snr:
            return False
        if self.hide_flagged and flagged is not None and bool(flagged[row]):
            return False
        if self.dipoles != "all" and dipole is not None:
            return bool(dipole[row]) == (self.dipoles == "only")
        return True


class CatalogPanel(QWidget):
    """The table with its filter bar.

    Signals
    -------
    source_selected(object)
        The user selected the row of this DIA source id (a Python int: a Qt ``int``
        signal holds 32 bits, an id 64).
    selection_filtered_out(object)
        The filter hid the selected row (of this DIA source id): no row is selected now.
    filter_changed()
        The filter changed (the markers follow it).
    """

    source_selected = pyqtSignal(object)
    selection_filtered_out = pyqtSignal(object)
    filter_changed = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = CatalogModel()
        self.proxy = CatalogFilter(self.model)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header, rows, selection = (
            self.view.horizontalHeader(),
            self.view.verticalHeader(),
            self.view.selectionModel(),
        )
        assert header is not None and rows is not None and selection is not None
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setResizeContentsPrecision(50)  # size columns from 50 rows, not every row
        rows.setVisible(False)
        # Compact rows (text height plus a small margin): more sources on screen at once.
        rows.setDefaultSectionSize(self.view.fontMetrics().height() + 6)
        scroll_bar = self.view.horizontalScrollBar()
        assert scroll_bar is not None
        # the header counted as a row (its size hint is none until there are columns)
        self.view.setMinimumHeight(
            (MIN_ROWS + 1) * rows.defaultSectionSize()
            + scroll_bar.sizeHint().height()
            + 2 * self.view.frameWidth()
        )
        header.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        header.customContextMenuRequested.connect(self._column_menu)
        self.header = header
        selection.selectionChanged.connect(self._on_selection)
        self.selection = selection
        self._filtering = False
        self.sign_box = QComboBox()
        self.sign_box.addItems(["all", "positive", "negative"])
        self.sign_box.setToolTip(
            "Sources brighter on the science (positive) or on the template (negative)"
        )
        self.dipole_box = QComboBox()
        self.dipole_box.addItems(["all", "only", "none"])
        self.dipole_box.setToolTip(
            "Dipoles (a positive and a negative lobe side by side: a misalignment or a "
            "moving source): all sources, dipoles only, or no dipoles"
        )
        self.snr_box = QDoubleSpinBox()
        self.snr_box.setRange(0.0, 1e6)
        self.snr_box.setDecimals(1)
        self.snr_box.setToolTip("Hide sources whose |S/N| (the snr column) is below this")
        self.flag_box = QCheckBox("hide flagged")
        self.flag_box.setToolTip(f"Hide flagged sources: {COLUMNS['flagged'][1]}")
        self.sky_box = QCheckBox("sky sources")
        self.sky_box.setToolTip(
            "Include the sky sources: forced measurements on blank sky that calibrate the "
            "noise (not detections; drawn as grey crosses)"
        )
        self.count = QLabel()
        for w in (self.sign_box, self.dipole_box):
            w.currentTextChanged.connect(self._apply_filter)
        self.snr_box.valueChanged.connect(self._apply_filter)
        self.flag_box.toggled.connect(self._apply_filter)
        self.sky_box.toggled.connect(self._apply_filter)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("sign"))
        bar.addWidget(self.sign_box)
        bar.addWidget(QLabel("dipoles"))
        bar.addWidget(self.dipole_box)
        bar.addWidget(QLabel("|S/N| ≥"))
        bar.addWidget(self.snr_box)
        bar.addWidget(self.flag_box)
        bar.addWidget(self.sky_box)
        bar.addStretch(1)
        bar.addWidget(self.count)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.view, 1)

    def set_table(self, table: Table) -> None:
        """Show a catalog; a catalog with other columns than the last one's gets the default
        hidden columns and widths fitted to its contents, one with the same columns (a
        re-run) keeps the columns shown and their widths as they were (the user's), but
        for the ``id`` column, widened where the new ids are longer: the exposure id in
        their high bits is another run's (``measurement.exposure_id``), and an id cut short
        names no source."""
        before = self.model.columns
        self.model.set_table(table)
        if self.model.columns != before:
            for col, name in enumerate(self.model.columns):
                self.view.setColumnHidden(col, hidden_by_default(name))
            self.view.resizeColumnsToContents()
        elif "id" in self.model.columns:
            col = self.model.columns.index("id")
            needed = self.view.sizeHintForColumn(col)  # the longest id shown (header: 'id')
            if self.view.columnWidth(col) < needed:
                self.view.setColumnWidth(col, needed)
        self._update_count()

    def select_source(self, source_id: int) -> None:
        """Select (and scroll to) the row of a DIA source id, if it passes the filter."""
        row = self.model.row_of(source_id)
        if row is None:
            return
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        if index.isValid():
            self.view.selectRow(index.row())
            self.view.scrollTo(index)

    def step(self, offset: int) -> int | None:
        """Select the row ``offset`` rows below (above, when negative) the selected one, in
        the order shown; the first row when none is selected. Returns its source id (None
        past either end, the selection unchanged)."""
        rows = self.selection.selectedRows()
        target = rows[0].row() + offset if rows else 0
        if not 0 <= target < self.proxy.rowCount():
            return None
        self.view.selectRow(target)
        self.view.scrollTo(self.proxy.index(target, 0))
        return self.selected_source()

    def selected_source(self) -> int | None:
        """The DIA source id of the selected row, or None."""
        rows = self.selection.selectedRows()
        if not rows:
            return None
        return self.model.source_id(self.proxy.mapToSource(rows[0]).row())

    def _on_selection(self, *args: object) -> None:
        source_id = self.selected_source()
        if source_id is not None and not self._filtering:
            self.source_selected.emit(source_id)

    def column_menu(self) -> QMenu:
        """A menu of checkable columns: unchecking one hides it."""
        menu = QMenu(self)
        for col, name in enumerate(self.model.columns):
            action = menu.addAction(name)
            assert action is not None
            action.setCheckable(True)
            action.setChecked(not self.view.isColumnHidden(col))
            action.toggled.connect(lambda on, c=col: self.view.setColumnHidden(c, not on))
        return menu

    def _column_menu(self, pos: QPoint) -> None:
        self.column_menu().popup(self.header.mapToGlobal(pos))

    def _apply_filter(self, *args: object) -> None:
        """Filter the rows; the selected source stays selected while it is shown, and
        when the filter hides it no other row is selected in its place (Qt moves the
        selection to a neighbour, which would select and centre another source)."""
        selected = self.selected_source()
        self._filtering = True
        try:
            self.proxy.set_filter(
                sign=self.sign_box.currentText(),
                min_snr=self.snr_box.value(),
                hide_flagged=self.flag_box.isChecked(),
                dipoles=self.dipole_box.currentText(),
                sky=self.sky_box.isChecked(),
            )
            self.view.clearSelection()
            self.view.setCurrentIndex(QModelIndex())
            if selected is not None:
                self.select_source(selected)
        finally:
            self._filtering = False
        if selected is not None and self.selected_source() is None:
            self.selection_filtered_out.emit(selected)
        self._update_count()
        self.filter_changed.emit()

    def shown_rows(self) -> np.ndarray:
        """Rows of the catalog (source order) that pass the filter."""
        root = QModelIndex()
        return np.array(
            [r for r in range(self.model.rowCount()) if self.proxy.filterAcceptsRow(r, root)],
            dtype=int,
        )

    def _update_count(self) -> None:
        sky = self.model.column("sky_source")
        n_sky = int(np.count_nonzero(sky)) if sky is not None else 0
        text = f"showing {self.proxy.rowCount()} of {self.model.rowCount()}"
        if n_sky:
            text += f": {self.model.rowCount() - n_sky} detections, {n_sky} sky sources" + (
                "" if self.sky_box.isChecked() else " (hidden)"
            )
        self.count.setText(text)
