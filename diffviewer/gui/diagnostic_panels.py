"""The diagnostics tabs' panels: kernel mosaic and maps, residual histograms, A/B runs.

Each panel draws plain arrays handed to it by the window (see
:mod:`diffviewer.gui.model` for where they come from in a result); none computes science.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QFont
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from diffviewer import display
from diffviewer.gui.content import EMPTY_RESIDUALS, ResidualStats, residual_stats
from diffviewer.gui.panels import POSITIVE, SIGNED, image_box, show_array
from diffviewer.gui.views import ImagePanel, link_to

_MOSAIC_HINT = (
    "Mosaic: the wheel zooms, a click centres the images there; the cursor over it "
    "gives a cell's sum, shift and background."
)


#: The kernel mosaic's display: asinh, so that the wings of each kernel show beside its
#: core (its colour bar drawn with the same stretch).
MOSAIC = SIGNED.replace(stretch="asinh")

#: Colour stops of a bar: enough for an asinh stretch's steep middle.
BAR_STOPS = 64

#: A colour bar's width and its tick labels' column (px).
BAR_WIDTH = 8
BAR_TICKS_WIDTH = 35

#: Point size of the colour bars' tick labels.
BAR_TICKS_POINTS = 7

#: Least height of the kernel's maps' canvas (px): titles, maps and colour bars readable
#: however little room the tab has (the description and the basis scroll below).
MAPS_MIN_HEIGHT = 220

#: Height of a row of basis images (px).
BASIS_ROW_HEIGHT = 30

#: Least height of the PSFs' canvas (px): two title lines and images of ~110 px.
PSF_MIN_HEIGHT = 150

#: The PSFs page's mosaic (where they are matched): its column's preferred width, as a
#: share of a PSF column's. Qt shrinks the columns to the page unevenly: ~80 px against
#: 155 at 1280 x 720 (the PSFs' titles, up to 153 px, whole), 128 against 274 at 1920.
PICKER_SHARE = 0.25

#: The PSFs' display: log, so that their wings, where a misfit of the widths shows,
#: are seen beside their cores; all three at the same levels.
PSF_DISPLAY = POSITIVE.replace(stretch="log")

#: The kernel stars' dots' colour range: flux ratio less the model's sum, in the star's
#: errors.
PULL_LEVELS = (-5.0, 5.0)


def range_title(name: str, values: np.ndarray, digits: int, unit: str = "") -> str:
    """A map's title: its name over the range of its values, or "constant" and the value
    when both ends read the same at ``digits`` decimals.

    Parameters
    ----------
    name : str
        What the map shows.
    values : numpy.ndarray
        The map's samples (NaN ignored).
    digits : int
        Decimals shown.
    unit : str, optional
        The values' unit, after them.

    Returns
    -------
    str
        Two lines (``<br>``).
    """
    lo, hi = f"{np.nanmin(values):.{digits}f}", f"{np.nanmax(values):.{digits}f}"
    tail = f" {unit}" if unit else ""
    return f"{name}<br>{lo} to {hi}{tail}" if lo != hi else f"{name}<br>constant, {lo}{tail}"


def _star_tip(x: float, y: float, data: tuple[float, float, float, float]) -> str:
    """A kernel star's dot's tooltip: its flux ratio and error beside the model's sum."""
    ratio, err, model, pull = data
    return (
        f"kernel star: flux ratio (kernel_sum) {ratio:.4f} ± {err:.4f}; the model's sum "
        f"here {model:.4f} ({pull:+.1f} of its errors)"
    )


