"""The registration line above the tabs: how the template was put on the science grid.

Issue 8 asks the GUI to report what ``metadata.json`` records under ``warp``: the
method, the stars matched and found, the transform (shift, rotation, scale), the
residual RMS of the match (px) and the coverage, per piece when the template came in
pieces. The line turns warning-coloured when the WCS was refined on stars, when images
were taken as aligned without stars, or when the registration carries notes.
"""

from __future__ import annotations

import html
import math

import numpy as np
from PyQt6.QtWidgets import QLabel

from diffviewer.engine.register import Registration
from diffviewer.engine.warp import Piece, WarpResult
from diffviewer.gui.warnings_banner import WARN_STYLE
from diffviewer.results import SavedTemplate

#: Methods whose line is warning-coloured (the user should look at the result).
WARN_METHODS = ("wcs refined on stars", "none")
#: The template on the science grid: of a run, or of a saved run (with what it recorded).
Placed = WarpResult | SavedTemplate
PLAIN_STYLE = "background: #e8f0fa; color: #1b3350; padding: 3px;"
#: Pieces shown a line each from the start; more are folded behind a link.
MAX_UNFOLDED_PIECES = 3


def transform_summary(reg: Registration, shape: tuple[int, int]) -> str:
    """The fitted transform as shift at the image centre (px), rotation (deg) and scale.

    Parameters
    ----------
    reg : Registration
        The registration; its ``transform`` maps science px to template px.
    shape : tuple of int
        Science image (ny, nx): the shift is given at its centre.

    Returns
    -------
    str
        E.g. ``shift (+1.23, -0.40) px, rotation +0.012 deg, scale 1.00003`` (template
        px less science px at the centre; "x mirrored, then" before the rotation of a
        flipped template), said to be a check only when the fit was not applied (the
        WCSs, or one pixel grid, were used), or what was used instead of a fit.
    """
    if reg.transform is None:
        return "WCS mapping (no star fit)" if reg.method == "wcs" else "identity (no fit)"
    cy, cx = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
    tx, ty = reg.transform(np.array([cx]), np.array([cy]))
    coef = reg.transform.coefficients
    (a, b), (d, e) = coef[0, 1:3], coef[1, 1:3]  # x' = c + a x + b y, y' = f + d x + e y
    flipped = a * e - b * d < 0
    if flipped:  # x mirrored first: the rotation is that of the mirrored map
        a, d = -a, -d
    rotation = math.degrees(math.atan2(d - b, a + e))
    scale = math.sqrt(abs(a * e - b * d))
    order = " (quadratic terms at the centre)" if reg.transform.order >= 2 else ""
    fitted = (
        f"shift ({float(tx[0]) - cx:+.2f}, {float(ty[0]) - cy:+.2f}) px, "
        f"{'x mirrored, then ' if flipped else ''}rotation {rotation:+.3f} deg, "
        f"scale {scale:.5f}{order}"
    )
    if reg.applied:
        return fitted
    # The star fit only checked what was used (within its errors of it).
    used = "WCS mapping" if reg.method == "wcs" else "one pixel grid"
    return f"{used} used; the star fit that checked it, not applied: {fitted}"


def registration_summary(reg: Registration, coverage: float, shape: tuple[int, int]) -> str:
    """One registration in a line: method, stars matched / found, transform, RMS, coverage."""
    rms = (
        f"stars' RMS about the mapping used {reg.rms:.3f} px"
        if math.isfinite(reg.rms)
        else "RMS n/a"
    )
    return (
        f"{reg.method}; {reg.n_matched} stars matched of {reg.n_science_stars} science / "
        f"{reg.n_template_stars} template; {transform_summary(reg, shape)}; {rms}; "
        f"coverage {100.0 * coverage:.1f} %"
    )


def piece_photometry(piece: Piece) -> str:
    """What the combination did to a piece's pixels, as ``metadata.json`` ``warp.pieces``
    records it: its PSF's FWHM on the science grid, its zero point and the factor that put
    it on the combined template's, the sky offset subtracted (each only when there is one
    to say); empty when there is none, or when the piece was not used (no data on the
    science grid: nothing was done to it)."""
    if piece.coverage <= 0:
        return ""
    parts = []
    if math.isfinite(piece.fwhm):
        parts.append(f"FWHM {piece.fwhm:.2f} px")
    if piece.zero_point is not None:
        scaled = f" (pixels x {piece.flux_scale:.4g})" if piece.flux_scale != 1.0 else ""
        parts.append(f"zero point {piece.zero_point:g}{scaled}")
    if piece.sky_offset != 0.0:
        parts.append(
            f"sky offset {piece.sky_offset:+.3g} +- {piece.sky_offset_error:.2g} subtracted"
        )
    return "; " + ", ".join(parts) if parts else ""


