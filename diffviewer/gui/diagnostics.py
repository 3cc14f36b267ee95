"""The diagnostics tabs beside the images: kernel, residuals and the A/B comparison."""

from __future__ import annotations

from PyQt6.QtWidgets import QTabWidget, QWidget

from diffviewer.gui import content
from diffviewer.gui.diagnostic_panels import ABPanel, KernelPanel, ResidualPanel, RunView
from diffviewer.gui.model import ABRuns, RunOutcome
from diffviewer.gui.views import ImageArea


def ab_views(ab: ABRuns) -> tuple[RunView | None, RunView | None, list[tuple[str, str, str]], bool]:
    """What the A/B panel shows of ``ab``: each run's difference, levels, title and
    metrics, the parameters that differ (name, A value, B value), whether A is kept.

    Parameters
    ----------
    ab : ABRuns
        The runs compared.

    Returns
    -------
    tuple
        The arguments of :meth:`~diffviewer.gui.diagnostic_panels.ABPanel.set_runs`.
    """

    def view(o: RunOutcome, role: str, kept: bool = False) -> RunView:
        return RunView(
            o.images["difference"],
            o.levels["difference"],
            content.run_label(o.result, role, kept=kept),
            content.metrics(o.result),
            content.run_folder(o.result),
        )

    a = view(ab.a, "previous run", ab.kept) if ab.a is not None else None
    b = view(ab.b, "current run") if ab.b is not None else None
    differences = (
        content.run_differences(ab.a.result, ab.b.result)
        if ab.a is not None and ab.b is not None
        else []
    )
    return a, b, differences, ab.kept


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
        self.kernel_panel.psf_cell_chosen.connect(self.match_psfs_at)
        self.residual_panel = ResidualPanel()
        self.ab_panel = ABPanel()
        area.blink_rate.valueChanged.connect(self.ab_panel.blink_timer.setInterval)
        self.addTab(area, "Images")
        self.addTab(self.kernel_panel, "Kernel")
        self.addTab(self.residual_panel, "Residuals")
        self.addTab(self.ab_panel, "A/B")
        self._run: tuple[RunOutcome, ABRuns] | None = None
        self._stale: set[QWidget] = set()  # panels not showing the run on screen yet
        self.currentChanged.connect(self._on_tab)

    def show_run(self, outcome: RunOutcome, ab: ABRuns) -> None:
        """Show ``outcome`` in the kernel and residual panels, and ``ab`` in the A/B
        comparison: the open panel at once, each of the others when its tab is opened (no
        drawing for panels nobody looks at)."""
        self._run = (outcome, ab)
        self._stale = {self.kernel_panel, self.residual_panel, self.ab_panel}
        self._title_ab(ab)
        self.fill(self.currentWidget())

    def show_ab(self, ab: ABRuns) -> None:
        """Show another A/B comparison of the run on screen (a run kept as A, or released)."""
        if self._run is None:
            return
        self._run = (self._run[0], ab)
        self._stale.add(self.ab_panel)
        self._title_ab(ab)
        self.fill(self.currentWidget())

    def _title_ab(self, ab: ABRuns | None) -> None:
        """Name the A/B tab, and say there when A is a kept run."""
        self.setTabText(self.indexOf(self.ab_panel), "A/B (A kept)" if ab and ab.kept else "A/B")

    def fill(self, panel: QWidget | None) -> None:
        """Fill ``panel`` (a diagnostics panel; any other widget is left alone) from the run
        on screen if it does not show it yet."""
        if self._run is None or panel not in self._stale:
            return
        self._stale.discard(panel)
        outcome, ab = self._run
        result = outcome.result
        if panel is self.kernel_panel:
            # at the cell chosen for the last run (a pair's runs share the grid)
            views = content.kernel_views(result, psf_cell=self.kernel_panel.psf_cell)
            self.kernel_panel.set_data(**views)
        elif panel is self.residual_panel:
            self.residual_panel.set_data(
                content.residual_samples(result), content.residual_note(result)
            )
        elif panel is self.ab_panel:
            self.ab_panel.set_runs(*ab_views(ab))

    def clear(self) -> None:
        """Show nothing (a new pair, before its run)."""
        self._run = None
        self._stale = set()
        self._title_ab(None)
        self.kernel_panel.clear()
        self.residual_panel.set_data([])
        self.ab_panel.clear()

    def match_psfs_at(self, cell: int, x: float, y: float) -> None:
        """Show the PSFs matched through the kernel of the run on screen at a mosaic cell
        (its row of the grid) at (x, y) (px)."""
        if self._run is not None:
            psfs, info = content.psf_views(self._run[0].result, x, y)
            self.kernel_panel.show_psfs(psfs, info, cell)

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
