"""The PSF's light beyond its image and under its stars' sky: a Moffat wing fitted to the stars.

A PSF image is cut at about 3 FWHM, and atmospheric seeing puts a few per cent of a
star's light beyond that (Moffat 1969; Racine 1996): a Moffat profile of index 2.5 and
FWHM 4 px holds 2.3 % of its flux beyond 12 px. A PSF image normalised to sum 1 over
its stamp scales every PSF flux down by that share. Each star's sky has the same
trouble: taken at its cutout's border it holds the star's own wing there (3 % of the
flux over a 3 FWHM stamp), and in a crowded field its neighbours' wings lie over the
star's own beyond 2 FWHM (on issue 12's synthetic pair, the median star's wing at
3-6 FWHM is several times below its neighbours' light).

The star stack (:func:`diffviewer.engine.psf.stack_stars`) is therefore extended to
:data:`WING_EXTENT` times the PSF image's half-width, its radial profile fitted by a
Moffat profile plus a constant (:func:`fit_wing`: the constant is the sky the stars'
borders left; the Moffat, whose wing falls as ``r^-2 beta``, is told from it by its
shape), the other sources in each star's cutout taken out with that PSF, wing included
(:func:`without_neighbours`), and the stack and the fit made again. The PSF image is
then the stack less the constant, and the share of a star's whole flux within it
(:func:`psf_image`) its sum over that sum plus the fitted profile's flux outside the
stamp, so that PSF fluxes measured with the image carry the whole flux. (Replacing the
stack's noisier pixels beyond 1.5 FWHM by the fitted profile changed no Moffat pair's
flux by more than 0.2 % and put a Gaussian PSF's wing 0.3 % too high: the profile is a
model of the wing, not of every PSF's shape.)
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from scipy import ndimage
from scipy.optimize import least_squares

from diffviewer.engine.moments import box_extremum
from diffviewer.stats import MAD_TO_SIGMA, nanmedian_last

#: Radial extent of the stack whose profile is fitted, in half-widths of the PSF image
#: (3 FWHM): at 6 FWHM a Moffat of index 2.5 has fallen 40-fold below its value at
#: 3 FWHM, so the sky (flat) and the wing are told apart by their shapes.
WING_EXTENT = 2

#: Bounds of the Moffat index: below 1.5 the flux beyond the stamp diverges slowly
#: (Kolmogorov seeing's wing is r^-11/3, an index of 1.83); a Moffat of index beta is a
#: Gaussian of sigma^2 = alpha^2 / (2 beta) times exp(r^4 / (8 beta sigma^4)) to first
#: order, so at 1000 it is a Gaussian's to 2 % at 3.5 sigma (at 30, 1.8 times it: 0.3 %
#: more flux beyond 1.5 FWHM of a Gaussian PSF).
BETA_BOUNDS = (1.5, 1000.0)

#: Least number of profile points (1 px annuli with usable pixels) for a wing fit.
MIN_POINTS = 8

#: Plausible share of the flux within a 3 FWHM PSF image: a fit outside this is noise
#: (a Moffat of index 1.5 and FWHM 4 px holds 84 % within 12 px).
ENCLOSED_RANGE = (0.8, 1.0)

#: Sub-pixel samples per pixel side of the Moffat integrated over each pixel.
SUBSAMPLE = 3


#: Stars whose cutouts :func:`without_neighbours` searches at a time: a block's arrays stay
#: in the cache (GOTO's (196, 73, 73) cutouts: 47 -> 32 ms for the search).
STAR_BLOCK = 8


@dataclasses.dataclass(frozen=True)
class Wing:
    """The Moffat profile and sky constant fitted to the stack's radial profile.

    Attributes
    ----------
    amplitude, alpha, beta : float
        ``A``, core width (px) and index of ``A (1 + r^2 / alpha^2)^-beta`` (in units of
        the stack: each star divided by its core flux).
    constant : float
        The sky the stars' own sky estimate left (same units).
    """

    amplitude: float
    alpha: float
    beta: float
    constant: float

    def describe(self, enclosed: float) -> str:
        """The fit in words, for the PSF's ``reason``."""
        return (
            f"a Moffat wing of index {self.beta:.2f} fitted to the stars' profiles, "
            f"neighbours taken out: the image holds {100 * enclosed:.1f} % of the flux"
        )


def moffat(r: np.ndarray, amplitude: float, alpha: float, beta: float) -> np.ndarray:
    """``amplitude (1 + r^2 / alpha^2)^-beta``."""
    return amplitude * (1.0 + (np.asarray(r) / alpha) ** 2) ** (-beta)


