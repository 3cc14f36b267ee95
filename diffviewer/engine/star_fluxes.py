"""Stars measured in apertures on both images, and what the fluxes tell: the field's
template/science flux ratio, the sources that depart from it, and the light on one image
only beside the kernel stars.

Candidate selection (:mod:`candidates`) measures its stars here and rejects those whose
ratio departs from the field's (:func:`ratio_deviant`); around the stars it keeps, the
detections with light on one image only are listed (:func:`unmatched_light`), and the
kernel fit does not fit a star whose stamp on the image it convolves holds as much of it
as the star (:meth:`UnmatchedLight.spoils`).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from diffviewer.engine.lent import map_slices
from diffviewer.engine.psf import cutouts, frozen
from diffviewer.exposure import Exposure, MaskPlane
from diffviewer.stats import FWHM_PER_SIGMA, nanmedian_last

#: A star whose template/science flux ratio departs from the median ratio by more than this
#: fraction, beyond its noise (:data:`FLUX_RATIO_SIGMA`), is a variable, a transient or a
#: blend, not a kernel star.
FLUX_RATIO_TOLERANCE = 0.1
FLUX_RATIO_SIGMA = 5.0

#: A neighbour's light on the convolved image only (beyond :data:`FLUX_RATIO_TOLERANCE`
#: and its noise), over the star's own there, from which it spoils the star's stamp.
#: Measured on a synthetic Moffat pair (science convolved, the kernel's wing; a point
#: 20 px beside every third kernel star, the stars' stamps held fixed): below 1 the
#: stamps' sums moved by 0.4 % either way (their noise) and the whole fit's by 0.01 %; at
#: 1-3 and 3-10 by -0.6 % and -1.5 % each, all one way, and the whole fit's by +0.6 %.
NEIGHBOUR_LIGHT = 1.0

#: Share of a neighbour's light on the image that holds more of it which the other lacks,
#: from which the neighbour counts as on one image only (a transient; a variable that
#: changed by a factor of 2 or more). Static blends' aperture ratios stray from the
#: field's by up to 41 % at one seeing (a clean synthetic pair of Moffat stars of index
#: 2.5 and 3.5, whose wings the Gaussian smoothing does not match), the demo stacks'
#: brightest stars by 15 % (coarse backgrounds under 8 px apertures).
UNMATCHED_SHARE = 0.5

#: Mask planes under which no star is measured, and the saturation planes.
MASKED = int(MaskPlane.NO_DATA | MaskPlane.BAD | MaskPlane.EDGE | MaskPlane.CR)
SATURATED = int(MaskPlane.SAT | MaskPlane.SAT_TEMPLATE)


@dataclasses.dataclass(frozen=True, eq=False)
class UnmatchedLight:
    """Detections near the candidates whose light the field's flux ratio does not match
    (a transient, a variable, a star non-linear on one image): :func:`unmatched_light`.

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


