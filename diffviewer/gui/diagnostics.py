"""The diagnostics tabs beside the images: kernel, residuals and the A/B comparison."""

from __future__ import annotations

import numpy as np
from PyQt6.QtWidgets import QTabWidget, QWidget

from diffviewer.gui import content
from diffviewer.gui.diagnostic_panels import ABPanel, KernelPanel, ResidualPanel
from diffviewer.gui.model import RunOutcome
from diffviewer.gui.views import ImageArea

RunView = tuple[np.ndarray, tuple[float, float], str, dict[str, float]]


class DiagnosticsTabs(QTabWidget):
    """The central tabs: the image area, then the kernel, residual and A/B panels.

    Parameters
    ----------
    area : ImageArea
        The first tab; the kernel panel centres it on a click, the A/B views open on
        the area it shows.
    """

    def __init__(self, area: ImageArea, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.area = area
        self.kernel_panel = KernelPanel()
        self.kernel_panel.centre_requested.connect(self.centre_and_show)
        self.residual_panel = ResidualPanel()
        self.ab_panel = ABPanel()
        area.blink_rate.valueChanged.connect(self.ab_panel.blink_timer.setInterval)
        self.addTab(area, "Images")
        self.addTab(self.kernel_panel, "Kernel")
        self.addTab(self.residual_panel, "Residuals")
        self.addTab(self.ab_panel, "A/B")
        self._run: tuple[RunOutcome, RunOutcome | None] | None = None
        self._stale: set[QWidget] = set()  # panels not showing the run on screen yet
        self.currentChanged.connect(self._on_tab)

    def show_run(self, outcome: RunOutcome, previous: RunOutcome | None) -> None:
        """Show ``outcome`` in the kernel and residual panels, and in the A/B comparison with
        ``previous`` (the run before on the same pair) as B: the open panel at once, each of
        the others when its tab is opened (no drawing for panels nobody looks at)."""
        self._run = (outcome, previous)
        self._stale = {self.kernel_panel, self.residual_panel, self.ab_panel}
        self.fill(self.currentWidget())

    def fill(self, panel: QWidget | None) -> None:
        """Fill ``panel`` (a diagnostics panel; any other widget is left alone) from the run
        on screen if it does not show it yet."""
        if self._run is None or panel not in self._stale:
            return
        self._stale.discard(panel)
        outcome, previous = self._run
        result = outcome.result
        if panel is self.kernel_panel:
            self.kernel_panel.set_data(**content.kernel_views(result))
        elif panel is self.residual_panel:
            self.residual_panel.set_data(
                content.residual_samples(result), content.residual_note(result)
            )
        elif panel is self.ab_panel:

            def entry(o: RunOutcome, role: str) -> RunView:
                return (
                    o.images["difference"],
                    outcome.levels["difference"],
                    content.run_label(o.result, role),
                    content.metrics(o.result),
                )

            differences = content.run_differences(result, previous.result) if previous else []
            self.ab_panel.set_runs(
                entry(outcome, "current run"),
                entry(previous, "previous run") if previous else None,
                differences,
            )

    def clear(self) -> None:
        """Show nothing (a new pair, before its run)."""
        self._run = None
        self._stale = set()
        self.kernel_panel.clear()
        self.residual_panel.set_data([])
        self.ab_panel.clear()

    def centre_and_show(self, x: float, y: float) -> None:
        """Show the images, centred on (x, y) (px)."""
        self.setCurrentWidget(self.area)
        self.area.centre_on(x, y)

    def _on_tab(self, index: int) -> None:
        """The A/B views open on the area the image views show (they overlap on screen, so
        pyqtgraph's links would align them by screen position rather than share a range)."""
        self.fill(self.widget(index))
        shown = self.area.panels["science"].data is not None
        if self.widget(index) is self.ab_panel and shown:
            self.ab_panel.a.view.setRange(rect=self.area.master.viewRect(), padding=0)