def pixel_moffat(amplitude: float, alpha: float, beta: float, half: int) -> np.ndarray:
    """The Moffat centred on a ``(2 half + 1)^2`` stamp, averaged over each pixel.

    Each pixel is the mean of :data:`SUBSAMPLE` x :data:`SUBSAMPLE` samples at the
    centres of its sub-pixels (so the core is what pixels see, not the profile's peak).
    The profile is evaluated once at each distinct radius (:func:`_distinct_radii`): a
    fit evaluates it some 50 times (a 121 px PSF image took 191 ms a fit, every radius
    evaluated).
    """
    radii, where = _distinct_radii(half)
    result: np.ndarray = moffat(radii, amplitude, alpha, beta)[where].mean(axis=(2, 3))
    return result


@functools.lru_cache(maxsize=8)
def _distinct_radii(half: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of :func:`_subpixel_radii` (the stamp's symmetry leaves an
    eighth), and the index of each sub-pixel's among them (its shape); read-only."""
    every = _subpixel_radii(half)
    radii, where = np.unique(every, return_inverse=True)
    where = where.reshape(every.shape)
    radii.flags.writeable = False
    where.flags.writeable = False
    return radii, where


def subpixels() -> np.ndarray:
    """Offsets (px) of a pixel's :data:`SUBSAMPLE` sub-pixel centres along one side from
    its centre."""
    result: np.ndarray = (np.arange(SUBSAMPLE) + 0.5) / SUBSAMPLE - 0.5
    return result


def _subpixel_radii(half: int) -> np.ndarray:
    """Distance (px) from the centre of a ``(2 half + 1)^2`` stamp of the centres of the
    :data:`SUBSAMPLE` x :data:`SUBSAMPLE` sub-pixels of each pixel: shape ``(2 half + 1,
    2 half + 1, SUBSAMPLE, SUBSAMPLE)``, row and column of the pixel first."""
    axis = (np.arange(-half, half + 1, dtype=float)[:, None] + subpixels()[None, :]).ravel()
    n = 2 * half + 1
    fine = np.hypot(axis[:, None], axis[None, :]).reshape(n, SUBSAMPLE, n, SUBSAMPLE)
    result: np.ndarray = fine.transpose(0, 2, 1, 3)
    return result


def _radii(half: int) -> np.ndarray:
    """Distance (px) of each pixel of a ``(2 half + 1)^2`` stamp from its centre."""
    off = np.arange(-half, half + 1, dtype=float)
    r: np.ndarray = np.hypot(off[:, None], off[None, :])
    return r


def fit_wing(stack: np.ndarray, fwhm: float) -> Wing | None:
    """Moffat plus constant fitted to a centred stack's radial profile beyond half a FWHM.

    The profile is the mean of the stack in 1 px annuli, each with its error (the
    pixels' scatter over the root of their number: within an annulus the profile's own
    slope adds to the scatter, so the core weighs little). The model is averaged over
    the same pixels, each integrated over its area (:func:`pixel_moffat`), so neither
    the curvature of the profile across an annulus nor the pixels' averaging of the
    core biases the index; the centre within half a FWHM, where a real PSF departs
    most from a Moffat, is left out.

    Parameters
    ----------
    stack : numpy.ndarray
        Odd square image centred on its middle pixel (units of the stars' core flux);
        NaN where no star was usable.
    fwhm : float
        The PSF's FWHM (px), for the starting point and the inner radius.

    Returns
    -------
    Wing or None
        None with too few usable annuli or a failed fit.
    """
    half = stack.shape[0] // 2
    ring = np.floor(_radii(half)).astype(np.intp)
    known = np.isfinite(stack)
    rings, mean, error = [], [], []
    for k in range(half + 1):
        inside = (ring == k) & known
        if inside.sum() < 4 or k + 0.5 < 0.5 * fwhm:
            continue
        values = stack[inside]
        rings.append(inside)
        mean.append(float(values.mean()))
        error.append(float(values.std(ddof=1)) / np.sqrt(values.size))
    if len(rings) < MIN_POINTS or not all(e > 0 for e in error):
        return None
    p, e = np.array(mean), np.array(error)
    # The annulus of each pixel used, and its sub-pixels' radii: the model (as
    # :func:`pixel_moffat`) is evaluated on those pixels only.
    label = np.full(ring.shape, -1)
    for k, inside in enumerate(rings):
        label[inside] = k
    used = label >= 0
    # The fit evaluates the model some 50 times: at each distinct radius once (the
    # stamp's symmetry leaves an eighth of them), spread to the sub-pixels by index.
    radii, where = np.unique(_subpixel_radii(half)[used], return_inverse=True)
    label = label[used]
    counts = np.bincount(label, minlength=len(rings))

    def profile(v: np.ndarray) -> np.ndarray:
        model = moffat(radii, 1.0, float(np.exp(v[1])), float(v[2]))
        pixels = model[where].mean(axis=(1, 2))
        return np.exp(v[0]) * np.bincount(label, pixels, minlength=len(rings)) / counts

    def residual(v: np.ndarray) -> np.ndarray:
        return (profile(v) + v[3] - p) / e

    beta0 = 3.0
    alpha0 = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta0) - 1.0))
    start = np.array([0.0, np.log(alpha0), beta0, 0.0])
    a0 = p[0] / profile(start)[0]
    if not a0 > 0:
        return None
    start[0] = np.log(a0)
    lo = [-np.inf, np.log(0.1 * fwhm), BETA_BOUNDS[0], -np.inf]
    hi = [np.inf, np.log(10.0 * fwhm), BETA_BOUNDS[1], np.inf]
    fit = least_squares(residual, start, bounds=(lo, hi), x_scale="jac")
    if not fit.success or not np.all(np.isfinite(fit.x)):
        return None
    a, log_alpha, beta, c = (float(v) for v in fit.x)
    return Wing(float(np.exp(a)), float(np.exp(log_alpha)), beta, c)


