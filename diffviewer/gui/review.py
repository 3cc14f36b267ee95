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
from diffviewer.gui import content, verdicts
from diffviewer.gui.catalog import CatalogPanel
from diffviewer.gui.model import RunOutcome
from diffviewer.gui.panels import CutoutPanel, StampPanel
from diffviewer.gui.verdicts import Verdict

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
        #: Verdicts of this pair whose source the run on screen does not have.
        self.unmatched: tuple[Verdict, ...] = ()
        self.selected: int | None = None
        self._selected_xy: tuple[float, float] | None = None
        self.catalog = CatalogPanel()
        self.cutouts = CutoutPanel()
        self.stamp = StampPanel()
        self.comment = QLineEdit()
        self.comment.setPlaceholderText("comment for the next verdict (R / B / U)")
        self.cutout_page = QWidget()
        self.cutout_page.setMinimumWidth(220)  # four cutouts and their titles, readable
        layout = QVBoxLayout(self.cutout_page)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.cutouts, 1)
        layout.addWidget(self.comment)
        self.catalog.source_selected.connect(self.select_source)
        self.catalog.selection_filtered_out.connect(self._on_filtered_out)

    # ----------------------------------------------------------------- state per pair

    def clear(self) -> None:
        """Forget the pair: no table, selection, cutouts, stamp or verdicts."""
        self.verdicts = {}
        self.unmatched = ()
        self.catalog.set_table(Table())
        self.comment.clear()
        self._forget_run()

    def _forget_run(self) -> None:
        """Forget what showed the last run's arrays: the selection and the kernel stamp."""
        self.clear_selection()
        self.stamp.set_data({}, "Click a kernel source (square) on an image.")
        self.w.overlays.mark_candidate(None)

    def clear_selection(self) -> None:
        """Select no DIA source: no mark, no cutouts."""
        self.selected = None
        self._selected_xy = None
        self.w.overlays.mark_selection(None)
        self.cutouts.set_data({}, {}, (0.0, 0.0), "Select a DIA source.")
        self.cutouts.set_profile(None)

    def _on_filtered_out(self, source_id: int) -> None:
        self.clear_selection()
        self.w.message.say(
            f"DIA source {source_id} is hidden by the catalog filter: no source selected", 10000
        )

    def show_run(self, outcome: RunOutcome) -> None:
        """Show a run's catalog with its pair's verdicts; the selected source stays selected
        when the run still has a source within 1.5 px of it (ids may change)."""
        self.catalog.set_table(outcome.result.diasources)
        self.load_verdicts()
        xy = self._selected_xy
        self._forget_run()  # the stamp and cutouts showed the last run's arrays
        dia = outcome.result.diasources
        if xy is not None and len(dia):
            d = np.hypot(np.asarray(dia["x"], float) - xy[0], np.asarray(dia["y"], float) - xy[1])
            if d.min() <= 1.5:
                self.select_source(int(dia["id"][int(np.argmin(d))]))

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
        self.w.message.say("")  # "... hidden by the catalog filter" is about another
        x, y = float(dia["x"][rows[0]]), float(dia["y"][rows[0]])
        self._selected_xy = (x, y)
        self.w.area.centre_on(x, y)
        self.w.overlays.mark_selection((x, y))
        self.catalog.select_source(source_id)
        self.refresh_cutouts()

    def zoom_on_source(self) -> None:
        """Centre the views on the selected source at a zoom showing ~4 cutouts across."""
        if self._selected_or_say("Zoom on the source") is not None and self._selected_xy:
            self.w.area.centre_on(*self._selected_xy, half_width=4.0 * CUTOUT_HALF)

    def _selected_or_say(self, what: str) -> int | None:
        """The selected DIA source id; when none is selected, say in the status bar that
        ``what`` needs one (a key that did nothing, silently, looked broken)."""
        if self.selected is None:
            self.w.message.say(
                f"{what}: select a DIA source first (click its marker or row, or N)", 10000
            )
        return self.selected

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
            content.source_summary(dia, self.selected, self.verdicts),
        )
        flux = float(dia["psf_flux"][rows[0]]) if "psf_flux" in dia.colnames else float("nan")
        self.cutouts.set_profile(content.source_profile(outcome.result, x, y, flux))

    def show_candidate(self, index: int) -> None:
        """Show kernel candidate ``index`` in the stamp panel."""
        if self.w.outcome is None:
            return
        result = self.w.outcome.result
        images, info = content.stamp_views(result, index)
        self.stamp.set_data(images, info)
        row = result.kernel.candidates[index]
        self.w.overlays.mark_candidate((float(row["x"]), float(row["y"])))
        self.w.docks["Kernel stamp"].raise_()

    def candidate_tip(self, x: float, y: float, data: Any) -> str:
        """Tooltip of a kernel-source marker."""
        if self.w.outcome is None:
            return ""
        return content.candidate_summary(self.w.outcome.result, int(data))

    def dia_tip(self, x: float, y: float, data: Any) -> str:
        """Tooltip of a DIA-source marker."""
        if self.w.outcome is None:
            return ""
        return content.source_summary(self.w.outcome.result.diasources, int(data), self.verdicts)

    # ----------------------------------------------------------------- verdicts

    def set_verdict(self, label: str) -> None:
        """Label the selected DIA source (with the comment typed, if any), save, and select
        the next source of the table (unless Verdict > Advance is off)."""
        outcome, selected = self.w.outcome, self._selected_or_say(f"Verdict {label}")
        if outcome is None or selected is None:
            return
        dia = outcome.result.diasources
        row = int(np.flatnonzero(np.asarray(dia["id"]) == selected)[0])
        self.verdicts[selected] = Verdict(
            label, float(dia["x"][row]), float(dia["y"][row]), self.comment.text().strip()
        )
        self.comment.clear()
        self.catalog.model.set_verdicts(self.verdicts)
        self.save_verdicts()
        self.refresh_cutouts()
        if self.w.menus.advance_action.isChecked():
            self.catalog.step(1)

    def verdict_path(self) -> Path | None:
        """The verdicts file of the current pair (in the folder its outputs went to)."""
        out = self.w.output_dir()
        return None if out is None else out / verdicts.VERDICTS_FILE

    def save_verdicts(self) -> None:
        """Write the verdicts next to the outputs (never over another pair's verdicts), and
        remember that folder as the pair's."""
        path, outcome, pair = self.verdict_path(), self.w.outcome, self.w.pair
        if path is None or outcome is None or pair is None:
            return
        try:
            verdicts.check_verdicts_owner(path, pair)
            verdicts.save_verdicts(
                path, self.verdicts, pair, outcome.result.config.digest(), self.unmatched
            )
        except (OSError, DiffviewerError) as exc:
            self.w.report_problem(exc, "Cannot save verdicts")
        else:
            self.w.remember_output_dir(pair, path.parent)

    def load_verdicts(self) -> None:
        """Attach the pair's verdicts (saved ones, or those of the last run on screen) to
        the run on screen, and say so when any moved to another id or found no source."""
        path, outcome, pair = self.verdict_path(), self.w.outcome, self.w.pair
        assert outcome is not None and pair is not None
        saved, unmatched, source = dict(self.verdicts), self.unmatched, "the last run"
        if path is not None and path.is_file():
            try:
                found = verdicts.load_verdicts(path)
            except InputError as exc:
                self.w.report_problem(exc)
            else:
                if found.belongs_to(pair):
                    saved, unmatched, source = dict(found.verdicts), found.unmatched, str(path)
                else:
                    self.w.log(
                        f"verdicts in {path} belong to {found.science} - {found.template}, "
                        "not to this pair: ignored"
                    )
        rekeyed = verdicts.rekey_verdicts(saved, outcome.result.diasources, unmatched)
        self.verdicts, self.unmatched = rekeyed.verdicts, rekeyed.unmatched
        self.catalog.model.set_verdicts(self.verdicts)
        if rekeyed.describe():
            text = f"verdicts from {source}: {rekeyed.describe()}"
            self.w.log(text)
            self.w.message.say(text, 15000)
            self.save_verdicts()

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
        from diffviewer.fits_write import write_table

        try:
            write_table(
                path,
                verdicts.catalog_with_verdicts(self.w.outcome.result.diasources, self.verdicts),
                protect=self.w.input_files(),
            )
        except (OSError, DiffviewerError) as exc:
            self.w.report_problem(exc, "Cannot export the catalog")
