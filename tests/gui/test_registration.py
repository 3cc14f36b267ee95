"""The registration line of the window (issue 8): method, stars, transform, RMS, coverage."""

from __future__ import annotations

import math

import numpy as np

from diffviewer.engine.register import Registration
from diffviewer.engine.register_fit import PolynomialTransform
from diffviewer.engine.warp import Piece, WarpResult
from diffviewer.exposure import MASK_DTYPE, Exposure
from diffviewer.gui.registration import needs_attention, registration_lines
from diffviewer.gui.window import MainWindow


def _warp(pieces: tuple[Piece, ...], coverage: float) -> WarpResult:
    """A warp result on a 101 x 201 science grid (the arrays play no part in the line)."""
    shape = (101, 201)
    exposure = Exposure(np.zeros(shape), np.ones(shape), np.zeros(shape, MASK_DTYPE))
    return WarpResult(exposure, True, 1.0, coverage, (), pieces[0].registration, pieces)


def _rotated(angle_deg: float, scale: float, shift: tuple[float, float]) -> PolynomialTransform:
    """Science px -> template px: rotation by ``angle_deg`` and ``scale`` about the centre
    (100, 50) of the grid of :func:`_warp`, then ``shift`` (px)."""
    c, s = scale * math.cos(math.radians(angle_deg)), scale * math.sin(math.radians(angle_deg))
    cx, cy = 100.0, 50.0
    matrix = np.array(
        [
            [c, -s, cx - c * cx + s * cy + shift[0]],
            [s, c, cy - s * cx - c * cy + shift[1]],
            [0.0, 0.0, 1.0],
        ]
    )
    return PolynomialTransform.from_matrix(matrix)


def test_lines_give_each_piece_its_transform_stars_rms_and_coverage() -> None:
    stars = Registration("stars", _rotated(0.5, 1.002, (3.25, -1.5)), 80, 75, 61, 0.1234)
    refined = Registration(
        "wcs refined on stars",
        _rotated(-0.25, 0.999, (-2.0, 0.75)),
        40,
        38,
        30,
        0.2,
        notes=("the WCSs disagree by up to 2.10 px",),
    )
    warp = _warp((Piece("a.fits", stars, 0.6), Piece("b.fits", refined, 0.45)), 0.98)
    lines = registration_lines(warp)
    assert lines[0] == "2 template pieces, coverage 98.0 %"
    # the shift is read at the grid's centre, so it is the shift put in, to the printed digit
    assert lines[1] == (
        "piece 1: stars; 61 stars matched of 80 science / 75 template; "
        "shift (+3.25, -1.50) px, rotation +0.500 deg, scale 1.00200; "
        "stars' RMS about the mapping used 0.123 px; "
        "coverage 60.0 %"
    )
    assert "rotation -0.250 deg, scale 0.99900" in lines[2] and "shift (-2.00, +0.75)" in lines[2]
    # the note is in the run's warnings (the banner): the line counts it, not repeats it
    assert lines[3] == "1 note on it among the run's warnings"
    assert needs_attention(warp)
    # one whole template registered by its WCS, confirmed on stars: a single plain line
    whole = Registration("wcs", _rotated(0.0, 1.0, (0.0, 0.0)), 50, 50, 44, 0.05, applied=False)
    plain = _warp((Piece("t.fits", whole, 1.0),), 1.0)
    # (the star fit only checked the WCSs: it is said to be not applied)
    assert registration_lines(plain) == [
        "wcs; 44 stars matched of 50 science / 50 template; WCS mapping used; the star fit "
        "that checked it, not applied: shift (+0.00, +0.00) px, rotation +0.000 deg, "
        "scale 1.00000; stars' RMS about the mapping used 0.050 px; coverage 100.0 %"
    ]
    assert not needs_attention(plain)
    # images taken as aligned without stars: no fit to report, and a warning colour
    aligned = _warp((Piece("t.fits", Registration("none", None, 3, 2, 0, math.nan), 1.0),), 1.0)
    assert "identity (no fit); RMS n/a" in registration_lines(aligned)[0]
    assert needs_attention(aligned)


def test_demo_run_shows_its_registration(demo_window: MainWindow) -> None:
    assert demo_window.outcome is not None
    warp = demo_window.outcome.result.template
    line = demo_window.registration
    assert line.isVisible()
    text = line.text()
    assert text.startswith("<b>Registration:</b> ")
    assert f"coverage {100.0 * warp.coverage:.1f} %" in text
    assert warp.registration.method in text
    assert line.attention == needs_attention(warp)
    # a new pair clears the last pair's registration until its own run ends
    demo_window.open_pair(demo_window.outcome.pair, run=False)
    assert not line.isVisible()


