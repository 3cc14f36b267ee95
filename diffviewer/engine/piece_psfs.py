"""Each template piece's PSF width on the science grid, and whether the pieces' differ.

Pieces of different seeing leave the combined template with a PSF that steps at their
seams, which one spatially smooth PSF-matching kernel cannot follow: its compromise
leaves residuals at stars across the pieces, not only along the seam (a 400 px Moffat
field in two pieces of FWHM 2.5 and 3.8 px: 192-218 DIA sources, 29-40 of them within
25 px of the seam, where either whole template gives 2-15). Matching the pieces to one
PSF first was tried and not kept: the matched piece's smooth noise leaves the kernel's
high frequencies free, and the difference's variance plane put its noise at 2.4 times
the truth on one side and 0.55 on the other (``benchmarks/SCIENCE.md``).

Each warped piece's stellar-locus FWHM (:func:`~diffviewer.engine.psf_stars.select_stars`
among its peaks) is measured, and a spread beyond :data:`FWHM_TOLERANCE` is said, naming
the pieces.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from diffviewer.engine import psf_stars, register_stars
from diffviewer.engine.peaks import find_peaks
from diffviewer.engine.progress import null_reporter
from diffviewer.exposure import Exposure

#: Relative FWHM difference between pieces beyond which the run says so (the stellar
#: locus's own width is 15 %, its median's error a few per cent).
FWHM_TOLERANCE = 0.10


def piece_fwhm(piece: Exposure) -> float:
    """The stellar-locus FWHM (px) of a piece on the science grid; NaN without a locus.

    Parameters
    ----------
    piece : Exposure
        A warped template piece.

    Returns
    -------
    float
    """
    peaks = find_peaks(piece, register_stars.STAR_THRESHOLD, null_reporter())
    locus = psf_stars.select_stars(piece, peaks.x.astype(float), peaks.y.astype(float))
    return math.nan if locus is None else locus.fwhm


def fwhm_note(fwhm: Sequence[float], sources: Sequence[str]) -> str | None:
    """A note when the pieces' FWHMs differ by more than :data:`FWHM_TOLERANCE`.

    Parameters
    ----------
    fwhm : sequence of float
        Each piece's FWHM (px; NaN: not measured, left out).
    sources : sequence of str
        Each piece's input.

    Returns
    -------
    str or None
    """
    known = [(f, k) for k, f in enumerate(fwhm) if math.isfinite(f)]
    if len(known) < 2:
        return None
    (narrow, i), (broad, j) = min(known), max(known)
    if broad <= (1.0 + FWHM_TOLERANCE) * narrow:
        return None
    listed = ", ".join(f"{f:.2f} px (piece {k + 1}, {sources[k]})" for f, k in known)
    return (
        f"the template pieces' PSFs differ: FWHM {listed}, piece {j + 1}'s "
        f"{broad / narrow - 1.0:.0%} broader than piece {i + 1}'s; one PSF-matching kernel "
        "cannot follow the step at their seams, and its compromise leaves residuals at "
        "stars across the pieces: give pieces of one seeing, or subtract each piece on its "
        "own"
    )
