"""The run controller: starts, cancels and follows runs, and puts their results on screen.

Every job goes through the window's :class:`~diffviewer.gui.worker.JobRunner`; this
module answers its signals for the run and level lanes (saves are answered by
:mod:`diffviewer.gui.saving`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from diffviewer import display
from diffviewer.config import SubtractionConfig
from diffviewer.errors import DiffviewerError
from diffviewer.gui import content, model
from diffviewer.gui.content import n_detections
from diffviewer.gui.model import RunOutcome
from diffviewer.gui.overlays import overlay_views
from diffviewer.gui.worker import ErrorReport
from diffviewer.results import SavedRun

if TYPE_CHECKING:
    from diffviewer.gui.window import MainWindow

#: The worker lane of the A/B panel's levels (one computation for both runs).
AB_LEVELS = "levels:A/B"


class RunController:
    """Runs the current pair and shows what comes back.

    Parameters
    ----------
    window : MainWindow
        The window whose pair is run and whose views show the result.
    """

    def __init__(self, window: MainWindow) -> None:
        self.w = window
        jobs = window.jobs
        jobs.progress.connect(self._on_progress)
        jobs.partial.connect(self._on_partial)
        jobs.finished.connect(self._on_finished)
        jobs.failed.connect(self._on_failed)
        jobs.cancelled.connect(self._on_cancelled)
        #: Views showing a running job's images in place of the outcome on screen.
        self.pending: set[str] = set()
        #: The running job's current step.
        self.step = ""

    def run(self, config: SubtractionConfig | None = None) -> None:
        """Run the current pair with ``config``, else the config of the parameter panel
        (a saved pair run again uses its folder's config as it is, whatever the panel's
        fields can show)."""
        w = self.w
        if w.pair is None or w.closing:
            return
        if config is None:
            try:
                config = w.params.config()
            except DiffviewerError as exc:
                w.report_problem(exc)
                return
        w.hide_error()
        w.log(f"run: {w.pair.label} (config {config.digest()})")
        w.jobs.submit("run", model.run_job(w.pair, config, w.runner))
        w.params.set_running(config)
        w.step_label.setText("starting")
        w.progress.setValue(0)
        w.update_actions()

    def cancel(self) -> None:
        """Cancel the current run; the window is idle at once."""
        if self.w.jobs.is_busy("run"):
            self.w.jobs.cancel("run")

    def _on_progress(self, lane: str, job_id: int, step: str, fraction: float) -> None:
        if lane == "run":
            self._show_step(step)
            self.w.progress.setValue(round(1000 * fraction))

    def _show_step(self, step: str) -> None:
        """Name the run's step in the status bar, and once its difference is on screen, that
        the sources are still to come."""
        self.step = step
        shown = "difference" in self.pending
        self.w.step_label.setText(f"{step}: difference shown, sources to come" if shown else step)

    def _on_partial(self, lane: str, job_id: int, views: Any) -> None:
        """Show a running job's images as soon as they exist: science when read, template
        after the warp, matched after the subtraction, the difference once its pixels are
        final (after decorrelation), score after scoring.

        On a re-run they replace the last run's images, and its markers and mask overlay go
        (they describe the last run's difference) until the outcome brings the new ones;
        a cancelled or failed run puts the last run back (:meth:`restore`).
        """
        if lane != "run":
            return
        w = self.w
        first = all(p.data is None for p in w.area.panels.values())
        if w.outcome is not None and not self.pending:
            w.overlays.clear()
            w.marker_note.setText("")
            overlay_views(w.area, None)
        for name, (image, levels) in views.items():
            self.put(name, image, levels)
            self.pending.add(name)
        if "difference" in views:
            self._show_step(self.step)
        if first:
            w.area.zoom_fit()

    def put(self, name: str, image: np.ndarray | None, levels: tuple[float, float] | None) -> None:
        """Show a prepared image in a view, keeping the level mode the user chose there.

        Parameters
        ----------
        name : str
            The view.
        image : numpy.ndarray or None
            Display-ready image (None clears the view); the view's own array is left as it
            is (with any levels set since), so an image shown while its run went on is not
            drawn twice.
        levels : (float, float) or None
            The image's default levels (the view's manual levels win).
        """
        panel = self.w.area.panels[name]
        if image is not None and image is panel.data:
            return
        panel.set_image(image, panel.levels_for(levels))
        if image is not None and name != "mask" and panel.wants_own_levels():
            self.recompute_levels(name)  # keep the level mode the user chose

    def restore(self) -> None:
        """Put the outcome on screen back in the views a running job had replaced (its run
        was cancelled or failed), with its markers and mask overlay; on a new pair there is
        no outcome and the job's images stay."""
        w = self.w
        replaced, self.pending = self.pending, set()
        if w.outcome is None or not replaced:
            return
        for name in replaced:
            self.put(name, w.outcome.images.get(name), w.outcome.levels.get(name))
        w.refresh_overlays()
        w.update_mask_overlay()
        w.refresh_readout()

    def _on_cancelled(self, lane: str, job_id: int) -> None:
        if lane == "run":
            self.w.params.set_running(None)
            self.w.step_label.setText("cancelled")
            self.w.progress.setValue(0)
            self.w.log("run cancelled")
            self.restore()
        self.w.update_actions()

    def _on_failed(self, lane: str, job_id: int, report: ErrorReport) -> None:
        if lane == "run":
            self.w.params.set_running(None)
            self.w.step_label.setText("failed")
            self.restore()
        if lane != "save":  # a failed save is reported by the saving module
            self.w.show_report(report)
        self.w.update_actions()

    def _on_finished(self, lane: str, job_id: int, value: Any) -> None:
        if lane == "run":
            self.w.params.set_running(None)
            self.show_outcome(value)
        elif lane == AB_LEVELS:
            self.w.tabs.ab_panel.set_levels(value)
        elif lane.startswith("levels:"):
            self.w.area.panels[lane.split(":", 1)[1]].set_levels(value)
        self.w.update_actions()

    def show_outcome(self, outcome: RunOutcome) -> None:
        """Show a finished run (the previous one on the same pair is kept for A/B, and a run
        kept as A stays A)."""
        w = self.w
        if w.outcome is not None and w.outcome.pair == outcome.pair:
            w.previous = w.outcome
        if w.kept is not None and w.kept.pair != outcome.pair:
            w.kept = None
        w.outcome = outcome
        result = outcome.result
        w.raw = model.view_arrays(result)
        w.step_label.setText(f"done in {outcome.elapsed:.1f} s")
        w.progress.setValue(1000)
        first = all(p.data is None for p in w.area.panels.values())
        self.pending = set()
        w.area.panels["matched"].set_title(model.matched_title(result.kernel.convolved))
        w.area.blink_frames = model.blink_frames(result.kernel.convolved)
        for name in w.area.panels:
            self.put(name, outcome.images.get(name), outcome.levels.get(name))
        if first:
            w.area.zoom_fit()
        w.params.set_base(result.config, from_panel=not isinstance(result, SavedRun))
        if w.previous is None:  # a new pair: kernel squares only while no source is found
            w.menus.cand_action.setChecked(n_detections(result.diasources) == 0)
        w.review.show_run(outcome)
        w.refresh_overlays()
        w.update_mask_overlay()
        w.refresh_readout()
        w.tabs.show_run(outcome, model.ab_runs(outcome, w.previous, w.kept))
        # the run's own first: they judge its result; what reading said of the inputs after
        w.warnings.set_notes((*result.warnings, *outcome.read_notes))
        w.registration.show_warp(result.template)
        found = n_detections(result.diasources)
        timings = ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items())
        # A saved run is read, not run: its timings are those of the run that wrote it.
        took = (
            f"{outcome.elapsed:.2f} s; timings (s) {timings}"
            if "engine" in outcome.stages
            else f"read in {outcome.elapsed:.2f} s; the saved run's timings (s) {timings}"
        )
        w.log(
            f"done: {found} DIA sources and {len(result.diasources) - found} sky sources, " + took
        )
        w.area.set_mode(w.area.mode)

    def keep(self, which: str = "B") -> None:
        """Keep a run as the A/B tab's A: every later run on the pair is compared with it
        (B) until :meth:`release` or another pair is opened.

        The window then holds the kept run's arrays beside the previous run's and those of
        the run on screen (:attr:`MainWindow.kept`).

        Parameters
        ----------
        which : {"B", "A"}
            ``"B"``: the run on screen (a run read back from its folder too); ``"A"``: the
            run the A/B tab shows as A (the previous one).
        """
        w = self.w
        if w.outcome is None:
            return
        run = w.outcome if which == "B" else model.ab_runs(w.outcome, w.previous, w.kept).a
        if run is None or run is w.kept:
            return
        w.kept = run
        role = "the run on screen" if run is w.outcome else "the previous run"
        label = content.run_label(run.result, role)
        folder = content.run_folder(run.result)
        self._show_ab(
            f"A/B: kept as A: {label}; later runs are compared with it",
            folder.name if folder is not None else "",
        )

    def release(self) -> None:
        """Release the kept A: the A/B tab compares each run with the previous one again."""
        if self.w.kept is None:
            return
        self.w.kept = None
        self._show_ab("A/B: A released; each run is compared with the previous one")

    def _show_ab(self, message: str, part: str = "") -> None:
        """Show the A/B comparison of the window's runs after A changed, and say so (``part``
        of the message, a saved run's folder name, gives way first in the status bar)."""
        w = self.w
        if w.outcome is not None:
            w.tabs.show_ab(model.ab_runs(w.outcome, w.previous, w.kept))
        w.message.say(message, 10_000, part)
        w.log(message)
        w.update_actions()

    def recompute_levels(self, view: str) -> None:
        """Compute a view's levels in the worker after its level mode changed."""
        panel = self.w.area.panels[view]
        self._compute_levels(f"levels:{view}", panel.data, panel.settings, panel.set_levels)

    def recompute_ab_levels(self) -> None:
        """Compute the A/B panel's levels (A's display settings on A's difference, else B's,
        for both runs) in the worker after A's level mode changed or a new A came."""
        ab = self.w.tabs.ab_panel
        self._compute_levels(AB_LEVELS, ab.level_image(), ab.a.settings, ab.set_levels)

    def _compute_levels(
        self,
        lane: str,
        image: np.ndarray | None,
        settings: display.DisplaySettings,
        apply: Callable[[tuple[float, float]], None],
    ) -> None:
        """Levels of ``image`` for ``settings``: manual ones at once, the others in the
        worker's ``lane`` (:meth:`_on_finished` applies them)."""
        if image is None:
            return
        if settings.levels == "manual" and settings.manual is not None:
            apply(display.compute_levels(image, settings))
            return
        self.w.jobs.submit(lane, model.levels_job(image, settings))
