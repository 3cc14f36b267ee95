"""The batch review window: a night's pairs, worst first, one click from the inspector.

``diffviewer review DIR`` and File > Open batch… show ``DIR/summary.ecsv`` as a
sortable, filterable table with a thumbnail of each difference, ordered by the
summary's badness score (:func:`diffviewer.batch.summary.badness`), with filters for
failed pairs, pairs with warnings and pairs without a verdict. Selecting a row shows
that pair in the inspector from its saved outputs; a pair whose folder holds its
difference and catalog alone (``--products minimal``) is shown beside the table
(:mod:`diffviewer.gui.difference_preview`), with one button that runs it again in the
inspector from its recorded inputs and config, writing nothing to the batch folder.
Good / Bad save a verdict on the
pair (with the comment) in its folder (``DIR/<name>``, wherever the batch folder now is)
and in its row of the summary on disk (a batch still running adds rows); Export verdicts writes
every verdict of the batch, on pairs and on sources, as one table.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from PyQt6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PyQt6.QtGui import QCloseEvent, QImage, QKeySequence, QPixmap
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from diffviewer import display
from diffviewer.batch.summary import (
    complete_row,
    has_outputs,
    read_summary,
    rows_of,
    set_summary_verdict,
)
from diffviewer.errors import DiffviewerError, InputError
from diffviewer.fits_write import write_table
from diffviewer.gui import verdicts as source_verdicts
from diffviewer.gui.difference_preview import DifferencePreview
from diffviewer.gui.model import Pair
from diffviewer.gui.qtapp import application, run_event_loop
from diffviewer.gui.worker import JobRunner
from diffviewer.paths import require_batch_folder
from diffviewer.results import (
    difference_only,
    read_pair_verdict,
    recorded_run,
    write_pair_verdict,
)

if TYPE_CHECKING:
    from diffviewer.gui.window import MainWindow

#: Thumbnail side (px).
THUMB = 64
#: Columns shown: (summary column, heading); "" is the thumbnail.
SHOWN = (
    ("", "difference"),
    ("name", "pair"),
    ("status", "status"),
    ("badness", "badness"),
    ("guard_tripped", "guard"),
    ("noise_ratio", "noise ratio"),
    ("sky_pull_std", "sky pulls σ"),
    ("n_good", "good stamps"),
    ("n_bad", "bad stamps"),
    ("held_out_chi2", "held-out χ²"),
    ("n_positive", "positive"),
    ("n_negative", "negative"),
    ("n_dipoles", "dipoles"),
    ("n_warnings", "warnings"),
    ("verdict", "verdict"),
    ("comment", "comment"),
    ("error", "error"),
)
SORT_ROLE = Qt.ItemDataRole.UserRole


def thumbnail_array(folder: Path, side: int = THUMB) -> np.ndarray | None:
    """A small grey image of a pair's difference (uint8, the difference view's levels;
    pixels without data, NaN in the file, black: they were drawn as sky).

    Reads every ``step``-th pixel of ``difference.fits`` through a memory map; None when
    the pair has no difference.
    """
    path = folder / "difference.fits"
    if not path.is_file():
        return None
    try:
        with fits.open(path, memmap=True) as hdul:
            data = hdul["IMAGE"].data
            step = max(1, math.ceil(max(data.shape) / side))
            image = np.array(data[::step, ::step], dtype=np.float32)
    except (OSError, KeyError, ValueError, TypeError):
        return None
    shown = display.display_array(image)
    lo, hi = display.compute_levels(shown, display.default_settings("difference"))
    scaled = np.clip((shown - lo) / max(hi - lo, 1e-30), 0.0, 1.0)
    scaled[~np.isfinite(image)] = 0.0
    return np.ascontiguousarray(np.flipud(scaled * 255).astype(np.uint8))


def review_rows(batch_dir: Path) -> list[dict[str, Any]]:
    """The summary rows of a batch folder, each ``output`` the pair's folder in it.

    A pair's folder is ``batch_dir/<name>``; the summary's ``output`` column names where
    the batch wrote it, another place once the batch folder is copied or moved.

    Parameters
    ----------
    batch_dir : Path
        The batch folder.

    Returns
    -------
    list of dict
        Complete rows (:func:`~diffviewer.batch.summary.complete_row`).
    """
    rows = [complete_row(r) for r in rows_of(read_summary(batch_dir))]
    return [{**row, "output": str(batch_dir / row["name"])} for row in rows]


def verdicts_table(rows: Sequence[dict[str, Any]]) -> Table:
    """Every verdict of a batch: one row per pair verdict and per source verdict.

    Parameters
    ----------
    rows : sequence of dict
        The summary rows.

    Returns
    -------
    astropy.table.Table
        Columns pair, level (``pair``; ``source``; ``unmatched``: a source verdict whose
        source the pair's current run does not have), source_id (the current catalog's,
        :func:`diffviewer.gui.verdicts.verdicts_on_run`; -1 for the others), verdict,
        comment, x, y (px, the position judged; NaN for a pair), time (pair verdicts).
        ``meta["moved"]`` counts the source verdicts whose id the current run changed,
        ``meta["other_pairs"]`` the verdicts files of another pair left out (two pairs of
        two nights may share a folder; the inspector ignores those too).
    """
    out: list[tuple[str, str, int, str, str, float, float, str]] = []
    moved = others = 0
    nan = math.nan
    for row in rows:
        folder = Path(row["output"])
        name = row["name"]
        pair = read_pair_verdict(folder) if folder.is_dir() else None
        if pair is not None:
            out.append((name, "pair", -1, pair.verdict, pair.comment, nan, nan, pair.time))
        path = folder / source_verdicts.VERDICTS_FILE
        if not path.is_file():
            continue
        saved = source_verdicts.load_verdicts(path)
        if not saved.belongs_to(_judged_pair(folder, row)):
            others += 1  # two pairs of two nights may share a folder: not this pair's
            continue
        attached = source_verdicts.verdicts_on_run(folder, saved)
        moved += len(attached.moved)
        for source_id, v in sorted(attached.verdicts.items()):
            out.append((name, "source", int(source_id), v.label, v.comment, v.x, v.y, ""))
        for v in attached.unmatched:
            out.append((name, "unmatched", -1, v.label, v.comment, v.x, v.y, ""))
    names = ("pair", "level", "source_id", "verdict", "comment", "x", "y", "time")
    table = (
        Table(rows=out, names=names)
        if out
        else Table(names=names, dtype=("U1", "U9", "i8", "U7", "U1", "f8", "f8", "U1"))
    )
    table.meta["moved"], table.meta["other_pairs"] = moved, others
    return table


def _judged_pair(folder: Path, row: Mapping[str, Any]) -> Pair:
    """The pair of a folder's run as the inspector names it when it opens the folder
    (its metadata's inputs: the verdicts saved there are this pair's), else the row's."""
    from diffviewer.gui.saved import saved_pair

    if (folder / "metadata.json").is_file():
        # an unreadable one (a folder of another version, damaged) costs the export nothing
        with contextlib.suppress(DiffviewerError, KeyError, TypeError):
            return saved_pair(folder)
    return Pair(row["science"], row["template"])


