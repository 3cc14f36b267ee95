"""The main window: linked image views, overlays, catalog, diagnostics, parameters, runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from astropy.io import fits
from astropy.table import Table
from PyQt6.QtCore import QBuffer, QByteArray, QIODevice, QSettings, Qt, QTimer
from PyQt6.QtGui import (
    QAction,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QKeySequence,
    QShowEvent,
)
from PyQt6.QtWidgets import (
    QCheckBox,
    QDockWidget,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QMenuBar,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSlider,
    QTabWidget,
    QTextEdit,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from diffviewer import display
from diffviewer.config import SubtractionConfig, load_toml, to_toml
from diffviewer.errors import DiffviewerError, InputError
from diffviewer.exposure import MaskPlane
from diffviewer.gui import model
from diffviewer.gui.catalog import CatalogPanel
from diffviewer.gui.model import Pair, RunOutcome, Verdict
from diffviewer.gui.panels import ABPanel, CutoutPanel, KernelPanel, ResidualPanel, StampPanel
from diffviewer.gui.params import ParameterPanel
from diffviewer.gui.views import ImageArea
from diffviewer.gui.worker import ErrorReport, JobRunner
from diffviewer.io import read_pairs_csv

# Marker colours (RGB) of kernel candidates by status, and of DIA sources.
STATUS_COLOURS = {"GOOD": (0, 230, 0), "BAD": (255, 40, 40), "CONTROL": (0, 200, 255)}
POSITIVE_COLOUR, NEGATIVE_COLOUR, DIPOLE_COLOUR, FLAGGED_COLOUR = (
    (0, 255, 0),
    (255, 0, 255),
    (255, 220, 0),
    (255, 140, 0),
)
SKY_COLOUR = (170, 170, 170)
# Marker shapes: kernel sources are squares (they are square stamps), DIA sources circles,
# dipoles diamonds, sky sources crosses, so the overlays on the difference never look alike.
CANDIDATE_SYMBOL = "s"
#: Views carrying each overlay.
CANDIDATE_VIEWS = ("science", "template", "matched", "difference")
DIA_VIEWS = ("difference", "score")
CUTOUT_HALF = 15
FITS_FILTER = "FITS (*.fits *.fit *.fts *.fits.fz *.fits.gz);;All files (*)"
RECENT_MAX = 10


class MainWindow(QMainWindow):
    """The inspection application's window.

    Parameters
    ----------
    config : SubtractionConfig, optional
        The config shown in the parameter panel at start.
    runner : callable, optional
        The engine entry point (``run_subtraction`` when None); tests pass their own.
    settings : QSettings, optional
        Where layout, folders and recent pairs are remembered.
    """

    def __init__(
        self,
        config: SubtractionConfig | None = None,
        *,
        runner: Any = None,
        settings: QSettings | None = None,
    ) -> None:
        super().__init__()
        self.setWindowTitle("diffviewer")
        self.setAcceptDrops(True)
        self.settings = settings if settings is not None else QSettings("diffviewer", "diffviewer")
        self.runner = runner
        self.jobs = JobRunner(self)
        self.pair: Pair | None = None
        self.outcome: RunOutcome | None = None
        self.previous: RunOutcome | None = None
        self.pairs: list[Pair] = []
        self.pair_index = -1
        self.verdicts: dict[int, Verdict] = {}
        self.selected: int | None = None
        self.last_error: ErrorReport | None = None
        self.output_root = Path(
            str(self.settings.value("output_root", str(Path.home() / "diffviewer_out")))
        )
        self._raw: dict[str, np.ndarray] = {}
        self._closing = False

        self.area = ImageArea([(n, model.VIEW_TITLES[n]) for n in model.VIEW_TITLES])
        self.area.set_visible_views(model.MAIN_VIEWS)
        self.area.hovered.connect(self._on_hover)
        for panel in self.area.panels.values():
            panel.settings_changed.connect(self._recompute_levels)
            panel.cmap_box.currentTextChanged.connect(self._refresh_cutouts)
        self.kernel_panel = KernelPanel()
        self.kernel_panel.centre_requested.connect(self._centre_and_show)
        self.residual_panel = ResidualPanel()
        self.ab_panel = ABPanel()
        self.area.blink_rate.valueChanged.connect(self.ab_panel.blink_timer.setInterval)
        self.warnings = QLabel()
        self.warnings.setWordWrap(True)
        self.warnings.setStyleSheet("background: #fff3b0; color: #5a4500; padding: 3px;")
        self.warnings.hide()
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("background: #ffd6d6; color: #7a0000; padding: 3px;")
        self.error_details = QPushButton("Details…")
        self.error_details.clicked.connect(self.show_error_details)
        self.error_box = QWidget()
        row = QHBoxLayout(self.error_box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.error_label, 1)
        row.addWidget(self.error_details)
        self.error_box.hide()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.area, "Images")
        self.tabs.addTab(self.kernel_panel, "Kernel")
        self.tabs.addTab(self.residual_panel, "Residuals")
        self.tabs.addTab(self.ab_panel, "A/B")
        centre = QWidget()
        centre_layout = QVBoxLayout(centre)
        centre_layout.setContentsMargins(0, 0, 0, 0)
        centre_layout.addWidget(self.error_box)
        centre_layout.addWidget(self.warnings)
        centre_layout.addWidget(self.tabs, 1)
        self.setCentralWidget(centre)
        self.tabs.currentChanged.connect(self._on_tab)

        self.params = ParameterPanel()
        self.params.set_config(config or SubtractionConfig())
        self.catalog = CatalogPanel()
        self.catalog.source_selected.connect(self.select_source)
        self.catalog.sky_box.toggled.connect(self._refresh_overlays)
        self.cutouts = CutoutPanel()
        self.stamp = StampPanel()
        self.comment = QLineEdit()
        self.comment.setPlaceholderText("comment for the next verdict (R / B / U)")
        self.readout = QLabel("Move the cursor over an image.")
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.readout.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.log = QTextEdit()
        self.log.setReadOnly(True)
        cut_page = QWidget()
        cut_layout = QVBoxLayout(cut_page)
        cut_layout.setContentsMargins(0, 0, 0, 0)
        cut_layout.addWidget(self.cutouts, 1)
        cut_layout.addWidget(self.comment)
        self.docks: dict[str, QDockWidget] = {}
        self._dock("Parameters", self.params, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._dock("Readout", self._readout_page(), Qt.DockWidgetArea.LeftDockWidgetArea)
        self._dock("Catalog", self.catalog, Qt.DockWidgetArea.BottomDockWidgetArea)
        self._dock("Log", self.log, Qt.DockWidgetArea.BottomDockWidgetArea)
        self._dock("Cutouts", cut_page, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("Kernel stamp", self.stamp, Qt.DockWidgetArea.RightDockWidgetArea)
        self.tabifyDockWidget(self.docks["Catalog"], self.docks["Log"])
        self.tabifyDockWidget(self.docks["Cutouts"], self.docks["Kernel stamp"])
        self.docks["Catalog"].raise_()
        self.docks["Cutouts"].raise_()

        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(260)
        self.step_label = QLabel("idle")
        status = self.statusBar()
        assert status is not None
        self.status = status
        status.addPermanentWidget(self.step_label)
        status.addPermanentWidget(self.progress)
        self._build_overlays()
        self._build_actions()
        self.jobs.progress.connect(self._on_progress)
        self.jobs.finished.connect(self._on_finished)
        self.jobs.failed.connect(self._on_failed)
        self.jobs.cancelled.connect(self._on_cancelled)
        self.params.edited.connect(self._update_actions)
        self._restore_layout()
        self._update_actions()

    # ----------------------------------------------------------------- construction

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> None:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{title}")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        self.docks[title] = dock

    def _readout_page(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.readout)
        layout.addWidget(QLabel("<b>Mask overlay</b>"))
        self.plane_boxes: dict[MaskPlane, QCheckBox] = {}
        planes = QGridLayout()  # two columns: room below for the marker legend
        planes.setSpacing(2)
        for k, plane in enumerate(MaskPlane):
            r, g, b = display.PLANE_COLOURS[plane]
            box = QCheckBox(str(plane.name))
            box.setStyleSheet(f"QCheckBox {{ color: rgb({r // 2}, {g // 2}, {b // 2}); }}")
            box.toggled.connect(self._update_mask_overlay)
            planes.addWidget(box, k // 2, k % 2)
            self.plane_boxes[plane] = box
        layout.addLayout(planes)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(50)
        self.opacity.setToolTip("Mask overlay opacity")
        self.opacity.valueChanged.connect(self._update_mask_overlay)
        layout.addWidget(QLabel("opacity"))
        layout.addWidget(self.opacity)
        self.legend = QLabel(marker_legend())
        self.legend.setWordWrap(True)
        layout.addWidget(self.legend)
        layout.addStretch(1)
        return page

    def _build_overlays(self) -> None:
        self.candidate_items: dict[str, pg.ScatterPlotItem] = {}
        self.dia_items: dict[str, pg.ScatterPlotItem] = {}
        self.dipole_lines: dict[str, pg.PlotDataItem] = {}
        self.selection_items: dict[str, pg.ScatterPlotItem] = {}
        for name, panel in self.area.panels.items():
            if name in CANDIDATE_VIEWS:
                item = pg.ScatterPlotItem(
                    pxMode=True, size=13, hoverable=True, tip=self._candidate_tip
                )
                item.setZValue(10)
                item.sigClicked.connect(self._on_candidate_clicked)
                panel.view.addItem(item)
                self.candidate_items[name] = item
            if name in DIA_VIEWS:
                lines = pg.PlotDataItem(connect="pairs", pen=pg.mkPen(DIPOLE_COLOUR, width=1))
                lines.setZValue(11)
                panel.view.addItem(lines)
                self.dipole_lines[name] = lines
                item = pg.ScatterPlotItem(pxMode=True, size=12, hoverable=True, tip=self._dia_tip)
                item.setZValue(12)
                item.sigClicked.connect(self._on_dia_clicked)
                panel.view.addItem(item)
                self.dia_items[name] = item
            sel = pg.ScatterPlotItem(
                pxMode=True, size=28, symbol="o", brush=None, pen=pg.mkPen((255, 255, 255), width=2)
            )
            sel.setZValue(15)
            panel.view.addItem(sel)
            self.selection_items[name] = sel

    def _action(
        self,
        menu: Any,
        text: str,
        slot: Any,
        shortcut: str | QKeySequence | QKeySequence.StandardKey | None = None,
        checkable: bool = False,
    ) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.setCheckable(checkable)
        action.triggered.connect(slot)
        menu.addAction(action)
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        bar = self.menuBar()
        assert bar is not None

        def menu(parent: QMenuBar | QMenu, title: str) -> QMenu:
            made = parent.addMenu(title)
            assert made is not None
            return made

        file_menu = menu(bar, "&File")
        self._action(file_menu, "Open pair…", self.open_pair_dialog, QKeySequence.StandardKey.Open)
        self._action(file_menu, "Open multi-extension file…", self.open_mef_dialog)
        self._action(file_menu, "Open pairs list (CSV)…", self.open_pairs_dialog)
        self.recent_menu = menu(file_menu, "Recent pairs")
        self.next_action = self._action(file_menu, "Next pair", self.next_pair, "Ctrl+Right")
        self.prev_action = self._action(file_menu, "Previous pair", self.previous_pair, "Ctrl+Left")
        file_menu.addSeparator()
        self.save_action = self._action(
            file_menu, "Save all outputs…", self.save_outputs_dialog, QKeySequence.StandardKey.Save
        )
        self._action(file_menu, "Save config…", self.save_config_dialog)
        self._action(file_menu, "Load config…", self.load_config_dialog)
        self._action(file_menu, "Save verdicts", self.save_verdicts)
        self._action(file_menu, "Export catalog with verdicts…", self.export_catalog_dialog)
        self._action(file_menu, "Save PNG of a view or panel…", self.save_png_dialog)
        file_menu.addSeparator()
        self._action(file_menu, "Quit", self.close, QKeySequence.StandardKey.Quit)

        run_menu = menu(bar, "&Run")
        self.run_action = self._action(run_menu, "Run", self.run, "Ctrl+R")
        self.cancel_action = self._action(run_menu, "Cancel", self.cancel, "Esc")

        view_menu = menu(bar, "&View")
        self._action(view_menu, "Grid", lambda: self.area.set_mode("grid"), "Ctrl+1")
        self._action(view_menu, "Tabs", lambda: self.area.set_mode("tabs"), "Ctrl+2")
        self._action(view_menu, "Blink panel", lambda: self.area.set_mode("blink"), "Ctrl+3")
        self._action(view_menu, "Zoom to fit", self.area.zoom_fit, "Ctrl+0")
        self._action(view_menu, "Zoom 1:1", lambda: self.area.set_zoom(1.0), "1")
        self._action(
            view_menu, "Zoom in", lambda: self.area.set_zoom(2 * self.area.zoom()), "Ctrl+="
        )
        self._action(
            view_menu, "Zoom out", lambda: self.area.set_zoom(self.area.zoom() / 2), "Ctrl+-"
        )
        view_menu.addSeparator()
        self._action(view_menu, "Blink: next frame", self._blink_step, "K")
        self.blink_action = self._action(
            view_menu, "Blink on/off", self.area.toggle_blink, "Ctrl+K", checkable=True
        )
        self._action(
            view_menu,
            "Spare cell: variance / mask",
            lambda: self.area.set_spare_view(
                "mask" if self.area.spare_view() == "variance" else "variance"
            ),
            "M",
        )
        self.cand_action = self._action(
            view_menu, "Kernel sources", self._refresh_overlays, checkable=True
        )
        self.dia_action = self._action(
            view_menu, "DIA sources", self._refresh_overlays, checkable=True
        )
        self.cand_action.setChecked(True)
        self.dia_action.setChecked(True)
        view_menu.addSeparator()
        for dock in self.docks.values():
            view_menu.addAction(dock.toggleViewAction())

        verdict_menu = menu(bar, "V&erdict")
        for key, label in model.VERDICT_KEYS.items():
            self._action(
                verdict_menu,
                f"{label.capitalize()} ({key})",
                lambda _=False, lab=label: self.set_verdict(lab),
                key,
            )
        verdict_menu.addSeparator()
        self.advance_action = QAction("Advance to the next source after a verdict", self)
        self.advance_action.setCheckable(True)
        verdict_menu.addAction(self.advance_action)
        self.advance_action.setChecked(True)
        self._action(verdict_menu, "Next source", lambda: self.catalog.step(1), "N")
        self._action(verdict_menu, "Previous source", lambda: self.catalog.step(-1), "P")

        tools = QToolBar("Run")
        tools.setObjectName("toolbar_run")
        tools.addAction(self.run_action)
        tools.addAction(self.cancel_action)
        tools.addSeparator()
        tools.addAction(self.prev_action)
        tools.addAction(self.next_action)
        tools.addSeparator()
        tools.addAction(self.blink_action)
        self.addToolBar(tools)
        self._refresh_recent()

    # ----------------------------------------------------------------- opening pairs

    def open_pair(self, pair: Pair, *, run: bool = True) -> None:
        """Make ``pair`` the current pair (clearing the views) and run it."""
        self.jobs.cancel("run", notify=False)
        self.pair = pair
        self.outcome = None
        self.previous = None
        self.verdicts = {}
        self.selected = None
        self._clear_views()
        self.setWindowTitle(f"diffviewer — {pair.label}")
        if all(isinstance(s, str) for s in (pair.science, pair.template)):
            self._remember_recent(pair)
        self._update_actions()
        if run:
            self.run()

    def open_specs(self, science: str, template: str, name: str = "") -> None:
        """Open a pair given as specs (``file.fits``, ``file.fits[SCI]``)."""
        self.open_pair(Pair(science, template, name))

    def set_pairs(self, pairs: Sequence[Pair]) -> None:
        """Load a list of pairs to step through and open the first."""
        self.pairs = list(pairs)
        self.pair_index = 0
        if self.pairs:
            self.open_pair(self.pairs[0])

    def next_pair(self) -> None:
        """Open the next pair of the list."""
        if self.pair_index + 1 < len(self.pairs):
            self.pair_index += 1
            self.open_pair(self.pairs[self.pair_index])

    def previous_pair(self) -> None:
        """Open the previous pair of the list."""
        if self.pair_index > 0:
            self.pair_index -= 1
            self.open_pair(self.pairs[self.pair_index])

    def ask_file(
        self, title: str, folder_key: str, filters: str, name: str = "", *, save: bool = False
    ) -> Path | None:
        """Ask for a file to open (or save), starting in the folder remembered under
        ``folder_key`` (with ``name`` proposed), and remember the chosen file's folder."""
        folder = Path(str(self.settings.value(folder_key, "")))
        ask = QFileDialog.getSaveFileName if save else QFileDialog.getOpenFileName
        path, _ = ask(self, title, str(folder / name) if name else str(folder), filters)
        if not path:
            return None
        self.settings.setValue(folder_key, str(Path(path).parent))
        return Path(path)

    def open_pair_dialog(self) -> None:
        """Ask for a science file, then a template file (starting in the science's folder)."""
        sci = self.ask_file("Science image", "last_input_folder", FITS_FILTER)
        tmpl = self.ask_file("Template image", "last_input_folder", FITS_FILTER) if sci else None
        if sci is not None and tmpl is not None:
            self.open_specs(str(sci), str(tmpl))

    def open_mef_dialog(self) -> None:
        """Ask for one multi-extension file, then which extensions are science and template."""
        path = self.ask_file("Multi-extension FITS file", "last_input_folder", FITS_FILTER)
        if path is None:
            return
        try:
            names = image_extensions(path)
        except InputError as exc:
            self.report_problem(exc)
            return
        guess = default_extensions(names)
        sci, ok = QInputDialog.getItem(
            self, "Science extension", "Science:", names, names.index(guess[0]), False
        )
        if not ok:
            return
        tmpl, ok = QInputDialog.getItem(
            self, "Template extension", "Template:", names, names.index(guess[1]), False
        )
        if ok:
            self.open_specs(f"{path}[{sci}]", f"{path}[{tmpl}]")

    def open_pairs_dialog(self) -> None:
        """Ask for a CSV list of pairs (columns science, template, optional name)."""
        path = self.ask_file("Pairs list", "last_input_folder", "CSV (*.csv);;All (*)")
        if path is not None:
            self.open_pairs_file(str(path))

    def open_pairs_file(self, path: str) -> None:
        """Load a CSV list of pairs and open the first.

        Every failure (missing file, a folder, not UTF-8, short rows, a name that is not
        a plain folder name) becomes a message in the window; the open pair stays.
        """
        try:
            pairs = [Pair(s, t, n) for s, t, n in read_pairs_csv(path)]
        except (DiffviewerError, OSError) as exc:
            self.report_problem(exc, f"Cannot open the pairs list {path}")
            return
        self.set_pairs(pairs)

    def dragEnterEvent(self, event: QDragEnterEvent | None) -> None:
        mime = event.mimeData() if event is not None else None
        if event is not None and mime is not None and mime.hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent | None) -> None:
        mime = event.mimeData() if event is not None else None
        if event is None or mime is None:
            return
        paths = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]
        self.open_dropped(paths)
        event.acceptProposedAction()

    def open_dropped(self, paths: Sequence[str]) -> None:
        """Open dropped files: two files (science first), or one multi-extension file."""
        if len(paths) == 2:
            self.open_specs(paths[0], paths[1])
        elif len(paths) == 1:
            try:
                names = image_extensions(Path(paths[0]))
                sci, tmpl = default_extensions(names)
            except InputError as exc:
                self.report_problem(exc)
                return
            self.open_specs(f"{paths[0]}[{sci}]", f"{paths[0]}[{tmpl}]")
        else:
            self.report_problem(
                InputError(
                    f"dropped {len(paths)} files: drop the "
                    "science and the template together, or one "
                    "multi-extension file"
                )
            )

    def _remember_recent(self, pair: Pair) -> None:
        entry = f"{pair.science}\t{pair.template}"
        recent = [r for r in self._recent() if r != entry]
        self.settings.setValue("recent_pairs", [entry, *recent][:RECENT_MAX])
        self._refresh_recent()

    def _recent(self) -> list[str]:
        value = self.settings.value("recent_pairs", [])
        if isinstance(value, str):
            return [value]
        return [str(v) for v in (value or [])]

    def _refresh_recent(self) -> None:
        self.recent_menu.clear()
        for entry in self._recent():
            sci, _, tmpl = entry.partition("\t")
            action = QAction(f"{Path(sci).name} — {Path(tmpl).name}", self.recent_menu)
            self.recent_menu.addAction(action)
            action.triggered.connect(lambda _=False, s=sci, t=tmpl: self.open_specs(s, t))

    # ----------------------------------------------------------------- running

    def run(self) -> None:
        """Run the current pair with the config of the parameter panel."""
        if self.pair is None or self._closing:
            return
        try:
            config = self.params.config()
        except DiffviewerError as exc:
            self.report_problem(exc)
            return
        self._hide_error()
        self._log(f"run: {self.pair.label} (config {config.digest()})")
        self.jobs.submit("run", model.run_job(self.pair, config, self.runner))
        self.step_label.setText("starting")
        self.progress.setValue(0)
        self._update_actions()

    def cancel(self) -> None:
        """Cancel the current run; the window is idle at once."""
        if self.jobs.is_busy("run"):
            self.jobs.cancel("run")

    def is_running(self) -> bool:
        """Whether a run is under way."""
        return self.jobs.is_busy("run")

    def is_saving(self) -> bool:
        """Whether a save of all outputs is under way (Save is disabled meanwhile)."""
        return self.jobs.is_busy("save")

    def _on_progress(self, lane: str, job_id: int, step: str, fraction: float) -> None:
        if lane == "run":
            self.step_label.setText(step)
            self.progress.setValue(round(1000 * fraction))

    def _on_cancelled(self, lane: str, job_id: int) -> None:
        if lane == "run":
            self.step_label.setText("cancelled")
            self.progress.setValue(0)
            self._log("run cancelled")
        self._update_actions()

    def _on_failed(self, lane: str, job_id: int, report: ErrorReport) -> None:
        self.step_label.setText("failed" if lane == "run" else self.step_label.text())
        if lane == "save":
            report = dataclasses.replace(report, title=f"Save failed ({report.title})")
            if self._closing:  # the window stays open, so the failure is seen
                self._closing = False
                self.jobs.idle.disconnect(self.close)
                self.setEnabled(True)
                self.status.showMessage("not closed: the save failed", 10000)
        self.show_report(report)
        self._update_actions()

    def _on_finished(self, lane: str, job_id: int, value: Any) -> None:
        if lane == "run":
            self.show_outcome(value)
        elif lane.startswith("levels:"):
            panel = self.area.panels[lane.split(":", 1)[1]]
            panel.set_levels(value)
        elif lane == "save":
            self._log(f"saved {len(value)} files to {value[0].parent if value else '?'}")
            self.status.showMessage(f"saved {len(value)} files", 5000)
        self._update_actions()

    def show_outcome(self, outcome: RunOutcome) -> None:
        """Show a finished run (the previous one is kept for the A/B comparison)."""
        if self.outcome is not None and self.outcome.pair == outcome.pair:
            self.previous = self.outcome
        self.outcome = outcome
        result = outcome.result
        self._raw = model.view_arrays(result)
        self.step_label.setText(f"done in {outcome.elapsed:.1f} s")
        self.progress.setValue(1000)
        first = all(p.data is None for p in self.area.panels.values())
        for name, panel in self.area.panels.items():
            image = outcome.images.get(name)
            levels = outcome.levels.get(name)
            if image is not None and panel.settings.levels == "manual" and panel.settings.manual:
                levels = panel.settings.manual
            panel.set_image(image, levels)
            default = display.default_settings(name)
            if (
                image is not None
                and name != "mask"
                and panel.settings.levels != "manual"
                and (panel.settings.levels, panel.settings.symmetric)
                != (default.levels, default.symmetric)
            ):
                self._recompute_levels(name)  # keep the level mode the user chose
        if first:
            self.area.zoom_fit()
        self.params.set_config(result.config)
        self.catalog.set_table(result.diasources)
        self._load_verdicts()
        self._refresh_overlays()
        self._update_mask_overlay()
        self._show_diagnostics()
        self._show_ab()
        self._show_warnings(result.warnings)
        self._log(
            f"done: {len(result.diasources)} DIA sources, "
            f"{outcome.elapsed:.2f} s; timings "
            + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items())
        )
        self.area.set_mode(self.area.mode)

    def _recompute_levels(self, view: str) -> None:
        """Compute a view's levels in the worker after its level mode changed."""
        panel = self.area.panels[view]
        if panel.data is None:
            return
        if panel.settings.levels == "manual" and panel.settings.manual is not None:
            panel.set_levels(display.compute_levels(panel.data, panel.settings))
            return
        self.jobs.submit(f"levels:{view}", model.levels_job(panel.data, panel.settings))

    # ----------------------------------------------------------------- drawing

    def _clear_views(self) -> None:
        for panel in self.area.panels.values():
            panel.set_image(None)
            panel.set_mask_overlay(None)
        for item in [
            *self.candidate_items.values(),
            *self.dia_items.values(),
            *self.selection_items.values(),
        ]:
            item.clear()
        for lines in self.dipole_lines.values():
            lines.clear()
        self.catalog.set_table(Table())
        self._raw = {}
        self.warnings.hide()

    def _refresh_overlays(self) -> None:
        if self.outcome is None:
            return
        result = self.outcome.result
        cands = result.kernel.candidates
        status = np.asarray(cands["status"]).astype(str) if len(cands) else np.zeros(0, str)
        spots = [
            {
                "pos": (float(x), float(y)),
                "data": i,
                "symbol": CANDIDATE_SYMBOL,
                "brush": None,
                "pen": pg.mkPen(STATUS_COLOURS.get(s, (200, 200, 200)), width=1.5),
            }
            for i, (x, y, s) in enumerate(
                zip(np.asarray(cands["x"]), np.asarray(cands["y"]), status, strict=True)
            )
        ]
        for item in self.candidate_items.values():
            item.setData(spots if self.cand_action.isChecked() else [])
        dia = result.diasources
        sky = (
            np.asarray(dia["sky_source"], bool)
            if "sky_source" in dia.colnames
            else np.zeros(len(dia), bool)
        )
        shown = np.flatnonzero(~sky | self.catalog.sky_box.isChecked())
        dia_spots = [self._dia_spot(dia, int(i), bool(sky[i])) for i in shown]
        lobes = model.dipole_segments(dia)
        for name, item in self.dia_items.items():
            item.setData(dia_spots if self.dia_action.isChecked() else [])
            if self.dia_action.isChecked() and len(lobes):
                self.dipole_lines[name].setData(lobes[:, 0], lobes[:, 1])
            else:
                self.dipole_lines[name].clear()

    def _dia_spot(self, dia: Any, i: int, sky: bool = False) -> dict[str, Any]:
        if sky:  # a blank-sky measurement, not a detection: a small grey cross
            return {
                "pos": (float(dia["x"][i]), float(dia["y"][i])),
                "data": int(dia["id"][i]),
                "symbol": "x",
                "size": 8,
                "brush": pg.mkBrush(SKY_COLOUR),
                "pen": pg.mkPen(SKY_COLOUR, width=1),
            }
        positive = float(dia["sign"][i]) > 0 if "sign" in dia.colnames else True
        dipole = bool(dia["is_dipole"][i]) if "is_dipole" in dia.colnames else False
        flagged = bool(dia["flagged"][i]) if "flagged" in dia.colnames else False
        colour = DIPOLE_COLOUR if dipole else (POSITIVE_COLOUR if positive else NEGATIVE_COLOUR)
        symbol = "d" if dipole else "o"  # flagged: dashed orange
        pen = pg.mkPen(
            FLAGGED_COLOUR if flagged and not dipole else colour,
            width=2,
            style=Qt.PenStyle.DashLine if flagged else Qt.PenStyle.SolidLine,
        )
        return {
            "pos": (float(dia["x"][i]), float(dia["y"][i])),
            "data": int(dia["id"][i]),
            "symbol": symbol,
            "brush": None,
            "pen": pen,
        }

    def _candidate_tip(self, x: float, y: float, data: Any) -> str:
        if self.outcome is None:
            return ""
        return model.candidate_summary(self.outcome.result, int(data))

    def _dia_tip(self, x: float, y: float, data: Any) -> str:
        if self.outcome is None:
            return ""
        return model.source_summary(self.outcome.result.diasources, int(data), self.verdicts)

    def _on_candidate_clicked(self, item: Any, points: Any, event: Any = None) -> None:
        if self.outcome is None or not len(points):
            return
        index = int(points[0].data())
        images, info = model.stamp_views(self.outcome.result, index)
        self.stamp.set_data(images, info)
        self.docks["Kernel stamp"].raise_()

    def _on_dia_clicked(self, item: Any, points: Any, event: Any = None) -> None:
        if len(points):
            self.catalog.select_source(int(points[0].data()))

    def select_source(self, source_id: int) -> None:
        """Select a DIA source: centre the views on it, mark it, show its cutouts."""
        if self.outcome is None:
            return
        dia = self.outcome.result.diasources
        rows = np.flatnonzero(np.asarray(dia["id"]) == source_id)
        if not rows.size:
            return
        self.selected = source_id
        x, y = float(dia["x"][rows[0]]), float(dia["y"][rows[0]])
        self.area.centre_on(x, y)
        for item in self.selection_items.values():
            item.setData([x], [y])
        self.catalog.select_source(source_id)
        self._refresh_cutouts()

    def _refresh_cutouts(self) -> None:
        if self.outcome is None or self.selected is None:
            return
        dia = self.outcome.result.diasources
        rows = np.flatnonzero(np.asarray(dia["id"]) == self.selected)
        if not rows.size:
            return
        x, y = float(dia["x"][rows[0]]), float(dia["y"][rows[0]])
        cutouts = {
            n: display.cutout(self._raw[n], x, y, CUTOUT_HALF)
            for n in self.cutouts.NAMES
            if n in self._raw
        }
        self.cutouts.set_data(
            cutouts,
            {n: self.area.panels[n].settings.cmap for n in cutouts},
            (CUTOUT_HALF + x - round(x), CUTOUT_HALF + y - round(y)),
            model.source_summary(dia, self.selected, self.verdicts),
        )

    def _centre_and_show(self, x: float, y: float) -> None:
        self.tabs.setCurrentWidget(self.area)
        self.area.centre_on(x, y)

    def _on_hover(self, x: float, y: float) -> None:
        if self.outcome is None:
            return
        self.readout.setText(model.pixel_readout(self.outcome.result, self._raw, x, y))

    def _update_mask_overlay(self, *args: object) -> None:
        """The chosen planes over every image view; the mask view shows every plane
        in its colour, opaque, on black where no plane is set."""
        if self.outcome is None:
            return
        mask = self._raw["mask"]
        chosen = {p: b.isChecked() for p, b in self.plane_boxes.items()}
        rgba = (
            display.mask_overlay(mask, chosen, self.opacity.value() / 100)
            if any(chosen.values())
            else None
        )
        for name, panel in self.area.panels.items():
            if name != "mask":
                panel.set_mask_overlay(rgba)
        self.area.panels["mask"].set_mask_overlay(
            display.mask_overlay(mask, dict.fromkeys(MaskPlane, True), 1.0)
        )

    def _show_diagnostics(self) -> None:
        assert self.outcome is not None
        result = self.outcome.result
        self.kernel_panel.set_data(**model.kernel_views(result))
        self.residual_panel.set_data(model.residual_samples(result))

    def _show_ab(self) -> None:
        assert self.outcome is not None
        a = self.outcome

        def entry(o: RunOutcome) -> tuple[np.ndarray, tuple[float, float], str, dict[str, float]]:
            return (
                o.images["difference"],
                a.levels["difference"],
                f"config {o.result.config.digest()}",
                model.metrics(o.result),
            )

        self.ab_panel.set_runs(entry(a), entry(self.previous) if self.previous else None)

    def _show_warnings(self, notes: Sequence[str]) -> None:
        if notes:
            self.warnings.setText("<b>Warnings:</b> " + " · ".join(notes))
            self.warnings.show()
        else:
            self.warnings.hide()

    def _on_tab(self, index: int) -> None:
        """The A/B views open on the area the image views show (they overlap on screen, so
        pyqtgraph's links would align them by screen position rather than share a range)."""
        shown = self.area.panels["science"].data is not None
        if self.tabs.widget(index) is self.ab_panel and shown:
            self.ab_panel.a.view.setRange(rect=self.area.master.viewRect(), padding=0)

    def _blink_step(self) -> None:
        if self.area.mode != "blink":
            self.area.set_mode("blink")
        else:
            self.area.step_blink()

    # ----------------------------------------------------------------- messages

    def show_report(self, report: ErrorReport) -> None:
        """Show an error in the window's message bar (details on demand)."""
        self.last_error = report
        self.error_label.setText(f"<b>{report.title}:</b> {report.message}")
        self.error_details.setVisible(bool(report.details))
        self.error_box.show()
        self._log(f"error: {report.title}: {report.message}")

    def report_problem(self, exc: BaseException, title: str | None = None) -> None:
        """Show an expected problem (bad input, unwritable file) as a message, no traceback.

        Parameters
        ----------
        exc : BaseException
            The problem; its text is the message.
        title : str, optional
            Heading (the exception's class name when None).
        """
        self.show_report(ErrorReport(title or type(exc).__name__, str(exc), "", True))

    def _hide_error(self) -> None:
        self.error_box.hide()

    def show_error_details(self) -> None:
        """Show the traceback of the last error in a dialog."""
        if self.last_error is None:
            return
        box = QMessageBox(
            QMessageBox.Icon.Warning, self.last_error.title, self.last_error.message, parent=self
        )
        box.setDetailedText(self.last_error.details)
        box.open()

    def _log(self, text: str) -> None:
        self.log.append(text)

    def _update_actions(self) -> None:
        busy = self.is_running()
        self.run_action.setEnabled(self.pair is not None)
        self.run_action.setText("Re-run" if self.outcome is not None else "Run")
        self.cancel_action.setEnabled(busy)
        self.save_action.setEnabled(self.outcome is not None and not self.is_saving())
        self.next_action.setEnabled(self.pair_index + 1 < len(self.pairs))
        self.prev_action.setEnabled(self.pair_index > 0)
        if not busy and self.step_label.text() == "starting":
            self.step_label.setText("idle")

    # ----------------------------------------------------------------- verdicts and saving

    def input_files(self) -> list[Path]:
        """The current pair's input files, which no write of the window may replace."""
        return self.pair.files if self.pair is not None else []

    def output_dir(self) -> Path | None:
        """Where the current pair's outputs and verdicts go."""
        if self.pair is None:
            return None
        return model.default_output_dir(self.pair, self.output_root)

    def set_verdict(self, label: str) -> None:
        """Label the selected DIA source (with the comment typed, if any), save, and select
        the next source of the table (unless Verdict > Advance is off)."""
        if self.outcome is None or self.selected is None:
            return
        dia = self.outcome.result.diasources
        row = int(np.flatnonzero(np.asarray(dia["id"]) == self.selected)[0])
        self.verdicts[self.selected] = Verdict(
            label, float(dia["x"][row]), float(dia["y"][row]), self.comment.text().strip()
        )
        self.comment.clear()
        self.catalog.model.set_verdicts(self.verdicts)
        self.save_verdicts()
        self._refresh_cutouts()
        if self.advance_action.isChecked():
            self.catalog.step(1)

    def verdict_path(self) -> Path | None:
        """The verdicts file of the current pair."""
        out = self.output_dir()
        return None if out is None else out / model.VERDICTS_FILE

    def save_verdicts(self) -> None:
        """Write the verdicts next to the outputs (never over another pair's verdicts)."""
        path = self.verdict_path()
        if path is None or self.outcome is None or self.pair is None:
            return
        try:
            model.check_verdicts_owner(path, self.pair)
            model.save_verdicts(path, self.verdicts, self.pair, self.outcome.result.config.digest())
        except (OSError, DiffviewerError) as exc:
            self.report_problem(exc, "Cannot save verdicts")

    def _load_verdicts(self) -> None:
        """Attach the saved verdicts of the current pair (a file of another pair is ignored)."""
        path = self.verdict_path()
        assert self.outcome is not None and self.pair is not None
        if path is not None and path.is_file():
            saved: dict[int, Verdict] = {}
            try:
                found = model.load_verdicts(path)
            except InputError as exc:
                self.report_problem(exc)
            else:
                if found.belongs_to(self.pair):
                    saved = dict(found.verdicts)
                else:
                    self._log(
                        f"verdicts in {path} belong to {found.science} - {found.template}, "
                        "not to this pair: ignored"
                    )
                digest = self.outcome.result.config.digest()
                if saved and found.digest and found.digest != digest:
                    self._log(
                        f"verdicts from {path} were made with config {found.digest}; "
                        "matched by position"
                    )
            self.verdicts = model.match_verdicts(saved, self.outcome.result.diasources)
        else:
            self.verdicts = model.match_verdicts(self.verdicts, self.outcome.result.diasources)
        self.catalog.model.set_verdicts(self.verdicts)

    def save_outputs(self, out_dir: Path, overwrite: bool = False) -> None:
        """Write every output of the run on screen (in the worker), then the verdicts.

        One save at a time: while one runs, Save is disabled and a further request is
        refused with a message, so two saves never write into one folder. The outcome
        always shows: the files written in the log, a failure in the message bar (and a
        failure while the window waits to close keeps it open).
        """
        if self.outcome is None or self.pair is None or self._closing:
            return
        if self.is_saving():
            message = f"a save is under way; save to {out_dir} once it has finished"
            self.show_report(ErrorReport("Save refused", message, "", True))
            return
        result, inputs = self.outcome.result, self.pair.files
        verdicts, pair = dict(self.verdicts), self.pair

        def job(progress: Any, token: Any) -> list[Path]:
            from diffviewer.outputs import write_outputs

            written = write_outputs(result, out_dir, inputs, overwrite=overwrite, cancel=token)
            model.save_verdicts(
                out_dir / model.VERDICTS_FILE, verdicts, pair, result.config.digest()
            )
            return [*written, out_dir / model.VERDICTS_FILE]

        self._log(f"saving to {out_dir}")
        self.jobs.submit("save", job)
        self._update_actions()

    def save_outputs_dialog(self) -> None:
        """Ask for an output folder and save everything there."""
        default = self.output_dir()
        folder = QFileDialog.getExistingDirectory(
            self, "Output folder", str(default.parent if default else "")
        )
        if not folder:
            return
        out = Path(folder)
        self.settings.setValue("output_root", str(out.parent))
        overwrite = False
        if out.exists() and any(out.iterdir()):
            answer = QMessageBox.question(
                self, "Folder not empty", f"{out} is not empty. Write into it anyway?"
            )
            if answer != QMessageBox.StandardButton.Yes:
                return
            overwrite = True
        self.save_outputs(out, overwrite)

    def save_config_dialog(self) -> None:
        """Save the edited config as TOML."""
        path = self.ask_file(
            "Save config", "last_config_folder", "TOML (*.toml)", "config.toml", save=True
        )
        if path is not None:
            self.save_config(path)

    def save_config(self, path: Path) -> None:
        """Write the edited config to ``path`` (errors become a message)."""
        from diffviewer.io import atomic_write_text

        try:
            atomic_write_text(path, to_toml(self.params.config()), protect=self.input_files())
        except (OSError, DiffviewerError) as exc:
            self.report_problem(exc, "Cannot save config")

    def load_config_dialog(self) -> None:
        """Load a config TOML into the parameter panel (press Run to apply it)."""
        path = self.ask_file("Load config", "last_config_folder", "TOML (*.toml)")
        if path is not None:
            self.load_config(path)

    def load_config(self, path: Path) -> None:
        """Show a config file's values in the parameter panel (errors become a message)."""
        try:
            config = load_toml(path)
        except DiffviewerError as exc:
            self.report_problem(exc)
            return
        for section, values in config.to_dict().items():
            for name, value in values.items():
                self.params.set_value(
                    section, name, tuple(value) if isinstance(value, list) else value
                )

    def export_catalog_dialog(self) -> None:
        """Save the catalog with the verdicts as ECSV."""
        out = self.output_dir()
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Export catalog",
            str((out or Path()) / "diasources_verdicts.ecsv"),
            "ECSV (*.ecsv);;FITS (*.fits)",
        )
        if path:
            self.export_catalog(Path(path))

    def export_catalog(self, path: Path) -> None:
        """Write the DIA sources with verdict and comment columns."""
        if self.outcome is None:
            return
        from diffviewer.io import write_table

        try:
            write_table(
                path,
                model.catalog_with_verdicts(self.outcome.result.diasources, self.verdicts),
                protect=self.input_files(),
            )
        except (OSError, DiffviewerError) as exc:
            self.report_problem(exc, "Cannot export the catalog")

    def png_targets(self) -> dict[str, QWidget]:
        """Widgets that can be saved as PNG, by name."""
        targets: dict[str, QWidget] = {"whole window": self, "current tab": self.tabs}
        targets.update({f"view: {model.VIEW_TITLES[n]}": p for n, p in self.area.panels.items()})
        targets.update(
            {
                "kernel diagnostics": self.kernel_panel,
                "residual histograms": self.residual_panel,
                "A/B comparison": self.ab_panel,
            }
        )
        for title, dock in self.docks.items():
            widget = dock.widget()
            if widget is not None:
                targets[f"panel: {title}"] = widget
        return targets

    def save_png_dialog(self) -> None:
        """Ask which view or panel to save, and where."""
        targets = self.png_targets()
        name, ok = QInputDialog.getItem(self, "Save PNG", "Save:", list(targets), 1, False)
        if not ok:
            return
        stem = name.split(":")[-1].strip().lower().replace(" ", "_")
        path = self.ask_file("Save PNG", "last_png_folder", "PNG (*.png)", f"{stem}.png", save=True)
        if path is not None:
            self.save_png(path, targets[name])

    def save_png(self, path: Path, widget: QWidget | None = None) -> None:
        """Grab a widget (the current tab when None) into a PNG file, written atomically
        and never over an input file (errors become a message)."""
        from diffviewer.io import atomic_write_bytes

        target = widget if widget is not None else self.tabs.currentWidget()
        if target is None:
            return
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        if not target.grab().save(buffer, "PNG"):
            self.report_problem(OSError(f"could not encode {path} as PNG"), "Cannot save PNG")
            return
        try:
            atomic_write_bytes(path, data.data(), protect=self.input_files())
        except (OSError, DiffviewerError) as exc:
            self.report_problem(exc, "Cannot save PNG")

    # ----------------------------------------------------------------- window state

    def _restore_layout(self) -> None:
        geometry = self.settings.value("geometry")
        state = self.settings.value("window_state")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1600, 1000)
        self._default_docks = state is None
        if state is not None:
            self.restoreState(state)

    def showEvent(self, event: QShowEvent | None) -> None:
        """On the first show without a saved layout, give the docks useful sizes."""
        super().showEvent(event)
        if self._default_docks:
            self._default_docks = False
            QTimer.singleShot(0, self._size_docks)

    def _size_docks(self) -> None:
        """Default dock sizes (the first time, before any layout was saved)."""
        self.resizeDocks(
            [self.docks["Parameters"], self.docks["Cutouts"]], [320, 340], Qt.Orientation.Horizontal
        )
        self.resizeDocks(
            [self.docks["Parameters"], self.docks["Readout"]], [560, 340], Qt.Orientation.Vertical
        )
        self.resizeDocks([self.docks["Catalog"]], [230], Qt.Orientation.Vertical)

    def closeEvent(self, event: QCloseEvent | None) -> None:
        """Close once no background thread is alive: runs and level jobs are cancelled,
        a save is let finish; until then the window stays, disabled, and closes itself
        when the last thread ends (a running thread is never destroyed)."""
        self.jobs.cancel_all(keep=("save",))
        if self.jobs.active_threads():
            if event is not None:
                event.ignore()
            if not self._closing:
                self._closing = True
                self.setEnabled(False)
                self.jobs.idle.connect(self.close)
                waiting = "the save to finish" if self.is_saving() else "background work to stop"
                self.status.showMessage(f"closing: waiting for {waiting}…")
                self._log(f"closing: waiting for {waiting}")
            return
        self.area.blink_timer.stop()
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("window_state", self.saveState())
        self.settings.setValue("output_root", str(self.output_root))
        self.jobs.shutdown()
        super().closeEvent(event)


