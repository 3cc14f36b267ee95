"""The image grid's overlays: kernel-source and DIA-source markers (which DIA sources a
view draws: also the batch review's preview), the selection ring and the chosen kernel
source's square, the mask overlay and its controls, and the cursor readout page.

Colours and shapes come from :mod:`diffviewer.legend` (shared with the DS9 regions).
The overlays know the image area and a run's catalogs; they hold no other state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pyqtgraph as pg
from astropy.table import Table
from PyQt6.QtCore import QObject, Qt, QTimer, pyqtSignal
from PyQt6.QtWidgets import QCheckBox, QGridLayout, QLabel, QSlider, QVBoxLayout, QWidget

from diffviewer import display, legend
from diffviewer.exposure import PLANE_MEANINGS, MaskPlane
from diffviewer.gui import content
from diffviewer.gui.views import ImageArea

#: Views carrying each overlay (the blink panel carries both, whatever frame it shows).
CANDIDATE_VIEWS = ("science", "template", "matched", "difference", "blink")
DIA_VIEWS = ("difference", "score", "blink")
#: Kernel sources are squares (square stamps), DIA sources circles, dipoles diamonds,
#: sky sources crosses, so the overlays on the difference never look alike.
CANDIDATE_SYMBOL = "s"


def dia_spot(dia: Table, i: int, sky: bool = False) -> dict[str, Any]:
    """The marker of DIA source row ``i`` (a pyqtgraph spot dict)."""
    pos = (float(dia["x"][i]), float(dia["y"][i]))
    if sky:  # a blank-sky measurement, not a detection: a small grey cross
        return {
            "pos": pos,
            "data": int(dia["id"][i]),
            "symbol": "x",
            "size": 8,
            "brush": pg.mkBrush(legend.SKY_COLOUR),
            "pen": pg.mkPen(legend.SKY_COLOUR, width=1),
        }
    positive = float(dia["sign"][i]) > 0 if "sign" in dia.colnames else True
    dipole = bool(dia["is_dipole"][i]) if "is_dipole" in dia.colnames else False
    flagged = bool(dia["flagged"][i]) if "flagged" in dia.colnames else False
    colour = (
        legend.DIPOLE_COLOUR
        if dipole
        else (legend.POSITIVE_COLOUR if positive else legend.NEGATIVE_COLOUR)
    )
    pen = pg.mkPen(
        legend.FLAGGED_COLOUR if flagged and not dipole else colour,
        width=2,
        style=Qt.PenStyle.DashLine if flagged else Qt.PenStyle.SolidLine,
    )
    return {
        "pos": pos,
        "data": int(dia["id"][i]),
        "symbol": "d" if dipole else "o",
        "brush": None,
        "pen": pen,
    }


#: Most DIA markers drawn at once: the highest-|S/N| sources within the view, one per
#: MARKER_AREA screen pixels of the image on screen (a 12 px circle every ~45 px keeps the
#: image readable), at least MIN_MARKERS. At fit zoom a busy field (GOTO: 348 sources) would
#: otherwise be covered in circles; zooming in brings the fainter ones back. The area is the
#: image's, not the cell's: a square image in a wide cell (the batch review's preview) left
#: the margins' share of markers on the image, three times too many.
MARKER_AREA = 45 * 45
MIN_MARKERS = 15
#: Milliseconds a zoom or pan has to settle before the markers follow it.
MARKER_SETTLE_MS = 150


def marker_budget(
    width: float,
    height: float,
    view: tuple[float, float, float, float],
    shape: tuple[int, ...],
) -> int:
    """How many DIA markers a view cell shows: one per :data:`MARKER_AREA` screen px of the
    image within it, at least :data:`MIN_MARKERS`.

    Parameters
    ----------
    width, height : float
        The cell's size (screen px).
    view : (float, float, float, float)
        x0, y0, x1, y1 of the area the cell shows (image px).
    shape : tuple of int
        The image's (ny, nx); pixel (x, y) covers x - 0.5 to x + 0.5.

    Returns
    -------
    int
    """
    x0, y0, x1, y1 = view
    if x1 <= x0 or y1 <= y0:
        return MIN_MARKERS
    ny, nx = shape[:2]
    covered_x = max(0.0, min(x1, nx - 0.5) - max(x0, -0.5)) / (x1 - x0)
    covered_y = max(0.0, min(y1, ny - 0.5) - max(y0, -0.5)) / (y1 - y0)
    return max(MIN_MARKERS, int(width * covered_x * height * covered_y / MARKER_AREA))


def marker_rows(
    dia: Table,
    rows: np.ndarray,
    view: tuple[float, float, float, float],
    budget: int,
    keep: int | None = None,
) -> tuple[np.ndarray, int]:
    """The DIA rows to draw: those of ``rows`` inside ``view``, highest |S/N| first, at most
    ``budget`` (plus the row ``keep``, the selected source, wherever it is).

    Parameters
    ----------
    dia : astropy.table.Table
        DIA sources with ``x``, ``y`` and optionally ``snr``.
    rows : numpy.ndarray
        Candidate rows (those passing the catalog filter).
    view : (float, float, float, float)
        x0, y0, x1, y1 of the visible area (px).
    budget : int
        Most markers.
    keep : int, optional
        A row always drawn.

    Returns
    -------
    (numpy.ndarray, int)
        Rows to draw, and how many candidate rows lie in the view.
    """
    x0, y0, x1, y1 = view
    xs, ys = np.asarray(dia["x"], float)[rows], np.asarray(dia["y"], float)[rows]
    inside = rows[(xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)]
    snr = np.abs(np.nan_to_num(np.asarray(dia["snr"], float))) if "snr" in dia.colnames else None
    if snr is not None and inside.size > budget:
        inside_sorted = inside[np.argsort(-snr[inside], kind="stable")]
        chosen = inside_sorted[:budget]
    else:
        chosen = inside[:budget]
    if keep is not None and keep not in chosen:
        chosen = np.append(chosen, keep)
    return np.sort(chosen), int(inside.size)


def marker_note(budget: int, inside: int) -> str:
    """What a view says of the DIA markers it leaves out (empty when it draws them all)."""
    if inside <= budget:
        return ""
    return f"markers: the {budget} of highest |S/N| of {inside} in view; zoom in for more"


def markers_in_view(
    dia: Table,
    rows: np.ndarray,
    box: pg.ViewBox,
    shape: tuple[int, ...],
    source_id: int | None = None,
) -> tuple[np.ndarray, str]:
    """The DIA rows a view draws and its note (:func:`marker_rows`, :func:`marker_note`):
    the catalog filter's rows within the view, the highest |S/N| first, as many as its
    image's area on screen takes (:func:`marker_budget`), and the selected source.

    Parameters
    ----------
    dia : astropy.table.Table
        DIA sources.
    rows : numpy.ndarray
        Rows passing the catalog filter.
    box : pyqtgraph.ViewBox
        The view (its range and size on screen).
    shape : tuple of int
        The shape of the image it shows.
    source_id : int, optional
        The selected source's ``id``: drawn wherever it is.

    Returns
    -------
    (numpy.ndarray, str)
        The rows to draw, and the note saying how many were left out (empty when none).
    """
    rect, size = box.viewRect(), box.boundingRect()
    view = (rect.left(), rect.top(), rect.right(), rect.bottom())
    budget = marker_budget(size.width(), size.height(), view, shape)
    keep = None
    if source_id is not None:
        found = np.flatnonzero(np.asarray(dia["id"]) == source_id)
        keep = int(found[0]) if found.size else None
    chosen, inside = marker_rows(dia, rows, view, budget, keep)
    return chosen, marker_note(budget, inside)


def follow_view(box: pg.ViewBox, redraw: Callable[[], object], parent: QObject) -> QTimer:
    """Call ``redraw`` once a zoom or pan of ``box`` has settled (:data:`MARKER_SETTLE_MS`).

    Returns
    -------
    QTimer
        The single-shot timer each range change restarts (owned by ``parent``).
    """
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(MARKER_SETTLE_MS)
    timer.timeout.connect(redraw)
    box.sigRangeChanged.connect(timer.start)
    return timer


def dia_marks(dia: Table | None, rows: np.ndarray) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The markers of DIA source ``rows`` (:func:`dia_spot`; sky sources as crosses) and
    the segments joining each dipole's lobes (:func:`~diffviewer.gui.content.dipole_segments`);
    none for no catalog (None)."""
    if dia is None or not len(dia) or not len(rows):
        return [], np.zeros((0, 2))
    sky = (
        np.asarray(dia["sky_source"], bool)
        if "sky_source" in dia.colnames
        else np.zeros(len(dia), bool)
    )
    spots = [dia_spot(dia, int(i), bool(sky[i])) for i in rows]
    return spots, content.dipole_segments(dia[rows])