def describe_export(table: Table) -> str:
    """What an exported verdicts table holds, in words (for the status line)."""
    level = np.asarray(table["level"])
    counts = {k: int(np.count_nonzero(level == k)) for k in ("pair", "source", "unmatched")}
    text = f"{counts['pair']} pair verdicts, {counts['source']} source verdicts"
    if table.meta.get("moved"):
        text += f" ({table.meta['moved']} on sources the current runs renumbered)"
    if counts["unmatched"]:
        text += (
            f", {counts['unmatched']} whose source the current runs do not have (level "
            "'unmatched', source_id -1)"
        )
    if table.meta.get("other_pairs"):
        text += (
            f"; {table.meta['other_pairs']} verdicts files of another pair in a pair's "
            "folder left out"
        )
    return text


class SummaryModel(QAbstractTableModel):
    """The summary rows as a table model (thumbnails made when first shown).

    Parameters
    ----------
    rows : list of dict
        Summary rows.
    """

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__()
        self.rows = rows
        self._thumbs: dict[str, QPixmap | None] = {}

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex | None = None) -> int:
        return len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex | None = None) -> int:
        return len(SHOWN)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = 0) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return SHOWN[section][1]
        return None

    def thumbnail(self, row: dict[str, Any]) -> QPixmap | None:
        """The row's thumbnail (made once)."""
        name = row["name"]
        if name not in self._thumbs:
            array = thumbnail_array(Path(row["output"])) if has_outputs(row) else None
            if array is None:
                self._thumbs[name] = None
            else:
                h, w = array.shape
                image = QImage(array.tobytes(), w, h, w, QImage.Format.Format_Grayscale8).copy()
                self._thumbs[name] = QPixmap.fromImage(image)
        return self._thumbs[name]

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = 0) -> Any:
        row = self.rows[index.row()]
        column = SHOWN[index.column()][0]
        if not column:
            return self.thumbnail(row) if role == Qt.ItemDataRole.DecorationRole else None
        value = row[column]
        if role == SORT_ROLE:
            return float(value) if isinstance(value, bool | int | float) else str(value)
        if role == Qt.ItemDataRole.DisplayRole:
            if isinstance(value, bool):
                return "tripped" if value else ""
            if isinstance(value, float):
                return "" if math.isnan(value) else f"{value:.3g}"
            if isinstance(value, int) and value < 0:
                return ""
            return str(value)
        if role == Qt.ItemDataRole.ToolTipRole and column in ("error", "comment"):
            return str(value)
        return None

    def update_row(self, number: int, changes: dict[str, Any]) -> None:
        """Change a row's values (badness recomputed) and redraw it."""
        self.rows[number] = complete_row({**self.rows[number], **changes})
        self.dataChanged.emit(self.index(number, 0), self.index(number, len(SHOWN) - 1))

    def set_rows(self, rows: list[dict[str, Any]]) -> None:
        """Show ``rows`` in place of the rows shown, their thumbnails made afresh."""
        self.beginResetModel()
        self.rows = rows
        self._thumbs = {}
        self.endResetModel()