def image_extensions(path: Path) -> list[str]:
    """Names (or indices) of the HDUs of a FITS file that hold a 2-D image.

    Parameters
    ----------
    path : Path
        A FITS file.

    Returns
    -------
    list of str

    Raises
    ------
    InputError
        When the file cannot be read as FITS or holds fewer than two images.
    """
    try:
        with fits.open(path) as hdul:
            names = [
                hdu.name if hdu.name and hdu.name != "PRIMARY" else str(i)
                for i, hdu in enumerate(hdul)
                if hdu.is_image and hdu.shape and len(hdu.shape) == 2
            ]
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} cannot be read as FITS ({exc}); give a FITS file") from None
    if len(names) < 2:
        raise InputError(
            f"{path} holds {len(names)} 2-D image(s); a pair in one file needs two "
            "(e.g. SCI and REF); otherwise open two files"
        )
    return names


def default_extensions(names: Sequence[str]) -> tuple[str, str]:
    """The science and template extensions to propose: SCI-like and REF/TMPL-like names first."""
    upper = [n.upper() for n in names]
    sci = next(
        (names[i] for i, n in enumerate(upper) if n in ("SCI", "SCIENCE", "NEW", "IMAGE")), names[0]
    )
    tmpl = next(
        (names[i] for i, n in enumerate(upper) if n in ("REF", "TMPL", "TEMPLATE")),
        next(n for n in names if n != sci),
    )
    return sci, tmpl


