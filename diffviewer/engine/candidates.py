"""Kernel candidates: isolated, unsaturated stars measured on both images (seed: kernel sources).

Stars are found on the science image as local maxima of the image smoothed by a
sigma 1 px binomial filter (a matched filter for a PSF of ~2.4 px FWHM; a mismatch costs
little S/N), above ``detect_threshold`` times the smoothed image's noise over a coarse
background. Each is measured on both images in a circular aperture of radius 1.5 FWHM,
then kept only if its stamp is inside the image, no pixel of it is saturated (by value or
plane) on either image, its science S/N lies in the window, its template/science flux
ratio agrees with the median one (10% plus 5 sigma: transients and variables are not
kernel stars), no comparably bright neighbour sits nearby, and its cell of the image is
not yet full (the brightest first; cells are at most a quarter of the image side), up to
``max_candidates`` in all (each cell's brightest first). Only the stars so chosen have
their whole stamp checked for masked and saturated pixels on both images; one that fails
gives its place to the next brightest in its cell. Every ``control_every``-th survivor
(in order of decreasing S/N) is held out as a control star. Around the stars kept, the
detections with light on one image only (beyond the field's flux ratio, at one seeing)
are listed (:class:`UnmatchedLight`): the kernel fit, which knows which image it
convolves, does not fit a star whose stamp holds as much of it there as the star.
"""

from __future__ import annotations

import dataclasses
import itertools
import types
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.table import Table
from scipy import ndimage
from scipy.spatial import cKDTree

from diffviewer.config import CandidatesConfig, KernelConfig
from diffviewer.engine.kernel_basis import stamp_half_width
from diffviewer.engine.progress import Reporter
from diffviewer.engine.psf import cutouts, estimate_psf, frozen
from diffviewer.errors import InputError
from diffviewer.exposure import Exposure, MaskPlane
from diffviewer.stats import (
    FWHM_PER_SIGMA,
    MAD_TO_SIGMA,
    window_mad,
    window_median,
    window_within,
)

#: Rejection reasons at selection, in the order they are tested (a star counts under the first).
REASONS = (
    "edge",
    "saturated",
    "S/N window",
    "flux ratio",
    "not isolated",
    "masked",
    "cell limit",
)

#: A star whose template/science flux ratio departs from the median ratio by more than this
#: fraction, beyond its noise (:data:`FLUX_RATIO_SIGMA`), is a variable, a transient or a
#: blend, not a kernel star.
FLUX_RATIO_TOLERANCE = 0.1
FLUX_RATIO_SIGMA = 5.0

#: A neighbour's light on the convolved image only (beyond :data:`FLUX_RATIO_TOLERANCE`
#: and its noise), over the star's own there, from which it spoils the star's stamp. Measured on a
#: synthetic Moffat pair (science convolved, the kernel's wing; a point 20 px beside every
#: third kernel star, the stars' stamps held fixed): below 1 the stamps' sums moved by
#: 0.4 % either way (their noise) and the whole fit's by 0.01 %; at 1-3 and 3-10 by -0.6 %
#: and -1.5 % each, all one way, and the whole fit's by +0.6 %.
NEIGHBOUR_LIGHT = 1.0

#: Share of a neighbour's light on the image that holds more of it which the other lacks,
#: from which the neighbour counts as on one image only (a transient; a variable that
#: changed by a factor of 2 or more). Static blends' aperture ratios stray from the
#: field's by up to 41 % at one seeing (a clean synthetic pair of Moffat stars of index
#: 2.5 and 3.5, whose wings the Gaussian smoothing does not match), the demo stacks'
#: brightest stars by 15 % (coarse backgrounds under 8 px apertures).
UNMATCHED_SHARE = 0.5

#: Side (px) of the boxes of the coarse background and noise maps.
BACKGROUND_BOX = 64

#: The separable smoothing before peak finding: binomial weights, a Gaussian of sigma 1 px.
_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0

_MASKED = int(MaskPlane.NO_DATA | MaskPlane.BAD | MaskPlane.EDGE | MaskPlane.CR)
_SATURATED = int(MaskPlane.SAT | MaskPlane.SAT_TEMPLATE)


