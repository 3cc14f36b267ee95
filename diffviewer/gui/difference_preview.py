"""The batch review's view of a pair whose folder holds its difference and catalog alone.

A batch run with ``--products minimal`` writes ``difference.fits``, ``diasources.ecsv``,
``config.toml`` and ``metadata.json`` per pair: not what the inspector shows (the kernel,
the matched template, the diagnostics). Selecting such a pair in the review window shows
what its folder has here: the difference with its DIA sources marked (as the inspector
marks them: :func:`~diffviewer.gui.overlays.markers_in_view`), the catalog, the
row's figures and the run's warnings; one button runs the pair again in the inspector
from the inputs its metadata names and with its own ``config.toml``
(:func:`diffviewer.gui.saved.rerun_saved`), in the background, writing nothing to the
batch folder. When an input is gone, the button is off and the message says which file,
why, and what to do.
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from astropy.table import Table
from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from diffviewer.engine.progress import CancelToken, ProgressCallback
from diffviewer.errors import DiffviewerError
from diffviewer.gui.catalog import CatalogPanel
from diffviewer.gui.content import source_summary
from diffviewer.gui.model import PreparedView, levels_job, no_data, prepare_view
from diffviewer.gui.overlays import dia_items, dia_marks, draw_dia, follow_view, markers_in_view
from diffviewer.gui.views import ImagePanel
from diffviewer.gui.warnings_banner import WarningsBanner
from diffviewer.gui.worker import ErrorReport, JobRunner
from diffviewer.results import (
    MINIMAL_PRODUCTS,
    RecordedRun,
    SavedDifference,
    read_saved_difference,
    recorded_run,
)

#: The worker lanes of the preview: reading a folder, and the difference's levels.
READ_LANE = "preview"
LEVELS_LANE = "levels:preview"
#: Half width (px) of the difference shown around a source selected in the catalog.
SOURCE_HALF_WIDTH = 40.0
#: Style of the line saying why the pair cannot be run again.
PROBLEM_STYLE = "background: #ffd6d6; color: #7a0000; padding: 3px;"


@dataclasses.dataclass(frozen=True, eq=False)
class DifferenceView:
    """A folder's difference ready to show, and whether its pair can be run again.

    Attributes
    ----------
    saved : SavedDifference
        The folder's difference, catalog, config and metadata.
    view : PreparedView
        The difference's display array and default levels.
    recorded : RecordedRun or None
        The inputs and config that run the pair again; None when an input is gone.
    problem : str
        Why the pair cannot be run again (empty when it can).
    """

    saved: SavedDifference
    view: PreparedView
    recorded: RecordedRun | None
    problem: str = ""


def difference_view_job(folder: Path) -> Callable[[ProgressCallback, CancelToken], DifferenceView]:
    """A worker job that reads a folder's difference and catalog, prepares the difference
    for display and checks the inputs its metadata names (the folder is only read).

    Parameters
    ----------
    folder : Path
        A pair's output folder.

    Returns
    -------
    callable
        ``job(progress, token) -> DifferenceView``; an unreadable folder raises its
        :class:`~diffviewer.errors.InputError`.
    """

    def job(progress: ProgressCallback, token: CancelToken) -> DifferenceView:
        progress("read difference", 0.0)
        saved = read_saved_difference(folder)
        difference = saved.difference
        view = prepare_view("difference", difference.image, no_data(difference.mask))
        try:
            recorded: RecordedRun | None = recorded_run(folder)
            problem = ""
        except DiffviewerError as exc:
            recorded, problem = None, str(exc)
        return DifferenceView(saved, view, recorded, problem)

    return job


def _figure(value: Any, digits: str = ".3g") -> str:
    """One figure of a summary row as text ("not measured" for NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return "not measured"
    return f"{value:{digits}}" if isinstance(value, float) else str(value)


def row_figures(row: Mapping[str, Any]) -> str:
    """A pair's figures of merit from its summary row, in one line.

    Parameters
    ----------
    row : mapping
        A complete summary row (:func:`~diffviewer.batch.summary.complete_row`).

    Returns
    -------
    str
        Badness, noise ratio, sky-source pull scatter, kernel stamps, held-out chi^2 and
        detections (a figure not measured is said so), and the guard when it tripped.
    """
    parts = [
        f"badness {_figure(row['badness'])}",
        f"noise ratio {_figure(row['noise_ratio'])}",
        f"sky pulls σ {_figure(row['sky_pull_std'])}",
        f"kernel stamps {row['n_good']} good, {row['n_bad']} bad",
        f"held-out χ² {_figure(row['held_out_chi2'])}",
        f"detections {row['n_positive']} positive, {row['n_negative']} negative, "
        f"{row['n_dipoles']} dipoles",
    ]
    if row.get("guard_tripped"):
        parts.append("bad-subtraction guard tripped")
    return " · ".join(parts)


def held_products(saved: SavedDifference) -> str:
    """What a folder of the difference alone holds and lacks, in words (after the pair's
    name)."""
    products = "--products minimal" if saved.products == "minimal" else "an older or unfinished run"
    return (
        f"({products}): its folder holds {', '.join(MINIMAL_PRODUCTS)} only. The kernel, "
        "the matched template and the diagnostics come from running the pair again."
    )


class DifferencePreview(QWidget):
    """A pair's difference, DIA sources, figures and warnings, with the action that runs
    the pair again in the inspector.

    Its catalog (:attr:`catalog`) is a widget of its own, for the window to place where a
    wide row fits; it is shown and hidden with the preview.

    Parameters
    ----------
    jobs : JobRunner
        The review window's worker: the folder is read and the levels computed there
        (lanes :data:`READ_LANE`, :data:`LEVELS_LANE`).

    Signals
    -------
    rerun_requested()
        "Run again in the inspector" was pressed.
    """

    rerun_requested = pyqtSignal()

    def __init__(self, jobs: JobRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        jobs.finished.connect(self._on_finished)
        jobs.failed.connect(self._on_failed)
        self._row: Mapping[str, Any] = {}
        self.shown: DifferenceView | None = None
        self.heading = QLabel()
        self.heading.setWordWrap(True)
        self.run_button = QPushButton("Run again in the inspector")
        self.run_button.clicked.connect(self.rerun_requested)
        self.inputs = QLabel()
        self.inputs.setWordWrap(True)
        self.inputs.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.figures = QLabel()
        self.figures.setWordWrap(True)
        self.warnings = WarningsBanner()
        self.panel = ImagePanel("difference", "Difference (difference.fits)")
        # the inspector's markers: its shapes, tooltips and dipole lines, and as many as
        # the image's area on screen takes, the highest |S/N| first (a crowded field was
        # a carpet of circles); zooming in brings the fainter ones back
        self.markers, self.dipole_lines = dia_items(self._marker_tip)
        self.markers.sigClicked.connect(self._on_marker_clicked)
        #: How many markers the view leaves out, beside its title.
        self.marker_note = QLabel()
        self.marker_note.setContentsMargins(6, 0, 6, 0)
        self.panel.bar.insertWidget(1, self.marker_note)
        follow_view(self.panel.view, self._draw_markers, self)
        self.ring = pg.ScatterPlotItem(
            pxMode=True, size=28, symbol="o", brush=None, pen=pg.mkPen((255, 255, 255), width=2)
        )
        self.ring.setZValue(15)
        self.panel.view.addItem(self.dipole_lines)
        self.panel.view.addItem(self.markers)
        self.panel.view.addItem(self.ring)
        self.panel.settings_changed.connect(self._recompute_levels)
        self.catalog = CatalogPanel()
        self.catalog.source_selected.connect(self.select_source)
        self.catalog.filter_changed.connect(self._draw_markers)
        self.catalog.selection_filtered_out.connect(lambda _id: self.ring.setData([]))
        action = QHBoxLayout()
        action.addWidget(self.run_button)
        action.addWidget(self.inputs, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 0, 0, 0)
        layout.addWidget(self.heading)
        layout.addLayout(action)
        layout.addWidget(self.figures)
        layout.addWidget(self.warnings)
        layout.addWidget(self.panel, 1)

    def setVisible(self, visible: bool) -> None:
        """Show or hide the preview and its catalog (placed apart: it wants a wide row)."""
        super().setVisible(visible)
        self.catalog.setVisible(visible)

    def load(self, row: Mapping[str, Any]) -> None:
        """Read a pair's folder (its summary row's ``output``) in the worker and show it."""
        self._row = dict(row)
        self.clear(f"<b>{row['name']}</b>: reading its difference…")
        self.jobs.submit(READ_LANE, difference_view_job(Path(row["output"])))

    def clear(self, heading: str = "") -> None:
        """Show nothing of the last pair, under ``heading``, and hold none of its arrays
        (the difference, its display image, the catalog)."""
        self.jobs.cancel(LEVELS_LANE, notify=False)
        self.shown = None
        self.heading.setText(heading)
        for label in (self.inputs, self.figures):
            label.setText("")
        self.warnings.set_notes([])
        self.inputs.setStyleSheet("")
        self.run_button.setEnabled(False)
        self.panel.set_image(None)
        self._draw_markers()
        self.ring.setData([])
        self.catalog.set_table(Table())

    def _on_finished(self, lane: str, job_id: int, value: Any) -> None:
        if lane == READ_LANE:
            self.show_difference(value, self._row)
        elif lane == LEVELS_LANE:
            self.panel.set_levels(value)

    def _on_failed(self, lane: str, job_id: int, report: ErrorReport) -> None:
        if lane == READ_LANE:
            self.show_problem(str(self._row.get("name", "")), report.message)

    def show_problem(self, name: str, message: str) -> None:
        """Say why a pair's folder cannot be shown."""
        self.clear(f"<b>{name}</b>: its folder cannot be shown")
        self.inputs.setText(message)
        self.inputs.setStyleSheet(PROBLEM_STYLE)

    def show_difference(self, shown: DifferenceView, row: Mapping[str, Any]) -> None:
        """Show a folder's difference, DIA sources, the row's figures and the run's
        warnings, and whether and from what the pair can be run again.

        Parameters
        ----------
        shown : DifferenceView
            What the worker read (:func:`difference_view_job`).
        row : mapping
            The pair's summary row.
        """
        self.shown = shown
        saved = shown.saved
        held = html.escape(held_products(saved))
        self.heading.setText(f"<b>{html.escape(str(row['name']))}</b> {held}")
        if shown.recorded is not None:
            recorded = shown.recorded
            text = (
                f"runs {recorded.science} − {recorded.template} with {saved.folder.name}/"
                f"config.toml (config {recorded.config.digest()}) in the background; "
                "nothing is written to the batch folder"
            )
            if recorded.changed is not None:
                text += (
                    f". Note: {recorded.changed} was replaced or changed since the batch: "
                    "run again, the pair gives another difference"
                )
            self.inputs.setText(text)
            self.inputs.setStyleSheet("")
        else:
            self.inputs.setText(shown.problem)
            self.inputs.setStyleSheet(PROBLEM_STYLE)
        self.run_button.setEnabled(shown.recorded is not None)
        self.figures.setText(row_figures(row))
        self.warnings.set_notes(saved.warnings)
        image, levels = shown.view
        first = self.panel.data is None or self.panel.data.shape != image.shape
        self.panel.set_image(image, self.panel.levels_for(levels))
        if self.panel.wants_own_levels():
            self._recompute_levels()
        if first:
            ny, nx = image.shape
            self.panel.view.setRange(xRange=(-0.5, nx - 0.5), yRange=(-0.5, ny - 0.5), padding=0)
        self.ring.setData([])
        self.catalog.set_table(saved.diasources)
        self._draw_markers()

    def _draw_markers(self, *args: object) -> None:
        """Mark the DIA sources the catalog's filter lets through as the inspector does
        (:func:`~diffviewer.gui.overlays.markers_in_view`), and say how many are left out."""
        if self.shown is None:
            dia, rows, note = None, np.zeros(0, int), ""
        else:
            dia = self.shown.saved.diasources
            rows, note = markers_in_view(
                dia,
                self.catalog.shown_rows(),
                self.panel.view,
                self.shown.saved.difference.image.shape,
                self.catalog.selected_source(),
            )
        draw_dia(self.markers, self.dipole_lines, dia_marks(dia, rows))
        self.marker_note.setText(note)

    def _marker_tip(self, x: float, y: float, data: Any) -> str:
        """A DIA marker's tooltip: the source's line of the catalog (the inspector's)."""
        if self.shown is None:
            return ""
        return source_summary(self.shown.saved.diasources, int(data), {})

    def _recompute_levels(self, *args: object) -> None:
        """Compute the difference's levels for the display settings chosen, in the worker."""
        if self.panel.data is not None:
            self.jobs.submit(LEVELS_LANE, levels_job(self.panel.data, self.panel.settings))

    def select_source(self, source_id: int) -> None:
        """Centre the difference on a DIA source and ring it."""
        if self.shown is None:
            return
        dia = self.shown.saved.diasources
        rows = np.flatnonzero(np.asarray(dia["id"]) == source_id)
        if not rows.size:
            return
        x, y = float(dia["x"][rows[0]]), float(dia["y"][rows[0]])
        self.ring.setData([x], [y])
        self.panel.centre_on(x, y, SOURCE_HALF_WIDTH)
        self.catalog.select_source(source_id)
        self._draw_markers()  # its marker among them, wherever the view went

    def _on_marker_clicked(self, item: Any, points: Any, event: Any = None) -> None:
        if len(points):
            self.select_source(int(points[0].data()))
