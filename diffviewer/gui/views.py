"""Image views: one panel per image, linked pan/zoom, a shared crosshair, blink.

Every panel is a pyqtgraph ``ViewBox`` holding a row-major ``ImageItem`` (float32,
NaN-free, explicit levels, a 256-entry uint8 LUT from :mod:`diffviewer.display`), a
mask overlay, a crosshair and whatever marker overlays the window adds, beside a
``HistogramLUTItem`` whose handles set the levels. All panels share the first one's
x and y ranges (``setXLink``/``setYLink``), so panning or zooming one moves all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QPointF, QRectF, QSize, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QColor, QPen, QResizeEvent
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGraphicsRectItem,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMenu,
    QSizePolicy,
    QSpinBox,
    QStackedWidget,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
    QWidgetAction,
)

from diffviewer import display

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

_CROSSHAIR_PEN = pg.mkPen((255, 255, 0, 160), width=1, style=Qt.PenStyle.DashLine)
# Colour-bar stops shown in the histogram's gradient (the image itself uses the full LUT).
_BAR_STOPS = 16


# The histogram beside a view covers the display levels widened by this fraction of their
# width on each side, in this many bins, from about this many pixels per axis (a regular
# subsample: the shape of the histogram, not exact counts, is what the eye reads).
_HIST_MARGIN = 0.5
_HIST_BINS = 200
_HIST_PIXELS = 400


def _finite_range(image: np.ndarray) -> tuple[float, float]:
    """Levels of an image shown without its own: the range of its pixels with data."""
    if not np.isfinite(image).any():
        return 0.0, 1.0
    return float(np.nanmin(image)), float(np.nanmax(image)) + 1e-9


class LevelsImageItem(pg.ImageItem):
    """An image item whose histogram spans its display levels (plus a margin), not the
    data's full range: with the full range of a star field (sky at 500, stars at 60000),
    the sky and the level handles crowd into one bin at the bottom."""

    def getHistogram(
        self, *args: object, **kwargs: object
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.image is None or self.levels is None or self.image.ndim != 2:
            return None, None
        lo, hi = (float(v) for v in self.getLevels())
        margin = _HIST_MARGIN * (hi - lo)
        step = max(1, int(np.ceil(max(self.image.shape) / _HIST_PIXELS)))
        counts, edges = np.histogram(
            self.image[::step, ::step], bins=_HIST_BINS, range=(lo - margin, hi + margin)
        )
        return edges[:-1], counts


#: Characters of a title's shortened part kept at least, half from each end: below that
#: the title's end gives way instead ("2026-12-…_kept_run" still names a folder).
PART_FLOOR = 16


class ElidedTitle(QLabel):
    """A view's title, in bold, whose named part gives way first when its width cannot hold
    it whole: shortened in the middle ("…"), the rest kept. A saved run's folder name in
    "A: kept saved run <folder>, config <digest>" keeps its start and end; where even
    :data:`PART_FLOOR` characters of it leave no room for the rest, the title's end is
    cut instead (with "…"). The tooltip then holds the whole.

    Its size hint is the whole title's: a title shown whole fills at least its hint.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTextFormat(Qt.TextFormat.PlainText)  # a folder name is text, not markup
        font = self.font()
        font.setBold(True)
        self.setFont(font)
        self._title = ""
        self._part = ""
        self._tip = ""

    def set_title(self, title: str, part: str = "", tip: str = "") -> None:
        """Show ``title``; ``part`` of it (its first occurrence; the whole title when empty
        or absent) gives way first; ``tip`` is the tooltip (while the title is shortened,
        the whole title when empty)."""
        self._title = title
        self._part = part if part and part in title else title
        self._tip = tip
        self.updateGeometry()
        self._fit()

    def sizeHint(self) -> QSize:
        """The whole title's size (the text shown may be shortened)."""
        hint = super().sizeHint()
        margins = self.contentsMargins()
        width = self.fontMetrics().horizontalAdvance(self._title)
        return QSize(width + margins.left() + margins.right() + 2 * self.margin(), hint.height())

    def resizeEvent(self, event: QResizeEvent | None) -> None:
        """Shorten the title anew for the new width."""
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        metrics = self.fontMetrics()
        room = self.contentsRect().width() - 2 * self.margin()
        if metrics.horizontalAdvance(self._title) <= room:
            self.setText(self._title)
            self.setToolTip(self._tip)
            return
        head, _, tail = self._title.partition(self._part)
        part, half = self._part, PART_FLOOR // 2
        floor = part if len(part) <= PART_FLOOR else f"{part[:half]}…{part[-half:]}"
        middle = max(room - metrics.horizontalAdvance(head + tail), 0)
        middle = max(middle, metrics.horizontalAdvance(floor))
        short = metrics.elidedText(part, Qt.TextElideMode.ElideMiddle, middle)
        text = metrics.elidedText(head + short + tail, Qt.TextElideMode.ElideRight, room)
        self.setText(text)
        self.setToolTip(self._tip or self._title)


