"""The catalog and cutouts: the selected source, its cutouts, kernel stamps and verdicts.

Everything here belongs to the pair on screen: :meth:`Review.clear` forgets it all
when another pair opens, and a new run of the same pair keeps only what still
matches (verdicts by position, the selection by id).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.table import Table
from PyQt6.QtWidgets import QFileDialog, QLineEdit, QVBoxLayout, QWidget

from diffviewer import display
from diffviewer.errors import DiffviewerError, InputError
from diffviewer.gui import model
from diffviewer.gui.catalog import CatalogPanel
from diffviewer.gui.model import RunOutcome, Verdict
from diffviewer.gui.panels import CutoutPanel, StampPanel

if TYPE_CHECKING:
    from diffviewer.gui.window import MainWindow

#: Half size of a cutout (px): cutouts are 2 * CUTOUT_HALF + 1 pixels wide.
CUTOUT_HALF = 15


class Review:
    """The catalog table, cutouts, kernel-stamp panel and verdicts of the window's pair.

    Parameters
    ----------
    window : MainWindow
        Gives the run on screen, its views and its message bar.
    """

    def __init__(self, window: MainWindow) -> None:
        self.w = window
        self.verdicts: dict[int, Verdict] = {}
        self.selected: int | None = None
        self.catalog = CatalogPanel()
        self.cutouts = CutoutPanel()
        self.stamp = StampPanel()
        self.comment = QLineEdit()
        self.comment.setPlaceholderText("comment for the next verdict (R / B / U)")
        self.cutout_page = QWidget()
        layout = QVBoxLayout(self.cutout_page)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.cutouts, 1)
        layout.addWidget(self.comment)
        self.catalog.source_selected.connect(self.select_source)

    # ----------------------------------------------------------------- state per pair

    def clear(self) -> None:
        """Forget the pair: no table, selection, cutouts, stamp or verdicts."""
        self.verdicts = {}
        self.selected = None
        self.catalog.set_table(Table())
        self.cutouts.set_data({}, {}, (0.0, 0.0), "Select a DIA source.")
        self.stamp.set_data({}, "Click a kernel source (square) on an image.")
        self.comment.clear()

    def show_run(self, outcome: RunOutcome) -> None:
        """Show a run's catalog with its pair's saved verdicts."""
        self.catalog.set_table(outcome.result.diasources)
        self.load_verdicts()

    # ----------------------------------------------------------------- selection

    def select_source(self, source_id: int) -> None:
        """Select a DIA source: centre the views on it, mark it, show its cutouts."""
        outcome = self.w.outcome
        if outcome is None:
            return
        dia = outcome.result.diasources
        rows = np.flatnonzero(np.asarray(dia["id"]) == source_id)
        if not rows.size:
            return
        self.selected = source_id
        x, y = float(dia["x"][rows[0]]), float(dia["y"][rows[0]])
        self.w.area.centre_on(x, y)
        self.w.overlays.mark_selection((x, y))
        self.catalog.select_source(source_id)
        self.refresh_cutouts()

    def refresh_cutouts(self, *args: object) -> None:
        """Redraw the selected source's cutouts (colour maps follow the views)."""
        outcome = self.w.outcome
        if outcome is None or self.selected is None:
            return
        dia = outcome.result.diasources
        rows = np.flatnonzero(np.asarray(dia["id"]) == self.selected)
        if not rows.size:
            return
        x, y = float(dia["x"][rows[0]]), float(dia["y"][rows[0]])
        raw = self.w.raw
        cutouts = {
            n: display.cutout(raw[n], x, y, CUTOUT_HALF) for n in self.cutouts.NAMES if n in raw
        }
        self.cutouts.set_data(
            cutouts,
            {n: self.w.area.panels[n].settings.cmap for n in cutouts},
            (CUTOUT_HALF + x - round(x), CUTOUT_HALF + y - round(y)),
            model.source_summary(dia, self.selected, self.verdicts),
        )

    def show_candidate(self, index: int) -> None:
        """Show kernel candidate ``index`` in the stamp panel."""
        if self.w.outcome is None:
            return
        images, info = model.stamp_views(self.w.outcome.result, index)
        self.stamp.set_data(images, info)
        self.w.docks["Kernel stamp"].raise_()

    def candidate_tip(self, x: float, y: float, data: Any) -> str:
        """Tooltip of a kernel-source marker."""
        if self.w.outcome is None:
            return ""
        return model.candidate_summary(self.w.outcome.result, int(data))

    def dia_tip(self, x: float, y: float, data: Any) -> str:
        """Tooltip of a DIA-source marker."""
        if self.w.outcome is None:
            return ""
        return model.source_summary(self.w.outcome.result.diasources, int(data), self.verdicts)

    # ----------------------------------------------------------------- verdicts

    def set_verdict(self, label: str) -> None:
        """Label the selected DIA source (with the comment typed, if any), save, and select
        the next source of the table (unless Verdict > Advance is off)."""
        outcome = self.w.outcome
        if outcome is None or self.selected is None:
            return
        dia = outcome.result.diasources
        row = int(np.flatnonzero(np.asarray(dia["id"]) == self.selected)[0])
        self.verdicts[self.selected] = Verdict(
            label, float(dia["x"][row]), float(dia["y"][row]), self.comment.text().strip()
        )
        self.comment.clear()
        self.catalog.model.set_verdicts(self.verdicts)
        self.save_verdicts()
        self.refresh_cutouts()
        if self.w.menus.advance_action.isChecked():
            self.catalog.step(1)

    def verdict_path(self) -> Path | None:
        """The verdicts file of the current pair."""
        out = self.w.output_dir()
        return None if out is None else out / model.VERDICTS_FILE

    def save_verdicts(self) -> None:
        """Write the verdicts next to the outputs (never over another pair's verdicts)."""
        path, outcome, pair = self.verdict_path(), self.w.outcome, self.w.pair
        if path is None or outcome is None or pair is None:
            return
        try:
            model.check_verdicts_owner(path, pair)
            model.save_verdicts(path, self.verdicts, pair, outcome.result.config.digest())
        except (OSError, DiffviewerError) as exc:
            self.w.report_problem(exc, "Cannot save verdicts")

    def load_verdicts(self) -> None:
        """Attach the saved verdicts of the current pair (a file of another pair is ignored)."""
        path, outcome, pair = self.verdict_path(), self.w.outcome, self.w.pair
        assert outcome is not None and pair is not None
        if path is not None and path.is_file():
            saved: dict[int, Verdict] = {}
            try:
                found = model.load_verdicts(path)
            except InputError as exc:
                self.w.report_problem(exc)
            else:
                if found.belongs_to(pair):
                    saved = dict(found.verdicts)
                else:
                    self.w.log(
                        f"verdicts in {path} belong to {found.science} - {found.template}, "
                        "not to this pair: ignored"
                    )
                digest = outcome.result.config.digest()
                if saved and found.digest and found.digest != digest:
                    self.w.log(
                        f"verdicts from {path} were made with config {found.digest}; "
                        "matched by position"
                    )
            self.verdicts = model.match_verdicts(saved, outcome.result.diasources)
        else:
            self.verdicts = model.match_verdicts(self.verdicts, outcome.result.diasources)
        self.catalog.model.set_verdicts(self.verdicts)

    def export_catalog_dialog(self) -> None:
        """Save the catalog with the verdicts as ECSV."""
        out = self.w.output_dir()
        path, _ = QFileDialog.getSaveFileName(
            self.w,
            "Export catalog",
            str((out or Path()) / "diasources_verdicts.ecsv"),
            "ECSV (*.ecsv);;FITS (*.fits)",
        )
        if path:
            self.export_catalog(Path(path))

    def export_catalog(self, path: Path) -> None:
        """Write the DIA sources with verdict and comment columns."""
        if self.w.outcome is None:
            return
        from diffviewer.io import write_table

        try:
            write_table(
                path,
                model.catalog_with_verdicts(self.w.outcome.result.diasources, self.verdicts),
                protect=self.w.input_files(),
            )
        except (OSError, DiffviewerError) as exc:
            self.w.report_problem(exc, "Cannot export the catalog")