def dia_items(
    tip: Callable[[float, float, Any], str],
) -> tuple[pg.ScatterPlotItem, pg.PlotDataItem]:
    """A view's DIA markers (hover ``tip(x, y, id)``) and the lines joining dipole lobes."""
    lines = pg.PlotDataItem(connect="pairs", pen=pg.mkPen(legend.DIPOLE_COLOUR, width=1))
    lines.setZValue(11)
    item = pg.ScatterPlotItem(pxMode=True, size=12, hoverable=True, tip=tip)
    item.setZValue(12)
    return item, lines


def draw_dia(
    item: pg.ScatterPlotItem, lines: pg.PlotDataItem, marks: tuple[list[dict[str, Any]], np.ndarray]
) -> None:
    """Draw :func:`dia_marks`' markers and dipole lines in a view's :func:`dia_items`."""
    spots, lobes = marks
    item.setData(spots)  # not clear(): see :meth:`Overlays.clear`
    if len(lobes):
        lines.setData(lobes[:, 0], lobes[:, 1])
    else:
        lines.setData([], [])


def candidate_spots(cands: Table) -> list[dict[str, Any]]:
    """The markers of the kernel candidates (squares coloured by status)."""
    if not len(cands):
        return []
    status = np.asarray(cands["status"]).astype(str)
    return [
        {
            "pos": (float(x), float(y)),
            "data": i,
            "symbol": CANDIDATE_SYMBOL,
            "brush": None,
            "pen": pg.mkPen(legend.STATUS_COLOURS.get(s, legend.OTHER_STATUS_COLOUR), width=1.5),
        }
        for i, (x, y, s) in enumerate(
            zip(np.asarray(cands["x"]), np.asarray(cands["y"]), status, strict=True)
        )
    ]


