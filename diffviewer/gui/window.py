"""The main window: it builds the parts and wires them; each concern lives in its own module.

- :mod:`~diffviewer.gui.runs`: the run controller (start, cancel, progress, results on screen),
  over :mod:`~diffviewer.gui.model` (pairs, the run job) and
  :mod:`~diffviewer.gui.content` (what each panel shows of a run, no Qt)
- :mod:`~diffviewer.gui.views` and :mod:`~diffviewer.gui.overlays`: the image grid and
  its markers, mask overlay and readout
- :mod:`~diffviewer.gui.review`: the catalog, cutouts, kernel stamps and verdicts
- :mod:`~diffviewer.gui.diagnostics` and :mod:`~diffviewer.gui.diagnostic_panels`: the
  kernel, residual and A/B tabs; :mod:`~diffviewer.gui.panels`: stamps, cutouts, profile
- :mod:`~diffviewer.gui.menus`, :mod:`~diffviewer.gui.opening`, :mod:`~diffviewer.gui.saving`:
  menus and shortcuts, opening pairs, saving files
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PyQt6.QtCore import QSettings, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QGuiApplication, QShowEvent
from PyQt6.QtWidgets import (
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from diffviewer.config import SubtractionConfig
from diffviewer.gui import content, model
from diffviewer.gui.diagnostics import DiagnosticsTabs
from diffviewer.gui.menus import Menus
from diffviewer.gui.model import Pair, RunOutcome
from diffviewer.gui.opening import Opener
from diffviewer.gui.overlays import (
    Overlays,
    ReadoutPage,
    follow_view,
    markers_in_view,
    show_mask,
)
from diffviewer.gui.params import ParameterPanel
from diffviewer.gui.qtapp import one_blas_thread
from diffviewer.gui.registration import RegistrationLine
from diffviewer.gui.review import Review
from diffviewer.gui.runs import RunController
from diffviewer.gui.saving import Saver
from diffviewer.gui.status_message import StatusMessage
from diffviewer.gui.views import ImageArea
from diffviewer.gui.warnings_banner import WarningsBanner
from diffviewer.gui.wheel import guard_wheel
from diffviewer.gui.worker import ErrorReport, JobRunner


def _pair_key(pair: Pair) -> str:
    """The settings key under which a pair's output folder is remembered."""
    return f"pair_outputs/{model.pair_digest(pair)[:16]}"


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

    Signals
    -------
    pair_verdict_saved(str, str, str)
        A verdict on the whole pair was saved: its output folder, the verdict, the
        comment (a batch review window shows it on the pair's row).
    """

    pair_verdict_saved = pyqtSignal(str, str, str)

    def __init__(
        self,
        config: SubtractionConfig | None = None,
        *,
        runner: Any = None,
        settings: QSettings | None = None,
    ) -> None:
        super().__init__()
        one_blas_thread()  # the engine's numbers as diffviewer run's, however the app was made
        self.setWindowTitle("diffviewer")
        self.setAcceptDrops(True)
        self.settings = settings if settings is not None else QSettings("diffviewer", "diffviewer")
        self.runner = runner
        self.jobs = JobRunner(self)
        self.pair: Pair | None = None
        #: The output folder of a saved run on screen (its verdicts go there).
        self.saved_folder: Path | None = None
        #: Batch review windows opened from File > Open batch (kept alive here).
        self.review_windows: list[QMainWindow] = []
        self.outcome: RunOutcome | None = None
        #: The run before the one on screen on the same pair (the A/B tab's A unless a run
        #: is kept).
        self.previous: RunOutcome | None = None
        #: The run kept as the A/B tab's A (:meth:`RunController.keep`) until it is released
        #: or another pair is opened. Each run holds image-sized arrays (its engine result
        #: and a display image of every view), so the window holds at most three runs: the
        #: kept one, the previous one and the one on screen (two when the kept run is one
        #: of those).
        self.kept: RunOutcome | None = None
        self.pairs: list[Pair] = []
        self.pair_index = -1
        self.last_error: ErrorReport | None = None
        self.output_root = Path(
            str(self.settings.value("output_root", str(Path.home() / "diffviewer_out")))
        )
        #: The engine arrays behind the views of the run on screen.
        self.raw: dict[str, np.ndarray] = {}
        self._hover: tuple[float, float] | None = None  # the cursor's last image position
        self.closing = False

        self.area = ImageArea([(n, model.VIEW_TITLES[n]) for n in model.VIEW_TITLES])
        self.area.set_visible_views(model.MAIN_VIEWS)
        self.area.hovered.connect(self._on_hover)
        self.tabs = DiagnosticsTabs(self.area)
        self.review = Review(self)
        self.overlays = Overlays(self.area, self.review)
        self.overlays.candidate_clicked.connect(self.review.show_candidate)
        self.overlays.dia_clicked.connect(self.review.catalog.select_source)
        self.review.catalog.filter_changed.connect(self.refresh_overlays)
        # markers follow the view: redraw once the zoom or pan has settled
        follow_view(self.area.master, self.refresh_overlays, self)
        self.readout = ReadoutPage()
        self.readout.mask_changed.connect(self.update_mask_overlay)
        self.runs = RunController(self)
        self.saver = Saver(self)
        self.opener = Opener(self)
        self.tabs.ab_panel.levels_wanted.connect(self.runs.recompute_ab_levels)
        self.tabs.ab_panel.keep_requested.connect(self.runs.keep)
        self.tabs.ab_panel.release_requested.connect(self.runs.release)
        for panel in self.area.panels.values():
            panel.settings_changed.connect(self.runs.recompute_levels)
            panel.cmap_box.currentTextChanged.connect(self.review.refresh_cutouts)

        self.warnings = WarningsBanner()
        self.registration = RegistrationLine()
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
        centre = QWidget()
        centre_layout = QVBoxLayout(centre)
        centre_layout.setContentsMargins(0, 0, 0, 0)
        centre_layout.addWidget(self.error_box)
        centre_layout.addWidget(self.warnings)
        centre_layout.addWidget(self.registration)
        centre_layout.addWidget(self.tabs, 1)
        self.setCentralWidget(centre)

        self.params = ParameterPanel()
        self.params.set_config(config or SubtractionConfig())
        self.params.edited.connect(self.update_actions)
        self.log_view = QTextEdit()
        self.log_view.setReadOnly(True)
        self.docks: dict[str, QDockWidget] = {}
        left, bottom, right = (
            Qt.DockWidgetArea.LeftDockWidgetArea,
            Qt.DockWidgetArea.BottomDockWidgetArea,
            Qt.DockWidgetArea.RightDockWidgetArea,
        )
        self._dock("Parameters", self.params, left)
        self._dock("Readout", self.readout, left)
        self._dock("Catalog", self.review.catalog, bottom)
        self._dock("Log", self.log_view, bottom)
        self._dock("Cutouts", self.review.cutout_page, right)
        self._dock("Kernel stamp", self.review.stamp, right)
        self.tabifyDockWidget(self.docks["Catalog"], self.docks["Log"])
        self.tabifyDockWidget(self.docks["Cutouts"], self.docks["Kernel stamp"])
        self.docks["Catalog"].raise_()
        self.docks["Cutouts"].raise_()

        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        # its width whatever the status bar's message (which takes the room left)
        self.progress.setFixedWidth(260)
        self.step_label = QLabel("idle")
        self.marker_note = QLabel()
        # apart from the run's step that follows it ("... zoom in for more" ran into "done")
        self.marker_note.setContentsMargins(0, 0, 12, 0)
        #: The status bar's message (:meth:`StatusMessage.say`).
        self.message = StatusMessage()
        status = self.statusBar()
        assert status is not None
        status.addWidget(self.message, 1)
        status.addPermanentWidget(self.marker_note)
        status.addPermanentWidget(self.step_label)
        status.addPermanentWidget(self.progress)
        self.menus = Menus(self)
        self.opener.refresh_recent()
        guard_wheel(self)
        self._restore_layout()
        self.update_actions()

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> None:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{title}")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        self.docks[title] = dock

    # ----------------------------------------------------------------- the pair on screen

    def open_pair(self, pair: Pair, *, run: bool = True) -> None:
        """Make ``pair`` the current pair (clearing everything of the last one) and run it."""
        self.jobs.cancel("run", notify=False)
        self.pair = pair
        self.saved_folder = None
        self.outcome = None
        self.previous = None
        self.kept = None  # a kept A belongs to its pair
        self.raw = {}
        self.runs.pending = set()
        for panel in self.area.panels.values():
            panel.set_image(None)
        show_mask(self.area, self.readout, None)
        self.overlays.clear()
        self.review.clear()
        self.tabs.clear()
        self.readout.readout.setText("Move the cursor over an image.")
        self._hover = None
        self.params.set_running(None)  # the run cancelled above (unannounced)
        self.params.set_nothing_shown()
        self.warnings.set_notes([])
        self.registration.show_warp(None)
        self.setWindowTitle(f"diffviewer — {pair.label}")
        for role, companions in (("science", pair.companions[0]), *pair.piece_companions):
            if companions.describe():
                self.log(f"open: the {role}'s planes read with {companions.describe()}")
        self.opener.remember_recent(pair)
        self.update_actions()
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

    def run(self) -> None:
        """Run the current pair with the config of the parameter panel."""
        self.runs.run()

    def cancel(self) -> None:
        """Cancel the current run; the window is idle at once."""
        self.runs.cancel()

    def is_running(self) -> bool:
        """Whether a run is under way."""
        return self.jobs.is_busy("run")

    def is_saving(self) -> bool:
        """Whether a save of all outputs is under way."""
        return self.saver.is_saving()

    def show_outcome(self, outcome: RunOutcome) -> None:
        """Show a finished run (computed here, or read back from saved outputs)."""
        self.runs.show_outcome(outcome)

    def select_source(self, source_id: int) -> None:
        """Select a DIA source: centre the views on it, mark it, show its cutouts."""
        self.review.select_source(source_id)

    def set_verdict(self, label: str) -> None:
        """Label the selected DIA source (see :meth:`Review.set_verdict`)."""
        self.review.set_verdict(label)

    def input_files(self) -> list[Path]:
        """The current pair's input files, which no write of the window may replace."""
        return self.pair.files if self.pair is not None else []

    def output_dir(self) -> Path | None:
        """Where the current pair's outputs and verdicts go: a saved run's own folder, else
        the folder they last went to (remembered per pair in the settings, so every window
        finds them), else the pair's default folder under :attr:`output_root`."""
        if self.pair is None:
            return None
        if self.saved_folder is not None:
            return self.saved_folder
        remembered = self.settings.value(_pair_key(self.pair))
        if remembered:
            return Path(str(remembered))
        return model.default_output_dir(self.pair, self.output_root)

    def remember_output_dir(self, pair: Pair, folder: Path) -> None:
        """Remember ``folder`` as where ``pair``'s outputs and verdicts are."""
        self.settings.setValue(_pair_key(pair), str(folder))

    # ----------------------------------------------------------------- drawing

    def refresh_overlays(self, *args: object) -> None:
        """Redraw the markers of the run on screen as the View menu and the catalog's filter
        say: DIA sources passing the filter, the highest |S/N| within the view first, and the
        selected one (:func:`~diffviewer.gui.overlays.markers_in_view`);
        none while a re-run's images replace the run's (its markers describe another difference)."""
        if self.outcome is None or self.runs.pending:
            return
        result = self.outcome.result
        self.overlays.show_candidates(
            result.kernel.candidates if self.menus.cand_action.isChecked() else None
        )
        dia = result.diasources
        if not self.menus.dia_action.isChecked() or not len(dia):
            self.overlays.show_dia(None, np.zeros(0, int))
            self.marker_note.setText("")
            return
        rows, note = markers_in_view(
            dia,
            self.review.catalog.shown_rows(),
            self.area.master,
            result.difference.image.shape,
            self.review.selected,
        )
        self.overlays.show_dia(dia, rows)
        self.marker_note.setText(note)

    def update_mask_overlay(self, *args: object) -> None:
        """Draw the chosen mask planes over the views (the run on screen's; none while a
        re-run's images replace its own)."""
        if self.outcome is not None and not self.runs.pending:
            show_mask(self.area, self.readout, self.raw["mask"])

    def _on_hover(self, x: float, y: float) -> None:
        self._hover = (x, y)
        self.refresh_readout()

    def refresh_readout(self) -> None:
        """The cursor readout at the last position the cursor was over an image (a run that
        ends under a still cursor replaces "Pixel values come with the run's outcome")."""
        if self._hover is None:
            return
        x, y = self._hover
        if self.runs.pending:  # the views show a run whose arrays come with its outcome
            self.readout.readout.setText("Pixel values come with the run's outcome.")
        elif self.outcome is not None:
            self.readout.readout.setText(content.pixel_readout(self.outcome.result, self.raw, x, y))

    # ----------------------------------------------------------------- messages

    def show_report(self, report: ErrorReport) -> None:
        """Show an error in the window's message bar (details on demand)."""
        self.last_error = report
        self.error_label.setText(f"<b>{report.title}:</b> {report.message}")
        self.error_details.setVisible(bool(report.details))
        self.error_box.show()
        self.log(f"error: {report.title}: {report.message}")

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

    def hide_error(self) -> None:
        """Hide the message bar."""
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

    def log(self, text: str) -> None:
        """Append a line to the Log dock."""
        self.log_view.append(text)

    def update_actions(self) -> None:
        """Enable the actions that apply now."""
        busy = self.is_running()
        menus = self.menus
        menus.run_action.setEnabled(self.pair is not None)
        menus.run_action.setText("Re-run" if self.outcome is not None else "Run")
        menus.cancel_action.setEnabled(busy)
        menus.save_action.setEnabled(self.outcome is not None and not self.is_saving())
        menus.keep_action.setEnabled(self.outcome is not None and self.outcome is not self.kept)
        menus.release_action.setEnabled(self.kept is not None)
        menus.next_action.setEnabled(self.pair_index + 1 < len(self.pairs))
        menus.prev_action.setEnabled(self.pair_index > 0)
        if not busy and self.step_label.text() == "starting":
            self.step_label.setText("idle")

    def dragEnterEvent(self, event: QDragEnterEvent | None) -> None:
        mime = event.mimeData() if event is not None else None
        if event is not None and mime is not None and mime.hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent | None) -> None:
        mime = event.mimeData() if event is not None else None
        if event is None or mime is None:
            return
        self.opener.open_dropped([u.toLocalFile() for u in mime.urls() if u.isLocalFile()])
        event.acceptProposedAction()

    # ----------------------------------------------------------------- window state

    def _restore_layout(self) -> None:
        geometry = self.settings.value("geometry")
        state = self.settings.value("window_state")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1600, 1000)
        self._fit_to_screen()
        self._default_docks = state is None
        if state is not None:
            self.restoreState(state)

    def _fit_to_screen(self) -> None:
        """Keep the window inside its screen's available area (a geometry saved on a
        larger screen, or the 1600 x 1000 default on a 1280 x 720 one, would be cut)."""
        screen = self.screen() or QGuiApplication.primaryScreen()
        if screen is None:
            return
        area = screen.availableGeometry()
        if self.width() > area.width() or self.height() > area.height():
            self.resize(min(self.width(), area.width()), min(self.height(), area.height()))
        if not area.contains(self.frameGeometry()):
            self.move(area.topLeft())

    def showEvent(self, event: QShowEvent | None) -> None:
        """On the first show without a saved layout, give the docks useful sizes."""
        super().showEvent(event)
        if self._default_docks:
            self._default_docks = False
            QTimer.singleShot(0, self._size_docks)

    def _size_docks(self) -> None:
        """Default dock sizes for the window's size (the first time, before any layout was
        saved): side docks about a sixth of the width each, the catalog a fifth of the
        height; below 900 px of height the readout becomes a tab beside the parameters, so
        the parameter list keeps its room (1280 x 720)."""
        width, height = self.width(), self.height()
        docks = self.docks
        small = height < 900
        if small:
            self.tabifyDockWidget(docks["Parameters"], docks["Readout"])
            docks["Parameters"].raise_()
        side = max(240, min(340, width // 6))
        self.resizeDocks(
            [docks["Parameters"], docks["Cutouts"]], [side, side + 20], Qt.Orientation.Horizontal
        )
        if not small:
            self.resizeDocks(
                [docks["Parameters"], docks["Readout"]],
                [int(0.55 * height), int(0.3 * height)],
                Qt.Orientation.Vertical,
            )
        self.resizeDocks([docks["Catalog"]], [max(150, height // 5)], Qt.Orientation.Vertical)

    def closeEvent(self, event: QCloseEvent | None) -> None:
        """Close once no background thread is alive: runs and level jobs are cancelled,
        a save is let finish; until then the window stays, disabled, and closes itself
        when the last thread ends (a running thread is never destroyed)."""
        self.jobs.cancel_all(keep=("save",))
        if self.jobs.active_threads():
            if event is not None:
                event.ignore()
            if not self.closing:
                self.closing = True
                self.setEnabled(False)
                self.jobs.idle.connect(self.close)
                waiting = "the save to finish" if self.is_saving() else "background work to stop"
                self.message.say(f"closing: waiting for {waiting}…")
                self.log(f"closing: waiting for {waiting}")
            return
        self.area.blink_timer.stop()
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("window_state", self.saveState())
        self.settings.setValue("output_root", str(self.output_root))
        self.jobs.shutdown()
        super().closeEvent(event)


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
