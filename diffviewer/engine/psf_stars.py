"""Stars among candidate sources, by their locus in size against flux.

Point sources all have the PSF's size whatever their flux, so in a plot of size
against flux they form a narrow horizontal band (the stellar locus); galaxies and
blends lie above it, cosmic rays and hot pixels below. Sources measured well enough
(S/N of at least :data:`LOCUS_MIN_SNR`) are sorted by their adaptive-moment FWHM; the
locus is the band of relative full width :data:`LOCUS_WIDTH` holding the smallest
sources that are at least half as many as the most populated band (galaxies spread
over a wide range of sizes, so a band of them rarely outnumbers the stars twice over,
while stars are the most compact resolved sources), recentred on its median.

The PSF of a wide field varies across it (focus, optics), so one band for the whole
field would keep the stars of one part and lose, or take galaxies for stars in, the
others. The band is therefore found in each cell of a grid (:func:`cell_grid`, cells of
about :data:`SOURCES_PER_CELL` measured sources), and the locus becomes a polynomial in
position of the logarithm of the FWHM (:func:`locus_surface`, degree up to
:data:`LOCUS_DEGREE` as the stars allow), fitted to the cells' members and iterated:
a star is on the locus when its size is within :data:`LOCUS_WIDTH` of the surface at
its position.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import numpy as np
from scipy.spatial import cKDTree

from diffviewer.engine.field_terms import chebyshev_terms
from diffviewer.engine.moments import adaptive_moments_stack, cutouts, shapes_from_covariances
from diffviewer.exposure import PIXEL_DEFECTS, UNUSABLE, Exposure
from diffviewer.stats import MAD_TO_SIGMA, nanmedian_last

#: Narrowest plausible PSF FWHM (px): narrower peaks are cosmic rays or hot pixels.
MIN_FWHM = 1.0

#: Least S/N (aperture flux over its sky noise) of a source whose size places it: the
#: moment FWHM of a Gaussian at S/N 20 scatters by about 3 %, a fifth of the band.
LOCUS_MIN_SNR = 20.0

#: Full relative width of the stellar locus in FWHM: 15 % holds a PSF that varies by
#: +-5 % over the field plus the size noise at :data:`LOCUS_MIN_SNR`.
LOCUS_WIDTH = 0.15

#: Least number of stars on the locus.
LOCUS_MIN_STARS = 3

#: Sources closer than this (px) to an earlier one are the same source.
SAME_SOURCE_PX = 2.0

#: Measured sources per cell of the grid in which the band is first found (a band needs
#: a few stars among the galaxies of its cell); the grid has at most 3 x 3 cells.
SOURCES_PER_CELL = 25

#: Highest degree in (x, y) of the locus surface: 2 follows a PSF that widens towards
#: the corners of a wide field.
LOCUS_DEGREE = 2

#: Least stars on the locus per coefficient of its surface (fewer: a lower degree).
STARS_PER_TERM = 5


@dataclasses.dataclass(frozen=True)
class StellarLocus:
    """The stars picked from candidate sources by size against flux.

    Attributes
    ----------
    x, y : numpy.ndarray
        Positions (0-based px) of the stars on the locus, highest S/N first.
    fwhm : float
        Median adaptive-moment FWHM (px) of the locus.
    fwhm_range : (float, float)
        Least and largest FWHM (px) of the locus surface at its stars' positions (equal
        for a constant PSF).
    n_measured : int
        Sources whose size was measured at S/N >= :data:`LOCUS_MIN_SNR`.
    n_extended, n_compact : int
        Measured sources above the locus (galaxies, blends) and below it (cosmic rays,
        hot pixels).
    """

    x: np.ndarray
    y: np.ndarray
    fwhm: float
    fwhm_range: tuple[float, float]
    n_measured: int
    n_extended: int
    n_compact: int

    def describe(self) -> str:
        """The selection in words, for the PSF's ``reason``."""
        lo, hi = self.fwhm_range
        varying = f", {lo:.2f}-{hi:.2f} px over the field" if hi > lo * 1.01 else ""
        return (
            f"{len(self.x)} on the size-flux locus (moment FWHM {self.fwhm:.2f} px{varying}) "
            f"of {self.n_measured} with S/N >= {LOCUS_MIN_SNR:g}, {self.n_extended} larger "
            f"(galaxies, blends) and {self.n_compact} smaller (cosmic rays, hot pixels)"
        )