class Overlays(QObject):
    """Markers drawn over the image views of an :class:`ImageArea`.

    Signals
    -------
    candidate_clicked(int)
        A kernel-source marker was clicked (its row in the candidates table).
    dia_clicked(object)
        A DIA-source marker was clicked (its ``id``, a Python int: a Qt ``int`` signal
        holds 32 bits, an id 64).
    """

    candidate_clicked = pyqtSignal(int)
    dia_clicked = pyqtSignal(object)

    def __init__(self, area: ImageArea, tips: Any) -> None:
        super().__init__(area)
        self.area = area
        self.candidate_items: dict[str, pg.ScatterPlotItem] = {}
        self.dia_items: dict[str, pg.ScatterPlotItem] = {}
        self.dipole_lines: dict[str, pg.PlotDataItem] = {}
        self.selection_items: dict[str, pg.ScatterPlotItem] = {}
        #: The kernel source shown in the stamp panel: a larger square, white dashes on
        #: black, seen on a bright star and on the sky alike (two items per view).
        self.chosen_items: dict[str, list[pg.ScatterPlotItem]] = {}
        chosen_pens = (
            pg.mkPen((0, 0, 0), width=4),
            pg.mkPen((255, 255, 255), width=2, style=Qt.PenStyle.DashLine),
        )
        for name, panel in [*area.panels.items(), ("blink", area.blink)]:
            if name in CANDIDATE_VIEWS:
                item = pg.ScatterPlotItem(
                    pxMode=True, size=13, hoverable=True, tip=tips.candidate_tip
                )
                item.setZValue(10)
                item.sigClicked.connect(self._on_candidate_clicked)
                panel.view.addItem(item)
                self.candidate_items[name] = item
                self.chosen_items[name] = []
                for z, pen in enumerate(chosen_pens):
                    chosen = pg.ScatterPlotItem(
                        pxMode=True, size=24, symbol=CANDIDATE_SYMBOL, brush=None, pen=pen
                    )
                    chosen.setZValue(13 + z)
                    panel.view.addItem(chosen)
                    self.chosen_items[name].append(chosen)
            if name in DIA_VIEWS:
                item, lines = dia_items(tips.dia_tip)
                item.sigClicked.connect(self._on_dia_clicked)
                panel.view.addItem(lines)
                panel.view.addItem(item)
                self.dia_items[name], self.dipole_lines[name] = item, lines
            sel = pg.ScatterPlotItem(
                pxMode=True, size=28, symbol="o", brush=None, pen=pg.mkPen((255, 255, 255), width=2)
            )
            sel.setZValue(15)
            panel.view.addItem(sel)
            self.selection_items[name] = sel

    def clear(self) -> None:
        """Remove every marker (a new pair, or a re-run's images replacing the run's).

        Through ``setData``: pyqtgraph's ``ScatterPlotItem.clear`` does not announce its
        geometry change, so a view whose image stays would keep the markers' pixels on
        screen until its next full repaint.
        """
        for item in [
            *self.candidate_items.values(),
            *self.dia_items.values(),
            *self.selection_items.values(),
            *self.chosen_marks(),
        ]:
            item.setData([])
        for lines in self.dipole_lines.values():
            lines.setData([], [])

    def show_candidates(self, cands: Table | None) -> None:
        """Draw the kernel candidates (None: none)."""
        spots = candidate_spots(cands) if cands is not None else []
        for item in self.candidate_items.values():
            item.setData(spots)

    def show_dia(self, dia: Table | None, rows: np.ndarray) -> None:
        """Draw the DIA sources of ``rows`` (None: none) and the lines joining dipole lobes."""
        marks = dia_marks(dia, rows)
        for name, item in self.dia_items.items():
            draw_dia(item, self.dipole_lines[name], marks)

    def mark_selection(self, xy: tuple[float, float] | None) -> None:
        """Ring the selected source on every view (None: no ring)."""
        _mark(self.selection_items.values(), xy)

    def mark_candidate(self, xy: tuple[float, float] | None) -> None:
        """Frame the kernel source shown in the stamp panel on its views (None: none)."""
        _mark(self.chosen_marks(), xy)

    def chosen_marks(self) -> list[pg.ScatterPlotItem]:
        """Every item of the chosen kernel source's mark, over all its views."""
        return [item for items in self.chosen_items.values() for item in items]

    def _on_candidate_clicked(self, item: Any, points: Any, event: Any = None) -> None:
        if len(points):
            self.candidate_clicked.emit(int(points[0].data()))

    def _on_dia_clicked(self, item: Any, points: Any, event: Any = None) -> None:
        if len(points):
            self.dia_clicked.emit(int(points[0].data()))