@dataclasses.dataclass(frozen=True, eq=False)
class UnmatchedLight:
    """Detections near the candidates whose light the field's flux ratio does not match
    (a transient, a variable, a star non-linear on one image): :func:`_unmatched_light`.

    Attributes
    ----------
    x, y : numpy.ndarray
        Their integer science pixels.
    science, template : numpy.ndarray
        The light each holds on that image beyond the other's (image units; 0 on the
        image that holds less), in an aperture of 1.5 science FWHM at one seeing.
    star_science, star_template : numpy.ndarray
        The candidates' own fluxes so measured (the candidate table's rows).
    """

    x: np.ndarray
    y: np.ndarray
    science: np.ndarray
    template: np.ndarray
    star_science: np.ndarray
    star_template: np.ndarray

    def spoils(self, x: np.ndarray, y: np.ndarray, half: int, convolved: str) -> np.ndarray:
        """Candidates (bool, the table's rows) whose convolved stamp holds light on the
        convolved image only at least :data:`NEIGHBOUR_LIGHT` times the star's own.

        Parameters
        ----------
        x, y : numpy.ndarray
            The candidates' positions (science px).
        half : int
            Half-width (px) of the convolved image's stamps (the fit region and the
            kernel's reach around it).
        convolved : str
            ``"science"`` or ``"template"``.
        """
        on_science = convolved == "science"
        light = self.science if on_science else self.template
        star_flux = self.star_science if on_science else self.star_template
        out = np.zeros(len(x), dtype=bool)
        if not len(light):
            return out
        inside = (np.abs(x[:, None] - self.x[None]) <= half) & (
            np.abs(y[:, None] - self.y[None]) <= half
        )
        bright = light[None] >= NEIGHBOUR_LIGHT * star_flux[:, None]
        return np.asarray(np.any(inside & bright, axis=1))


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