def unique_index(x: np.ndarray, y: np.ndarray, radius: float = SAME_SOURCE_PX) -> np.ndarray:
    """Index of the positions not within ``radius`` px of an earlier one kept (in order).

    Only positions with an earlier one that close are decided in turn (whether that one
    was kept); the pairs are found by a k-d tree.
    """
    pairs = cKDTree(np.column_stack([x, y])).query_pairs(radius, output_type="ndarray")
    # query_pairs keeps distances <= radius, as the rule leaves out
    keep = np.ones(len(x), dtype=bool)
    if len(pairs):
        earlier: dict[int, list[int]] = {}
        for i, j in np.sort(pairs, axis=1):
            earlier.setdefault(int(j), []).append(int(i))
        for j in sorted(earlier):
            keep[j] = not keep[earlier[j]].any()
    return np.nonzero(keep)[0]


def measurable(masks: np.ndarray, radius: float) -> np.ndarray:
    """Which stars can be measured from their mask cutouts.

    A star's core, within ``radius`` px of its cutout's centre, must hold no unusable
    pixel; beyond it, pixel defects (:data:`~diffviewer.exposure.PIXEL_DEFECTS`: a
    cosmic ray or a bad pixel in the wing) are left for the caller to take as unknown,
    and any other unusable plane (a saturated neighbour, no data) leaves the star out.

    Parameters
    ----------
    masks : numpy.ndarray
        ``(n, m, m)`` mask cutouts centred on the stars.
    radius : float
        Radius (px) of the core that must be whole.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` True where the star can be measured.
    """
    r = np.arange(masks.shape[1]) - masks.shape[1] // 2
    core = r[:, None] ** 2 + r[None, :] ** 2 <= radius**2
    unusable = (masks & int(UNUSABLE)) != 0
    spreading = (masks & int(UNUSABLE & ~PIXEL_DEFECTS)) != 0
    result: np.ndarray = ~np.any(unusable[:, core], axis=1) & ~np.any(spreading, axis=(1, 2))
    return result