def _registrations(warp: Placed) -> list[Registration]:
    """Each piece's registration, else the one template's (none from an older saved run)."""
    if warp.pieces:
        return [p.registration for p in warp.pieces]
    return [warp.registration] if warp.registration is not None else []


def _used_registrations(warp: Placed) -> list[Registration]:
    """:func:`_registrations` of the pieces the combination used (some coverage): an
    unused piece's notes are not among the run's warnings (its own says it was not used)."""
    if warp.pieces:
        return [p.registration for p in warp.pieces if p.coverage > 0]
    return _registrations(warp)


def needs_attention(warp: Placed) -> bool:
    """Whether any piece used was refined on stars, taken as aligned, or carries notes."""
    return any(r.method in WARN_METHODS or r.notes for r in _used_registrations(warp))


def registration_notes(warp: Placed) -> list[str]:
    """The notes of every used piece's registration (each is among the run's warnings too)."""
    return [note for reg in _used_registrations(warp) for note in reg.notes]


def registration_lines(warp: Placed) -> list[str]:
    """The registration of a run as plain lines: one for a whole template; for pieces,
    the total coverage then one line per piece; last, how many notes the registration
    left among the run's warnings (shown there, in the banner, not twice)."""
    shape = warp.exposure.shape
    regs = _registrations(warp)
    if len(regs) == 1:
        lines = [registration_summary(regs[0], warp.coverage, shape)]
    else:
        lines = [f"{len(warp.pieces)} template pieces, coverage {100.0 * warp.coverage:.1f} %"]
        lines += [
            f"piece {i + 1}: {registration_summary(p.registration, p.coverage, shape)}"
            + piece_photometry(p)
            for i, p in enumerate(warp.pieces)
        ]
    notes = len(registration_notes(warp))
    if notes:
        lines.append(f"{notes} note{'s' if notes > 1 else ''} on it among the run's warnings")
    return lines


class RegistrationLine(QLabel):
    """A compact label showing :func:`registration_lines` (hidden before a run).

    A template in more than :data:`MAX_UNFOLDED_PIECES` pieces is folded to its first line (how
    many pieces, the coverage), the notes' count and a link "… each piece's
    registration: show"; unfolded (fewer pieces: from the start), a line per piece.
    Nothing is cut without a cue (a line capped at four lines of text once hid the third
    piece of three, and the second piece's RMS and coverage).
    """

    def __init__(self) -> None:
        super().__init__()
        self.setWordWrap(True)
        self.setStyleSheet(PLAIN_STYLE)
        #: Whether the line is warning-coloured.
        self.attention = False
        self.unfolded = False
        self._lines: list[str] = []
        self._sources: tuple[str, ...] = ()
        self._pieces = 0
        self.linkActivated.connect(self._on_link)
        self.hide()

    def show_warp(self, warp: Placed | None) -> None:
        """Show a run's registration (None, or a saved run that recorded none, hides it)."""
        if warp is None or warp.registration is None:
            self.hide()
            return
        sources = tuple(p.source for p in warp.pieces) if len(_registrations(warp)) > 1 else ()
        if sources != self._sources:  # a re-run of the same pieces keeps the user's choice
            self.unfolded = len(sources) <= MAX_UNFOLDED_PIECES
        self._lines = [html.escape(line) for line in registration_lines(warp)]
        self._sources = sources
        self._pieces = len(sources)
        self.attention = needs_attention(warp)
        self.setStyleSheet(WARN_STYLE if self.attention else PLAIN_STYLE)
        named = [f"piece {i + 1}: {p.source}" for i, p in enumerate(warp.pieces)]
        self.setToolTip("\n".join(registration_lines(warp) + registration_notes(warp) + named))
        self._draw()
        self.show()

    def _on_link(self, link: str) -> None:
        self.unfolded = link == "unfold"
        self._draw()

    def _draw(self) -> None:
        lines = self._lines
        if self._pieces > MAX_UNFOLDED_PIECES and self.unfolded:
            lines = [*lines, "<a href='fold'>show fewer</a>"]
        elif self._pieces > MAX_UNFOLDED_PIECES:
            # the first line (pieces, coverage) and the notes' count, if any
            rest = lines[1 + self._pieces :]
            lines = [
                f"{lines[0]} <a href='unfold'>… each piece's registration "
                f"({self._pieces}): show</a>",
                *rest,
            ]
        self.setText("<b>Registration:</b> " + "<br>".join(lines))