def grid_value(
    grid: np.ndarray, shape: tuple[int, int], x: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """Bilinear value of a box grid (e.g. :func:`peaks.coarse_background`'s) over an
    image of ``shape`` at pixel positions."""
    ny, nx = shape
    gy, gx = grid.shape
    return ndimage.map_coordinates(
        grid, [(y + 0.5) * gy / ny - 0.5, (x + 0.5) * gx / nx - 0.5], order=1, mode="nearest"
    )


#: Sources measured at once by :func:`local_snr` and :func:`aperture_fluxes`: their
#: cutouts (a 35 px side on the 4096^2 pair) stay within the memory the allocator reuses
#: and the caches hold, where all at once are image-sized planes of fresh pages (its
#: 15,002 kernel candidates' local S/N 0.31-0.96 s at once, 0.14 s by 256, 0.10 s by 256
#: on two threads; the same bits).
SOURCE_CHUNK = 256


def aperture_sum(stamps: np.ndarray, bgv: np.ndarray, radius: float) -> np.ndarray:
    """Background-subtracted sum within ``radius`` of each stamp's centre."""
    half = stamps.shape[-1] // 2
    r = np.arange(-half, half + 1)
    ap = (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2
    return (stamps[:, ap].astype(np.float64) - bgv[:, None]).sum(axis=1)


@dataclasses.dataclass(frozen=True)
class Apertures:
    """Aperture fluxes and variances of sources on both images, and each aperture's
    cutout maximum (for the saturation test)."""

    flux_s: np.ndarray
    flux_t: np.ndarray
    var_s: np.ndarray
    var_t: np.ndarray
    max_s: np.ndarray
    max_t: np.ndarray


def aperture_fluxes(
    science: Exposure,
    template: Exposure,
    xi: np.ndarray,
    yi: np.ndarray,
    backgrounds: tuple[np.ndarray, np.ndarray],
    radius: float,
    blur: tuple[float, float] = (0.0, 0.0),
) -> Apertures:
    """Background-subtracted aperture sums of radius ``radius`` at integer positions on
    both images (:func:`aperture_sum`); apertures the image's edge cuts are NaN.

    ``blur`` gives the sigma (px) of a Gaussian each image's cutouts are smoothed with
    first (the sharper image brought to the broader's seeing). The variances are those
    of the unsmoothed sums, an upper bound of the smoothed sums' (the smoothing spreads
    the aperture's unit weights into weights below one with the same sum). Measured
    :data:`SOURCE_CHUNK` sources at a time (:func:`~diffviewer.engine.lent.map_slices`).
    """
    half = int(np.ceil(radius))

    def measure(run: slice) -> Apertures:
        x, y = xi[run], yi[run]
        sums, maxima = [], []
        for exposure, grid, sigma in zip((science, template), backgrounds, blur, strict=True):
            margin = int(np.ceil(4 * sigma))
            stamps, _ = cutouts(exposure.image, x, y, half + margin, fill=np.nan)
            if sigma > 0:
                stamps = ndimage.gaussian_filter(stamps, (0, sigma, sigma), mode="nearest")
                stamps = stamps[:, margin : margin + 2 * half + 1, margin : margin + 2 * half + 1]
            var, _ = cutouts(exposure.variance, x, y, half, fill=np.nan)
            sums.append(aperture_sum(stamps, grid_value(grid, exposure.shape, x, y), radius))
            sums.append(np.clip(aperture_sum(var, np.zeros(len(x)), radius), 1e-30, None))
            maxima.append(stamps.max(axis=(1, 2), initial=-np.inf))
        return Apertures(sums[0], sums[2], sums[1], sums[3], maxima[0], maxima[1])

    parts = map_slices(measure, len(xi), SOURCE_CHUNK)
    return Apertures(
        *(
            np.concatenate([getattr(p, f.name) for p in parts])
            for f in dataclasses.fields(Apertures)
        )
    )


#: A kernel candidate holds light of its own: its aperture flux above its local level
#: (:func:`local_snr`) exceeds this many sigma, i.e. is positive. The selection's fluxes
#: stand on a coarse background (64 px boxes), which lies under a bright star's halo or
#: a large galaxy: a noise peak there passes the S/N window (10 sigma) with their light.
#: On GOTO six candidates held no star, three of them GOOD kernel stars (aperture S/N
#: 25, 27 and 159): on a halo's convex flank their local S/N reads -0.9 to -5.6, below
#: 0. Not a second detection threshold: GOTO's stars of aperture S/N 10-13 read 5.8-11.9
#: (median 9.8), and extended sources read above 0 (the demo's galaxy 3.2, a faint
#: streak 1.6) and stay: static, they match the kernel as stars do (the demo's sparse
#: kernel lost its 10 detections' cleanness without those two: 18 detections, a residual
#: of S/N 65).
LOCAL_SNR_MIN = 0.0
#: Inner and outer radii of that annulus, in science FWHM: beyond the 1.5 FWHM aperture and
#: the core of a Moffat star, within reach of a halo's local level.
LOCAL_ANNULUS_FWHM = (2.5, 4.0)


def local_snr(
    exposure: Exposure, xi: np.ndarray, yi: np.ndarray, radius: float, fwhm: float
) -> np.ndarray:
    """S/N of each source's aperture flux (radius ``radius``, integer positions) above
    its local level: the median over the annulus :data:`LOCAL_ANNULUS_FWHM` of its usable
    pixels each averaged with its mirror through the centre (a gradient cancels; a
    halo's convex flank leaves its curvature, which reads as less light at the centre).

    The error holds the aperture's pixel variances and the level's (``pi / 2`` times the
    mean variance over the pairs' pixels over their number, for each of the aperture's
    pixels); NaN where no pair is usable. Measured :data:`SOURCE_CHUNK` sources at a time
    (:func:`~diffviewer.engine.lent.map_slices`).
    """
    return np.concatenate(
        map_slices(
            lambda run: _local_snr(exposure, xi[run], yi[run], radius, fwhm),
            len(xi),
            SOURCE_CHUNK,
        )
    )


def _local_snr(
    exposure: Exposure, xi: np.ndarray, yi: np.ndarray, radius: float, fwhm: float
) -> np.ndarray:
    """:func:`local_snr` of the sources at once."""
    inner, outer = (f * fwhm for f in LOCAL_ANNULUS_FWHM)
    half = int(np.ceil(outer))
    r = np.arange(-half, half + 1)
    rr = np.hypot(r[:, None], r[None, :])
    core, ring = rr <= radius, (rr >= inner) & (rr <= outer)
    stamps, _ = cutouts(exposure.image, xi, yi, half, fill=np.nan)
    var, _ = cutouts(exposure.variance, xi, yi, half, fill=np.nan)
    bits, _ = cutouts(exposure.mask, xi, yi, half, fill=MASKED)
    ring_values = np.where((bits[:, ring] & MASKED) == 0, stamps[:, ring], np.nan)
    ring_var = var[:, ring].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Each ring pixel averaged with its mirror through the centre (the mask is
        # point-symmetric: row-major order reversed), which cancels a gradient.
        n_pairs = ring_values.shape[1] // 2
        pairs = 0.5 * (ring_values[:, :n_pairs] + ring_values[:, ::-1][:, :n_pairs])
        used = np.isfinite(pairs)
        # NaN where no pair is usable; numpy.nanmedian's values, vectorised (it loops
        # over the rows in Python: the 4096^2 pair's 15,000 stars, 0.34 -> 0.28 s here)
        level = nanmedian_last(pairs.astype(np.float64))
        pair_var = ring_var[:, :n_pairs] + ring_var[:, ::-1][:, :n_pairs]
        mean_var = np.sum(np.where(used, pair_var, 0.0), axis=1) / (2 * np.sum(used, axis=1))
        level_var = np.pi / 2 * mean_var / (2 * np.sum(used, axis=1))
        flux = np.nansum(stamps[:, core].astype(np.float64), axis=1) - core.sum() * level
        error = np.sqrt(
            np.nansum(var[:, core].astype(np.float64), axis=1) + core.sum() ** 2 * level_var
        )
        return flux / error


def pairs_within(
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


def unmatched_light(
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
    flux ratio disagrees with the stars' (:func:`ratio_deviant`) by at least
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
    own = aperture_fluxes(science, template, xi[stars], yi[stars], backgrounds, radius, blur)
    mine = (frozen(own.flux_s), frozen(own.flux_t))
    empty = frozen(np.zeros(0))
    none = UnmatchedLight(empty, empty, empty, empty, *mine)
    ratio = median_ratio(own.flux_s, own.flux_t, np.isfinite(own.flux_s + own.flux_t))
    if ratio is None:
        return none
    _, other = pairs_within(xi, yi, stars, reach, np.inf)
    if not len(other):
        return none
    nb = np.unique(other)
    # A neighbour with a masked or saturated pixel in its aperture has no ratio to judge
    # (a warped template's edge holds no data: stars there look as if on the science only).
    half = int(np.ceil(radius))
    flagged = np.zeros(len(nb), dtype=bool)
    for exposure in (science, template):
        bits, _ = cutouts(exposure.mask, xi[nb], yi[nb], half, fill=int(MaskPlane.NO_DATA))
        flagged |= np.any((bits & (MASKED | SATURATED)) != 0, axis=(1, 2))
    nb = nb[~flagged]
    ap = aperture_fluxes(science, template, xi[nb], yi[nb], backgrounds, radius, blur)
    excess = ap.flux_t - ratio * ap.flux_s
    brighter = np.maximum(ap.flux_t, ratio * ap.flux_s)
    varies = ratio_deviant(ap.flux_s, ap.flux_t, ap.var_s, ap.var_t, ratio) & (
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


def median_ratio(flux_s: np.ndarray, flux_t: np.ndarray, alive: np.ndarray) -> float | None:
    """The median template/science flux ratio of the ``alive`` stars (None with fewer than
    three, or when it is not positive)."""
    if alive.sum() < 3:
        return None
    m = float(np.median(flux_t[alive] / flux_s[alive]))
    return m if np.isfinite(m) and m > 0 else None


def ratio_deviant(
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