def border_sky(stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sky of cutouts, the median of their border's known pixels, and its noise, the
    border's MAD as a standard deviation (NaN where no border pixel is known).

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(n, m, m)`` cutouts, NaN where unknown.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(n,)`` sky level and noise.
    """
    border = np.concatenate(
        [stamps[:, 0, :], stamps[:, -1, :], stamps[:, :, 0], stamps[:, :, -1]], axis=1
    )
    level = nanmedian_last(border)
    noise = MAD_TO_SIGMA * nanmedian_last(np.abs(border - level[:, None]))
    return level, noise


def less_sky(stamps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cutouts less their :func:`border_sky`, unusable pixels taken as sky (0), and the
    sky's noise.

    Parameters
    ----------
    stamps, masks : numpy.ndarray
        ``(n, m, m)`` image and mask cutouts.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The cutouts (float64) and ``(n,)`` noise (NaN where no border pixel is usable).
    """
    unknown = (masks & int(UNUSABLE)) != 0
    stamp = np.where(unknown, np.nan, stamps.astype(np.float64))
    level, noise = border_sky(stamp)
    return np.where(unknown, 0.0, stamp - level[:, None, None]), noise


def source_sizes(
    exposure: Exposure, x: np.ndarray, y: np.ndarray, half: int
) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive-moment FWHM (px) and aperture S/N of sources (NaN where not measurable).

    Each cutout (side ``2 * half + 1``) must lie inside the image and be
    :func:`measurable` with a core of the aperture's radius, ``half / 2``: pixel defects
    beyond it are taken as sky. Its border's median is the sky and the border's MAD its
    noise. The S/N is the flux within the aperture over that noise times the root of the
    aperture's pixel count. Sources whose moments do not converge within 1.5 px of the
    cutout centre (blends, sources off their peak) get NaN.
    """
    xi, yi = np.rint(x).astype(np.intp), np.rint(y).astype(np.intp)
    stamps, inside = cutouts(exposure.image, xi, yi, half)
    masks, _ = cutouts(exposure.mask, xi, yi, half)
    k = np.nonzero(inside & measurable(masks, half / 2.0))[0]
    stamp, noise = less_sky(stamps[k], masks[k])
    r = np.arange(-half, half + 1, dtype=float)
    aperture = r[:, None] ** 2 + r[None, :] ** 2 <= (half / 2.0) ** 2
    fwhm, snr = np.full(len(xi), np.nan), np.full(len(xi), np.nan)
    fine = (noise > 0) & np.all(np.isfinite(stamp), axis=(1, 2))
    k, stamp, noise = k[fine], stamp[fine], noise[fine]
    snr[k] = stamp[:, aperture].sum(axis=1) / (noise * np.sqrt(aperture.sum()))
    bright = snr[k] >= LOCUS_MIN_SNR
    cx, cy, cov = adaptive_moments_stack(stamp[bright])
    central = np.hypot(cx - half, cy - half) <= 1.5
    fwhm[k[bright][central]] = shapes_from_covariances(cov[central])[0]
    return fwhm, snr


def stellar_locus(fwhm: np.ndarray) -> tuple[float, np.ndarray] | None:
    """The stellar locus among measured sizes of one region (see the module docstring).

    Parameters
    ----------
    fwhm : numpy.ndarray
        Sizes (px); NaN and values below :data:`MIN_FWHM` are ignored.

    Returns
    -------
    (float, numpy.ndarray) or None
        The locus FWHM (px) and a boolean map of the sources on it; None when fewer than
        :data:`LOCUS_MIN_STARS` sources share a band.
    """
    valid = np.isfinite(fwhm) & (fwhm >= MIN_FWHM)
    sizes = np.sort(fwhm[valid])
    if len(sizes) < LOCUS_MIN_STARS:
        return None
    counts = np.searchsorted(sizes, sizes * (1.0 + LOCUS_WIDTH), side="right") - np.arange(
        len(sizes)
    )
    need = max(LOCUS_MIN_STARS, int(np.ceil(0.5 * counts.max())))
    start = int(np.argmax(counts >= need))
    if counts[start] < need:
        return None
    centre = float(np.median(sizes[start : start + counts[start]]))
    members = np.zeros(len(fwhm), dtype=bool)
    for _ in range(3):
        with np.errstate(invalid="ignore"):
            members = valid & (np.abs(fwhm / centre - 1.0) <= LOCUS_WIDTH / 2.0)
        if members.sum() < LOCUS_MIN_STARS:
            return None
        centre = float(np.median(fwhm[members]))
    return centre, members


def cell_grid(x: np.ndarray, y: np.ndarray, shape: tuple[int, int], n_measured: int) -> np.ndarray:
    """Cell index of each position in a grid of about :data:`SOURCES_PER_CELL` sources a cell.

    The grid has ``n x n`` equal cells, ``n = floor(sqrt(n_measured / SOURCES_PER_CELL))``
    clipped to 1-3.
    """
    n = int(np.clip(np.floor(np.sqrt(n_measured / SOURCES_PER_CELL)), 1, 3))
    cx = np.clip((np.asarray(x) * n / shape[1]).astype(np.intp), 0, n - 1)
    cy = np.clip((np.asarray(y) * n / shape[0]).astype(np.intp), 0, n - 1)
    result: np.ndarray = cy * n + cx
    return result


def locus_surface(
    x: np.ndarray, y: np.ndarray, fwhm: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The locus as a surface over the field: its FWHM at each source and its members.

    The band is found in each cell (:func:`cell_grid`, :func:`stellar_locus`); the
    logarithm of the members' FWHM is then fitted by a polynomial in (x, y) of the
    highest degree up to :data:`LOCUS_DEGREE` with :data:`STARS_PER_TERM` members per
    coefficient (the median, degree 0, with fewer), and the members are re-chosen within
    :data:`LOCUS_WIDTH` of it, three times.

    Parameters
    ----------
    x, y : numpy.ndarray
        Positions (0-based px).
    fwhm : numpy.ndarray
        Sizes (px); NaN and values below :data:`MIN_FWHM` are ignored.
    shape : (int, int)
        Image shape (ny, nx).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray) or None
        The surface's FWHM (px) at every source and a boolean map of the members; None
        when fewer than :data:`LOCUS_MIN_STARS` sources share a band.
    """
    valid = np.isfinite(fwhm) & (fwhm >= MIN_FWHM)
    cells = cell_grid(x, y, shape, int(valid.sum()))
    members = np.zeros(len(fwhm), dtype=bool)
    for cell in np.unique(cells[valid]):
        inside = valid & (cells == cell)
        found = stellar_locus(np.where(inside, fwhm, np.nan))
        if found is not None:
            members |= found[1]
    if members.sum() < LOCUS_MIN_STARS:
        found = stellar_locus(fwhm)
        if found is None:
            return None
        members = found[1]
    log_size = np.log(np.where(valid, fwhm, 1.0))
    surface = np.full(len(fwhm), np.nan)
    for _ in range(3):
        degree = next(
            d
            for d in range(LOCUS_DEGREE, -1, -1)
            if members.sum() >= STARS_PER_TERM * (d + 1) * (d + 2) // 2 or d == 0
        )
        design = chebyshev_terms(x, y, degree, shape)
        coef, *_ = np.linalg.lstsq(design[members], log_size[members], rcond=None)
        surface = np.exp(design @ coef)
        with np.errstate(invalid="ignore"):
            members = valid & (np.abs(fwhm / surface - 1.0) <= LOCUS_WIDTH / 2.0)
        if members.sum() < LOCUS_MIN_STARS:
            return None
    return surface, members


def select_stars(exposure: Exposure, x: np.ndarray, y: np.ndarray) -> StellarLocus | None:
    """The stars among candidate positions, by their locus in size against flux.

    Sizes are measured in cutouts of half-width 12 px, or 3 times the largest locus
    FWHM when that is larger (up to 40 px), so that the moments see the whole core.

    Parameters
    ----------
    exposure : Exposure
        The image.
    x, y : numpy.ndarray
        Candidate positions (0-based px); duplicates within :data:`SAME_SOURCE_PX` are
        measured once.

    Returns
    -------
    StellarLocus or None
        None when no locus of at least :data:`LOCUS_MIN_STARS` stars is found.
    """
    return select_stars_nested(exposure, x, y, [len(x)])[0]


def select_stars_nested(
    exposure: Exposure, x: np.ndarray, y: np.ndarray, counts: Sequence[int]
) -> list[StellarLocus | None]:
    """:func:`select_stars` among the first ``count`` candidates, for each of ``counts``.

    A source's size does not depend on the other candidates, so each is measured once
    (at each cutout size a locus asks for), whichever lists it is in.

    Parameters
    ----------
    exposure : Exposure
        The image.
    x, y : numpy.ndarray
        Candidate positions (0-based px).
    counts : sequence of int
        Lengths of the leading parts of the candidate list to select stars among.

    Returns
    -------
    list of StellarLocus or None
        One per count (None where no locus is found).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = unique_index(x, y)
    ux, uy = x[keep], y[keep]
    measured: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def sizes(half: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        if half not in measured:
            measured[half] = source_sizes(exposure, ux, uy, half)
        fwhm, snr = measured[half]
        return fwhm[:n], snr[:n]

    # the unique positions among the first ``count`` are the first of all unique ones
    firsts = np.searchsorted(keep, np.asarray(counts), side="left")
    return [_locus(ux[:n], uy[:n], exposure.shape, functools.partial(sizes, n=n)) for n in firsts]


def _locus(
    x: np.ndarray,
    y: np.ndarray,
    shape: tuple[int, int],
    sizes: Callable[[int], tuple[np.ndarray, np.ndarray]],
) -> StellarLocus | None:
    """The stars among unique candidate positions whose ``sizes(half)`` (FWHM and S/N, as
    :func:`source_sizes` in cutouts of half-width ``half``) the caller measures."""
    fwhm, snr = sizes(12)
    found = locus_surface(x, y, fwhm, shape)
    want = int(np.clip(np.ceil(3.0 * np.nanmax(found[0])), 12, 40)) if found is not None else 12
    if want > 14:
        fwhm, snr = sizes(want)
        found = locus_surface(x, y, fwhm, shape)
    if found is None:
        return None
    surface, members = found
    # Sizes below MIN_FWHM (light in a pixel or two) are measured too: compact ones.
    measured = np.isfinite(fwhm)
    with np.errstate(invalid="ignore"):
        extended = int(np.sum(measured & ~members & (fwhm > surface)))
    order = np.argsort(-snr[members])
    return StellarLocus(
        x=x[members][order],
        y=y[members][order],
        fwhm=float(np.median(fwhm[members])),
        fwhm_range=(float(surface[members].min()), float(surface[members].max())),
        n_measured=int(measured.sum()),
        n_extended=extended,
        n_compact=int(measured.sum() - members.sum() - extended),
    )