def _mark(items: Iterable[pg.ScatterPlotItem], xy: tuple[float, float] | None) -> None:
    """Put one marker at ``xy`` in each of ``items`` (None: remove it)."""
    for item in items:
        if xy is None:
            item.setData([])  # not clear(): see :meth:`Overlays.clear`
        else:
            item.setData([xy[0]], [xy[1]])


class ReadoutPage(QWidget):
    """The cursor readout, the mask-overlay controls and the marker legend.

    Signals
    -------
    mask_changed()
        A plane was chosen or the opacity moved.
    """

    mask_changed = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.readout = QLabel("Move the cursor over an image.")
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.readout.setAlignment(Qt.AlignmentFlag.AlignTop)
        layout.addWidget(self.readout)
        layout.addWidget(QLabel("<b>Mask overlay</b>"))
        self.plane_boxes: dict[MaskPlane, QCheckBox] = {}
        planes = QGridLayout()  # two columns: room below for the marker legend
        planes.setSpacing(2)
        for k, plane in enumerate(MaskPlane):
            r, g, b = display.PLANE_COLOURS[plane]
            box = QCheckBox(str(plane.name))
            box.setStyleSheet(f"QCheckBox {{ color: rgb({r // 2}, {g // 2}, {b // 2}); }}")
            box.setToolTip(f"{plane.name}: {PLANE_MEANINGS[plane]}")
            box.toggled.connect(self.mask_changed)
            planes.addWidget(box, k // 2, k % 2)
            self.plane_boxes[plane] = box
        layout.addLayout(planes)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(50)
        self.opacity.setToolTip("Mask overlay opacity")
        self.opacity.valueChanged.connect(self.mask_changed)
        layout.addWidget(QLabel("opacity"))
        layout.addWidget(self.opacity)
        self.legend = QLabel(legend.legend_html())
        self.legend.setWordWrap(True)
        layout.addWidget(self.legend)
        layout.addStretch(1)

    def mask_rgba(self, mask: np.ndarray) -> np.ndarray | None:
        """The overlay of the chosen planes at the chosen opacity (None when none chosen)."""
        chosen = {p: b.isChecked() for p, b in self.plane_boxes.items()}
        if not any(chosen.values()):
            return None
        return display.mask_overlay(mask, chosen, self.opacity.value() / 100)


def show_mask(area: ImageArea, page: ReadoutPage, mask: np.ndarray | None) -> None:
    """The chosen planes over every image view; the mask view shows every plane in its
    colour, opaque, on black where no plane is set (None: no overlay anywhere).

    The mask view's overlay depends on the mask alone: it is made once per mask array
    (0.05-0.1 s on GOTO), not again when a plane is chosen or a run is put back.
    """
    overlay_views(area, page.mask_rgba(mask) if mask is not None else None)
    panel = area.panels["mask"]
    if mask is None or panel.overlay_mask is not mask:
        panel.set_mask_overlay(
            display.mask_overlay(mask, dict.fromkeys(MaskPlane, True), 1.0)
            if mask is not None
            else None
        )
        panel.overlay_mask = mask


def overlay_views(area: ImageArea, rgba: np.ndarray | None) -> None:
    """Draw the chosen planes' overlay (:meth:`ReadoutPage.mask_rgba`; None: none) over
    every view but the mask view, which shows its own."""
    for name, panel in [*area.panels.items(), ("blink", area.blink)]:
        if name != "mask":
            panel.set_mask_overlay(rgba)