def test_a_mirrored_template_is_said_to_be_mirrored_and_its_rotation_kept() -> None:
    # x mirrored then rotated by 30 degrees: the determinant is -1, and the rotation read
    # off the matrix as for a proper rotation was noise (-35.9 deg for a mirror alone).
    angle = math.radians(30.0)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    matrix = np.eye(3)
    matrix[:2, :2] = rotation @ np.diag([-1.0, 1.0])
    reg = Registration("stars", PolynomialTransform.from_matrix(matrix), 80, 75, 61, 0.1)
    line = registration_lines(_warp((Piece("t.fits", reg, 1.0),), 1.0))[0]
    assert "x mirrored, then rotation +30.000 deg, scale 1.00000" in line


def test_every_piece_is_shown_or_behind_a_link_and_unused_ones_add_no_note(qtbot) -> None:
    from diffviewer.gui.registration import MAX_UNFOLDED_PIECES, RegistrationLine

    # Three pieces in a 1600 px window: the line was capped at four lines of text and
    # hid the third piece (198 stars, RMS 0.344 px, coverage 26.4 %) with no cue (audit).
    fit = Registration("stars", _rotated(0.1, 1.0, (1.0, 2.0)), 80, 75, 61, 0.1234)
    used = [Piece(f"p{k}.fits", fit, 0.3) for k in range(MAX_UNFOLDED_PIECES)]
    line = RegistrationLine()
    qtbot.addWidget(line)
    line.resize(300, 40)  # narrow: every line wraps
    line.show_warp(_warp(tuple(used), 0.9))
    for k in range(1, MAX_UNFOLDED_PIECES + 1):
        assert f"piece {k}: stars; 61 stars matched" in line.text()
    assert line.maximumHeight() > 10_000  # not capped: the layout gives it its height
    # more pieces: folded behind a link naming how many, every one shown on unfolding
    many = [Piece(f"p{k}.fits", fit, 0.2) for k in range(MAX_UNFOLDED_PIECES + 2)]
    line.show_warp(_warp(tuple(many), 0.95))
    assert "piece 1:" not in line.text() and f"registration ({len(many)}): show" in line.text()
    line.linkActivated.emit("unfold")
    assert f"piece {len(many)}: stars" in line.text() and "show fewer" in line.text()
    line.show_warp(_warp(tuple(many), 0.95))  # a re-run of the same pieces: still open
    assert f"piece {len(many)}: stars" in line.text()
    others = [Piece(f"q{k}.fits", fit, 0.2) for k in range(len(many))]
    line.show_warp(_warp(tuple(others), 0.95))  # another pair's as many pieces: folded
    assert "piece 1:" not in line.text()
    # a piece the combination did not use (no data on the science grid): its WCS notes
    # are not among the run's warnings, so the line neither counts them nor warns
    off = Registration("wcs", None, 80, 0, 0, math.nan, notes=("the WCSs disagree",))
    line.show_warp(_warp((Piece("a.fits", fit, 0.6), Piece("far.fits", off, 0.0)), 0.6))
    assert "note" not in line.text() and not line.attention


def test_each_pieces_line_says_what_the_combination_did_to_its_pixels() -> None:
    # The pieces' zero points, flux scales, sky offsets and FWHMs were in metadata.json
    # only (audit: a piece of MAGZP 27.5 multiplied by 0.631, another's sky moved by
    # -0.156 counts, with nothing on screen).
    fit = Registration("stars", _rotated(0.1, 1.0, (1.0, 2.0)), 80, 75, 61, 0.1234)
    plain = Piece("a.fits", fit, 0.6, 27.0, 1.0, 0.0, 0.0, True, 3.44)
    scaled = Piece("b.fits", fit, 0.4, 27.5, 10 ** (0.4 * (27.0 - 27.5)), -0.083, 0.053, True, 4.1)
    lines = registration_lines(_warp((plain, scaled), 0.98))
    assert lines[1].endswith("coverage 60.0 %; FWHM 3.44 px, zero point 27")
    unused = Piece("c.fits", fit, 0.0, 27.5, 0.631, 0.0, 0.0, True)  # nothing done to it
    assert registration_lines(_warp((plain, unused), 0.6))[2].endswith("coverage 0.0 %")
    assert lines[2].endswith(
        "coverage 40.0 %; FWHM 4.10 px, zero point 27.5 (pixels x 0.631), "
        "sky offset -0.083 +- 0.053 subtracted"
    )