def _at(grid: np.ndarray, shape: tuple[int, int], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear value of a box grid at pixel positions."""
    ny, nx = shape
    gy, gx = grid.shape
    return ndimage.map_coordinates(
        grid, [(y + 0.5) * gy / ny - 0.5, (x + 0.5) * gx / nx - 0.5], order=1, mode="nearest"
    )


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
    keep[keep] = value[keep] > _at(thresh, shape, x[keep], y[keep])
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
    peak = image[yi, xi] - _at(bg, image.shape, xi, yi)
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


def _aperture(stamps: np.ndarray, bgv: np.ndarray, radius: float) -> np.ndarray:
    """Background-subtracted sum within ``radius`` of each stamp's centre."""
    half = stamps.shape[-1] // 2
    r = np.arange(-half, half + 1)
    ap = (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2
    return (stamps[:, ap].astype(np.float64) - bgv[:, None]).sum(axis=1)


@dataclasses.dataclass(frozen=True)
class _Apertures:
    """Aperture fluxes and variances of sources on both images, and each aperture's
    cutout maximum (for the saturation test)."""

    flux_s: np.ndarray
    flux_t: np.ndarray
    var_s: np.ndarray
    var_t: np.ndarray
    max_s: np.ndarray
    max_t: np.ndarray


def _apertures(
    science: Exposure,
    template: Exposure,
    xi: np.ndarray,
    yi: np.ndarray,
    backgrounds: tuple[np.ndarray, np.ndarray],
    radius: float,
    blur: tuple[float, float] = (0.0, 0.0),
) -> _Apertures:
    """Background-subtracted aperture sums of radius ``radius`` at integer positions on
    both images (:func:`_aperture`); apertures the image's edge cuts are NaN.

    ``blur`` gives the sigma (px) of a Gaussian each image's cutouts are smoothed with
    first (the sharper image brought to the broader's seeing). The variances are those
    of the unsmoothed sums, an upper bound of the smoothed sums' (the smoothing spreads
    the aperture's unit weights into weights below one with the same sum).
    """
    half = int(np.ceil(radius))
    sums = []
    maxima = []
    for exposure, grid, sigma in zip((science, template), backgrounds, blur, strict=True):
        margin = int(np.ceil(4 * sigma))
        stamps, _ = cutouts(exposure.image, xi, yi, half + margin, fill=np.nan)
        if sigma > 0:
            stamps = ndimage.gaussian_filter(stamps, (0, sigma, sigma), mode="nearest")
            stamps = stamps[:, margin : margin + 2 * half + 1, margin : margin + 2 * half + 1]
        var, _ = cutouts(exposure.variance, xi, yi, half, fill=np.nan)
        sums.append(_aperture(stamps, _at(grid, exposure.shape, xi, yi), radius))
        sums.append(np.clip(_aperture(var, np.zeros(len(xi)), radius), 1e-30, None))
        maxima.append(stamps.max(axis=(1, 2), initial=-np.inf))
    return _Apertures(sums[0], sums[2], sums[1], sums[3], maxima[0], maxima[1])


def _pairs_within(
    xi: np.ndarray, yi: np.ndarray, stars: np.ndarray, radius: float, p: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``stars`` (indices) paired with every other detection within ``radius``
    (Minkowski ``p``-norm: 2 a circle, ``inf`` a square), as two index arrays."""
    tree = cKDTree(np.column_stack([xi, yi]))
    pairs = tree.query_ball_point(np.column_stack([xi[stars], yi[stars]]), r=radius, p=p)
    count = np.fromiter(map(len, pairs), dtype=np.intp, count=len(pairs))
    near = np.fromiter(itertools.chain.from_iterable(pairs), dtype=np.intp, count=count.sum())
    star = np.repeat(stars, count)
    other = near != star
    return star[other], near[other]


def _unmatched_light(
    science: Exposure,
    template: Exposure,
    xi: np.ndarray,
    yi: np.ndarray,
    stars: np.ndarray,
    reach: int,
    backgrounds: tuple[np.ndarray, np.ndarray],
    radius: float,
    fwhm: tuple[float, float],
) -> UnmatchedLight:
    """The detections within ``reach`` px (a square) of the ``stars`` (indices) whose
    flux ratio disagrees with the stars' (:func:`_ratio_deviant`) by at least
    :data:`UNMATCHED_SHARE` of their light, and their light on one image only.

    Such light is what the kernel cannot match. In the convolved image it is a lever on
    the kernel's shape: the kernel spreads it over the stamp, and the fit moves its wing
    and sum to meet a target that lacks it, beyond what its clipping finds (on Moffat
    stars with the kernel's wing, points of S/N ~500 18 px from 40 kernel stars, on the
    convolved image, moved the kernel sum 1.5 %). On the target image it is only a
    residual, which the clipping finds. Neighbours are blends, and an aperture holds more
    of a neighbour's light on the image with the broader PSF: the sharper image is
    smoothed to the broader's seeing (``fwhm``: science, template) first, and the ratio
    compared against is the median of the stars' own, so measured (without it, 9 static
    stars of a clean synthetic pair with FWHM 4 and 2.5 px departed from it by 15-50 %).
    ``radius`` is the apertures' radius.
    """
    extra = np.sqrt(abs(fwhm[0] ** 2 - fwhm[1] ** 2)) / FWHM_PER_SIGMA
    blur = (extra, 0.0) if fwhm[0] < fwhm[1] else (0.0, extra)
    own = _apertures(science, template, xi[stars], yi[stars], backgrounds, radius, blur)
    mine = (frozen(own.flux_s), frozen(own.flux_t))
    empty = frozen(np.zeros(0))
    none = UnmatchedLight(empty, empty, empty, empty, *mine)
    ratio = _median_ratio(own.flux_s, own.flux_t, np.isfinite(own.flux_s + own.flux_t))
    if ratio is None:
        return none
    _, other = _pairs_within(xi, yi, stars, reach, np.inf)
    if not len(other):
        return none
    nb = np.unique(other)
    # A neighbour with a masked or saturated pixel in its aperture has no ratio to judge
    # (a warped template's edge holds no data: stars there look as if on the science only).
    half = int(np.ceil(radius))
    flagged = np.zeros(len(nb), dtype=bool)
    for exposure in (science, template):
        bits, _ = cutouts(exposure.mask, xi[nb], yi[nb], half, fill=int(MaskPlane.NO_DATA))
        flagged |= np.any((bits & (_MASKED | _SATURATED)) != 0, axis=(1, 2))
    nb = nb[~flagged]
    ap = _apertures(science, template, xi[nb], yi[nb], backgrounds, radius, blur)
    excess = ap.flux_t - ratio * ap.flux_s
    brighter = np.maximum(ap.flux_t, ratio * ap.flux_s)
    varies = _ratio_deviant(ap.flux_s, ap.flux_t, ap.var_s, ap.var_t, ratio) & (
        np.abs(excess) >= UNMATCHED_SHARE * brighter
    )
    excess = excess[varies]
    return UnmatchedLight(
        frozen(xi[nb][varies].astype(float)),
        frozen(yi[nb][varies].astype(float)),
        frozen(np.clip(-excess / ratio, 0.0, None)),
        frozen(np.clip(excess, 0.0, None)),
        *mine,
    )


def _median_ratio(flux_s: np.ndarray, flux_t: np.ndarray, alive: np.ndarray) -> float | None:
    """The median template/science flux ratio of the ``alive`` stars (None with fewer than
    three, or when it is not positive)."""
    if alive.sum() < 3:
        return None
    m = float(np.median(flux_t[alive] / flux_s[alive]))
    return m if np.isfinite(m) and m > 0 else None


def _ratio_deviant(
    flux_s: np.ndarray, flux_t: np.ndarray, var_s: np.ndarray, var_t: np.ndarray, m: float
) -> np.ndarray:
    """Sources whose template flux disagrees with ``m`` times their science flux.

    Flagged when ``|flux_t - m flux_s| > FLUX_RATIO_TOLERANCE * m * flux_s + FLUX_RATIO_SIGMA
    * sqrt(var_t + m^2 var_s)``: e.g. a source present on the science image only (a
    transient, an injected star) or a variable.
    """
    dev = np.abs(flux_t - m * flux_s)
    allowed = FLUX_RATIO_TOLERANCE * m * np.abs(flux_s) + FLUX_RATIO_SIGMA * np.sqrt(
        var_t + m**2 * var_s
    )
    return np.asarray(dev > allowed)


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
        masked[sl] = np.any((bits & _MASKED) != 0, axis=(1, 2))
        saturated[sl] = (
            np.any((bits & _SATURATED) != 0, axis=(1, 2))
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
        peak = science.image[yi, xi] - _at(bg_s, shape, xi, yi)
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
    ap = _apertures(science, template, xi[idx], yi[idx], (bg_s, bg_t), rad)
    flux_s[idx], flux_t[idx], var_s[idx], var_t[idx] = ap.flux_s, ap.flux_t, ap.var_s, ap.var_t
    snr = np.zeros(len(xi))
    snr[idx] = flux_s[idx] / np.sqrt(var_s[idx])
    sat = np.zeros(len(xi), dtype=bool)
    sat[idx] = (ap.max_s >= sat_s) | (ap.max_t >= sat_t)
    reject(sat, "saturated")
    reject((snr < config.snr_min) | (snr > config.snr_max), "S/N window")
    ratio = _median_ratio(flux_s, flux_t, reasons == "")
    if ratio is not None:
        deviant = _ratio_deviant(flux_s, flux_t, var_s, var_t, ratio)
        reject(deviant & (reasons == ""), "flux ratio")
    reporter.update(0.7)

    if not config.source_list and config.isolation_radius > 0 and len(xi) > 1:
        alive = np.nonzero(reasons == "")[0]
        star, other = _pairs_within(xi, yi, alive, config.isolation_radius * half, 2.0)
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
        science.image, xi[keep], yi[keep], _at(bg_s, shape, xi[keep], yi[keep])
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
    unmatched = _unmatched_light(
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
