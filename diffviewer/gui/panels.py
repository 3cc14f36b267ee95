"""Panels of small images: a kernel source's stamps and a DIA source's cutouts and profile,
with the helpers the diagnostics panels share (titled image boxes, drawing an array).

Each panel draws plain arrays handed to it by the window (see
:mod:`diffviewer.gui.model` for where they come from in a result); none computes science.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QRectF, Qt
from PyQt6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from diffviewer import display
from diffviewer.gui.content import SourceProfile

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


def image_box(
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


def show_array(
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


SIGNED = display.default_settings("difference").replace(levels="minmax")
POSITIVE = display.DisplaySettings(levels="minmax", cmap="viridis")


class _StampGrid(QWidget):
    """Small titled images in a grid of two columns, above a text that scrolls.

    The text takes a quarter of the height (two lines at least) and scrolls: shown whole,
    a kernel stamp's 13 lines of QA left its seven images 19 px high on a 1280 x 720
    screen.

    Parameters
    ----------
    titles : sequence of str
        The images' titles, in reading order.
    prompt : str
        The text before any data.
    parent : QWidget, optional
        The parent widget.
    """

    def __init__(self, titles: Sequence[str], prompt: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.canvas = pg.GraphicsLayoutWidget()
        # tight: in a dock of a small screen every pixel between images is one less in them
        self.canvas.ci.setContentsMargins(2, 2, 2, 2)
        self.canvas.ci.layout.setSpacing(2)
        self.items: dict[str, pg.ImageItem] = {}
        self.boxes: dict[str, pg.ViewBox] = {}
        self.labels: dict[str, _Title] = {}
        for k, title in enumerate(titles):
            self.boxes[title], self.items[title], self.labels[title] = image_box(
                self.canvas, title, k // 2, k % 2
            )
        self.info = QLabel(prompt)
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.vbox = QVBoxLayout(self)
        self.vbox.setContentsMargins(2, 2, 2, 2)
        scroll = QScrollArea()
        scroll.setWidget(self.info)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setMinimumHeight(2 * self.info.fontMetrics().lineSpacing())
        self.vbox.addWidget(self.canvas, 3)
        self.vbox.addWidget(scroll, 1)


class StampPanel(_StampGrid):
    """One kernel candidate: its images, its own kernel beside the spatial model, its QA."""

    INPUTS = ("science", "template")
    DIFFERENCES = ("diff (own kernel)", "diff (spatial)")
    KERNELS = ("own kernel", "spatial kernel")
    TITLES = (*INPUTS, *DIFFERENCES, "residual (spatial) / sigma", *KERNELS)

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

        inputs = shared(self.INPUTS, False)
        diffs = shared(self.DIFFERENCES, True)
        for title, item in self.items.items():
            array = images.get(title)
            if title in self.INPUTS:
                show_array(item, array, display.DisplaySettings(stretch="asinh"), inputs)
            elif title in self.DIFFERENCES:
                show_array(item, array, display.default_settings("difference"), diffs)
            elif title in self.KERNELS:
                show_array(item, array, SIGNED)
            else:  # the normalised residual, in sigma
                show_array(item, array, SIGNED.replace(levels="manual", manual=(-5.0, 5.0)))
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
        # the cutouts come first: the profile gets a strip below them (the least heights
        # leave a 1280 x 720 screen's catalog its rows: catalog.MIN_ROWS, and the window
        # room for a taskbar: the dock's least height was most of the window's 674 px)
        self.profile.setMinimumHeight(100)
        self.profile.setMaximumHeight(170)
        self.canvas.setMinimumHeight(150)
        self.profile.setLabel("bottom", "distance from the source (px)")
        self.profile.setLabel("left", "difference")
        # The key above the plot, not a legend inside it: on a 1280 x 720 screen the plot
        # is about 100 px high, and a legend there hid the points it names.
        self.profile.setTitle(
            "o difference pixels&nbsp;&nbsp;&nbsp;<span style='color:#ff4040'>x PSF x flux</span>",
            size="8pt",
        )
        self.profile_points = self.profile.plot([], [], pen=None, symbol="o", symbolSize=4)
        self.profile_model = self.profile.plot(
            [], [], pen=None, symbol="x", symbolSize=5, symbolPen="r"
        )
        self.profile.setToolTip(
            "The difference's pixels around the selected source against their distance from "
            "it, with the difference's PSF scaled to the source's PSF flux: a real point "
            "source follows the model; a residual of a bad subtraction does not"
        )
        self.vbox.insertWidget(2, self.profile, 1)  # as much of the spare height as the text
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
        self.profile.setLabel("left", f"difference [{profile.unit}]")
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
            show_array(item, array, settings, (lo, hi))
            self.ticks[name].setData(*_centre_ticks(*self._centre))
            self.labels[name].setText(f"{name}<br>{lo:.3g} … {hi:.3g}", size="8pt")