def flux_outside(wing: Wing, half: int) -> float:
    """Flux of the fitted profile outside a centred square stamp of half-width ``half``.

    Its values at pixel centres out to four times the stamp (the wing is smooth there),
    and beyond that radius the profile's integral,
    ``A pi alpha^2 / (beta - 1) (1 + R^2 / alpha^2)^(1 - beta)``.
    """
    far = 4 * half
    r = _radii(far)
    off = np.abs(np.arange(-far, far + 1))
    ring = ((off[:, None] > half) | (off[None, :] > half)) & (r <= far)
    a, alpha, beta = wing.amplitude, wing.alpha, wing.beta
    near = float(moffat(r[ring], a, alpha, beta).sum())
    beyond = a * np.pi * alpha**2 / (beta - 1.0) * (1.0 + (far / alpha) ** 2) ** (1.0 - beta)
    return near + float(beyond)


def extended(stack: np.ndarray, wing: Wing, half: int) -> np.ndarray:
    """The PSF on a stamp of half-width ``half``: the stack where it reaches, the wing beyond.

    Parameters
    ----------
    stack : numpy.ndarray
        The PSF image as stacked (odd square, each star over its core flux).
    wing : Wing
        Its fitted profile and sky constant (the constant is taken off the stack).
    half : int
        Half-width (px) of the result, at least the stack's.

    Returns
    -------
    numpy.ndarray
        ``(2 half + 1)^2`` image in the stack's units (not normalised).
    """
    out = pixel_moffat(wing.amplitude, wing.alpha, wing.beta, half)
    h = stack.shape[0] // 2
    out[half - h : half + h + 1, half - h : half + h + 1] = stack - wing.constant
    return out


