"""Kernel candidates: isolated, unsaturated stars measured on both images (seed: kernel sources).

Stars are found on the science image as local maxima of the image smoothed by a
sigma 1 px binomial filter (a matched filter for a PSF of ~2.4 px FWHM; a mismatch costs
little S/N), above ``detect_threshold`` times the smoothed image's noise over a coarse
background. Each is measured on both images in a circular aperture of radius 1.5 FWHM,
then kept only if its stamp is inside the image, no pixel of it is saturated (by value or
plane) on either image, its science S/N lies in the window, it is a source of its own
above its local background (not a noise peak on a bright star's halo:
:func:`~diffviewer.engine.star_fluxes.local_snr`), its template/science flux ratio
agrees with the median one (10% plus 5 sigma: transients and variables are not kernel
stars), no comparably bright neighbour sits nearby, and its cell of the image is
not yet full (the brightest first; cells are at most a quarter of the image side), up to
``max_candidates`` in all (each cell's brightest first). Only the stars so chosen have
their whole stamp checked for masked and saturated pixels on both images; one that fails
gives its place to the next brightest in its cell. Every ``control_every``-th survivor
(in order of decreasing S/N) is held out as a control star. Around the stars kept, the
detections with light on one image only (beyond the field's flux ratio, at one seeing)
are listed (:class:`~diffviewer.engine.star_fluxes.UnmatchedLight`): the kernel fit,
which knows which image it convolves, does not fit a star whose stamp holds as much of
it there as the star.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.table import Table
from scipy import ndimage

from diffviewer.config import CandidatesConfig, KernelConfig
from diffviewer.engine.kernel_basis import stamp_half_width
from diffviewer.engine.progress import Reporter
from diffviewer.engine.psf import cutouts, estimate_psf, frozen
from diffviewer.engine.star_fluxes import (
    LOCAL_SNR_MIN,
    MASKED,
    SATURATED,
    UnmatchedLight,
    aperture_fluxes,
    grid_value,
    local_snr,
    median_ratio,
    pairs_within,
    ratio_deviant,
    unmatched_light,
)
from diffviewer.errors import InputError
from diffviewer.exposure import Exposure
from diffviewer.stats import MAD_TO_SIGMA, window_mad, window_median, window_within

#: Rejection reasons at selection, in the order they are tested (a star counts under the first).
REASONS = (
    "edge",
    "saturated",
    "S/N window",
    "no local source",
    "flux ratio",
    "not isolated",
    "masked",
    "cell limit",
)

#: Side (px) of the boxes of the coarse background and noise maps.
BACKGROUND_BOX = 64

#: The separable smoothing before peak finding: binomial weights, a Gaussian of sigma 1 px.
_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


@dataclasses.dataclass(frozen=True, eq=False)
class CandidateSet:
    """The kernel candidates and what the selection found and rejected.

    Attributes
    ----------
    table : astropy.table.Table
        One row per candidate, brightest (science S/N) first: ``id``, ``x``, ``y``
        (science pixels, 0-based), ``flux_sci``, ``flux_tmpl`` (aperture fluxes, image
        units), ``snr`` (science aperture S/N), ``peak`` (science peak above background)
        and ``control`` (True: held out, never fitted).
    n_detected : int
        Peaks found (or sources given) before selection.
    rejected : Mapping[str, int]
        Number rejected for each reason of :data:`REASONS`.
    stamp_half_width : int
        Half-width (px) of the stamp that was checked around each candidate: by default
        the stamp the kernel fit reads, in either direction, with the run's kernel config
        (:func:`diffviewer.engine.kernel_basis.stamp_half_width`), from the PSFs of the
        brightest peaks on both images.
    fwhm : float
        Science FWHM (px) estimated from the brightest peaks (sizes stamps and apertures).
    bright : (numpy.ndarray, numpy.ndarray)
        x and y (integer science px) of the brightest peaks unsaturated on the science
        image, brightest first, at most 100, without isolation or cell limits: the relaxed
        PSF stars of :func:`diffviewer.engine.psf.estimate_psf` when kernel stars are few.
    unmatched : UnmatchedLight
        Light on one image only near the candidates: the kernel fit does not fit a star
        whose stamp on the convolved image holds as much as the star
        (:meth:`UnmatchedLight.spoils`).
    """

    table: Table
    n_detected: int
    rejected: Mapping[str, int]
    stamp_half_width: int
    fwhm: float
    bright: tuple[np.ndarray, np.ndarray]
    unmatched: UnmatchedLight

    def summary(self) -> str:
        """One line: how many were found, kept and rejected by reason."""
        why = ", ".join(f"{k}: {v}" for k, v in self.rejected.items() if v)
        return (
            f"{self.n_detected} stars found, {len(self.table)} kept "
            f"({int(np.sum(self.table['control']))} control)" + (f"; rejected {why}" if why else "")
        )


def coarse_background(
    image: np.ndarray, good: np.ndarray, box: int = BACKGROUND_BOX
) -> tuple[np.ndarray, np.ndarray]:
    """Median background and robust noise on a grid of boxes.

    Parameters
    ----------
    image : numpy.ndarray
        The image.
    good : numpy.ndarray
        Usable pixels.
    box : int
        Nominal box side (px).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Background and noise (1.4826 MAD after one 3-sigma clip) per box
        (:func:`_box_statistics`), shape ``(max(1, ny // box), max(1, nx // box))``; the
        remainder rows and columns are not sampled. Boxes without good pixels take the
        median of the others; both grids are then median filtered over 3 x 3 boxes.
    """
    bg, sd = _box_statistics(image, good, box)
    for a in (bg, sd):
        fill = np.nanmedian(a) if np.isfinite(a).any() else 0.0
        a[~np.isfinite(a)] = fill
    return ndimage.median_filter(bg, 3, mode="nearest"), ndimage.median_filter(
        sd, 3, mode="nearest"
    )


def _box_statistics(image: np.ndarray, good: np.ndarray, box: int) -> tuple[np.ndarray, np.ndarray]:
    """Per box of :func:`coarse_background`: the median and the noise of its samples.

    The image is cut into ``max(1, ny // box) x max(1, nx // box)`` boxes, each sampled
    on every other row and column (every one when a side is below 32 px); the good
    finite samples, as float32, are clipped once at 3 sigma (1.4826 MAD) about their
    median, and the median and 1.4826 MAD (float64 deviations) of those kept are taken.
    Each box's samples are sorted once: each median is that of a window of them (the
    clip keeps a run of the sorted values) and each MAD is found by bisection
    (:func:`diffviewer.stats.window_mad`), the figures of sorting the samples, their
    deviations, the clipped samples and theirs (``numpy.nanmedian``) to the bit, at a
    quarter of the cost (4096^2: 0.20 -> 0.05 s).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        float64 (boxes along y, boxes along x): background and noise; NaN for a box
        without a good finite sample.
    """
    ny, nx = image.shape
    by, bx = max(1, ny // box), max(1, nx // box)
    sy, sx = ny // by, nx // bx
    step = 2 if min(sy, sx) >= 32 else 1  # every other pixel is plenty for a median
    # cut into boxes first, then subsample within each box: any box side works; the
    # unusable pixels are set to NaN on the samples alone

    def samples(plane: np.ndarray) -> np.ndarray:
        boxes = plane[: by * sy, : bx * sx].reshape(by, sy, bx, sx)
        return boxes[:, ::step, :, ::step].transpose(0, 2, 1, 3).reshape(by * bx, -1)

    ordered = samples(image).astype(np.float32)
    ordered[~(samples(good) & np.isfinite(ordered))] = np.nan
    ordered.sort(axis=-1)  # NaN last
    start = np.zeros(by * bx, dtype=np.intp)
    count = np.count_nonzero(np.isfinite(ordered), axis=-1)
    with np.errstate(all="ignore"):
        med = window_median(ordered, start, count)
        # one clip at 3 sigma removes most star light before the final estimates
        reach = 3 * MAD_TO_SIGMA * window_mad(ordered, start, count, med) + 1e-30
        start, count = window_within(ordered, start, count, med, lambda d: d < reach)
        bg = window_median(ordered, start, count).astype(np.float64)
        sd = MAD_TO_SIGMA * window_mad(ordered, start, count, bg)
    return bg.reshape(by, bx), sd.reshape(by, bx)


#: Rows of the image smoothed at a time by :func:`_binomial_smooth`: its working arrays
#: (a few of 64 rows of a 4096-wide image, 1 MB each) stay in the cache.
SMOOTH_ROWS = 64


def _binomial_pass(source: np.ndarray, axis: int, out: np.ndarray, work: np.ndarray) -> None:
    """Filter ``source`` by :data:`_BINOMIAL` along ``axis`` into ``out`` (float32).

    Parameters
    ----------
    source : numpy.ndarray
        float32, 4 longer than ``out`` along ``axis`` (2 pixels of margin each side).
    axis : int
        0 or 1.
    out, work : numpy.ndarray
        float32 arrays of the result's shape: the result, and scratch space.
    """
    n = out.shape[axis]
    shifted = [source[k : k + n] if axis == 0 else source[:, k : k + n] for k in range(5)]
    w0, w1, w2 = (np.float32(v) for v in _BINOMIAL[:3])
    np.add(shifted[0], shifted[4], out=out)
    out *= w0
    np.add(shifted[1], shifted[3], out=work)
    work *= w1
    out += work
    np.multiply(shifted[2], w2, out=work)
    out += work


def _binomial_smooth(image: np.ndarray, rows: int = SMOOTH_ROWS) -> np.ndarray:
    """``image`` filtered by :data:`_BINOMIAL` along both axes (edges repeated), float32.

    Written as sums of shifted slices using the weights' symmetry, ``rows`` rows at a
    time through small working arrays (the only image-sized array is the result): on
    the 4096^2 image 0.24 -> 0.05 s against ``numpy.pad`` and whole-image passes, and
    several times faster than ``scipy.ndimage``.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image.
    rows : int
        Rows filtered at a time.

    Returns
    -------
    numpy.ndarray
        float32, the shape of ``image``.
    """
    ny, nx = image.shape
    smooth = np.empty((ny, nx), dtype=np.float32)
    padded = np.empty((rows + 4, nx + 4), dtype=np.float32)
    along_y = np.empty((rows, nx + 4), dtype=np.float32)
    work = np.empty((rows, nx + 4), dtype=np.float32)
    for start in range(0, ny, rows):
        n = min(rows, ny - start)
        block = padded[: n + 4]
        # rows start - 2 ... start + n + 1, those outside the image repeating its edge
        top, bottom = max(0, 2 - start), max(0, start + n + 2 - ny)
        block[top : n + 4 - bottom, 2:-2] = image[start - 2 + top : start + n + 2 - bottom]
        block[:top, 2:-2] = image[0]
        block[n + 4 - bottom :, 2:-2] = image[ny - 1]
        block[:, :2] = block[:, 2:3]
        block[:, -2:] = block[:, -3:-2]
        _binomial_pass(block, 0, along_y[:n], work[:n])
        _binomial_pass(along_y[:n], 1, smooth[start : start + n], work[:n, :nx])
    return smooth


@dataclasses.dataclass(frozen=True, eq=False)
class Peaks:
    """The local maxima of an image's smoothed pixels above a threshold (:func:`find_peaks`).

    Found once on the science image, they serve the registration (above
    :data:`diffviewer.engine.register.STAR_THRESHOLD`) and the kernel candidates (above
    ``detect_threshold``): :meth:`above` gives what :func:`find_peaks` finds with a
    higher threshold.

    Attributes
    ----------
    x, y : numpy.ndarray
        Integer positions (0-based px), in raster order.
    value : numpy.ndarray
        The smoothed image there (float32).
    peak : numpy.ndarray
        The image there above the background (image units).
    background, noise : numpy.ndarray
        Box grids of :func:`coarse_background`.
    threshold : float
        The threshold (sigma of the smoothed image's noise).
    shape : (int, int)
        The image's shape.
    """

    x: np.ndarray
    y: np.ndarray
    value: np.ndarray
    peak: np.ndarray
    background: np.ndarray
    noise: np.ndarray
    threshold: float
    shape: tuple[int, int]

    def above(self, threshold: float) -> Peaks:
        """The peaks above a threshold at least :attr:`threshold`, as :func:`find_peaks`
        finds them with it (the same tests, on the values found; order kept).

        Raises
        ------
        ValueError
            Below :attr:`threshold` (peaks there were not kept).
        """
        if threshold < self.threshold:
            raise ValueError(f"peaks were found above {self.threshold:g} sigma, not {threshold:g}")
        keep = _above(
            self.value, self.x, self.y, self.background, self.noise, threshold, self.shape
        )
        return dataclasses.replace(
            self,
            x=self.x[keep],
            y=self.y[keep],
            value=self.value[keep],
            peak=self.peak[keep],
            threshold=threshold,
        )


def _threshold_grid(background: np.ndarray, noise: np.ndarray, threshold: float) -> np.ndarray:
    """The smoothed image's detection level at ``threshold`` sigma on the box grid."""
    # noise of the smoothed white field: sigma * sum(w^2) for the separable 2-D filter
    result: np.ndarray = background + threshold * float(np.sum(_BINOMIAL**2)) * noise
    return result


def _above(
    value: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    background: np.ndarray,
    noise: np.ndarray,
    threshold: float,
    shape: tuple[int, int],
) -> np.ndarray:
    """Which smoothed values at (x, y) of an image of ``shape`` exceed ``threshold`` sigma
    over the background (grids of :func:`coarse_background`).

    The lowest level of the grid is tested first (:func:`find_peaks` finds the pixels
    above it on the whole image), then the local one.
    """
    thresh = _threshold_grid(background, noise, threshold)
    keep = value > np.float32(thresh.min())
    keep[keep] = value[keep] > grid_value(thresh, shape, x[keep], y[keep])
    return keep


#: The 24 other pixels of a 5 x 5 box, nearest first: a pixel on a star's slope fails
#: against an adjacent one, so the tests of the farther ones see few pixels (the tests
#: are independent: their order leaves the peaks as they are; on the 4096^2 pair, 1.06
#: million pixels above the threshold, :func:`find_peaks` 0.69 -> 0.52 s).
_NEIGHBOURS = tuple(
    sorted(
        ((dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if dy or dx),
        key=lambda d: d[0] ** 2 + d[1] ** 2,
    )
)


def _local_maxima(image: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """Which pixels are the largest of their 5 x 5 box (edges repeated).

    Ties go to the first pixel in raster order, so a plateau gives one maximum; a NaN
    neighbour makes a pixel no maximum. Near the border a neighbour beyond it is the
    nearest pixel inside (a pixel is not compared with itself), and which of two tied
    pixels comes first is decided by where that pixel is, not by the offset.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image.
    flat : numpy.ndarray
        Flat indices of the pixels to test, increasing.

    Returns
    -------
    numpy.ndarray
        The flat indices of those that are maxima, in their order.
    """
    ny, nx = image.shape
    pixels = image.ravel()
    value = pixels[flat]
    y, x = np.divmod(flat, nx)
    edge = (y < 2) | (y >= ny - 2) | (x < 2) | (x >= nx - 2)
    for dy, dx in _NEIGHBOURS:
        # flat offsets inside; within 2 px of the border, the clipped row and column
        other = pixels[np.clip(flat + (dy * nx + dx), 0, pixels.size - 1)]
        later = dy > 0 or (dy == 0 and dx > 0)
        keep = value >= other if later else value > other
        if edge.any():
            keep[edge] = _edge_test(image, flat[edge], value[edge], dy, dx)
        flat, value, edge = flat[keep], value[keep], edge[keep]
    return flat


def _edge_test(
    image: np.ndarray, flat: np.ndarray, value: np.ndarray, dy: int, dx: int
) -> np.ndarray:
    """:func:`_local_maxima`'s test of pixels near the border against the neighbour at
    (``dy``, ``dx``), clipped into the image: passed when that is the pixel itself, else
    ``>`` a pixel before it in raster order and ``>=`` one after it."""
    ny, nx = image.shape
    y, x = np.divmod(flat, nx)
    oy, ox = np.clip(y + dy, 0, ny - 1), np.clip(x + dx, 0, nx - 1)
    other = image[oy, ox]
    itself = (oy == y) & (ox == x)
    later = (oy > y) | ((oy == y) & (ox > x))
    return itself | np.where(later, value >= other, value > other)


def find_peaks(exposure: Exposure, threshold: float, reporter: Reporter) -> Peaks:
    """Local maxima of the smoothed image above ``threshold`` sigma.

    Parameters
    ----------
    exposure : Exposure
        The image.
    threshold : float
        Detection threshold (sigma of the smoothed image's noise).
    reporter : Reporter
        Progress.

    Returns
    -------
    Peaks
    """
    image = exposure.image
    good = exposure.good_pixels()
    bg, sd = coarse_background(image, good)
    reporter.update(0.2)
    smooth = _binomial_smooth(image)
    reporter.update(0.35)
    # Pixels above the lowest level, then 5x5 local maxima, then above the local level
    # (the tests are independent; the interpolated level is needed at the few maxima only).
    lowest = np.float32(_threshold_grid(bg, sd, threshold).min())
    above = np.flatnonzero((smooth > lowest) & good)  # flat indices: 5x faster than nonzero
    yi, xi = np.divmod(_local_maxima(smooth, above), image.shape[1])
    value = smooth[yi, xi]
    keep = _above(value, xi, yi, bg, sd, threshold, exposure.shape)
    yi, xi, value = yi[keep], xi[keep], value[keep]
    reporter.update(0.5)
    peak = image[yi, xi] - grid_value(bg, image.shape, xi, yi)
    return Peaks(xi, yi, value, peak, bg, sd, threshold, exposure.shape)


def _saturation_level(exposure: Exposure, config: CandidatesConfig) -> float:
    """Configured level, else the one found when the file was read, else +inf.

    The reader (:func:`diffviewer.io.read_exposure`) takes it from the header's
    saturation keywords, else from the image's flat top or a coadd's pile of clipped
    star cores, and flags those pixels SAT; the candidates use the same level.
    """
    if config.saturation_level > 0:
        return config.saturation_level
    return exposure.saturation[1] if exposure.saturation is not None else np.inf


def read_source_list(path: str, science: Exposure) -> tuple[np.ndarray, np.ndarray]:
    """Positions from a catalog with ``x, y`` (0-based science px) or ``ra, dec`` (deg) columns.

    Raises
    ------
    InputError
        When the file cannot be read, lacks the columns, or gives ra/dec without a celestial WCS.
    """
    p = Path(path)
    try:
        table = Table.read(p, format="ascii.csv" if p.suffix.lower() == ".csv" else None)
    except Exception as exc:  # astropy raises many types for unreadable files
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(
            f"candidates.source_list {p}: cannot read it as a table ({first_line}); "
            "give an ECSV, CSV or FITS table with x,y or ra,dec columns"
        ) from None
    cols = {c.lower(): c for c in table.colnames}

    def numbers(name: str) -> np.ndarray:
        try:
            return np.asarray(table[cols[name]], dtype=float)
        except (TypeError, ValueError):
            raise InputError(
                f"candidates.source_list {p}: column {cols[name]!r} is not numeric; "
                "give numbers (x,y in 0-based pixels or ra,dec in degrees)"
            ) from None

    if "x" in cols and "y" in cols:
        return numbers("x"), numbers("y")
    if "ra" in cols and "dec" in cols:
        if not science.has_celestial_wcs or science.wcs is None:
            raise InputError(
                f"candidates.source_list {p} gives ra,dec but the science image "
                f"{science.source} has no celestial WCS; give x,y columns instead"
            )
        x, y = science.wcs.celestial.all_world2pix(numbers("ra"), numbers("dec"), 0)
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    raise InputError(
        f"candidates.source_list {p} has columns {table.colnames}; "
        "it needs x,y (0-based pixels) or ra,dec (degrees)"
    )


def _peak_offsets(
    image: np.ndarray, xi: np.ndarray, yi: np.ndarray, background: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel offsets of stars from their integer positions (px).

    The brightest pixel of the 3x3 box around each position (the smoothed image's peak
    can sit one pixel off) is refined by the vertex of a parabola through the log of its
    row and column (exact for a Gaussian), limited to half a pixel.
    """
    s5, _ = cutouts(image, xi, yi, 2)
    s5 = s5.astype(np.float64) - background[:, None, None]
    n = len(xi)
    best = np.argmax(s5[:, 1:4, 1:4].reshape(n, 9), axis=1)
    oy, ox = best // 3 - 1, best % 3 - 1
    rows = (oy + 2)[:, None] + np.array([-1, 0, 1])[None, :]
    cols = (ox + 2)[:, None] + np.array([-1, 0, 1])[None, :]
    k = np.arange(n)[:, None]
    row = s5[k, (oy + 2)[:, None], cols]
    col = s5[k, rows, (ox + 2)[:, None]]
    with np.errstate(all="ignore"):
        lr = np.log(np.clip(row, 1e-30, None))
        lc = np.log(np.clip(col, 1e-30, None))
        dx = 0.5 * (lr[:, 0] - lr[:, 2]) / (lr[:, 0] - 2 * lr[:, 1] + lr[:, 2])
        dy = 0.5 * (lc[:, 0] - lc[:, 2]) / (lc[:, 0] - 2 * lc[:, 1] + lc[:, 2])
    return (ox + np.clip(np.nan_to_num(dx), -0.5, 0.5), oy + np.clip(np.nan_to_num(dy), -0.5, 0.5))


def _by_cells(
    ordered: np.ndarray,
    xi: np.ndarray,
    yi: np.ndarray,
    side: int,
    width: int,
    config: CandidatesConfig,
) -> np.ndarray:
    """The stars kept by the cells: at most ``max_per_cell`` per cell, the brightest first,
    and at most ``max_candidates`` in all by whole ranks (every cell's brightest, then its
    second, ...).

    Parameters
    ----------
    ordered : numpy.ndarray
        Indices of the eligible stars, brightest first.
    xi, yi : numpy.ndarray
        Integer positions of all stars.
    side : int
        Cell side (px).
    width : int
        Image width (px).
    config : CandidatesConfig
        ``max_per_cell`` and ``max_candidates``.

    Returns
    -------
    numpy.ndarray
        The kept indices, still brightest first.
    """
    n = len(ordered)
    ncx = int(np.ceil(width / side))
    cell = (yi[ordered] // side) * ncx + xi[ordered] // side
    order = np.lexsort((np.arange(n), cell))
    starts = np.r_[0, np.nonzero(np.diff(cell[order]))[0] + 1] if n else np.zeros(0, int)
    rank = np.empty(n, dtype=int)
    rank[order] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    by_rank = np.lexsort((np.arange(n), rank))
    allowed = by_rank[rank[by_rank] < config.max_per_cell]
    if config.max_candidates:
        allowed = allowed[: config.max_candidates]
    return ordered[np.sort(allowed)]


def _stamp_flags(
    science: Exposure,
    template: Exposure,
    xi: np.ndarray,
    yi: np.ndarray,
    half: int,
    sat_science: float,
    sat_template: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Whether each stamp holds masked, or saturated, pixels on either image."""
    masked = np.zeros(len(xi), dtype=bool)
    saturated = np.zeros(len(xi), dtype=bool)
    chunk = max(1, int(2e7 // (2 * half + 1) ** 2))
    for start in range(0, len(xi), chunk):
        sl = slice(start, start + chunk)
        bits = (
            cutouts(science.mask, xi[sl], yi[sl], half)[0]
            | cutouts(template.mask, xi[sl], yi[sl], half)[0]
        )
        masked[sl] = np.any((bits & MASKED) != 0, axis=(1, 2))
        saturated[sl] = (
            np.any((bits & SATURATED) != 0, axis=(1, 2))
            | (cutouts(science.image, xi[sl], yi[sl], half)[0].max(axis=(1, 2)) >= sat_science)
            | (cutouts(template.image, xi[sl], yi[sl], half)[0].max(axis=(1, 2)) >= sat_template)
        )
    return masked, saturated


def select_candidates(
    science: Exposure,
    template: Exposure,
    config: CandidatesConfig,
    reporter: Reporter,
    peaks: Peaks | None = None,
    template_peaks: Peaks | None = None,
    *,
    kernel_config: KernelConfig,
) -> CandidateSet:
    """Select the stars on which the PSF-matching kernel is fitted.

    Parameters
    ----------
    science, template : Exposure
        The pair, on the same pixel grid.
    config : CandidatesConfig
        Thresholds, window, isolation, cells, control sample, optional source list.
    reporter : Reporter
        Progress and cancellation.
    peaks : Peaks, optional
        The science image's peaks when they were found already (by the registration),
        used when their threshold is at most ``config.detect_threshold``; else they are
        found here.
    template_peaks : Peaks, optional
        Peaks found on ``template``'s own pixels (by the registration, when the template
        was not resampled): their background grid is the template's.
    kernel_config : KernelConfig
        The run's basis, whose stamps each star must hold (:func:`stamp_half_width`),
        unless ``config.stamp_half_width`` gives it (required: a default basis here once
        chose stars for stamps other than the run's).

    Returns
    -------
    CandidateSet
        Possibly empty (tiny cutouts, blank fields): the kernel fit decides what to do then.
    """
    shape = science.shape
    if config.source_list:
        x_all, y_all = read_source_list(config.source_list, science)
        inside = (
            (x_all > -0.5) & (x_all < shape[1] - 0.5) & (y_all > -0.5) & (y_all < shape[0] - 0.5)
        )
        xi, yi = np.rint(x_all[inside]).astype(np.intp), np.rint(y_all[inside]).astype(np.intp)
        bg_s, _ = coarse_background(science.image, science.good_pixels())
        peak = science.image[yi, xi] - grid_value(bg_s, shape, xi, yi)
        n_detected = len(x_all)
    else:
        if peaks is None or peaks.threshold > config.detect_threshold:
            peaks = find_peaks(science, config.detect_threshold, reporter)
        found = peaks.above(config.detect_threshold)
        xi, yi, peak, bg_s = found.x, found.y, found.peak, found.background
        n_detected = len(xi)
    if template_peaks is not None:
        bg_t = template_peaks.background
    else:
        bg_t, _ = coarse_background(template.image, template.good_pixels())
    reporter.update(0.6)

    # FWHM from the brightest unsaturated peaks, to size stamps and apertures.
    sat_s, sat_t = _saturation_level(science, config), _saturation_level(template, config)
    bright = np.argsort(-peak)
    bright = bright[science.image[yi[bright], xi[bright]] < 0.5 * sat_s][:100]
    bright_xy = (frozen(xi[bright]), frozen(yi[bright]))
    psf_s = estimate_psf(science, *bright_xy, bright=bright_xy)
    psf_t = estimate_psf(template, *bright_xy, bright=bright_xy)
    fwhm = psf_s.fwhm
    half = config.stamp_half_width or stamp_half_width(psf_s, psf_t, kernel_config)
    reach = max(half, stamp_half_width(psf_s, psf_t, kernel_config, wing=True))

    reasons = np.full(len(xi), "", dtype=object)

    def reject(mask: np.ndarray, reason: str) -> None:
        reasons[mask & (reasons == "")] = reason

    inside = (xi - half >= 0) & (yi - half >= 0) & (xi + half < shape[1]) & (yi + half < shape[0])
    reject(~inside, "edge")
    # Aperture photometry on small cutouts first; full stamps only for the few survivors.
    idx = np.nonzero(reasons == "")[0]
    rad = 1.5 * fwhm
    flux_s, flux_t, var_s, var_t = (np.zeros(len(xi)) for _ in range(4))
    ap = aperture_fluxes(science, template, xi[idx], yi[idx], (bg_s, bg_t), rad)
    flux_s[idx], flux_t[idx], var_s[idx], var_t[idx] = ap.flux_s, ap.flux_t, ap.var_s, ap.var_t
    snr = np.zeros(len(xi))
    snr[idx] = flux_s[idx] / np.sqrt(var_s[idx])
    sat = np.zeros(len(xi), dtype=bool)
    sat[idx] = (ap.max_s >= sat_s) | (ap.max_t >= sat_t)
    reject(sat, "saturated")
    reject((snr < config.snr_min) | (snr > config.snr_max), "S/N window")
    idx = np.nonzero(reasons == "")[0]
    local = np.full(len(xi), np.nan)
    local[idx] = local_snr(science, xi[idx], yi[idx], rad, fwhm)
    reject(~(local >= LOCAL_SNR_MIN) & (reasons == ""), "no local source")
    ratio = median_ratio(flux_s, flux_t, reasons == "")
    if ratio is not None:
        deviant = ratio_deviant(flux_s, flux_t, var_s, var_t, ratio)
        reject(deviant & (reasons == ""), "flux ratio")
    reporter.update(0.7)

    if not config.source_list and config.isolation_radius > 0 and len(xi) > 1:
        alive = np.nonzero(reasons == "")[0]
        star, other = pairs_within(xi, yi, alive, config.isolation_radius * half, 2.0)
        # Each star's brightest other detection within the radius.
        brightest = np.full(len(xi), -np.inf)
        np.maximum.at(brightest, star, peak[other])
        crowded = brightest >= config.isolation_flux_ratio * peak
        reject(crowded, "not isolated")

    # Cells, then the stamp check (masks, saturation) of the stars that would be kept; a
    # star that fails it frees its place for the next brightest in its cell.
    alive = np.nonzero(reasons == "")[0]
    alive = alive[np.argsort(-snr[alive], kind="stable")]
    side = max(1, min(config.cell_size, min(shape) // 4))
    checked = np.zeros(len(xi), dtype=bool)
    while True:
        keep = _by_cells(alive[reasons[alive] == ""], xi, yi, side, shape[1], config)
        todo = keep[~checked[keep]]
        if not len(todo):
            break
        masked, saturated = _stamp_flags(science, template, xi[todo], yi[todo], half, sat_s, sat_t)
        checked[todo] = True
        flag = np.zeros(len(xi), dtype=bool)
        flag[todo] = masked
        reject(flag, "masked")
        flag[:] = False
        flag[todo] = saturated
        reject(flag, "saturated")
        reporter.update(0.9)
    full = np.zeros(len(xi), dtype=bool)
    full[alive] = True
    full[keep] = False
    reject(full, "cell limit")

    dxs, dys = _peak_offsets(
        science.image, xi[keep], yi[keep], grid_value(bg_s, shape, xi[keep], yi[keep])
    )
    ids = np.arange(len(keep))
    control = (
        ((ids + 1) % config.control_every == 0)
        if config.control_every
        else np.zeros(len(keep), bool)
    )
    table = Table(
        {
            "id": ids,
            "x": xi[keep] + dxs,
            "y": yi[keep] + dys,
            "flux_sci": flux_s[keep],
            "flux_tmpl": flux_t[keep],
            "snr": snr[keep],
            "peak": peak[keep],
            "control": control,
        }
    )
    counts = {r: int(np.sum(reasons == r)) for r in REASONS}
    unmatched = unmatched_light(
        science, template, xi, yi, keep, reach, (bg_s, bg_t), rad, (psf_s.fwhm, psf_t.fwhm)
    )
    reporter.update(1.0)
    return CandidateSet(
        table,
        int(n_detected),
        types.MappingProxyType(counts),
        int(half),
        float(fwhm),
        bright_xy,
        unmatched,
    )
