"""Diagnostic panels: kernel mosaic and maps, residual histograms, stamps, cutouts, A/B.

Each panel draws plain arrays handed to it by the window (see
:mod:`diffviewer.gui.model` for where they come from in a result); none computes science.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QRectF, Qt, QTimer, pyqtSignal
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from diffviewer import display
from diffviewer.gui.model import EMPTY_RESIDUALS, ResidualStats, SourceProfile, residual_stats
from diffviewer.gui.views import ImagePanel, link_to

# Height (px) of a title row above small images: two lines of 8-9 pt text.
_TITLE_HEIGHT = 34
# Preferred width (px) of every column of small images, above any real width, so the
# columns share the space equally whatever their titles' lengths.
_EQUAL_WIDTH = 10_000


class _Title(pg.LabelItem):
    """A title above a small image that never widens its column (text may overhang)."""

    def updateMin(self) -> None:
        super().updateMin()
        self.setMinimumWidth(0)


def _image_box(
    canvas: pg.GraphicsLayoutWidget, title: str, row: int, col: int
) -> tuple[pg.ViewBox, pg.ImageItem, _Title]:
    """A titled, aspect-locked view box with an image item, placed in a layout widget."""
    label = _Title(title, size="9pt")
    canvas.addItem(label, row=2 * row, col=col)
    # Titles take their text's height, the images the rest; equal columns whatever the text.
    canvas.ci.layout.setRowMaximumHeight(2 * row, _TITLE_HEIGHT)
    canvas.ci.layout.setColumnPreferredWidth(col, _EQUAL_WIDTH)
    vb = canvas.addViewBox(row=2 * row + 1, col=col, lockAspect=True, enableMenu=False)
    vb.setMouseEnabled(False, False)
    vb.setDefaultPadding(0.02)
    item = pg.ImageItem(axisOrder="row-major")
    vb.addItem(item)
    return vb, item, label


def _show(
    item: pg.ImageItem,
    array: np.ndarray | None,
    settings: display.DisplaySettings,
    levels: tuple[float, float] | None = None,
) -> None:
    """Show an array in an image item with display settings (levels computed when not given)."""
    if array is None:
        item.clear()
        return
    data = display.display_array(array)
    lv = levels if levels is not None else display.compute_levels(data, settings)
    item.setImage(data, levels=lv, autoLevels=False)
    item.setRect(QRectF(-0.5, -0.5, data.shape[1], data.shape[0]))
    item.setLookupTable(
        display.make_lut(settings.stretch, settings.cmap, symmetric=settings.symmetric)
    )


_SIGNED = display.default_settings("difference").replace(levels="minmax")
_POSITIVE = display.DisplaySettings(levels="minmax", cmap="viridis")


class KernelPanel(QWidget):
    """The spatial kernel on a grid (mosaic), kernel-sum and centroid-shift maps, the basis.

    Signals
    -------
    centre_requested(float, float)
        A mosaic cell was clicked: centre the images on its position (px).
    """

    centre_requested = pyqtSignal(float, float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.canvas = pg.GraphicsLayoutWidget()
        self.mosaic_box, self.mosaic, _ = _image_box(
            self.canvas, "Kernel mosaic (wheel: zoom; click: centre)", 0, 0
        )
        self.sum_box, self.sum_map, self.sum_title = _image_box(
            self.canvas, "Kernel sum over the image", 0, 2
        )
        self.shift_box, self.shift_map, self.shift_title = _image_box(
            self.canvas, "Kernel centroid shift over the image", 0, 4
        )
        self.bars: dict[str, pg.ColorBarItem] = {}
        for col, key, label, settings in (
            (1, "mosaic", "kernel weight (per pixel)", _SIGNED),
            (3, "sum", "kernel sum (flux ratio)", _POSITIVE),
            (5, "shift", "centroid shift (px)", _POSITIVE),
        ):
            lut = display.make_lut("linear", settings.cmap, symmetric=settings.symmetric)
            stops = np.linspace(0, 255, 16).round().astype(int)
            bar = pg.ColorBarItem(
                values=(0.0, 1.0),
                colorMap=pg.ColorMap(np.linspace(0.0, 1.0, 16), lut[stops]),
                label=label,
                interactive=False,
                colorMapMenu=False,
                width=12,
            )
            self.canvas.addItem(bar, row=1, col=col)
            self.canvas.ci.layout.setColumnPreferredWidth(col, 70)
            self.canvas.ci.layout.setColumnMaximumWidth(col, 80)
            self.bars[key] = bar
        for box in (self.mosaic_box, self.sum_box, self.shift_box):
            box.setMouseEnabled(True, True)  # zoom and pan
        self.centroids = pg.ScatterPlotItem(
            pxMode=True, size=5, symbol="+", pen=pg.mkPen((0, 0, 0), width=1), brush=None
        )
        self.mosaic_box.addItem(self.centroids)
        self.basis_canvas = pg.GraphicsLayoutWidget()
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.cell_info = QLabel("Move the cursor over the mosaic for a cell's sum and shift.")
        self._grid: np.ndarray = np.zeros((0, 5))
        self._cell = 1
        self._n = 0
        self.mosaic.mouseClickEvent = self._on_mosaic_click
        self.canvas.scene().sigMouseMoved.connect(self._on_mosaic_hover)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.canvas, 3)
        layout.addWidget(self.cell_info)
        layout.addWidget(QLabel("<b>Basis images</b>"))
        layout.addWidget(self.basis_canvas, 1)
        layout.addWidget(self.info)

    def set_data(
        self,
        mosaic: np.ndarray,
        grid: np.ndarray,
        n_grid: int,
        cell: int,
        sum_map: np.ndarray,
        shift_map: np.ndarray,
        basis: np.ndarray,
        info: str,
    ) -> None:
        """Show a kernel solution.

        Parameters
        ----------
        mosaic : numpy.ndarray
            ``n_grid * cell`` square image of kernels (row j, column i = grid point (i, j)).
        grid : numpy.ndarray
            Rows of (x, y, kernel sum, centroid dx, centroid dy) per cell, row-major in j, i.
        n_grid, cell : int
            Cells per axis and cell side (px).
        sum_map, shift_map : numpy.ndarray
            Kernel sum and centroid shift (px) over the image (any resolution).
        basis : numpy.ndarray
            Basis images, shape (n, k, k).
        info : str
            A line of text about the solution.
        """
        self._grid, self._cell, self._n = grid, cell, n_grid
        # asinh: the wings of each kernel show beside its core
        _show(self.mosaic, mosaic, _SIGNED.replace(stretch="asinh"))
        _show(self.sum_map, sum_map, _POSITIVE)
        _show(self.shift_map, shift_map, _POSITIVE)
        lo, hi = float(np.nanmin(sum_map)), float(np.nanmax(sum_map))
        self.sum_title.setText(
            f"Kernel sum over the image: {lo:.4f} (dark) to {hi:.4f} (bright)"
            if f"{lo:.4f}" != f"{hi:.4f}"
            else f"Kernel sum over the image: constant, {lo:.4f}"
        )
        self.shift_title.setText(
            f"Kernel centroid shift: {np.nanmin(shift_map):.3f} to {np.nanmax(shift_map):.3f} px"
        )
        for box in (self.sum_box, self.shift_box):
            box.autoRange(padding=0.02)
        centre = (cell - 1) / 2
        ii, jj = np.meshgrid(np.arange(n_grid), np.arange(n_grid))
        self.centroids.setData(
            ii.ravel() * cell + centre + grid[:, 3], jj.ravel() * cell + centre + grid[:, 4]
        )
        for key, array in (("mosaic", mosaic), ("sum", sum_map), ("shift", shift_map)):
            lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
            if key == "mosaic":  # symmetric, as the mosaic is drawn
                lo, hi = -max(abs(lo), abs(hi)), max(abs(lo), abs(hi))
            self.bars[key].setLevels((lo, hi if hi > lo else lo + 1e-9))
        self.mosaic_box.autoRange(padding=0.02)
        self.basis_canvas.clear()
        per_row = 12
        for k, image in enumerate(basis):
            vb = self.basis_canvas.addViewBox(
                row=k // per_row, col=k % per_row, lockAspect=True, enableMenu=False
            )
            vb.setMouseEnabled(False, False)
            item = pg.ImageItem(axisOrder="row-major")
            vb.addItem(item)
            _show(item, image, _SIGNED)
        self.info.setText(info)

    def clear(self) -> None:
        """Show no kernel."""
        self._grid, self._n = np.zeros((0, 5)), 0
        for item in (self.mosaic, self.sum_map, self.shift_map):
            item.clear()
        self.centroids.clear()
        self.basis_canvas.clear()
        self.info.setText("")

    def _cell_at(self, x: float, y: float) -> int | None:
        """Row of the grid table under mosaic position (x, y) (px), or None."""
        i, j = int((x + 0.5) // self._cell), int((y + 0.5) // self._cell)
        return j * self._n + i if 0 <= i < self._n and 0 <= j < self._n else None

    def _on_mosaic_hover(self, pos: object) -> None:
        if not self._n or not self.mosaic_box.sceneBoundingRect().contains(pos):
            return
        point = self.mosaic_box.mapSceneToView(pos)
        k = self._cell_at(point.x(), point.y())
        if k is not None:
            x, y, total, dx, dy = self._grid[k]
            self.cell_info.setText(
                f"kernel at ({x:.0f}, {y:.0f}) px: sum {total:.4f}, "
                f"centroid shift ({dx:+.3f}, {dy:+.3f}) px"
            )

    def _on_mosaic_click(self, event: object) -> None:
        pos = event.pos()  # type: ignore[attr-defined]
        k = self._cell_at(pos.x(), pos.y())
        if k is not None:
            x, y = self._grid[k, :2]
            self.centre_requested.emit(float(x), float(y))
            event.accept()  # type: ignore[attr-defined]


class ResidualPanel(QWidget):
    """The four pixel-residual histograms against N(0, 1), with mean and sigma."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.canvas = pg.GraphicsLayoutWidget()
        self.norm_box = QComboBox()
        self.norm_box.setToolTip(
            "Normalise residuals by the difference variance or by the input variances"
        )
        self.norm_box.currentTextChanged.connect(self._redraw)
        self.log_box = QCheckBox("log density")
        self.log_box.setToolTip("Logarithmic density axis: the tails against N(0, 1)")
        self.log_box.toggled.connect(self._redraw)
        self._panels: Sequence[tuple[str, Mapping[str, np.ndarray]]] = []
        self.plots: list[pg.PlotItem] = []
        self.stats: dict[str, ResidualStats] = {}
        bar = QHBoxLayout()
        bar.addWidget(QLabel("normalised by"))
        bar.addWidget(self.norm_box)
        bar.addWidget(self.log_box)
        bar.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.canvas, 1)

    def set_data(self, panels: Sequence[tuple[str, Mapping[str, np.ndarray]]]) -> None:
        """Show residual samples.

        Parameters
        ----------
        panels : sequence of (str, mapping of str to numpy.ndarray)
            Panel title and, per normalisation name, the normalised residual values.
        """
        self._panels = panels
        norms = list(panels[0][1]) if panels else []
        current = self.norm_box.currentText()
        self.norm_box.blockSignals(True)
        self.norm_box.clear()
        self.norm_box.addItems(norms)
        if current in norms:
            self.norm_box.setCurrentText(current)
        self.norm_box.blockSignals(False)
        self._redraw()

    def _redraw(self, *args: object) -> None:
        self.canvas.clear()
        self.plots = []
        self.stats = {}
        norm = self.norm_box.currentText()
        edges = np.linspace(-5.0, 5.0, 81)
        centres = 0.5 * (edges[1:] + edges[:-1])
        gauss = np.exp(-0.5 * centres**2) / np.sqrt(2 * np.pi)
        for k, (title, values_by_norm) in enumerate(self._panels):
            values = np.asarray(values_by_norm.get(norm, np.zeros(0)), dtype=float)
            values = values[np.isfinite(values)]
            stats = residual_stats(values)
            plot = self.canvas.addPlot(row=k // 2, col=k % 2)
            plot.setLabel("bottom", "normalised residual")
            plot.setLabel("left", "density")
            plot.getAxis("left").enableAutoSIPrefix(False)  # plain densities, no "(x0.001)"
            log = self.log_box.isChecked()
            plot.setLogMode(y=log)
            if values.size:
                hist, _ = np.histogram(values, bins=edges, density=False)
                density = hist / (values.size * np.diff(edges))
                plot.plot(
                    edges,
                    density,
                    stepMode="center",
                    fillLevel=None if log else 0,  # a fill down to 0 has no place on a log axis
                    brush=None if log else (100, 100, 220, 120),
                    pen=pg.mkPen((120, 120, 255)),
                )
                if log:  # from half a count per bin (the emptiest bin shown) to the peak
                    floor = 0.5 / (values.size * (edges[1] - edges[0]))
                    top = 2 * max(float(density.max()), float(gauss.max()))
                    plot.setYRange(np.log10(floor), np.log10(top), padding=0)
            plot.plot(centres, gauss, pen=pg.mkPen("r", width=2))
            if stats.count:
                text = (
                    f"mean {stats.mean:+.3f}, σ robust {stats.robust_sigma:.3f} "
                    f"(std {stats.std:.3f}), n = {stats.count}"
                )
            else:
                text = f"empty: {EMPTY_RESIDUALS.get(title, 'no finite residual')}"
            plot.setTitle(f"{title}<br>{text}", size="9pt")
            self.stats[title] = stats
            self.plots.append(plot)


class _StampGrid(QWidget):
    """Small titled images in a grid of two columns, above a line of text."""

    def __init__(self, titles: Sequence[str], prompt: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.canvas = pg.GraphicsLayoutWidget()
        self.items: dict[str, pg.ImageItem] = {}
        self.boxes: dict[str, pg.ViewBox] = {}
        self.labels: dict[str, _Title] = {}
        for k, title in enumerate(titles):
            self.boxes[title], self.items[title], self.labels[title] = _image_box(
                self.canvas, title, k // 2, k % 2
            )
        self.info = QLabel(prompt)
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.vbox = QVBoxLayout(self)
        self.vbox.setContentsMargins(2, 2, 2, 2)
        self.vbox.addWidget(self.canvas, 1)
        self.vbox.addWidget(self.info)


class StampPanel(_StampGrid):
    """One kernel candidate: its images, its own kernel beside the spatial model, its QA."""

    TITLES = (
        "science",
        "template",
        "diff (own kernel)",
        "diff (spatial)",
        "normalised residual",
        "own kernel",
        "spatial kernel",
    )

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(self.TITLES, "Click a kernel source (square) on an image.", parent)

    def set_data(self, images: Mapping[str, np.ndarray | None], info: str) -> None:
        """Show a stamp's images (keys of :attr:`TITLES`) and its text.

        Science and template share levels from the sky to the star's peak, and so do
        the two differences (symmetric), so each pair compares at one stretch.
        """

        def shared(titles: Sequence[str], symmetric: bool) -> tuple[float, float] | None:
            arrays = [a for t in titles if (a := images.get(t)) is not None]
            return display.cutout_levels(arrays, symmetric=symmetric) if arrays else None

        inputs = shared(("science", "template"), False)
        diffs = shared(("diff (own kernel)", "diff (spatial)"), True)
        for title, item in self.items.items():
            array = images.get(title)
            if title in ("science", "template"):
                _show(item, array, display.DisplaySettings(stretch="asinh"), inputs)
            elif "kernel" in title:
                _show(item, array, _SIGNED)
            elif title == "normalised residual":
                _show(item, array, _SIGNED.replace(levels="manual", manual=(-5.0, 5.0)))
            else:
                _show(item, array, display.default_settings("difference"), diffs)
        self.info.setText(info)


# Ticks marking a cutout's centre: from this distance (px) from the source outwards, so
# they frame its core without hiding it.
_TICK_GAP, _TICK_LENGTH = 2.5, 3.0


def _centre_ticks(x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
    """Four tick segments (pairs of points) around (x, y), left, right, below and above."""
    near, far = _TICK_GAP, _TICK_GAP + _TICK_LENGTH
    xs = [x - far, x - near, x + near, x + far, x, x, x, x]
    ys = [y, y, y, y, y - far, y - near, y + near, y + far]
    return np.array(xs), np.array(ys)


class CutoutPanel(_StampGrid):
    """The selected DIA source in science, template, difference and score.

    Science and template share levels from just below the sky to the source's peak,
    difference and score are symmetric around zero up to their extreme at the source
    (:func:`diffviewer.display.cutout_levels`), all with one stretch (asinh by default,
    so a bright star's core and wings both show) and each view's colour map; ticks mark
    the source position and each title gives its black and white points.
    """

    NAMES = ("science", "template", "difference", "score")
    #: Cutouts that share levels, and whether those are symmetric around zero.
    GROUPS: tuple[tuple[tuple[str, ...], bool], ...] = (
        (("science", "template"), False),
        (("difference",), True),
        (("score",), True),
    )

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(self.NAMES, "Select a DIA source.", parent)
        self.stretch_box = QComboBox()
        self.stretch_box.addItems(list(display.STRETCHES))
        self.stretch_box.setCurrentText("asinh")
        self.stretch_box.setToolTip("Stretch of the four cutouts")
        self.stretch_box.currentTextChanged.connect(self._redraw)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("stretch"))
        bar.addWidget(self.stretch_box)
        bar.addStretch(1)
        self.vbox.insertLayout(0, bar)
        self.ticks: dict[str, pg.PlotDataItem] = {}
        for name, box in self.boxes.items():
            ticks = pg.PlotDataItem(connect="pairs", pen=pg.mkPen((0, 255, 0), width=2))
            ticks.setZValue(10)
            box.addItem(ticks)
            self.ticks[name] = ticks
        self.profile = pg.PlotWidget()
        # the cutouts come first: the profile gets a strip below them
        self.profile.setMinimumHeight(110)
        self.profile.setMaximumHeight(170)
        self.canvas.setMinimumHeight(200)
        self.profile.setLabel("bottom", "distance from the source (px)")
        self.profile.setLabel("left", "difference")
        self.profile.addLegend(offset=(-5, 5))
        self.profile_points = self.profile.plot(
            [], [], pen=None, symbol="o", symbolSize=4, name="difference pixels"
        )
        self.profile_model = self.profile.plot(
            [], [], pen=None, symbol="x", symbolSize=5, symbolPen="r", name="PSF x flux"
        )
        self.profile.setToolTip(
            "The difference's pixels around the selected source against their distance from "
            "it, with the difference's PSF scaled to the source's PSF flux: a real point "
            "source follows the model; a residual of a bad subtraction does not"
        )
        self.vbox.insertWidget(2, self.profile)
        self.levels: dict[str, tuple[float, float]] = {}
        self._cutouts: Mapping[str, np.ndarray] = {}
        self._cmaps: Mapping[str, str] = {}
        self._centre = (0.0, 0.0)

    def set_data(
        self,
        cutouts: Mapping[str, np.ndarray],
        cmaps: Mapping[str, str],
        centre: tuple[float, float],
        info: str,
    ) -> None:
        """Show the cutouts of one source.

        Parameters
        ----------
        cutouts : mapping of str to numpy.ndarray
            Stamps of :attr:`NAMES` (absent ones are cleared), same shape.
        cmaps : mapping of str to str
            Colour map of each (the views' own).
        centre : (float, float)
            Source position in cutout pixel coordinates (x, y).
        info : str
            A line about the source.
        """
        self._cutouts, self._cmaps, self._centre = cutouts, cmaps, centre
        self.info.setText(info)
        self._redraw()

    def set_profile(self, profile: SourceProfile | None) -> None:
        """Show a source's radial profile against its PSF model (None: clear)."""
        if profile is None:
            self.profile_points.setData([], [])
            self.profile_model.setData([], [])
            return
        self.profile_points.setData(profile.radius, profile.value)
        self.profile_model.setData(profile.model_radius, profile.model)

    def _redraw(self, *args: object) -> None:
        self.levels = {}
        for names, symmetric in self.GROUPS:
            arrays = [self._cutouts[n] for n in names if n in self._cutouts]
            if arrays:
                lv = display.cutout_levels(arrays, symmetric=symmetric)
                self.levels.update({n: lv for n in names if n in self._cutouts})
        for name, item in self.items.items():
            array = self._cutouts.get(name)
            if array is None:
                item.clear()
                self.ticks[name].clear()
                self.labels[name].setText(name)
                continue
            lo, hi = self.levels[name]
            settings = display.DisplaySettings(
                stretch=self.stretch_box.currentText(),
                cmap=self._cmaps.get(name, "gray"),
                symmetric=lo == -hi,
            )
            _show(item, array, settings, (lo, hi))
            self.ticks[name].setData(*_centre_ticks(*self._centre))
            self.labels[name].setText(f"{name}<br>{lo:.3g} … {hi:.3g}", size="8pt")


#: One run in the A/B panel: difference image, its levels, a label and its metrics.
RunView = tuple[np.ndarray, tuple[float, float], str, Mapping[str, float]]


class ABPanel(QWidget):
    """Two runs side by side (or blinked in the left view): their differences and metrics."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.a = ImagePanel("difference", "A: current run")
        self.b = ImagePanel("difference", "B: previous run")
        link_to(self.b.view, self.a.view)
        self.metrics = QTableWidget(0, 3)
        self.metrics.setHorizontalHeaderLabels(["metric", "A (current)", "B (previous)"])
        self.params = QTableWidget(0, 3)
        self.params.setHorizontalHeaderLabels(["parameter that differs", "A", "B"])
        for table in (self.metrics, self.params):
            rows = table.verticalHeader()
            assert rows is not None
            rows.setVisible(False)
        self.blink_button = QPushButton("Blink A/B")
        self.blink_button.setCheckable(True)
        self.blink_button.setToolTip("Alternate A and B in the left view at the blink rate")
        self.blink_button.toggled.connect(self._on_blink)
        self.blink_timer = QTimer(self)
        self.blink_timer.setInterval(500)
        self.blink_timer.timeout.connect(self.swap)
        self.label = QLabel("Re-run with changed parameters to compare with the previous run.")
        self.label.setWordWrap(True)
        self._images: dict[str, tuple[np.ndarray, tuple[float, float]]] = {}
        self._showing_b = False
        grid = QGridLayout()
        grid.addWidget(self.a, 0, 0)
        grid.addWidget(self.b, 0, 1)
        bar = QHBoxLayout()
        bar.addWidget(self.blink_button)
        bar.addWidget(self.label, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addLayout(grid, 3)
        tables = QHBoxLayout()
        tables.addWidget(self.metrics, 3)
        tables.addWidget(self.params, 2)
        layout.addLayout(tables, 1)

    def set_runs(
        self, a: RunView, b: RunView | None, differences: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        """Show run A (current) and B (previous): difference, levels, label and metrics each,
        and the parameters that differ (name, A value, B value)."""
        self.blink_button.setChecked(False)
        self._showing_b = False
        self._images = {"A": (a[0], a[1])}
        self.a.set_title(f"A: {a[2]}")
        self.a.set_image(a[0], a[1])
        if b is None:
            self.b.set_image(None)
            self.b.set_title("B: (no previous run)")
        else:
            self._images["B"] = (b[0], b[1])
            self.b.set_title(f"B: {b[2]}")
            self.b.set_image(b[0], a[1])
        keys = list(a[3]) + [k for k in (b[3] if b else {}) if k not in a[3]]
        self.metrics.setRowCount(len(keys))
        for row, key in enumerate(keys):
            self.metrics.setItem(row, 0, QTableWidgetItem(key))
            for col, run in ((1, a), (2, b)):
                value = run[3].get(key) if run is not None else None
                text = "" if value is None else f"{value:.4g}"
                self.metrics.setItem(row, col, QTableWidgetItem(text))
        self.metrics.resizeColumnsToContents()
        self.params.setRowCount(len(differences))
        for row, cells in enumerate(differences):
            for col, text in enumerate(cells):
                self.params.setItem(row, col, QTableWidgetItem(text))
        self.params.resizeColumnsToContents()
        self.label.setText(
            "B is shown with A's levels, so their noise compares directly."
            if b is not None
            else "Re-run with changed parameters to compare."
        )

    def clear(self) -> None:
        """Show no run."""
        self.blink_button.setChecked(False)
        self._showing_b = False
        self._images = {}
        self.a.set_image(None)
        self.b.set_image(None)
        self.a.set_title("A: current run")
        self.b.set_title("B: previous run")
        self.metrics.setRowCount(0)
        self.params.setRowCount(0)

    def metric_cells(self, key: str) -> tuple[str, str]:
        """The A and B cells of a metric (for tests and export)."""
        for row in range(self.metrics.rowCount()):
            item = self.metrics.item(row, 0)
            if item is not None and item.text() == key:
                a, b = self.metrics.item(row, 1), self.metrics.item(row, 2)
                return (a.text() if a else "", b.text() if b else "")
        raise KeyError(key)

    def shown(self) -> str:
        """Which run the left view shows: ``A`` or ``B``."""
        return "B" if self._showing_b else "A"

    def swap(self) -> None:
        """Show the other run in the left view (with A's levels)."""
        if "B" not in self._images:
            return
        self._showing_b = not self._showing_b
        which = self.shown()
        self.a.set_image(self._images[which][0], self._images["A"][1])
        self.a.set_title(f"{which}: {'previous' if self._showing_b else 'current'} run (blink)")

    def _on_blink(self, on: bool) -> None:
        if on:
            self.blink_timer.start()
        else:
            self.blink_timer.stop()
            if self._showing_b:
                self.swap()