def link_to(view: pg.ViewBox, master: pg.ViewBox) -> None:
    """Make ``view`` share the x and y ranges of ``master`` (it mirrors, master keeps aspect)."""
    view.setAspectLocked(False)
    view.setXLink(master)
    view.setYLink(master)


class ImagePanel(QWidget):
    """One image with its display controls, histogram, crosshair and overlays.

    Parameters
    ----------
    name : str
        View name (``science``, ``difference``, ...).
    title : str
        Title shown above the image.

    Signals
    -------
    settings_changed(str)
        The level mode changed and levels must be recomputed (argument: view name).
    display_changed
        The levels, stretch or colour map shown changed (a view shown at another's
        display follows it: the A/B panel's B).
    hovered(float, float)
        The cursor is over (x, y) in pixel coordinates.
    """

    settings_changed = pyqtSignal(str)
    display_changed = pyqtSignal()
    hovered = pyqtSignal(float, float)

    def __init__(self, name: str, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.settings = display.default_settings(name)
        self._data: np.ndarray | None = None
        #: The mask whose planes the mask overlay shows, when it shows one mask's every plane
        #: (the mask view; :func:`~diffviewer.gui.overlays.show_mask`).
        self.overlay_mask: np.ndarray | None = None
        self._setting_levels = False

        self.canvas = pg.GraphicsLayoutWidget()
        self.canvas.ci.setContentsMargins(0, 0, 0, 0)
        self.view = self.canvas.addViewBox(row=0, col=0, lockAspect=True, enableMenu=False)
        self.view.setDefaultPadding(0.0)
        self.view.disableAutoRange()  # ranges are set explicitly (and shared through links)
        self.image = LevelsImageItem(axisOrder="row-major")
        self.image.setAutoDownsample(True)
        # Under the image, its size: seen where a pixel has no data (drawn transparent).
        self.blank_item = QGraphicsRectItem()
        self.blank_item.setBrush(QColor(*display.NO_DATA_COLOUR))
        self.blank_item.setPen(QPen(Qt.PenStyle.NoPen))
        self.blank_item.setZValue(-1)
        self.view.addItem(self.blank_item)
        self.view.addItem(self.image)
        self.mask_item = pg.ImageItem(axisOrder="row-major")
        self.mask_item.setZValue(5)
        self.view.addItem(self.mask_item)
        self.hist = pg.HistogramLUTItem(image=self.image)
        # computed when shown (_sync_hist), not on every new image (twice, with our own call)
        self.image.sigImageChanged.disconnect(self.hist.imageChanged)
        self.hist.gradient.showTicks(False)
        self.hist.vb.setMaximumWidth(60)
        self.canvas.addItem(self.hist, row=0, col=1)  # removed until asked for
        self.hist.sigLevelChangeFinished.connect(self._on_handles_moved)
        self.vline = pg.InfiniteLine(angle=90, movable=False, pen=_CROSSHAIR_PEN)
        self.hline = pg.InfiniteLine(angle=0, movable=False, pen=_CROSSHAIR_PEN)
        for line in (self.vline, self.hline):
            line.setZValue(20)
            self.view.addItem(line, ignoreBounds=True)
        self.canvas.scene().sigMouseMoved.connect(self._on_mouse_moved)

        self.title = ElidedTitle()
        self.set_title(title)
        self.levels_box = QComboBox()
        self.levels_box.addItems(list(display.LEVEL_MODES))
        self.levels_box.setToolTip(
            "Display levels: zscale, central percentile, min/max, or "
            "manual (drag the histogram handles)"
        )
        self.stretch_box = QComboBox()
        self.stretch_box.addItems(list(display.STRETCHES))
        self.stretch_box.setToolTip("Stretch between the black and white points")
        self.cmap_box = QComboBox()
        self.cmap_box.addItems(list(display.COLORMAPS))
        self.cmap_box.setToolTip("Colour map")
        self.soft_label = QLabel("asinh softening")
        self.soft_box = QDoubleSpinBox()
        self.soft_box.setRange(0.001, 1.0)
        self.soft_box.setDecimals(3)
        self.soft_box.setSingleStep(0.02)
        self.soft_box.setToolTip(
            "asinh softening a, as a fraction of the black-to-white interval: "
            "asinh(t/a)/asinh(1/a); smaller lifts fainter sky, 1 is nearly linear"
        )
        self.symmetric_box = QCheckBox("±")
        self.symmetric_box.setToolTip("Levels symmetric around zero")
        self.hist_box = QCheckBox("histogram and level handles")
        self.hist_box.setToolTip("Show the histogram with level handles beside the image")
        self.hist_box.toggled.connect(self._show_hist)
        self._show_hist(False)  # on demand: the image is the largest thing in its cell
        self._sync_controls()
        for box in (self.levels_box, self.stretch_box, self.cmap_box):
            box.currentTextChanged.connect(self._on_controls)
        self.symmetric_box.toggled.connect(self._on_controls)
        self.soft_box.valueChanged.connect(self._on_controls)

        # The display controls live in a menu behind one small button, so a narrow cell
        # (1280 px wide screens) keeps the whole title and the image its full width.
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.title.setMinimumWidth(60)
        form_widget = QWidget()
        form = QFormLayout(form_widget)
        form.setContentsMargins(6, 6, 6, 6)
        form.addRow("levels", self.levels_box)
        form.addRow("stretch", self.stretch_box)
        form.addRow(self.soft_label, self.soft_box)
        form.addRow("colour map", self.cmap_box)
        form.addRow(self.symmetric_box)
        form.addRow(self.hist_box)
        menu = QMenu(self)
        holder = QWidgetAction(menu)
        holder.setDefaultWidget(form_widget)
        menu.addAction(holder)
        self.display_button = QToolButton()
        self.display_button.setText("display ▾")
        self.display_button.setToolTip("Levels, stretch, colour map, histogram of this view")
        self.display_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.display_button.setMenu(menu)
        self.display_button.setAutoRaise(True)
        bar = QHBoxLayout()
        bar.setContentsMargins(2, 0, 2, 0)
        bar.addWidget(self.title, 1)
        bar.addWidget(self.display_button)
        self.bar = bar
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addLayout(bar)
        layout.addWidget(self.canvas, 1)
        self._apply_lut()

    # -- data and display ---------------------------------------------------------------

    @property
    def data(self) -> np.ndarray | None:
        """The array shown (display-ready float32, NaN where a pixel has no data), or None."""
        return self._data

    def set_title(self, title: str, part: str = "", tip: str = "") -> None:
        """Change the title above the image; ``part`` of it gives way first to a narrow
        view, ``tip`` is its tooltip (:meth:`ElidedTitle.set_title`)."""
        self.title_text = title
        self.title.set_title(title, part, tip)

    def set_image(
        self, image: np.ndarray | None, levels: tuple[float, float] | None = None
    ) -> None:
        """Show a display-ready image with explicit levels (None clears the view)."""
        self._data = image
        # nothing to point at in an empty view (a failed first run left a crosshair at 0)
        for item in (self.blank_item, self.vline, self.hline):
            item.setVisible(image is not None)
        if image is None:
            self.image.clear()
            return
        self.blank_item.setRect(QRectF(-0.5, -0.5, image.shape[1], image.shape[0]))
        lv = levels if levels is not None else _finite_range(image)
        self.image.setImage(image, autoLevels=False)
        # after the image: levels the histogram set before any image are applied by setImage
        self.image.setLevels(lv)
        # Pixel centres at integer view coordinates: view (x, y) is pixel (x, y), 0-based.
        self.image.setRect(QRectF(-0.5, -0.5, image.shape[1], image.shape[0]))
        self._sync_hist()

    def set_levels(self, levels: tuple[float, float]) -> None:
        """Set the black and white points (image units)."""
        self.image.setLevels(levels)
        self._sync_hist()
        self.display_changed.emit()

    def levels_for(self, levels: tuple[float, float] | None) -> tuple[float, float] | None:
        """The levels to show a new image at: those the user set by hand (manual mode),
        else ``levels`` (the image's default ones)."""
        if self.settings.levels == "manual" and self.settings.manual:
            return self.settings.manual
        return levels

    def wants_own_levels(self) -> bool:
        """Whether a new image shown at its default levels needs levels computed for this
        view's level mode (one the user chose, not the view's default nor manual)."""
        default = display.default_settings(self.name)
        chosen = (self.settings.levels, self.settings.symmetric)
        return self.settings.levels != "manual" and chosen != (default.levels, default.symmetric)

    def _sync_hist(self) -> None:
        """Handles on the levels, and the histogram around them while it is shown (it is
        computed when shown: a hidden one costs nothing per new image)."""
        self._setting_levels = True
        try:
            if self.hist_box.isChecked():
                self.hist.imageChanged()
            else:
                self.hist.region.setRegion(self.image.getLevels())
        finally:
            self._setting_levels = False

    def set_mask_overlay(self, rgba: np.ndarray | None) -> None:
        """Show an RGBA mask overlay (from :func:`diffviewer.display.mask_overlay`), or none."""
        if rgba is None:
            self.mask_item.clear()
            return
        self.mask_item.setImage(rgba, autoLevels=False, levels=None)
        self.mask_item.setRect(QRectF(-0.5, -0.5, rgba.shape[1], rgba.shape[0]))

    def levels(self) -> tuple[float, float]:
        """Current black and white points."""
        lo, hi = self.image.getLevels()
        return float(lo), float(hi)

    def lut(self) -> np.ndarray:
        """The LUT of the current stretch and colour map (uint8, VIEW_LUT_SIZE x 4)."""
        return display.make_lut(
            self.settings.stretch,
            self.settings.cmap,
            symmetric=self.settings.symmetric,
            n=display.VIEW_LUT_SIZE,
            softening=self.settings.softening,
        )

    def set_settings(self, settings: display.DisplaySettings) -> None:
        """Change stretch/colour map/levels mode; asks for new levels when they depend on it."""
        old = self.settings
        self.settings = settings
        self._sync_controls()
        self._apply_lut()
        before = (old.levels, old.symmetric, old.manual)
        if before != (settings.levels, settings.symmetric, settings.manual):
            self.settings_changed.emit(self.name)
        self.display_changed.emit()

    def _show_hist(self, on: bool) -> None:
        """Show the histogram column beside the image, or give its room to the image."""
        layout = self.canvas.ci
        if on and self.hist.scene() is None:
            layout.addItem(self.hist, row=0, col=1)
        elif not on and self.hist.scene() is not None:
            layout.removeItem(self.hist)
        self.hist.setVisible(on)
        if self._data is not None:
            self._sync_hist()

    def _apply_lut(self) -> None:
        lut = self.lut()
        stops = np.linspace(0, len(lut) - 1, _BAR_STOPS).round().astype(int)
        self.hist.gradient.setColorMap(pg.ColorMap(np.linspace(0.0, 1.0, _BAR_STOPS), lut[stops]))
        self.hist.gradient.showTicks(False)
        self.image.setLookupTable(lut)

    def _sync_controls(self) -> None:
        boxes = (
            self.levels_box,
            self.stretch_box,
            self.cmap_box,
            self.symmetric_box,
            self.soft_box,
        )
        for box in boxes:
            box.blockSignals(True)
        self.soft_box.setValue(self.settings.softening)
        for widget in (self.soft_label, self.soft_box):  # the whole row: label and box
            widget.setVisible(self.settings.stretch == "asinh")
        self.levels_box.setCurrentText(self.settings.levels)
        self.stretch_box.setCurrentText(self.settings.stretch)
        self.cmap_box.setCurrentText(self.settings.cmap)
        self.symmetric_box.setChecked(self.settings.symmetric)
        for box in boxes:
            box.blockSignals(False)

    def _on_controls(self, *args: object) -> None:
        mode = self.levels_box.currentText()
        manual = self.levels() if mode == "manual" else None
        self.set_settings(
            display.DisplaySettings(
                levels=mode,
                stretch=self.stretch_box.currentText(),
                cmap=self.cmap_box.currentText(),
                symmetric=self.symmetric_box.isChecked(),
                manual=manual,
                softening=self.soft_box.value(),
            )
        )

    def _on_handles_moved(self, *args: object) -> None:
        if self._setting_levels or self._data is None:
            return
        lo, hi = self.hist.getLevels()
        self.settings = self.settings.replace(
            levels="manual", manual=(float(lo), float(hi)), symmetric=False
        )
        self._sync_controls()
        self._apply_lut()
        self._sync_hist()  # re-centre the histogram on the dragged levels
        self.display_changed.emit()

    # -- navigation and cursor ----------------------------------------------------------

    def set_crosshair(self, x: float, y: float) -> None:
        """Move the crosshair to (x, y)."""
        self.vline.setPos(x)
        self.hline.setPos(y)

    def centre_on(self, x: float, y: float, half_width: float | None = None) -> None:
        """Centre the view on (x, y), keeping the zoom unless ``half_width`` (px) is given."""
        (x0, x1), (y0, y1) = self.view.viewRange()
        hx = half_width if half_width is not None else (x1 - x0) / 2
        hy = half_width if half_width is not None else (y1 - y0) / 2
        self.view.setRange(xRange=(x - hx, x + hx), yRange=(y - hy, y + hy), padding=0)

    def view_centre(self) -> tuple[float, float]:
        """Centre of the visible area (px)."""
        (x0, x1), (y0, y1) = self.view.viewRange()
        return (x0 + x1) / 2, (y0 + y1) / 2

    def zoom(self) -> float:
        """Screen pixels per image pixel."""
        (x0, x1), _ = self.view.viewRange()
        return float(self.view.width()) / (x1 - x0)

    def show_at(self, x: float, y: float, zoom: float) -> None:
        """Centre the view on (x, y) at ``zoom`` screen pixels per image pixel.

        Parameters
        ----------
        x, y : float
            The centre, in pixel coordinates.
        zoom : float
            Screen pixels per image pixel (1: DS9's "zoom 1").
        """
        hx = float(self.view.width()) / zoom / 2
        hy = float(self.view.height()) / zoom / 2
        self.view.setRange(xRange=(x - hx, x + hx), yRange=(y - hy, y + hy), padding=0)

    def _scene_to_pixel(self, pos: QPointF) -> tuple[float, float] | None:
        if not self.view.sceneBoundingRect().contains(pos):
            return None
        p = self.view.mapSceneToView(pos)
        return p.x(), p.y()

    def _on_mouse_moved(self, pos: QPointF) -> None:
        xy = self._scene_to_pixel(pos)
        if xy is not None:
            self.hovered.emit(*xy)


class ImageArea(QWidget):
    """The linked image panels, as a grid or as tabs, with a blink panel.

    Parameters
    ----------
    views : sequence of (str, str)
        View names and titles.

    Signals
    -------
    hovered(float, float)
        The cursor is over (x, y) in any panel.
    blinking(bool)
        The blink timer started (True) or stopped (False).
    """

    hovered = pyqtSignal(float, float)
    blinking = pyqtSignal(bool)

    def __init__(self, views: Sequence[tuple[str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.panels: dict[str, ImagePanel] = {}
        for name, title in views:
            self.panels[name] = ImagePanel(name, title)
        self.blink = ImagePanel("blink", "Blink")
        # DS9's lock scale: the blinked frames share levels, so a change of brightness shows
        self.blink.levels_box.setEnabled(False)
        self.blink.levels_box.setToolTip(
            "Every blinked frame is shown at the first frame's levels (those of its view), "
            "or at levels dragged on this panel's histogram"
        )
        # pyqtgraph links run both ways; if every linked view also locked its aspect, each
        # would widen the shared range to fit its own shape, back and forth. So only the
        # master keeps square pixels and the others (equal grid cells or tabs) mirror its
        # range. The blink panel, shaped differently, is synchronised on entering and
        # leaving blink mode instead.
        master = self.master
        for panel in self.panels.values():
            if panel.view is not master:
                link_to(panel.view, master)
        for panel in [*self.panels.values(), self.blink]:
            panel.hovered.connect(self._on_hover)
        self._visible: list[str] = list(self.panels)
        self.spare_box = QComboBox()
        self.spare_box.setToolTip("The view in this cell (shown on demand)")
        self.spare_box.currentIndexChanged.connect(self._place)
        self.grid_page = QWidget()
        self.grid = QGridLayout(self.grid_page)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(2)
        self.tabs = QTabWidget()
        self.blink_frames: list[str] = ["science", "matched", "difference"]
        self._blink_index = 0
        self.blink_timer = QTimer(self)
        self.blink_timer.setInterval(500)
        self.blink_timer.timeout.connect(self.step_blink)
        self.blink_rate = QSpinBox()
        self.blink_rate.setRange(100, 5000)
        self.blink_rate.setSingleStep(100)
        self.blink_rate.setSuffix(" ms")
        self.blink_rate.setValue(500)
        self.blink_rate.setToolTip("Blink interval")
        self.blink_rate.valueChanged.connect(self.blink_timer.setInterval)
        blink_page = QWidget()
        blink_layout = QVBoxLayout(blink_page)
        blink_layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("K: next frame · Ctrl+K: blink on/off · rate"))
        row.addWidget(self.blink_rate)
        row.addStretch(1)
        blink_layout.addLayout(row)
        blink_layout.addWidget(self.blink, 1)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.grid_page)
        self.stack.addWidget(self.tabs)
        self.stack.addWidget(blink_page)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.stack)
        self.mode = "grid"
        self._place()

    # -- layout -------------------------------------------------------------------------

    def set_visible_views(self, names: Sequence[str]) -> None:
        """Which panels are always shown; the others (variance, mask) are on demand: in
        the grid's spare cell, chosen in its title box, and as tabs."""
        self._visible = [n for n in self.panels if n in names]
        on_demand = [n for n in self.panels if n not in self._visible]
        self.spare_box.blockSignals(True)
        self.spare_box.clear()
        for name in on_demand:
            self.spare_box.addItem(self.panels[name].title_text, name)
        self.spare_box.blockSignals(False)
        self._place()

    def visible_views(self) -> list[str]:
        """Names of the panels shown in the grid (with the spare cell's) or as tabs."""
        if self.mode == "tabs":
            return list(self.panels)
        spare = self.spare_view()
        return self._visible + ([spare] if spare is not None and self.mode == "grid" else [])

    def spare_view(self) -> str | None:
        """The on-demand view in the grid's spare cell (None when the grid has no spare cell)."""
        cols = self._columns()
        if len(self._visible) % cols == 0 or self.spare_box.count() == 0:
            return None
        return str(self.spare_box.currentData())

    def set_spare_view(self, name: str) -> None:
        """Show an on-demand view (``variance``, ``mask``) in the grid's spare cell."""
        index = self.spare_box.findData(name)
        if index >= 0:
            self.spare_box.setCurrentIndex(index)

    def set_mode(self, mode: str) -> None:
        """Show the panels as a ``grid``, as ``tabs``, or the ``blink`` panel (blinking
        stops when another is chosen)."""
        self.mode = mode
        if mode != "blink":
            self._set_blinking(False)
        self._place()

    def _columns(self) -> int:
        return 3 if len(self._visible) > 4 else 2

    def _place(self, *args: object) -> None:
        # Centre and zoom cross between the blink panel and the shared view, not a rectangle:
        # fitted into a view of another shape with square pixels, a rectangle only grows.
        was_blink = self.stack.currentIndex() == 2
        source = self.blink if was_blink else self.master_panel
        centre_zoom = (*source.view_centre(), source.zoom())
        for panel in self.panels.values():
            self.grid.removeWidget(panel)
            panel.setParent(None)
            panel.title.show()
        self.spare_box.setParent(None)
        while self.tabs.count():
            self.tabs.removeTab(0)
        if self.mode == "tabs":
            for panel in self.panels.values():
                self.tabs.addTab(panel, panel.title_text)
            self.stack.setCurrentWidget(self.tabs)
        elif self.mode == "blink":
            self.stack.setCurrentIndex(2)
            self._show_blink_frame()
        else:
            cols = self._columns()
            for i, name in enumerate(self.visible_views()):
                self.grid.addWidget(self.panels[name], i // cols, i % cols)
                self.panels[name].show()
            spare = self.spare_view()
            if spare is not None:  # its title is the box that chooses it
                panel = self.panels[spare]
                panel.title.hide()
                panel.bar.insertWidget(0, self.spare_box, 1)
                self.spare_box.show()
            self.stack.setCurrentWidget(self.grid_page)
        if was_blink != (self.mode == "blink"):
            page = self.stack.currentWidget()
            layout = page.layout() if page is not None else None  # None: tabs size their pages
            if layout is not None:
                layout.activate()  # the view's final size, to zoom it in screen pixels
            target = self.blink if self.mode == "blink" else self.master_panel
            target.show_at(*centre_zoom)
        self._sync_links()

    @property
    def master_panel(self) -> ImagePanel:
        """The panel whose view's range every panel shares (the first)."""
        return next(iter(self.panels.values()))

    @property
    def master(self) -> pg.ViewBox:
        """The view whose range every panel shares."""
        return self.master_panel.view

    def _sync_links(self) -> None:
        """Bring every panel to the master's range (hidden panels miss link updates)."""
        master = self.master
        for panel in self.panels.values():
            if panel.view is not master:
                panel.view.linkedViewChanged(master, pg.ViewBox.XAxis)
                panel.view.linkedViewChanged(master, pg.ViewBox.YAxis)

    # -- blink --------------------------------------------------------------------------

    def step_blink(self) -> None:
        """Show the next blink frame (science, matched template, difference by default)."""
        frames = [f for f in self.blink_frames if self.panels[f].data is not None]
        if not frames:
            return
        self._blink_index = (self._blink_index + 1) % len(frames)
        self._show_blink_frame()

    def toggle_blink(self) -> None:
        """Start or stop blinking at the chosen rate."""
        if not self.blink_timer.isActive() and self.mode != "blink":
            self.set_mode("blink")
        self._set_blinking(not self.blink_timer.isActive())

    def _set_blinking(self, on: bool) -> None:
        """Start or stop the blink timer, and say so (:attr:`blinking`)."""
        if on == self.blink_timer.isActive():
            return
        if on:
            self.blink_timer.start()
        else:
            self.blink_timer.stop()
        self.blinking.emit(on)

    def blink_frame(self) -> str | None:
        """The view shown in the blink panel."""
        frames = [f for f in self.blink_frames if self.panels[f].data is not None]
        return frames[self._blink_index % len(frames)] if frames else None

    def _show_blink_frame(self) -> None:
        name = self.blink_frame()
        if name is None:
            return
        src = self.panels[name]
        self.blink.set_title(f"Blink: {src.title_text}")
        self.blink.set_image(src.data, self.blink_levels())

    def blink_levels(self) -> tuple[float, float] | None:
        """The levels of every blinked frame (DS9's lock scale).

        Returns
        -------
        (float, float) or None
            The levels dragged on the blink panel's histogram, else those of the first
            frame's view (the science view's by default); None when no frame has data.
        """
        settings = self.blink.settings
        if settings.levels == "manual" and settings.manual is not None:
            return settings.manual
        frames = [f for f in self.blink_frames if self.panels[f].data is not None]
        return self.panels[frames[0]].levels() if frames else None

    # -- cursor -------------------------------------------------------------------------

    def _on_hover(self, x: float, y: float) -> None:
        for panel in [*self.panels.values(), self.blink]:
            panel.set_crosshair(x, y)
        self.hovered.emit(x, y)

    def centre_on(self, x: float, y: float, half_width: float | None = None) -> None:
        """Centre every panel on pixel (x, y) (they are linked: one call moves all)."""
        self.master_panel.centre_on(x, y, half_width)
        if self.mode == "blink":
            self.blink.centre_on(x, y, half_width)
        for panel in [*self.panels.values(), self.blink]:
            panel.set_crosshair(x, y)

    def view_centre(self) -> tuple[float, float]:
        """Centre of the shared view, in pixel coordinates."""
        return self.master_panel.view_centre()

    def zoom_fit(self) -> None:
        """Show the whole image (the master panel's) in the shared view."""
        data = self.master_panel.data
        if data is not None:
            ny, nx = data.shape
            self.master.setRange(xRange=(-0.5, nx - 0.5), yRange=(-0.5, ny - 0.5), padding=0)

    def zoom(self) -> float:
        """Screen pixels per image pixel of the shared view."""
        return self.master_panel.zoom()

    def set_zoom(self, zoom: float) -> None:
        """Zoom the shared view to ``zoom`` screen pixels per image pixel (1: DS9's
        "zoom 1"), keeping its centre."""
        self.master_panel.show_at(*self.view_centre(), zoom)