def psf_image(
    stack: np.ndarray, extended: np.ndarray, fwhm: float
) -> tuple[np.ndarray, float, Wing] | None:
    """The PSF image with its share of the whole flux, from a stack and its extension.

    Parameters
    ----------
    stack : numpy.ndarray
        The PSF image as stacked (odd square, each star divided by its core flux).
    extended : numpy.ndarray
        The same stack extended to :data:`WING_EXTENT` times its half-width (NaN where
        no star was usable).
    fwhm : float
        The stack's FWHM (px).

    Returns
    -------
    (numpy.ndarray, float, Wing) or None
        The image (the stack less the fitted constant, sum 1), the share of the flux it
        holds and the fit;
        None when the profile cannot be fitted or the share is implausible
        (:data:`ENCLOSED_RANGE`): the stack is then used as it is.
    """
    wing = fit_wing(extended, fwhm)
    if wing is None:
        return None
    image = stack - wing.constant
    held = float(image.sum())
    total = held + flux_outside(wing, stack.shape[0] // 2)
    usable = held > 0 and bool(np.all(np.isfinite(image)))
    if not (usable and ENCLOSED_RANGE[0] <= held / total <= ENCLOSED_RANGE[1]):
        return None
    return image / held, held / total, wing


def without_neighbours(
    stamps: np.ndarray, flux: np.ndarray, model: np.ndarray, core: float, fwhm: float
) -> np.ndarray:
    """Star cutouts with the light of the other sources in them taken out.

    In each cutout, after the star's own model (``flux`` times ``model`` at the centre),
    a neighbour is a local maximum (box of one FWHM) of the 3 x 3 mean beyond ``core``
    px of the centre, above 5 times that mean's robust noise; brightest first, its flux
    is fitted to its core (``core`` px) with ``model`` and its model, wing included, is
    subtracted, and the pixels within one FWHM of it (where a whole-pixel centre leaves
    a residual) are set to NaN. Sources beyond the cutout are not seen: their light is
    smooth over it, and the fitted sky constant takes it.

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(n, m, m)`` sky-subtracted cutouts centred on the stars; NaN where unknown.
    flux : numpy.ndarray
        Each star's flux in the units of ``model`` (its core flux).
    model : numpy.ndarray
        The PSF (:func:`extended`) on a stamp of half-width at least ``m - 1``.
    core : float
        Radius (px) of a star's core: neighbours closer to the centre are left (blends).
    fwhm : float
        The PSF's FWHM (px).

    Returns
    -------
    numpy.ndarray
        The cleaned cutouts.
    """
    n, m, _ = stamps.shape
    half, big = m // 2, model.shape[0] // 2
    off = np.arange(m, dtype=float) - half
    beyond = np.hypot(off[:, None], off[None, :]) > core
    box = max(3, 2 * int(np.ceil(fwhm / 2.0)) + 1)
    rc = int(np.ceil(core))
    kernel = model[big - rc : big + rc + 1, big - rc : big + rc + 1]
    disc = np.hypot(*np.mgrid[-rc : rc + 1, -rc : rc + 1]) <= core
    centre = model[big - half : big + half + 1, big - half : big + half + 1]
    out = np.empty_like(stamps)
    for start in range(0, n, STAR_BLOCK):
        block = slice(start, start + STAR_BLOCK)
        out[block] = stamps[block]
        peak, smooth = _neighbour_peaks(stamps[block], flux[block], centre, beyond, box)
        for k in np.nonzero(peak.any(axis=(1, 2)))[0]:
            stamp, star = out[start + k], flux[start + k]
            ys, xs = np.nonzero(peak[k])
            for j in np.argsort(-smooth[k, ys, xs]):
                py, px = int(ys[j]), int(xs[j])
                if min(py, px) < rc or max(py, px) + rc >= m:
                    continue
                around = (slice(py - rc, py + rc + 1), slice(px - rc, px + rc + 1))
                patch = stamp[around] - star * centre[around]
                use = disc & np.isfinite(patch)
                if not use.any():
                    continue
                weight = kernel[use]
                f = float((weight * patch[use]).sum() / (weight**2).sum())
                if not f > 0:
                    continue
                stamp -= f * model[big - py : big - py + m, big - px : big - px + m]
                stamp[around][disc] = np.nan
    return out


def _neighbour_peaks(
    stamps: np.ndarray, flux: np.ndarray, centre: np.ndarray, beyond: np.ndarray, box: int
) -> tuple[np.ndarray, np.ndarray]:
    """The neighbours' peaks in cutouts (as :func:`without_neighbours` defines them) and
    the 3 x 3 mean of the cutouts less their stars in which they were found.

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(n, m, m)`` cutouts; NaN where unknown.
    flux : numpy.ndarray
        Each star's flux in the units of ``centre``.
    centre : numpy.ndarray
        The PSF model on an ``(m, m)`` stamp.
    beyond : numpy.ndarray
        ``(m, m)`` map of the pixels beyond the stars' cores.
    box : int
        Side (px, odd) of the box a peak is the maximum of.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Boolean map of the peaks and the 3 x 3 mean, both ``(n, m, m)``.
    """
    unknown = ~np.isfinite(stamps)
    rest = np.multiply(flux[:, None, None], centre)
    np.subtract(stamps, rest, out=rest)
    rest[unknown] = 0.0
    smooth = ndimage.uniform_filter(rest, (1, 3, 3))
    spread = np.abs(smooth)
    spread[unknown] = np.nan
    level = MAD_TO_SIGMA * nanmedian_last(spread.reshape(len(stamps), -1))
    peak = (smooth == box_extremum(smooth, box // 2, largest=True)) & ~unknown & beyond
    peak &= smooth > 5.0 * level[:, None, None]
    return peak, smooth