class SummaryFilter(QSortFilterProxyModel):
    """Rows shown: all, or only failed / with warnings / without a verdict / matching a name."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = self.warned = self.unreviewed = False
        self.text = ""
        self.setSortRole(SORT_ROLE)

    def set_filters(self, *, failed: bool, warned: bool, unreviewed: bool, text: str) -> None:
        """Apply the filters."""
        self.failed, self.warned, self.unreviewed, self.text = failed, warned, unreviewed, text
        self.invalidateFilter()

    def filterAcceptsRow(
        self, source_row: int, parent: QModelIndex | QPersistentModelIndex
    ) -> bool:
        source = self.sourceModel()
        assert isinstance(source, SummaryModel)
        row = source.rows[source_row]
        return not (
            (self.failed and row["status"] != "failed")
            or (self.warned and row["n_warnings"] <= 0)
            or (self.unreviewed and row["verdict"])
            or (self.text and self.text.lower() not in row["name"].lower())
        )


class ReviewWindow(QMainWindow):
    """The batch review window.

    Parameters
    ----------
    batch_dir : str or Path
        A folder written by ``diffviewer batch``.
    inspector : MainWindow, optional
        Where selected pairs open (a new inspector window when None).
    """

    def __init__(self, batch_dir: str | Path, inspector: MainWindow | None = None) -> None:
        super().__init__()
        self.batch_dir = require_batch_folder(batch_dir).resolve()
        self.setWindowTitle(f"diffviewer review — {self.batch_dir}")
        self._inspector = inspector
        if inspector is not None:
            inspector.pair_verdict_saved.connect(self._on_inspector_verdict)
        self.model = SummaryModel(review_rows(self.batch_dir))
        self.proxy = SummaryFilter()
        self.proxy.setSourceModel(self.model)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(3, Qt.SortOrder.DescendingOrder)  # badness, worst first
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        vertical = self.table.verticalHeader()
        assert vertical is not None
        vertical.setDefaultSectionSize(THUMB + 4)
        self.table.setColumnWidth(0, THUMB + 8)
        # Pair names of a night share long prefixes (alert ids, dates): shown whole, and
        # cut in the middle, where they agree, when the column is narrowed.
        self.table.resizeColumnToContents([key for key, _ in SHOWN].index("name"))
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        selection = self.table.selectionModel()
        assert selection is not None
        selection.currentRowChanged.connect(self.open_current)
        self.failed_box = QCheckBox("failed")
        self.warned_box = QCheckBox("with warnings")
        self.unreviewed_box = QCheckBox("unreviewed")
        self.search = QLineEdit()
        self.search.setPlaceholderText("pair name contains…")
        for box in (self.failed_box, self.warned_box, self.unreviewed_box):
            box.toggled.connect(self.apply_filters)
        self.search.textChanged.connect(self.apply_filters)
        self.comment = QLineEdit()
        self.comment.setPlaceholderText("comment for the pair verdict")
        self.good_button = QPushButton("Good subtraction")
        self.bad_button = QPushButton("Bad subtraction")
        self.good_button.clicked.connect(lambda: self.set_verdict("good"))
        self.bad_button.clicked.connect(lambda: self.set_verdict("bad"))
        export = QPushButton("Export verdicts…")
        export.clicked.connect(self.export_verdicts_dialog)
        reload = QPushButton("Reload")
        reload.setShortcut(QKeySequence(QKeySequence.StandardKey.Refresh))
        reload.setToolTip("Read the summary and the thumbnails again (a batch re-run since)")
        reload.clicked.connect(self.reload)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        #: The window's worker: a folder of the difference alone is read there.
        self.jobs = JobRunner(self)
        self.preview = DifferencePreview(self.jobs)
        self.preview.rerun_requested.connect(self.rerun_current)
        self.preview.hide()
        filters = QHBoxLayout()
        filters.addWidget(QLabel("show only:"))
        for box in (self.failed_box, self.warned_box, self.unreviewed_box):
            filters.addWidget(box)
        filters.addWidget(self.search)
        verdicts = QHBoxLayout()
        verdicts.addWidget(self.comment)
        for button in (self.good_button, self.bad_button, export, reload):
            verdicts.addWidget(button)
        centre = QWidget()
        layout = QVBoxLayout(centre)
        layout.addLayout(filters)
        # the table beside the preview's difference, the preview's catalog below both
        self.split = QSplitter(Qt.Orientation.Horizontal)
        self.split.addWidget(self.table)
        self.split.addWidget(self.preview)
        self.rows_split = QSplitter(Qt.Orientation.Vertical)
        self.rows_split.addWidget(self.split)
        self.rows_split.addWidget(self.preview.catalog)
        layout.addWidget(self.rows_split, 1)
        layout.addLayout(verdicts)
        layout.addWidget(self.status_label)
        self.setCentralWidget(centre)
        self.resize(1100, 700)
        self._say_counts()

    # ----------------------------------------------------------------- rows

    def reload(self) -> None:
        """Read the batch's summary again: a batch re-run while the window was open left
        its rows and thumbnails as they were (badness 5.7 shown for 20.5, a guard
        tripped since shown blank), and a verdict given then went on the new run."""
        self._hide_preview()  # the selection goes with the rows
        self.model.set_rows(review_rows(self.batch_dir))
        self._say_counts()

    def _say_counts(self) -> None:
        rows = self.model.rows
        failed = sum(r["status"] == "failed" for r in rows)
        done = sum(bool(r["verdict"]) for r in rows)
        self.status_label.setText(
            f"{len(rows)} pairs, {failed} failed, {done} with a verdict; showing "
            f"{self.proxy.rowCount()}; order: badness (guard tripped, noise ratio or sky "
            "pulls far from 1, few good stamps, many detections; failed first)"
        )

    def apply_filters(self, *args: object) -> None:
        """Show only the rows the filters let through."""
        self.proxy.set_filters(
            failed=self.failed_box.isChecked(),
            warned=self.warned_box.isChecked(),
            unreviewed=self.unreviewed_box.isChecked(),
            text=self.search.text().strip(),
        )
        self._say_counts()

    def visible_names(self) -> list[str]:
        """The pair names shown, in the table's order."""
        return [
            self.model.rows[self.proxy.mapToSource(self.proxy.index(i, 0)).row()]["name"]
            for i in range(self.proxy.rowCount())
        ]

    def current_row(self) -> int | None:
        """The model row of the selected pair."""
        index = self.table.currentIndex()
        return self.proxy.mapToSource(index).row() if index.isValid() else None

    def select_name(self, name: str) -> None:
        """Select the row of a pair (it opens in the inspector)."""
        for i in range(self.proxy.rowCount()):
            index = self.proxy.index(i, 1)
            if self.proxy.data(index) == name:
                self.table.setCurrentIndex(index)
                return
        raise KeyError(name)

    # ----------------------------------------------------------------- the inspector

    def inspector(self) -> MainWindow:
        """The inspector window selected pairs open in (made on first use)."""
        if self._inspector is None:
            from diffviewer.gui.window import MainWindow

            self._inspector = MainWindow()
            self._inspector.pair_verdict_saved.connect(self._on_inspector_verdict)
            app = QApplication.instance()
            if app is not None:
                app.aboutToQuit.connect(self._inspector.jobs.shutdown)
        return self._inspector

    def _on_inspector_verdict(self, folder: str, verdict: str, comment: str) -> None:
        """Show a pair verdict given in the inspector (Verdict > Pair) on its row (the
        inspector saved it in the folder and the summary)."""
        for number, row in enumerate(self.model.rows):
            if Path(row["output"]) == Path(folder):
                self.model.update_row(number, {"verdict": verdict, "comment": comment})
        self._say_counts()

    def open_current(self, *args: object) -> None:
        """Show the selected pair in the inspector from its saved outputs."""
        from diffviewer.gui.saved import open_saved

        number = self.current_row()
        if number is None:
            return
        row = self.model.rows[number]
        # the pair's own status (the last pair's failure stayed while another was shown),
        # and its saved comment (a verdict changed without retyping it erased it)
        if row["status"] == "failed":
            shown = "; its outputs are shown (--strict)" if has_outputs(row) else ""
            self.status_label.setText(f"{row['name']} failed: {row['error']}{shown}")
        elif row["status"] == "refused":  # its outputs are another run's: shown, and said
            self.status_label.setText(f"{row['name']}: {row['error']}")
        else:
            self._say_counts()
        self.comment.setText(str(row.get("comment", "")))
        if not has_outputs(row):
            self._hide_preview()
            return
        if difference_only(row["output"]):
            self._show_preview(row)
            return
        self._hide_preview()
        window = self.inspector()
        window.show()
        open_saved(window, row["output"])

    def _show_preview(self, row: dict[str, Any]) -> None:
        """Show a pair whose folder holds its difference and catalog alone beside the table
        (the inspector keeps what it shows: it cannot show this folder)."""
        if row["status"] not in ("failed", "refused"):  # their own status line stays
            self.status_label.setText(
                f"{row['name']}: its folder holds the difference and its catalog only "
                "(--products minimal), shown beside the table; Run again in the inspector "
                "for the kernel, matched template and diagnostics"
            )
        if self.preview.isHidden():
            self.preview.show()
            width, height = self.split.width(), self.rows_split.height()
            self.split.setSizes([int(0.42 * width), width - int(0.42 * width)])
            self.rows_split.setSizes([int(0.72 * height), height - int(0.72 * height)])
        self.preview.load(row)

    def _hide_preview(self) -> None:
        """Hide the view of a folder of the difference alone (another pair is selected),
        letting its arrays go."""
        self.jobs.cancel_all()
        self.preview.clear()
        self.preview.hide()

    def rerun_current(self) -> None:
        """Run the selected pair again in the inspector, in the background, from the inputs
        its folder records and with its ``config.toml``; nothing is written to its folder.
        An input gone since is said here, and the inspector keeps what it shows."""
        from diffviewer.gui.saved import rerun_saved

        number = self.current_row()
        if number is None:
            return
        row = self.model.rows[number]
        try:
            recorded = recorded_run(row["output"])
        except DiffviewerError as exc:
            self.status_label.setText(f"cannot run {row['name']} again: {exc}")
            return
        window = self.inspector()
        window.show()
        window.raise_()
        rerun_saved(window, recorded)
        self.status_label.setText(
            f"{row['name']}: running again in the inspector from its inputs with its "
            "config.toml; nothing is written to the batch folder (Save all outputs… there "
            "writes the new run where you choose)"
        )

    def closeEvent(self, event: QCloseEvent | None) -> None:
        """Close once the worker's threads have ended (reading a folder ends quickly)."""
        self.jobs.shutdown()
        self.preview.clear()
        super().closeEvent(event)

    # ----------------------------------------------------------------- verdicts

    def set_verdict(self, verdict: str) -> None:
        """Save a verdict on the selected pair in its folder and in the summary."""
        number = self.current_row()
        if number is None:
            return
        row = self.model.rows[number]
        try:
            saved = write_pair_verdict(row["output"], verdict, self.comment.text())
            self.model.update_row(number, {"verdict": saved.verdict, "comment": saved.comment})
            set_summary_verdict(self.batch_dir, row["name"], saved.verdict, saved.comment)
        except DiffviewerError as exc:
            self.status_label.setText(f"cannot save the verdict: {exc}")
            return
        self.comment.clear()
        self._say_counts()

    def export_verdicts(self, path: str | Path) -> Path:
        """Write every verdict of the batch (pairs and sources) as one ECSV or FITS table,
        and say what it holds."""
        table = verdicts_table(self.model.rows)
        written = write_table(path, table)
        self.status_label.setText(f"exported to {written}: {describe_export(table)}")
        return written

    def export_verdicts_dialog(self) -> None:
        """Ask where to export the verdicts."""
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Export verdicts",
            str(self.batch_dir / "verdicts.ecsv"),
            "ECSV (*.ecsv);;FITS (*.fits)",
        )
        if path:
            try:
                self.export_verdicts(path)
            except DiffviewerError as exc:
                self.status_label.setText(f"cannot export: {exc}")


def _forget(window: MainWindow, review: ReviewWindow) -> None:
    """Drop a review window the inspector opened once it is deleted."""
    window.review_windows = [w for w in window.review_windows if w is not review]


def open_batch_dialog(window: MainWindow) -> ReviewWindow | None:
    """File > Open batch…: choose a batch folder and open its review window."""
    folder = QFileDialog.getExistingDirectory(window, "Open batch (a folder with summary.ecsv)")
    if not folder:
        return None
    try:
        review = ReviewWindow(folder, inspector=window)
    except InputError as exc:
        window.report_problem(exc, "Cannot open the batch")
        return None
    # Deleted when closed, and forgotten by the inspector then: a closed review window
    # kept its last preview's difference for the session (~220 MB at 4096^2).
    review.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    window.review_windows.append(review)
    review.destroyed.connect(lambda *_: _forget(window, review))
    review.show()
    return review


def launch_review(batch_dir: str | Path) -> int:
    """Open the review window of a batch (``diffviewer review DIR``).

    Returns
    -------
    int
        The exit code of the event loop.
    """
    app = application()
    window = ReviewWindow(batch_dir)
    window.show()
    app.aboutToQuit.connect(window.jobs.shutdown)
    return run_event_loop(app)