class KernelPanel(QWidget):
    """The spatial kernel on a grid (mosaic), kernel-sum, centroid-shift and differential
    background maps; on a page beside them, the PSFs the kernel matched at a mosaic cell
    chosen there; the basis.

    Signals
    -------
    centre_requested(float, float)
        A mosaic cell was clicked: centre the images on its position (px).
    psf_cell_chosen(int, float, float)
        A cell of the PSFs page's mosaic was clicked: the PSFs are to be matched through
        the kernel there (its row of the grid, its position in px) and given to
        :meth:`show_psfs`.
    """

    centre_requested = pyqtSignal(float, float)
    psf_cell_chosen = pyqtSignal(int, float, float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.canvas = pg.GraphicsLayoutWidget()
        # tight: four maps and their bars share a row (~760 px on a 1280 x 720 screen)
        self.canvas.ci.setContentsMargins(2, 2, 2, 2)
        self.canvas.ci.layout.setHorizontalSpacing(2)
        # Titles of two short lines: on a 1280 px screen a column is ~190 px wide, and a
        # longer title ran into its neighbour's. How to use the mosaic is in the line below.
        self.mosaic_box, self.mosaic, _ = image_box(
            self.canvas, "Kernel mosaic<br>one kernel per cell", 0, 0
        )
        self.sum_box, self.sum_map, self.sum_title = image_box(self.canvas, "Kernel sum", 0, 2)
        self.shift_box, self.shift_map, self.shift_title = image_box(
            self.canvas, "Centroid shift", 0, 4
        )
        self.background_box, self.background_map, self.background_title = image_box(
            self.canvas, "Background", 0, 6
        )
        self.bars: dict[str, pg.ColorBarItem] = {}
        tick_font = QFont()
        tick_font.setPointSize(BAR_TICKS_POINTS)
        # The bars' units only (the maps' titles say what they are): on a 1280 x 720
        # screen a bar is ~90 px high, and "kernel weight (per pixel)" lost its start.
        for col, key, label, settings in (
            (1, "mosaic", "weight per pixel", MOSAIC),
            (3, "sum", "flux ratio", POSITIVE),
            (5, "shift", "px", POSITIVE),
            (7, "background", "ct", POSITIVE),  # the difference's unit (set_data)
        ):
            # The image's own stretch: a bar drawn linear beside the asinh mosaic put
            # 0.1 of the top weight at the colour of 0.29 of it (x2.9).
            lut = display.make_lut(settings.stretch, settings.cmap, symmetric=settings.symmetric)
            stops = np.linspace(0, 255, BAR_STOPS).round().astype(int)
            bar = pg.ColorBarItem(
                values=(0.0, 1.0),
                colorMap=pg.ColorMap(np.linspace(0.0, 1.0, BAR_STOPS), lut[stops]),
                label=label,
                interactive=False,
                colorMapMenu=False,
                width=BAR_WIDTH,
            )
            # Narrow ticks: with four maps in a row of a 1280 px screen, pyqtgraph's 45 px
            # tick column left each map's title ~100 px, and its range (~115 px) overran.
            bar.axis.setStyle(tickFont=tick_font)
            bar.axis.setWidth(BAR_TICKS_WIDTH)
            self.canvas.addItem(bar, row=1, col=col)
            self.canvas.ci.layout.setColumnPreferredWidth(col, 60)
            self.canvas.ci.layout.setColumnMaximumWidth(col, 66)
            self.bars[key] = bar
        self._maps = (self.sum_box, self.shift_box, self.background_box)
        for box in (self.mosaic_box, *self._maps):
            box.setMouseEnabled(True, True)  # zoom and pan
        self.centroids = pg.ScatterPlotItem(
            pxMode=True, size=5, symbol="+", pen=pg.mkPen((0, 0, 0), width=1), brush=None
        )
        self.mosaic_box.addItem(self.centroids)
        # each kernel star's flux ratio against the model's sum, in its errors (its
        # tooltip gives both): LSST's plotKernelSpatialModel on the map
        self.star_sums = pg.ScatterPlotItem(
            pxMode=True, size=5, pen=pg.mkPen((0, 0, 0), width=1), hoverable=True, tip=_star_tip
        )
        self.sum_box.addItem(self.star_sums)
        self.basis_canvas = pg.GraphicsLayoutWidget()
        # the PSFs the run matched: science, template, the convolved one through the
        # kernel, and that less the other (content.psf_views)
        self.psf_canvas = pg.GraphicsLayoutWidget()
        self.psf_canvas.ci.setContentsMargins(2, 2, 2, 2)
        self.psf_canvas.ci.layout.setHorizontalSpacing(4)
        self.psf_canvas.setMinimumHeight(PSF_MIN_HEIGHT)
        # where they are matched: the mosaic again, its chosen cell framed (as the chosen
        # kernel source is on the images); a click on a cell matches them there
        self.picker_box, self.picker, self.picker_title = image_box(self.psf_canvas, "", 0, 0)
        # narrower than the PSFs: with five equal columns at 1280 x 720 their titles ran
        # together; its title short for the same reason (the info below gives the px)
        layout = self.psf_canvas.ci.layout
        layout.setColumnPreferredWidth(0, PICKER_SHARE * layout.columnPreferredWidth(0))
        self.picker.mouseClickEvent = self._on_picker_click
        self.picker_box.setToolTip("Click a cell: the PSFs matched through the kernel there")
        self.picker_frame = [
            pg.PlotDataItem(pen=pg.mkPen((0, 0, 0), width=4)),
            pg.PlotDataItem(pen=pg.mkPen((255, 255, 255), width=2, style=Qt.PenStyle.DashLine)),
        ]
        for line in self.picker_frame:
            self.picker_box.addItem(line)
        #: The mosaic cell (row of the grid) the PSFs are matched at, None before a kernel.
        self.psf_cell: int | None = None
        self.psf_boxes: list[pg.ViewBox] = []
        self.psf_items: list[pg.ImageItem] = []
        self.psf_titles: list[pg.LabelItem] = []
        for col in range(1, 5):
            box, item, title = image_box(self.psf_canvas, "", 0, col)
            box.setMouseEnabled(True, True)  # zoom and pan, the four together
            if self.psf_boxes:
                box.setXLink(self.psf_boxes[0])
                box.setYLink(self.psf_boxes[0])
            self.psf_boxes.append(box)
            self.psf_items.append(item)
            self.psf_titles.append(title)
        self.psf_info = QLabel()
        self.psf_info.setWordWrap(True)
        # the misfit and where the PSFs came from take ~8 lines at 1280 x 720: three
        # shown, the rest scrolled, so that the PSFs keep their room
        self.psf_note = QScrollArea()
        self.psf_note.setWidget(self.psf_info)
        self.psf_note.setWidgetResizable(True)
        self.psf_note.setFrameShape(QFrame.Shape.NoFrame)
        self.psf_note.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.psf_note.setFixedHeight(3 * self.psf_info.fontMetrics().lineSpacing() + 1)
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.cell_info = QLabel(_MOSAIC_HINT)
        self.cell_info.setWordWrap(True)
        self._grid: np.ndarray = np.zeros((0, 6))
        self._cell = 1
        self._n = 0
        self._unit = ""
        self.mosaic.mouseClickEvent = self._on_mosaic_click
        self.canvas.scene().sigMouseMoved.connect(self._on_mosaic_hover)
        # The maps above a splitter, the basis and the description below it, scrolled: the
        # description (~11 wrapped lines on GOTO) put straight in the layout squeezed the
        # maps to ~10 px at 1280 x 720.
        self.canvas.setMinimumHeight(MAPS_MIN_HEIGHT)
        maps = QWidget()
        maps_layout = QVBoxLayout(maps)
        maps_layout.setContentsMargins(0, 0, 0, 0)
        maps_layout.addWidget(self.canvas, 1)
        maps_layout.addWidget(self.cell_info)
        details = QWidget()
        details_layout = QVBoxLayout(details)
        details_layout.setContentsMargins(0, 0, 0, 0)
        details_layout.addWidget(QLabel("<b>Basis images</b>"))
        details_layout.addWidget(self.basis_canvas)
        details_layout.addWidget(self.info)
        details_layout.addStretch(1)
        self.details = QScrollArea()
        self.details.setWidget(details)
        self.details.setWidgetResizable(True)
        self.details.setFrameShape(QFrame.Shape.NoFrame)
        self.details.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # two lines at least (its own least, 68 px, with the pages' tab bar pushed the
        # mosaic's hint under the maps at 1280 x 720)
        self.details.setMinimumHeight(2 * self.info.fontMetrics().lineSpacing() + 8)
        # The PSFs on a page of their own beside the maps: on a 1280 x 720 screen the
        # details below show ~80 px, and a row of PSFs there was never seen whole.
        psfs = QWidget()
        psfs_layout = QVBoxLayout(psfs)
        psfs_layout.setContentsMargins(0, 0, 0, 0)
        psfs_layout.addWidget(self.psf_canvas, 1)
        psfs_layout.addWidget(self.psf_note)
        self.pages = QTabWidget()
        self.pages.setDocumentMode(True)
        self.pages.addTab(maps, "Maps")
        self.pages.addTab(psfs, "PSFs")
        self.pages.setTabToolTip(
            1,
            "The science and template PSFs the kernel was fitted to, the convolved one "
            "through the kernel at the mosaic cell chosen on the left (the image centre "
            "at first), and what it misses of the other (the wheel zooms the four together)",
        )
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(self.pages)
        self.splitter.addWidget(self.details)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setStretchFactor(0, 1)  # the maps take what the details leave
        self.splitter.setStretchFactor(1, 0)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.splitter)

    def set_data(
        self,
        mosaic: np.ndarray,
        grid: np.ndarray,
        n_grid: int,
        cell: int,
        sum_map: np.ndarray,
        shift_map: np.ndarray,
        background_map: np.ndarray,
        unit: str,
        basis: np.ndarray,
        info: str,
        stars: np.ndarray | None = None,
        psfs: Sequence[tuple[str, np.ndarray]] = (),
        psf_info: str = "",
        psf_cell: int | None = None,
    ) -> None:
        """Show a kernel solution.

        Parameters
        ----------
        mosaic : numpy.ndarray
            ``n_grid * cell`` square image of kernels (row j, column i = grid point (i, j)).
        grid : numpy.ndarray
            Rows of (x, y, kernel sum, centroid dx, centroid dy, background) per cell,
            row-major in j, i.
        n_grid, cell : int
            Cells per axis and cell side (px).
        sum_map, shift_map : numpy.ndarray
            Kernel sum and centroid shift (px) over the image (any resolution).
        background_map : numpy.ndarray
            The subtracted differential background over the image (any resolution).
        unit : str
            The background's unit (the difference's).
        basis : numpy.ndarray
            Basis images, shape (n, k, k).
        info : str
            A line of text about the solution.
        stars : numpy.ndarray, optional
            The kernel stars' flux ratios against the model on the sum map
            (:func:`diffviewer.gui.content.star_sums`).
        psfs : sequence of (str, numpy.ndarray)
            Titled PSF images: the science's, the template's and the convolved one's
            through the kernel, at one set of levels, then the residual, signed
            (:func:`diffviewer.gui.content.psf_views`); none, an empty row.
        psf_info : str
            The misfit in words, and where each PSF came from.
        psf_cell : int, optional
            The mosaic cell (row of ``grid``) the PSFs were matched at.
        """
        self._grid, self._cell, self._n, self._unit = grid, cell, n_grid, unit
        show_array(self.mosaic, mosaic, MOSAIC)
        show_array(self.picker, mosaic, MOSAIC)
        self.picker_box.autoRange(padding=0.02)
        show_array(self.sum_map, sum_map, POSITIVE)
        self._show_star_sums(np.zeros((0, 6)) if stars is None else stars)
        show_array(self.shift_map, shift_map, POSITIVE)
        show_array(self.background_map, background_map, POSITIVE)
        self.sum_title.setText(range_title("Kernel sum", sum_map, 4))
        self.shift_title.setText(range_title("Centroid shift", shift_map, 3, "px"))
        self.background_title.setText(range_title("Background", background_map, 3, unit))
        self.bars["background"].getAxis("left").setLabel(unit)
        for box in self._maps:
            box.autoRange(padding=0.02)
        centre = (cell - 1) / 2
        ii, jj = np.meshgrid(np.arange(n_grid), np.arange(n_grid))
        self.centroids.setData(
            ii.ravel() * cell + centre + grid[:, 3], jj.ravel() * cell + centre + grid[:, 4]
        )
        for key, array in (
            ("mosaic", mosaic),
            ("sum", sum_map),
            ("shift", shift_map),
            ("background", background_map),
        ):
            lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
            if key == "mosaic":  # symmetric, as the mosaic is drawn
                lo, hi = -max(abs(lo), abs(hi)), max(abs(lo), abs(hi))
            self.bars[key].setLevels((lo, hi if hi > lo else lo + 1e-9))
        self.mosaic_box.autoRange(padding=0.02)
        self.basis_canvas.clear()
        per_row = 12
        self.basis_canvas.setFixedHeight(BASIS_ROW_HEIGHT * math.ceil(len(basis) / per_row))
        for k, image in enumerate(basis):
            vb = self.basis_canvas.addViewBox(
                row=k // per_row, col=k % per_row, lockAspect=True, enableMenu=False
            )
            vb.setMouseEnabled(False, False)
            item = pg.ImageItem(axisOrder="row-major")
            vb.addItem(item)
            show_array(item, image, SIGNED)
        self.show_psfs(psfs, psf_info, psf_cell)
        self.info.setText(info)

    def show_psfs(
        self, psfs: Sequence[tuple[str, np.ndarray]], info: str, cell: int | None
    ) -> None:
        """Show the PSFs matched at a mosaic cell, frame the cell and say where it is.

        Parameters
        ----------
        psfs : sequence of (str, numpy.ndarray)
            Titled PSF images (:func:`diffviewer.gui.content.psf_views`); none, an empty row.
        info : str
            The misfit in words, and where each PSF came from.
        cell : int or None
            The cell (row of the grid) they were matched at; None, none.
        """
        self.psf_cell = cell
        self._show_psfs(psfs)
        self.psf_info.setText(info)
        if cell is None or not self._n:
            self.picker_title.setText("")
            for line in self.picker_frame:
                line.setData([], [])
            return
        i, j = cell % self._n, cell // self._n
        self.picker_title.setText(f"Kernel at<br>cell ({i}, {j})")
        x0, y0 = i * self._cell - 0.5, j * self._cell - 0.5
        x1, y1 = x0 + self._cell, y0 + self._cell
        for line in self.picker_frame:
            line.setData([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0])

    def _show_psfs(self, psfs: Sequence[tuple[str, np.ndarray]]) -> None:
        """The PSFs at one set of levels (0 to the highest peak), the residual at its own
        symmetric ones; their zoom kept while the stamp keeps its size (another cell)."""
        before = self.psf_items[-1].image
        shape = before.shape if before is not None else None
        for item, title in zip(self.psf_items, self.psf_titles, strict=True):
            item.clear()
            title.setText("")
        if not psfs:
            return
        *shapes, (residual_title, residual) = psfs
        top = max(float(np.max(image)) for _, image in shapes)
        n = len(shapes)
        for (text, image), item, title in zip(
            shapes, self.psf_items[:n], self.psf_titles[:n], strict=True
        ):
            show_array(item, image, PSF_DISPLAY, (0.0, top if top > 0 else 1.0))
            title.setText(text)
        reach = float(np.max(np.abs(residual)))
        show_array(self.psf_items[-1], residual, SIGNED, (-reach, reach) if reach else (-1.0, 1.0))
        self.psf_titles[-1].setText(residual_title)
        if residual.shape != shape:
            for box in self.psf_boxes:
                box.autoRange(padding=0.02)

    def _show_star_sums(self, stars: np.ndarray) -> None:
        """Dots at the kernel stars, each coloured by its flux ratio less the model's sum in
        its errors (:data:`PULL_LEVELS`, the difference's colours: a cluster of one colour is
        where the spatial model misses the stars)."""
        lut = display.make_lut("linear", SIGNED.cmap, symmetric=True)
        lo, hi = PULL_LEVELS
        share = np.clip((stars[:, 5] - lo) / (hi - lo), 0.0, 1.0)
        colours = lut[np.rint(share * (len(lut) - 1)).astype(int)]
        self.star_sums.setData(
            x=stars[:, 0],
            y=stars[:, 1],
            brush=[pg.mkBrush(*c[:3]) for c in colours],
            data=[tuple(row[2:]) for row in stars],
        )

    def clear(self) -> None:
        """Show no kernel."""
        self._grid, self._n = np.zeros((0, 6)), 0
        for item in (self.mosaic, self.picker, self.sum_map, self.shift_map, self.background_map):
            item.clear()
        self.centroids.clear()
        self.star_sums.clear()
        self.basis_canvas.clear()
        self.show_psfs((), "", None)
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
            x, y, total, dx, dy, background = self._grid[k]
            self.cell_info.setText(
                f"kernel at ({x:.0f}, {y:.0f}) px: sum {total:.4f}, "
                f"centroid shift ({dx:+.3f}, {dy:+.3f}) px, background {background:.3f} "
                f"{self._unit}"
            )

    def _clicked_cell(self, event: object) -> tuple[int, float, float] | None:
        """The mosaic cell a click on a mosaic (either page's) fell in: its row of the grid
        and its position (px), the click accepted; None off the cells."""
        pos = event.pos()  # type: ignore[attr-defined]
        k = self._cell_at(pos.x(), pos.y())
        if k is None:
            return None
        event.accept()  # type: ignore[attr-defined]
        x, y = self._grid[k, :2]
        return k, float(x), float(y)

    def _on_picker_click(self, event: object) -> None:
        clicked = self._clicked_cell(event)
        if clicked is not None:
            self.psf_cell_chosen.emit(*clicked)

    def _on_mosaic_click(self, event: object) -> None:
        clicked = self._clicked_cell(event)
        if clicked is not None:
            self.centre_requested.emit(*clicked[1:])