def marker_legend() -> str:
    """What the overlay markers mean, as rich text in their colours."""

    def mark(colour: tuple[int, int, int], shape: str, text: str) -> str:
        r, g, b = colour
        return f"<span style='color: rgb({r}, {g}, {b})'><b>{shape}</b></span> {text}"

    rows = [
        "<b>Markers</b>",
        "kernel sources: " + ", ".join(mark(c, "□", s.lower()) for s, c in STATUS_COLOURS.items()),
        "DIA sources: "
        + ", ".join(
            (
                mark(POSITIVE_COLOUR, "○", "positive"),
                mark(NEGATIVE_COLOUR, "○", "negative"),
                mark(DIPOLE_COLOUR, "◇", "dipole"),
                mark(FLAGGED_COLOUR, "○", "flagged (dashed)"),
                mark(SKY_COLOUR, "×", "sky"),
            )
        ),
    ]
    return "<br>".join(rows)


def isolated_window(folder: Path, size: tuple[int, int] | None = None) -> MainWindow:
    """A shown window whose settings and outputs live in ``folder`` (tests, scripts, benchmarks).

    Parameters
    ----------
    folder : Path
        Holds ``settings.ini`` (layout, folders, recent pairs) and ``out/`` (outputs), so
        nothing of the user's own settings is read or changed.
    size : (int, int), optional
        Window width and height (px); Qt's default when None.

    Returns
    -------
    MainWindow
    """
    settings = QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings)
    window.output_root = folder / "out"
    if size is not None:
        window.resize(*size)
    window.show()
    return window