class ResidualPanel(QWidget):
    """The four pixel-residual histograms against N(0, 1), with mean and sigma."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.canvas = pg.GraphicsLayoutWidget()
        self.norm_box = QComboBox()
        self.norm_box.setToolTip(
            "Normalise residuals by the difference variance or by the input variances"
        )
        # as wide as its longest name whenever the names come (sized on its first show, it
        # was cut to "differenc" when the tab was opened before a run)
        self.norm_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
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
        self.note = QLabel()
        self.note.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.note)
        layout.addWidget(self.canvas, 1)

    def set_data(
        self, panels: Sequence[tuple[str, Mapping[str, np.ndarray]]], note: str = ""
    ) -> None:
        """Show residual samples.

        Parameters
        ----------
        panels : sequence of (str, mapping of str to numpy.ndarray)
            Panel title and, per normalisation name, the normalised residual values.
        note : str, optional
            What their unit is (:func:`~diffviewer.gui.content.residual_note`).
        """
        self.note.setText(note)
        self.note.setVisible(bool(note))
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
            # Short lines: a title sets its plot's least width, and on a 1280 px screen
            # a one-line one pushed the right column out of the canvas.
            if stats.count:
                text = (
                    f"mean {stats.mean:+.3f}, σ robust {stats.robust_sigma:.3f}<br>"
                    f"std {stats.std:.3f}, n = {stats.count}"
                )
            else:
                reason = EMPTY_RESIDUALS.get(title, "no finite residual")
                text = "<br>".join(textwrap.wrap(f"empty: {reason}", 44))
            plot.setTitle(f"{title}<br>{text}", size="9pt")
            self.stats[title] = stats
            self.plots.append(plot)


class RunView(NamedTuple):
    """One run in the A/B panel.

    Attributes
    ----------
    difference : numpy.ndarray
        Its difference, display-ready.
    levels : (float, float)
        The difference's default levels.
    label : str
        What the run is (:func:`~diffviewer.gui.content.run_label`).
    metrics : mapping of str to float
        Its figures of merit (:func:`~diffviewer.gui.content.metrics`).
    folder : Path or None
        The folder a saved run was read from: its name, in the label, gives way first in
        a narrow view (shortened in the middle), its whole path is the title's tooltip.
    """

    difference: np.ndarray
    levels: tuple[float, float]
    label: str
    metrics: Mapping[str, float]
    folder: Path | None = None


#: A view's title in the A/B panel, and the saved folder it names (None: none).
_Title = tuple[str, Path | None]

#: The A/B panel's title of A on a pair's first run.
_NO_A = "A: (no previous run)"

#: The line above the A/B views: what A and B are, by state.
_HINTS = {
    "no A": "B is the run on screen. Re-run with changed parameters to compare it with "
    "the previous run (A), or keep it as A to compare every later run with it.",
    "previous": "A is the previous run, B the run on screen, both at A's display (A's "
    "display menu) so their noise compares directly. Keep A to compare later runs with it.",
    "kept": "A is kept: each new run is B, compared with it until you release A (Keep A) "
    "or open another pair. Both at A's display (A's display menu).",
    "next": "The run on screen is kept as A: each new run is B, compared with it until "
    "you release A (Keep A) or open another pair.",
}

#: The tooltip of the A/B panel's parameters column: what the table lists.
_PARAMS_TIP = (
    "The parameters whose values differ between A and B, each as requested and, where the "
    'engine ran another value, as run ("auto (ran as science)"); a cell\'s tooltip holds '
    "its text whole"
)


class ABPanel(QWidget):
    """Two runs side by side (or blinked in the left view): their differences and metrics.

    A is the baseline (the previous run, or a run kept as A), B the run on screen. Both
    differences are shown at A's display (levels, stretch, colour map: A's display menu),
    so their noise compares directly; B has no display controls of its own. The panel holds
    the two difference images it shows, no run.

    Signals
    -------
    levels_wanted
        A's level mode changed, or a new A came while A's mode is not its default: the
        levels of A's difference (B's while there is no A) for A's settings are to be
        computed (off the GUI thread) and given to :meth:`set_levels`.
    keep_requested(str)
        The user asks to keep a run as A: ``"A"`` the one A shows (Keep A), ``"B"`` the
        run on screen (Keep B as A).
    release_requested
        The user releases the kept A (Keep A unchecked).
    """

    levels_wanted = pyqtSignal()
    keep_requested = pyqtSignal(str)
    release_requested = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.a = ImagePanel("difference", _NO_A)
        self.b = ImagePanel("difference", "B: current run")
        link_to(self.b.view, self.a.view)
        keep = self.b.display_button.sizePolicy()
        keep.setRetainSizeWhenHidden(True)  # B's image level with A's
        self.b.display_button.setSizePolicy(keep)
        self.b.display_button.hide()
        self.a.settings_changed.connect(self.levels_wanted)
        self.a.display_changed.connect(self._follow_a)
        self.metrics = QTableWidget(0, 3)
        self.metrics.setHorizontalHeaderLabels(["metric", "A", "B"])
        self.params = QTableWidget(0, 3)
        # "parameter", what it lists in the tooltip: "parameter that differs" was cut to
        # "ameter that dif" in its third of the table at 1280 x 720
        self.params.setHorizontalHeaderLabels(["parameter", "A", "B"])
        name_header = self.params.horizontalHeaderItem(0)
        assert name_header is not None
        name_header.setToolTip(_PARAMS_TIP)
        for table in (self.metrics, self.params):
            rows = table.verticalHeader()
            assert rows is not None
            rows.setVisible(False)
            rows.setDefaultSectionSize(table.fontMetrics().height() + 6)  # a line a row
            columns = table.horizontalHeader()
            assert columns is not None
            # the metrics' values whole, their names cut short where the table is narrow;
            # the parameters' names and values ("auto (ran as science)") a third each: the
            # values sized to their text left the names 26 px at 1280 x 720 (every cell's
            # tooltip holds it whole)
            columns.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
            for col in (1, 2):
                mode = (
                    QHeaderView.ResizeMode.Stretch
                    if table is self.params
                    else QHeaderView.ResizeMode.ResizeToContents
                )
                columns.setSectionResizeMode(col, mode)
        self.blink_button = QPushButton("Blink A/B")
        self.blink_button.setCheckable(True)
        self.blink_button.setToolTip("Alternate A and B in the left view at the blink rate")
        self.blink_button.toggled.connect(self._on_blink)
        self.blink_timer = QTimer(self)
        self.blink_timer.setInterval(500)
        self.blink_timer.timeout.connect(self.swap)
        self.keep_button = QPushButton("Keep A")
        self.keep_button.setCheckable(True)
        self.keep_button.setToolTip(
            "Keep the run A shows as A: every later run is compared with it (unchecked: "
            "A is the previous run again)"
        )
        self.keep_button.clicked.connect(self._on_keep)
        self.keep_b_button = QPushButton("Keep B as A")
        self.keep_b_button.setToolTip(
            "Keep the run on screen (B) as A: every later run is compared with it (Run > "
            "Keep this run as A, Ctrl+Shift+A)"
        )
        self.keep_b_button.clicked.connect(lambda: self.keep_requested.emit("B"))
        self.label = QLabel(_HINTS["no A"])
        self.label.setWordWrap(True)
        self._images: dict[str, np.ndarray] = {}
        self._showing_b = False
        #: Each view's title (the run's role or saved folder, and its config digest) and
        #: the folder it names.
        self._titles: dict[str, _Title] = {"A": (_NO_A, None), "B": ("B: current run", None)}
        self._enable_buttons(a=False, b=False, kept=False)
        images = QWidget()
        grid = QGridLayout(images)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.a, 0, 0)
        grid.addWidget(self.b, 0, 1)
        bar = QHBoxLayout()
        bar.addWidget(self.blink_button)
        bar.addWidget(self.keep_button)
        bar.addWidget(self.keep_b_button)
        bar.addWidget(self.label, 1)
        # Images above, tables below, as much room each (a splitter moves it): with the
        # tables at a quarter of a 1280 x 720 screen's tab, 1.5 of 16 metric rows showed.
        tables = QSplitter(Qt.Orientation.Horizontal)
        tables.addWidget(self.metrics)
        tables.addWidget(self.params)
        tables.setStretchFactor(0, 3)
        tables.setStretchFactor(1, 2)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(images)
        self.splitter.addWidget(tables)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([1, 1])  # relative: half each, whatever the sizes' hints
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.splitter, 1)

    def set_runs(
        self,
        a: RunView | None,
        b: RunView | None,
        differences: Sequence[tuple[str, str, str]] = (),
        kept: bool = False,
    ) -> None:
        """Show run A (the baseline) and B (the run on screen): difference, levels, label and
        metrics each, and the parameters that differ (name, A value, B value).

        Parameters
        ----------
        a : RunView or None
            The previous run, or the kept one; None on a pair's first run.
        b : RunView or None
            The run on screen; None while it is the one kept as A (the next run is B).
        differences : sequence of (str, str, str)
            The parameters that differ.
        kept : bool
            Whether A is kept (Keep A is checked; A's label says so).
        """
        if a is None and b is None:
            raise ValueError("the A/B panel shows at least one run")
        self.blink_button.setChecked(False)
        self._showing_b = False
        runs = {"A": a, "B": b}
        self._images = {k: run.difference for k, run in runs.items() if run is not None}
        self._titles = {
            "A": (f"A: {a.label}", a.folder) if a else (_NO_A, None),
            "B": (f"B: {b.label}", b.folder) if b else ("B: (the next run)", None),
        }
        # both at A's display: A's levels, else (no A yet) B's own
        shown = a if a is not None else b
        assert shown is not None
        levels = self.a.levels_for(shown.levels)
        if a is None:
            self.a.set_image(None)
            self.a.set_levels(levels or shown.levels)  # B follows them (A's display menu)
        else:
            self.a.set_image(a.difference, levels)
        self.b.set_image(None if b is None else b.difference, self.a.levels())
        self._show_titles()
        extra = b.metrics if b else {}
        keys = list(shown.metrics) + [k for k in extra if k not in shown.metrics]
        self.metrics.setRowCount(len(keys))
        for row, key in enumerate(keys):
            self.metrics.setItem(row, 0, _named_item(key))
            for col, run in ((1, a), (2, b)):
                value = run.metrics.get(key) if run is not None else None
                text = "" if value is None else _metric_text(value)
                self.metrics.setItem(row, col, QTableWidgetItem(text))
        self.params.setRowCount(len(differences))
        for row, cells in enumerate(differences):
            for col, text in enumerate(cells):
                self.params.setItem(row, col, _named_item(text))
        hint = "no A" if a is None else "next" if b is None else "kept" if kept else "previous"
        self.label.setText(_HINTS[hint])
        self._enable_buttons(a=a is not None, b=b is not None, kept=kept)
        if self.a.wants_own_levels():  # keep the level mode chosen for A
            self.levels_wanted.emit()

    def _enable_buttons(self, *, a: bool, b: bool, kept: bool) -> None:
        """Blink with two runs, Keep A with an A (checked while it is kept), Keep B as A
        with a B."""
        self.blink_button.setEnabled(a and b)
        self.keep_button.setEnabled(a)
        self.keep_button.setChecked(kept)
        self.keep_b_button.setEnabled(b)

    def _on_keep(self, checked: bool) -> None:
        if checked:
            self.keep_requested.emit("A")
        else:
            self.release_requested.emit()

    def level_image(self) -> np.ndarray | None:
        """The difference A's display levels are computed on: run A's (the left view may
        show B's while blinking), else B's while there is no A."""
        return self._images.get("A", self._images.get("B"))

    def set_levels(self, levels: tuple[float, float]) -> None:
        """Show both differences at ``levels`` (computed for A's display settings)."""
        self.a.set_levels(levels)

    def _follow_a(self) -> None:
        """Show B at A's display: its levels, stretch and colour map."""
        self.b.set_settings(self.a.settings)
        if self.b.data is not None:
            self.b.set_levels(self.a.levels())

    def clear(self) -> None:
        """Show no run."""
        self.blink_button.setChecked(False)
        self._showing_b = False
        self._images = {}
        self.a.set_image(None)
        self.b.set_image(None)
        self._titles = {"A": (_NO_A, None), "B": ("B: current run", None)}
        self._show_titles()
        self.metrics.setRowCount(0)
        self.params.setRowCount(0)
        self.label.setText(_HINTS["no A"])
        self._enable_buttons(a=False, b=False, kept=False)

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
        if len(self._images) < 2:
            return
        self._showing_b = not self._showing_b
        which = self.shown()
        self.a.set_image(self._images[which], self.a.levels())
        blinking = " (blinking)" if self.blink_timer.isActive() else ""
        _set_title(self.a, self._titles[which], blinking)

    def _show_titles(self) -> None:
        """Title each view with its run, and each metrics column (its header's tooltip)."""
        _set_title(self.a, self._titles[self.shown()])
        _set_title(self.b, self._titles["B"])
        for col, which in ((1, "A"), (2, "B")):
            header = self.metrics.horizontalHeaderItem(col)
            if header is not None:
                header.setToolTip(_title_tip(self._titles[which]))

    def _on_blink(self, on: bool) -> None:
        if on:
            self.blink_timer.start()
        else:
            self.blink_timer.stop()
            if self._showing_b:
                self.swap()
            self._show_titles()


def _title_tip(title: _Title) -> str:
    """A run's title whole, and the path of the saved folder it names."""
    text, folder = title
    return text if folder is None else f"{text}\n{folder}"


def _set_title(panel: ImagePanel, title: _Title, suffix: str = "") -> None:
    """Title an A/B view with a run's title (and ``suffix``): the saved folder it names
    gives way first to a narrow view, shortened in the middle; the tooltip holds the whole
    title and the folder's path (:func:`_title_tip`)."""
    text, folder = title
    if folder is None:
        panel.set_title(text + suffix)
    else:
        panel.set_title(text + suffix, folder.name, _title_tip(title))


def _named_item(text: str) -> QTableWidgetItem:
    """A table cell of ``text`` whose tooltip holds it whole (the column may cut it)."""
    item = QTableWidgetItem(text)
    item.setToolTip(text)
    return item


def _metric_text(value: float) -> str:
    """A metric as the A/B table shows it: 4 significant digits, or "not measured" (a
    noise ratio of a cutout with too little sky, sky sources a run placed none of)."""
    return f"{value:.4g}" if math.isfinite(value) else "not measured"
