"""PSF size, shape and image of an exposure, measured from stars (or given, or a default).

The fallback chain of :func:`estimate_psf`, first that applies:

1. ``'given'``: the PSF image the file provides (e.g. a survey's PSF HDU), unless the
   exposure was resampled (a warped template's PSF is in its own pixel grid);
2. ``'measured'``: stacked from at least :data:`MIN_STARS` stars on the size-flux locus
   among the kernel stars and the brightest peaks (:mod:`diffviewer.engine.psf_stars`,
   a locus that follows the PSF's variation over the field: galaxies and blends, larger
   than the PSF, are left out), or, where no locus is found, from the kernel stars as
   given;
3. ``'given'`` for a resampled exposure, when nothing above applied;
4. ``'bright sources'``: stacked from the brightest compact sources with relaxed
   criteria (down to one source, no isolation, no cells; each must be a
   :data:`BRIGHT_MIN_PEAK_SIGMA` peak, neither narrower than :data:`MIN_FWHM` nor much
   broader than the most compact of them), as on alert cutouts with one or two stars;
5. ``'header'``: a circular Gaussian of the header's FWHM (:data:`HEADER_FWHM_PX_KEYS`
   in px, or :data:`HEADER_SEEING_ARCSEC_KEYS` in arcsec with the WCS pixel scale);
6. ``'default'``: a circular Gaussian of :data:`DEFAULT_FWHM`.

Each estimate carries a ``reason`` in words (which stars, how many, what was left out).

The PSF image is the median of background-subtracted, flux-normalised cutouts of the
stars, each shifted to a common sub-pixel centre in Fourier space (a pixel defect outside
a star's core, a cosmic ray in its wing, is a pixel it does not give:
:func:`~diffviewer.engine.psf_stars.measurable`). Its FWHM and
ellipticity come from adaptive (Gaussian-weighted, iterated) second moments of that
stack, which for a Gaussian converge to its covariance.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import scipy.fft as sfft
from astropy.wcs.utils import proj_plane_pixel_area
from numpy.typing import ArrayLike

from diffviewer.engine import fftconv
from diffviewer.engine.moments import (
    adaptive_moments,
    box_extremum,
    cutouts,
    shape_from_covariance,
)
from diffviewer.engine.psf_stars import (
    LOCUS_MIN_SNR,
    MIN_FWHM,
    border_sky,
    less_sky,
    measurable,
    select_stars_nested,
)
from diffviewer.engine.psf_wing import (
    SUBSAMPLE,
    WING_EXTENT,
    Wing,
    extended,
    moffat,
    pixel_moffat,
    psf_image,
    subpixels,
    without_neighbours,
)
from diffviewer.exposure import UNUSABLE, Exposure
from diffviewer.stats import FWHM_PER_SIGMA, nanmedian_last

#: FWHM (px) of the Gaussian used when neither stars nor a given PSF are available:
#: about 1" seeing at 0.3"/px, a common ground-based case; the result says ``source='default'``.
DEFAULT_FWHM = 3.0

#: Least number of usable stars for a measured PSF.
MIN_STARS = 3

#: Most stars stacked (the first ones given); more add time, not accuracy.
MAX_STARS = 300

#: Passes of the weighted centroid that recentres each star before stacking.
CENTROID_ITERATIONS = 4

#: Pixels (px) a star's recentring can move a value by: its centroid's shift is at most
#: 1.5 px. A stacked star's core flux must be whole this far beyond its radius, and
#: pixels this close to an unknown one are unknown once the star is shifted.
SHIFT_REACH = 2

#: Pixels of the cutouts :func:`_aligned_stack` recentres at a time: a block's transforms
#: and masks stay in the cache (GOTO's (196, 49, 49) stacks 29 -> 23 ms, the synthetic
#: pair's (192, 61, 61) 68 -> 60 ms).
ALIGN_BLOCK_PIXELS = 2**17

#: Most bright sources examined by the relaxed measurement (the first ones given).
MAX_BRIGHT = 20

#: Least peak (in sigma of the cutout's border noise) of a bright source for the relaxed
#: measurement: second moments of fainter sources are dominated by noise.
BRIGHT_MIN_PEAK_SIGMA = 10.0

#: A bright source broader than this factor times the most compact one is extended (a
#: galaxy, a blend): stars form the lower envelope of the size distribution.
COMPACT_FACTOR = 1.3

#: Half-width (px) of the cutouts whose moments sort bright sources (3.8 sigma of a 5 px PSF).
BRIGHT_HALF = 8

#: PSFs with a FWHM (px) below this are measured on an image :data:`UPSAMPLE` times finer.
SHARP_FWHM = 2.5
UPSAMPLE = 4

#: Moment FWHM (px) of a measured PSF (:attr:`PsfEstimate.fwhm`) below which its stars are too
#: coarsely sampled for their stack: the photometric stack's bias is taken out
#: (:func:`stacking_bias`) and the run says so (:func:`coarse_stack_note`). Each star is recentred
#: by a Fourier shift, which an undersampled star's aliased image does not survive whole: noise-free
#: Moffats at random sub-pixel positions stack with a core 9 % wide at FWHM 2.0 px, 0.6 % at 2.8 px,
#: none at 4.0. On synthetic pairs (science Moffat index 2.5, 80 bright transients each) the
#: catalog's PSF fluxes came out +0.77 % and +0.81 % at moment FWHM 2.67 and 3.35 px (Moffat FWHM
#: 2.2 and 2.8; three pairs) before the bias was taken out; after, over twelve pairs each
#: (``benchmarks/bench_psf_flux.py``), +0.41 % and +0.45 %, against +0.22 % and +0.08 % with the
#: true science PSF given; +0.08 % at 4.7 (Moffat 4.0 px; the true PSF's -0.05 %).
COARSE_STACK_FWHM = 3.5

#: Passes of :func:`stacking_bias`, each with the Moffat fitted to the last pass's stack:
#: noise-free Moffats of index 3.5 at FWHM 2.0 px stacked with index 4.00, 3.45 after one
#: pass, 3.55 after two and three.
BIAS_ITERATIONS = 2

#: Model stars :func:`stacking_bias` renders at a time.
MODEL_BLOCK = 32

#: Header cards holding the PSF FWHM, in px unless their comment says otherwise, looked up
#: in order (DECam community pipeline).
HEADER_FWHM_PX_KEYS = ("FWHM", "PSF_FWHM", "FWHMPSF")

#: Header cards holding the seeing FWHM, in arcsec unless their comment says otherwise
#: (converted with the WCS pixel scale).
HEADER_SEEING_ARCSEC_KEYS = ("SEEING",)

#: Plausible header FWHM (px); values outside are ignored.
HEADER_FWHM_RANGE = (MIN_FWHM, 50.0)


@dataclasses.dataclass(frozen=True, eq=False)
class PsfEstimate:
    """The PSF of one exposure.

    Attributes
    ----------
    fwhm : float
        Full width at half maximum (px) of the equivalent circular Gaussian,
        ``2.3548 * sqrt(sqrt(det C))`` for moment covariance ``C``.
    ellipticity : float
        ``1 - b/a`` from the moment covariance's eigenvalues (0 for a round PSF).
    image : numpy.ndarray
        Odd-sized, centred image of the PSF, sum 1, read-only (float64).
    n_stars : int
        Stars that went into the stack (0 unless measured).
    source : str
        Which step of the module's fallback chain applied: 'given' (the exposure's own
        PSF image), 'measured' (stars), 'bright sources' (relaxed selection), 'header'
        (a Gaussian of the header's FWHM) or 'default' (a circular Gaussian of
        :data:`DEFAULT_FWHM`).
    reason : str
        Why, in words: which stars and how many, what was left out, or why no star
        measurement applied.
    photometric : numpy.ndarray or None
        The PSF image PSF fluxes are measured with, when it is not :attr:`image`: for a
        measured PSF, the stars' stack with the sky their borders left and their
        neighbours' light taken out (:mod:`diffviewer.engine.psf_wing`), sum 1,
        read-only. :attr:`image`, the plain stack, is what the kernel and the choice of
        the image to convolve are fitted to.
    enclosed : float
        Share of a point source's whole flux within the photometric image (below 1 when
        a measured PSF's wing reaches past it): PSF fluxes are measured with that image
        times this, so that they carry the whole flux. 1 for a given PSF image (a file's
        PSF is taken to hold its flux) and a Gaussian.
    """

    fwhm: float
    ellipticity: float
    image: np.ndarray
    n_stars: int
    source: str
    reason: str = ""
    photometric: np.ndarray | None = None
    enclosed: float = 1.0

    @property
    def flux_image(self) -> np.ndarray:
        """The image PSF fluxes are measured with (:attr:`photometric`, else :attr:`image`)."""
        return self.image if self.photometric is None else self.photometric

    @property
    def sigma(self) -> float:
        """Gaussian width (px) equivalent to :attr:`fwhm`."""
        return self.fwhm / FWHM_PER_SIGMA


def gaussian_image(fwhm: float, half: int) -> np.ndarray:
    """A centred circular Gaussian of side ``2 * half + 1``, sum 1."""
    s = fwhm / FWHM_PER_SIGMA
    r = np.arange(-half, half + 1)
    g = np.exp(-0.5 * (r / s) ** 2)
    img = np.outer(g, g)
    return img / img.sum()


def frozen(a: ArrayLike, dtype: type = np.float64) -> np.ndarray:
    """A read-only copy of ``a`` as ``dtype`` (results of the engine's steps are immutable)."""
    out: np.ndarray = np.array(a, dtype=dtype)
    out.flags.writeable = False
    return out


def odd_square(image: np.ndarray) -> np.ndarray:
    """Zero-pad a PSF image to an odd square with the same centre pixel.

    An odd axis is padded equally on both sides; an even axis (no centre pixel) gets one
    extra zero row or column at its end first, so its centre is taken as ``n // 2``.
    """
    img = np.asarray(image, dtype=np.float64)
    img = np.pad(img, ((0, 1 - img.shape[0] % 2), (0, 1 - img.shape[1] % 2)))
    side = max(img.shape)
    py, px = (side - img.shape[0]) // 2, (side - img.shape[1]) // 2
    return np.pad(img, ((py, py), (px, px)))


def psf_shape(image: np.ndarray) -> tuple[float, float]:
    """FWHM and ellipticity of a PSF image, as :class:`PsfEstimate` gives them.

    Parameters
    ----------
    image : numpy.ndarray
        Odd-sided square PSF image, centred (:func:`odd_square`), sum 1.

    Returns
    -------
    (float, float)
        FWHM (px) of the equivalent circular Gaussian, from adaptive second moments, and
        ellipticity ``1 - b/a``; a PSF narrower than :data:`SHARP_FWHM` is measured on
        the image interpolated :data:`UPSAMPLE` times finer.
    """
    _, _, cov = adaptive_moments(image)
    fwhm, ell = shape_from_covariance(cov)
    if fwhm < SHARP_FWHM:
        # Moments of a PSF sampled by few pixels are biased low: measure them on the image
        # interpolated (band-limited, by Fourier zero-padding) onto a finer grid.
        side = UPSAMPLE * image.shape[0]
        fine = fftconv.resample(fftconv.resample(image, side, axis=0), side, axis=1)
        _, _, cov = adaptive_moments(fine)
        fwhm, ell = shape_from_covariance(cov / UPSAMPLE**2)
    return fwhm, ell


def _estimate(image: np.ndarray, n_stars: int, source: str, reason: str) -> PsfEstimate:
    """Wrap a PSF image (made an odd square and normalised here) with its moments."""
    img = odd_square(image)
    img = img / img.sum()
    fwhm, ell = psf_shape(img)
    return PsfEstimate(fwhm, ell, frozen(img), n_stars, source, reason)


def _gaussian_estimate(fwhm: float, source: str, reason: str) -> PsfEstimate:
    """A circular Gaussian PSF of a known FWHM (px), sampled to 3 FWHM."""
    image = gaussian_image(fwhm, int(np.ceil(3 * fwhm)))
    return PsfEstimate(fwhm, 0.0, frozen(image), 0, source, reason)


def shift_spectrum(
    spectrum: np.ndarray, shape: tuple[int, int], dx: np.ndarray, dy: np.ndarray
) -> np.ndarray:
    """Stamps shifted by (dx, dy) px from their ``rfft2`` (:func:`fourier_shift`).

    Parameters
    ----------
    spectrum : numpy.ndarray
        ``rfft2`` of an ``(n, my, mx)`` stack over its last two axes.
    shape : (int, int)
        ``(my, mx)``.
    dx, dy : numpy.ndarray
        Shifts per stamp (px).

    Returns
    -------
    numpy.ndarray
        Shifted stack (float64).
    """
    return sfft.irfft2(_phased(spectrum, shape, dx, dy), s=shape, axes=(1, 2))


def _phased(
    spectrum: np.ndarray, shape: tuple[int, int], dx: np.ndarray, dy: np.ndarray
) -> np.ndarray:
    """``rfft2`` spectra of an ``(n, my, mx)`` stack times the phase ramp of a (dx, dy) shift."""
    my, mx = shape
    # The ramp is the product of one ramp per axis.
    px = np.exp(-2j * np.pi * sfft.rfftfreq(mx)[None, :] * dx[:, None])
    py = np.exp(-2j * np.pi * sfft.fftfreq(my)[None, :] * dy[:, None])
    phased = spectrum * py[:, :, None]
    phased *= px[:, None, :]
    return phased


def shifted_sums(
    spectrum: np.ndarray, weights: np.ndarray, dx: np.ndarray, dy: np.ndarray
) -> np.ndarray:
    """Weighted sums of stamps shifted by (dx, dy) px, from their spectra.

    By Parseval's theorem the sum of a product of two real images is that of their
    spectra's (one conjugated), so the sums need no inverse transform of the stamps:
    on the ``rfft2`` half-plane, the columns other than the zero (and Nyquist)
    frequency stand for themselves and their mirror images.

    Parameters
    ----------
    spectrum : numpy.ndarray
        ``rfft2`` of an ``(n, my, mx)`` stack over its last two axes.
    weights : numpy.ndarray
        ``(t, my, mx)`` weight images.
    dx, dy : numpy.ndarray
        Shifts per stamp (px), as :func:`shift_spectrum`.

    Returns
    -------
    numpy.ndarray
        ``(t, n)``: the sum over pixels of each weight times each shifted stamp.
    """
    my, mx = weights.shape[1:]
    mirrored = np.full(mx // 2 + 1, 2.0)
    mirrored[0] = 1.0
    if mx % 2 == 0:
        mirrored[-1] = 1.0
    conj = np.conj(sfft.rfft2(weights, axes=(1, 2))) * (mirrored / (my * mx))
    sums: np.ndarray = np.einsum("nij,tij->tn", _phased(spectrum, (my, mx), dx, dy), conj).real
    return sums


def fourier_shift(stamps: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Shift each stamp by (dx, dy) px (positive moves content right/up), periodically.

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(n, m, m)`` stack.
    dx, dy : numpy.ndarray
        Shifts per stamp (px).

    Returns
    -------
    numpy.ndarray
        Shifted stack (float64).
    """
    spectrum = sfft.rfft2(stamps, axes=(1, 2))
    return shift_spectrum(spectrum, (stamps.shape[1], stamps.shape[2]), dx, dy)


def _star_cutouts(
    exposure: Exposure, x: np.ndarray, y: np.ndarray, half: int, outer: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cutouts of half-width ``outer`` of the stars :func:`~diffviewer.engine.psf_stars.measurable`
    within their central ``half``, whose core flux (within ``half / 2``) and whatever a
    recentring moves into it (:data:`SHIFT_REACH`) are whole.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The cutouts (NaN outside the image and on unusable pixels) and a boolean map of
        the stars given that have one.
    """
    xi, yi = np.rint(x).astype(np.intp), np.rint(y).astype(np.intp)
    ny, nx = exposure.shape
    inside = (xi >= half) & (xi < nx - half) & (yi >= half) & (yi < ny - half)
    masks, _ = cutouts(exposure.mask, xi, yi, outer)
    inner = slice(outer - half, outer + half + 1)
    ok = inside & measurable(masks[:, inner, inner], half / 2.0 + SHIFT_REACH)
    wide, _ = cutouts(exposure.image, xi[ok], yi[ok], outer, fill=np.nan)
    out = wide.astype(np.float64)
    np.copyto(out, np.nan, where=(masks[ok] & int(UNUSABLE)) != 0)
    return out, ok


def _less_border(stamps: np.ndarray) -> np.ndarray:
    """Cutouts less the median of their border's known pixels."""
    if len(stamps) == 0:
        return stamps
    level = border_sky(stamps)[0]
    return stamps - np.where(np.isfinite(level), level, 0.0)[:, None, None]


@dataclasses.dataclass(frozen=True)
class Aligned:
    """A stack of stars recentred on their cores (:func:`_aligned_stack`).

    Attributes
    ----------
    stack : numpy.ndarray
        ``m x m``, NaN where no star is known, centred on its light centroid; each star
        over its core flux.
    index : numpy.ndarray
        The cutouts used.
    flux : numpy.ndarray
        Their core fluxes.
    offsets : numpy.ndarray
        ``(2, n)`` their cores' offsets (px) from the cutouts' centres, x then y.
    """

    stack: np.ndarray
    index: np.ndarray
    flux: np.ndarray
    offsets: np.ndarray


def _aligned_stack(wide: np.ndarray, half: int) -> Aligned | None:
    """Median of sky-subtracted cutouts recentred on their cores, each over its core flux.

    Parameters
    ----------
    wide : numpy.ndarray
        ``(n, m, m)`` cutouts (:func:`_star_cutouts`, :func:`_less_border`), ``m >= 2 half + 1``;
        NaN where unknown.
    half : int
        Half-width (px) of the centre on which the stars are aligned and scaled.

    Returns
    -------
    Aligned or None
        None when no star is usable.
    """
    n, m, _ = wide.shape
    inner = slice(m // 2 - half, m // 2 + half + 1)
    r = np.arange(-half, half + 1, dtype=float)
    # Centroid from Gaussian-weighted first moments (sigma = half / 6, ~FWHM / 2, so that a
    # neighbour in the cutout does not pull it), iterated on the recentred stamps: the
    # narrow weight pulls each estimate towards the current centre by a factor < 1.
    w = np.exp(-0.5 * (r / max(half / 6.0, 1.0)) ** 2)
    weight = w[:, None] * w[None, :]
    first_moments = np.stack([weight, weight * r[None, :], weight * r[:, None]])
    # Each star's flux within half the cutout's half-width (~1.5 FWHM, as the cutout spans
    # ~3 FWHM): a neighbour elsewhere in the cutout must not scale the star down (the
    # bright-source fallback does not require isolation).
    core = _core_disk(half)
    # The stars are recentred a block at a time, whose transforms stay in the cache.
    scaled = np.empty((n, m, m))
    index, flux, offsets, used = [], [], [], 0
    block = max(1, ALIGN_BLOCK_PIXELS // (m * m))
    for start in range(0, n, block):
        some, their_flux, their_offsets = _recentred(
            wide[start : start + block], half, first_moments, core, scaled[used:]
        )
        index.append(start + some)
        flux.append(their_flux)
        offsets.append(their_offsets)
        used += len(some)
    if not used:
        return None
    stack = nanmedian_last(np.moveaxis(scaled[:used], 0, -1))
    stack[inner, inner] = _rings_filled(stack[inner, inner])
    # The stars were aligned on their cores; the PSF image is centred on its light
    # centroid (weight sigma half / 3), as the kernel and ZOGY take positions to be.
    broad = np.exp(-0.5 * (r / max(half / 3.0, 1.0)) ** 2)
    wimg = stack[inner, inner] * broad[:, None] * broad[None, :]
    tot = float(wimg.sum())
    if tot > 0:
        sx = float((wimg.sum(axis=0) * r).sum()) / tot
        sy = float((wimg.sum(axis=1) * r).sum()) / tot
        filled = np.where(np.isfinite(stack), stack, 0.0)
        moved = fourier_shift(filled[None], np.array([-sx]), np.array([-sy]))[0]
        stack = np.where(np.isfinite(stack), moved, np.nan)
    return Aligned(stack, np.concatenate(index), np.concatenate(flux), np.hstack(offsets))


def _rings_filled(centre: np.ndarray) -> np.ndarray:
    """A stack's centre with the pixels no star gives (a pixel defect in the same place
    on every star, as with one or two stars) taken as the median of the known pixels at
    their distance from the centre, rounded to a pixel (0 where none is known).

    Parameters
    ----------
    centre : numpy.ndarray
        ``(m, m)``, ``m`` odd, centred; NaN where unknown.

    Returns
    -------
    numpy.ndarray
        The same, finite.
    """
    unknown = ~np.isfinite(centre)
    if not unknown.any():
        return centre
    r = np.arange(centre.shape[0]) - centre.shape[0] // 2
    ring = np.rint(np.hypot(r[:, None], r[None, :])).astype(np.intp)
    out = centre.copy()
    for k in np.unique(ring[unknown]):
        values = centre[(ring == k) & ~unknown]
        out[unknown & (ring == k)] = np.median(values) if len(values) else 0.0
    return out


def _recentred(
    wide: np.ndarray, half: int, first_moments: np.ndarray, core: np.ndarray, out: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cutouts recentred on their cores, each over its core flux (for :func:`_aligned_stack`).

    Parameters
    ----------
    wide : numpy.ndarray
        ``(n, m, m)`` cutouts, NaN where unknown.
    half : int
        Half-width (px) of the centre on which the stars are aligned and scaled.
    first_moments : numpy.ndarray
        ``(3, 2 half + 1, 2 half + 1)``: the centroid's weight, times x and times y.
    core : numpy.ndarray
        ``(2 half + 1, 2 half + 1)`` map of the pixels of a star's core flux.
    out : numpy.ndarray
        Receives the recentred cutouts over their core flux (NaN where unknown), the
        stars used first.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        The index of the stars used (with weighted light and a core flux above zero),
        their core flux and their cores' offsets (px) from the cutouts' centres, ``(2,
        n)``: x, then y.
    """
    m = wide.shape[1]
    inner = slice(m // 2 - half, m // 2 + half + 1)
    # Pixels within SHIFT_REACH of a missing one are left out: the sub-pixel shift below
    # moves values by up to 1.5 px.
    finite = np.isfinite(wide)
    known = box_extremum(finite, SHIFT_REACH, largest=False)
    wide = np.where(finite, wide, 0.0)
    stamps = wide[:, inner, inner]
    index = np.nonzero((stamps * first_moments[0]).sum(axis=(1, 2)) > 0)[0]
    if len(index) == 0:
        return index, np.zeros(0), np.zeros((2, 0))
    # The recentred stamps' sums are taken from their spectra (:func:`shifted_sums`): the
    # stamps are transformed once, and back only where the stack is made of them.
    spectrum = sfft.rfft2(stamps[index], axes=(1, 2))
    dx, dy = np.zeros(len(index)), np.zeros(len(index))
    for _ in range(CENTROID_ITERATIONS):
        tot, sx, sy = shifted_sums(spectrum, first_moments, -dx, -dy)
        tot = np.where(tot > 0, tot, np.inf)
        dx = np.clip(dx + sx / tot, -1.5, 1.5)
        dy = np.clip(dy + sy / tot, -1.5, 1.5)
    flux = shifted_sums(spectrum, core[None].astype(float), -dx, -dy)[0]
    keep = flux > 0
    index, flux = index[keep], flux[keep]
    if m > 2 * half + 1:
        shifted = fourier_shift(wide[index], -dx[keep], -dy[keep])
    else:
        shifted = shift_spectrum(spectrum[keep], (m, m), -dx[keep], -dy[keep])
    shifted[~known[index]] = np.nan
    np.divide(shifted, flux[:, None, None], out=out[: len(index)])
    return index, flux, np.stack([dx[keep], dy[keep]])


def _centre_fwhm(stack: np.ndarray, half: int) -> float:
    """Adaptive-moment FWHM (px) of the centre of half-width ``half`` of a square stack."""
    outer = stack.shape[0] // 2
    centre = stack[outer - half : outer + half + 1, outer - half : outer + half + 1]
    return shape_from_covariance(adaptive_moments(centre)[2])[0]


def _wing_of(stack: np.ndarray, half: int, fwhm: float) -> tuple[np.ndarray, float, Wing] | None:
    """The PSF image and its share of the flux (:func:`~diffviewer.engine.psf_wing.psf_image`)
    from a stack extended beyond ``half``, whose centre's FWHM is ``fwhm`` (px)."""
    outer = stack.shape[0] // 2
    centre = stack[outer - half : outer + half + 1, outer - half : outer + half + 1]
    return psf_image(centre, stack, fwhm)


def stack_stars(
    exposure: Exposure,
    x: np.ndarray,
    y: np.ndarray,
    half: int,
    extent: int = 1,
    debias: bool = False,
) -> tuple[np.ndarray, int, float, Wing | None]:
    """Median stack of recentred star cutouts, each normalised by its core flux.

    Parameters
    ----------
    exposure : Exposure
        The image.
    x, y : numpy.ndarray
        Star positions (0-based px).
    half : int
        Cutout half-width (px) of the stack.
    extent : int
        The stars' sky is the median of the border of cutouts ``extent`` times wider
        (pixels outside the image or unusable left out). With ``extent > 1`` the stack
        is extended to there and its wing fitted (:mod:`diffviewer.engine.psf_wing`);
        the other sources in the cutouts (looked for out to ``half`` beyond them) are
        then taken out with that PSF, and the stars stacked and the wing fitted again.
        With 1, the stack's own border is the sky and no wing is fitted (cutouts too
        small for more).
    debias : bool
        Take the bias of recentring coarsely sampled stars out of a stack whose wing is
        fitted (:func:`stacking_bias`).

    Returns
    -------
    (numpy.ndarray, int, float, Wing or None)
        The PSF image (sum 1; zeros when no star was usable), the number of stars used,
        the share of a star's whole flux the image holds (1 when no wing was fitted) and
        the fitted wing (None when not fitted: the stack then stands for the whole flux).
    """
    outer = extent * half
    inner = slice(outer - half, outer + half + 1)
    empty = np.zeros((2 * half + 1, 2 * half + 1)), 0, 1.0, None
    # With a wing, the neighbours are looked for out to ``half`` beyond the stack's
    # cutouts: each star is cut out once, that wide.
    search = outer + half if extent > 1 else outer
    crop = slice(search - outer, search + outer + 1)
    around, _ = _star_cutouts(exposure, x, y, half, search)
    wide = around[:, crop, crop]
    sky_less = _less_border(wide)
    found = _aligned_stack(sky_less, half) if len(wide) else None
    if found is None:
        return empty
    stack, index, flux, offsets = found.stack, found.index, found.flux, found.offsets
    fitted = None
    if extent > 1:
        fwhm = _centre_fwhm(stack, half)
        fitted = _wing_of(stack, half, fwhm)
    if fitted is not None:
        model = extended(stack[inner, inner], fitted[2], 2 * search)
        sky = wide[index, outer, outer] - sky_less[index, outer, outer]
        cleaned = without_neighbours(
            around[index] - sky[:, None, None], flux, model, half / 2.0, fwhm
        )
        again = _aligned_stack(_less_border(cleaned[:, crop, crop]), half)
        if again is not None:
            stack, index, flux, offsets = again.stack, again.index, again.flux, again.offsets
            fitted = _wing_of(stack, half, _centre_fwhm(stack, half))
    if debias and fitted is not None:
        stack, fitted = _debiased(stack, fitted, offsets, half)
    if fitted is not None:
        return fitted[0], len(index), fitted[1], fitted[2]
    stack = stack[inner, inner]
    return stack / stack.sum(), len(index), 1.0, None


def _debiased(
    stack: np.ndarray,
    fitted: tuple[np.ndarray, float, Wing],
    offsets: np.ndarray,
    half: int,
) -> tuple[np.ndarray, tuple[np.ndarray, float, Wing]]:
    """``stack`` less its :func:`stacking_bias` (:data:`BIAS_ITERATIONS` passes, each with
    the Moffat fitted to the last), and its wing fit (:func:`_wing_of`): the last pass
    whose stack could be fitted (the stack as given when none could)."""
    best = stack, fitted
    for _ in range(BIAS_ITERATIONS):
        corrected = stack - stacking_bias(best[1][2], offsets, half, stack.shape[0])
        again = _wing_of(corrected, half, _centre_fwhm(corrected, half))
        if again is None:
            break
        best = corrected, again
    return best


def stacking_bias(wing: Wing, offsets: np.ndarray, half: int, side: int) -> np.ndarray:
    """What recentring by Fourier shifts and stacking does to a coarsely sampled star.

    The Moffat fitted to the stack (``wing``), averaged over each pixel, is placed at the
    stars' own offsets in cutouts of their side and stacked as they were
    (:func:`_less_border`, :func:`_aligned_stack`); the same Moffat centred, over its core
    flux and less its border, is what the stack should be. Their difference is the
    stack's bias to first order: a star's aliased image does not survive a sub-pixel
    Fourier shift whole, and the median of the shifted stars is wider in the core than
    the star (:data:`COARSE_STACK_FWHM`).

    Parameters
    ----------
    wing : Wing
        The Moffat fitted to the stack (:mod:`~diffviewer.engine.psf_wing`).
    offsets : numpy.ndarray
        ``(2, n)`` the stars' cores' offsets (px) from their cutouts' centres.
    half : int
        Half-width (px) of the stack's centre, on which the stars were aligned and scaled.
    side : int
        The cutouts' side (px, odd).

    Returns
    -------
    numpy.ndarray
        ``side x side``, in the stack's units.
    """
    found = _aligned_stack(_less_border(_offset_moffats(wing, side, offsets)), half)
    if found is None:
        return np.zeros((side, side))
    centred = _less_border(pixel_moffat(wing.amplitude, wing.alpha, wing.beta, side // 2)[None])[0]
    inner = slice(side // 2 - half, side // 2 + half + 1)
    return found.stack - centred / float(centred[inner, inner][_core_disk(half)].sum())


def _core_disk(half: int) -> np.ndarray:
    """The pixels of a star's core flux: within ``half / 2`` of the centre of a
    ``(2 half + 1)^2`` stamp."""
    r = np.arange(-half, half + 1, dtype=float)
    result: np.ndarray = r[:, None] ** 2 + r[None, :] ** 2 <= (half / 2.0) ** 2
    return result


def _offset_moffats(wing: Wing, side: int, offsets: np.ndarray) -> np.ndarray:
    """``wing``'s Moffat averaged over each pixel (:data:`~diffviewer.engine.psf_wing.SUBSAMPLE`
    sub-pixels a side) of ``side x side`` cutouts, centred ``offsets`` (``(2, n)`` px, x
    then y) from their centres: ``(n, side, side)``. Made :data:`MODEL_BLOCK` stars at a
    time: 300 stars of 45 px at once peaked at 136 MB (299 ms), 32 at a time 24 MB (93 ms)."""
    axis = (np.arange(side, dtype=float)[:, None] - side // 2 + subpixels()[None, :]).ravel()
    n = offsets.shape[1]
    out = np.empty((n, side, side))
    for start in range(0, n, MODEL_BLOCK):
        dx, dy = offsets[:, start : start + MODEL_BLOCK]
        r = np.hypot(
            axis[None, None, :] - dx[:, None, None], axis[None, :, None] - dy[:, None, None]
        )
        fine = moffat(r, wing.amplitude, wing.alpha, wing.beta)
        out[start : start + MODEL_BLOCK] = fine.reshape(
            len(dx), side, SUBSAMPLE, side, SUBSAMPLE
        ).mean(axis=(2, 4))
    return out


def compact_sources(
    exposure: Exposure, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bright compact sources among candidate positions (the relaxed PSF stars).

    Each position gets a cutout of half-width :data:`BRIGHT_HALF`, which must lie inside
    the image, hold no unusable pixel, peak at :data:`BRIGHT_MIN_PEAK_SIGMA` times its
    border's robust noise, and have adaptive moments centred within 1.5 px with a FWHM of
    at least :data:`MIN_FWHM` and at most :data:`COMPACT_FACTOR` times the smallest FWHM.

    Parameters
    ----------
    exposure : Exposure
        The image.
    x, y : numpy.ndarray
        Positions (0-based px), brightest first; at most :data:`MAX_BRIGHT` are examined.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        x, y (integer px) and FWHM (px) of the sources kept, in the order given.
    """
    xi = np.rint(np.asarray(x, dtype=float)[:MAX_BRIGHT]).astype(np.intp)
    yi = np.rint(np.asarray(y, dtype=float)[:MAX_BRIGHT]).astype(np.intp)
    stamps, inside = cutouts(exposure.image, xi, yi, BRIGHT_HALF)
    masks, _ = cutouts(exposure.mask, xi, yi, BRIGHT_HALF)
    fwhm = np.full(len(xi), np.nan)
    usable = np.nonzero(inside & measurable(masks, BRIGHT_HALF / 2.0))[0]
    sky_less, noise = less_sky(stamps[usable], masks[usable])
    for k, stamp, sigma in zip(usable, sky_less, noise, strict=True):
        if not stamp[BRIGHT_HALF, BRIGHT_HALF] > BRIGHT_MIN_PEAK_SIGMA * sigma:
            continue
        cx, cy, cov = adaptive_moments(stamp)
        if np.hypot(cx - BRIGHT_HALF, cy - BRIGHT_HALF) <= 1.5:
            fwhm[k] = shape_from_covariance(cov)[0]
    ok = np.isfinite(fwhm) & (fwhm >= MIN_FWHM)
    if ok.any():
        ok &= fwhm <= COMPACT_FACTOR * np.min(fwhm[ok])
    return xi[ok], yi[ok], fwhm[ok]


def _card_unit(comment: str, default: str) -> str:
    """'px' or 'arcsec', as a header card's comment states its unit, else ``default``.

    Pipelines differ: PTF's and LCO's ``SEEING`` is in pixels ('[pix] Seeing FWHM',
    '[pixels]'), most others' in arcsec; the comment says which when it names a unit.
    """
    text = comment.lower()
    if "pix" in text or re.search(r"\bpx\b", text):
        return "px"
    if "arcsec" in text or "asec" in text or '"' in text:
        return "arcsec"
    return default


def header_fwhm(exposure: Exposure) -> tuple[float, str] | None:
    """PSF FWHM (px) from the header and its card, when a card of the module's lists holds one.

    A card's unit is the one its comment names (:func:`_card_unit`), else px for
    :data:`HEADER_FWHM_PX_KEYS` and arcsec for :data:`HEADER_SEEING_ARCSEC_KEYS`; a
    value in arcsec is used only with a celestial WCS (its pixel scale converts it).
    """
    header = exposure.header
    if header is None:
        return None
    scale = None
    if exposure.has_celestial_wcs and exposure.wcs is not None:
        scale = 3600.0 * float(np.sqrt(proj_plane_pixel_area(exposure.wcs.celestial)))
    keys = [(k, "px") for k in HEADER_FWHM_PX_KEYS] + [
        (k, "arcsec") for k in HEADER_SEEING_ARCSEC_KEYS
    ]
    lo, hi = HEADER_FWHM_RANGE
    for key, default in keys:
        if key not in header:
            continue
        unit = _card_unit(str(header.comments[key]), default)
        if unit == "arcsec" and not scale:
            continue
        try:
            value = float(header[key]) / (scale if unit == "arcsec" and scale else 1.0)
        except (TypeError, ValueError):
            continue
        if lo <= value <= hi:
            return value, key
    return None


def _stacked(exposure: Exposure, x: np.ndarray, y: np.ndarray, reason: str) -> PsfEstimate | None:
    """The stack of stars at (x, y), its cutout resized once to 3 FWHM; None with too few stars."""
    half, est = 12, None
    for _ in range(2):
        stack, n, _, _ = stack_stars(exposure, x, y, half)
        if n < MIN_STARS:
            return None
        est = _estimate(stack, n, "measured", f"stacked from {reason}")
        want = int(np.clip(np.ceil(3.0 * est.fwhm), 6, 40))
        if abs(want - half) <= 2:
            break
        half = want
    return est


def coarse_stack_note(science_psf: PsfEstimate) -> tuple[str, ...]:
    """The warning for a science PSF stacked from stars at a moment FWHM below
    :data:`COARSE_STACK_FWHM` (none otherwise, nor for a PSF given or from the header).

    Parameters
    ----------
    science_psf : PsfEstimate
        The science image's PSF, whose image the catalog's PSF fluxes are fitted with.

    Returns
    -------
    tuple of str
    """
    if science_psf.source not in ("measured", "bright sources"):
        return ()
    if science_psf.fwhm >= COARSE_STACK_FWHM:
        return ()
    if science_psf.photometric is not None:
        effect = (
            "with the stack's core corrected for it PSF fluxes still came out 0.2-0.4 % "
            "higher than with the true PSF on synthetic pairs at 2.7-3.4 px (twelve pairs "
            "each)"
        )
    else:
        effect = (
            "no wing was fitted to the stack to model that with, so its core is not "
            "corrected and PSF fluxes may be ~0.6 % high (Gaussian synthetic stars at 2.0 px)"
        )
    return (
        f"the science PSF, stacked from {science_psf.n_stars} stars, is "
        f"{science_psf.fwhm:.2f} px FWHM, below {COARSE_STACK_FWHM} px: its stars, recentred "
        f"by Fourier shifts, are too coarsely sampled for that, and {effect}; give the "
        "exposure's own PSF image where it has one",
    )


def peaked_at_centre(image: np.ndarray) -> bool:
    """Whether a PSF image holds its highest pixel within a pixel of its centre, and every
    pixel there is positive: a stack of stars does (a skewed PSF's peak may lie a pixel
    off its centroid), one of noise or of clipped cores need not (a fuzz draw's swung
    from -0.4 to 2 times its centre a pixel off, and the difference's PSF row to row)."""
    c = image.shape[0] // 2
    core = image[c - 1 : c + 2, c - 1 : c + 2]
    return bool(core.max() >= image.max() and np.all(core > 0))


def _with_photometric(
    exposure: Exposure, est: PsfEstimate, x: np.ndarray, y: np.ndarray
) -> PsfEstimate:
    """A measured PSF with its photometric image: the stars at (x, y) stacked to the
    estimate's size with their wing (:data:`WING_EXTENT`); unchanged when none is fitted."""
    half = est.image.shape[0] // 2
    coarse = est.fwhm < COARSE_STACK_FWHM
    image, n, enclosed, wing = stack_stars(exposure, x, y, half, WING_EXTENT, debias=coarse)
    if wing is None or n < MIN_STARS:
        return dataclasses.replace(est, reason=f"{est.reason}; no wing fitted")
    if not peaked_at_centre(image):
        return dataclasses.replace(
            est,
            reason=f"{est.reason}; the stack of {n} stars for fluxes is not peaked at its "
            "centre (noise, or cores clipped without a saturation level): no wing fitted",
        )
    why = f"{est.reason}; for fluxes, {n} stars and {wing.describe(enclosed)}"
    if coarse:
        why += "; its core corrected for the coarsely sampled stars' recentring"
    return dataclasses.replace(est, reason=why, photometric=frozen(image), enclosed=enclosed)


def estimate_psf(
    exposure: Exposure,
    x: np.ndarray,
    y: np.ndarray,
    bright: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    resampled: bool = False,
    photometric: bool = False,
) -> PsfEstimate:
    """The PSF by the module's fallback chain: given, stars, bright sources, header, default.

    Parameters
    ----------
    exposure : Exposure
        The image (background need not be subtracted: each cutout's border median is).
    x, y : array-like
        Positions (0-based px) of isolated, unsaturated stars (the kernel stars), brightest
        first preferred; at most :data:`MAX_STARS` are used.
    bright : (array-like, array-like), optional
        Positions of the brightest unsaturated peaks, brightest first: candidates for the
        size-flux locus with the kernel stars (the first :data:`MAX_BRIGHT`; all of them
        for the photometric image), and for the relaxed measurement
        (:func:`compact_sources`) when the stars are too few.
    resampled : bool
        True when the exposure was warped: its own PSF image is then used only when no
        star measurement applies.
    photometric : bool
        Also measure the photometric image with its wing (:func:`_with_photometric`),
        which only the catalog's fluxes use (the science's): a third of the PSF step's
        time on GOTO, spent for nothing on the template and the candidates' first PSFs.

    Returns
    -------
    PsfEstimate
        ``source`` says which step applied and ``reason`` why (see the module docstring).
    """
    x = np.asarray(x, dtype=float)[:MAX_STARS]
    y = np.asarray(y, dtype=float)[:MAX_STARS]
    given = exposure.psf is not None and bool(
        np.isfinite(exposure.psf).all() and exposure.psf.sum() > 0
    )
    if given and not resampled:
        return _estimate(
            np.asarray(exposure.psf, dtype=float), 0, "given", "the PSF image the file provides"
        )
    bx, by = (np.asarray(b, dtype=float) for b in bright) if bright else (np.zeros(0), np.zeros(0))
    # The wing, which sets the flux scale, is measured to a few per cent only from tens
    # of stars: every bright peak given is a locus candidate for the photometric image.
    first = min(len(bx), MAX_BRIGHT)
    last = len(bx) if photometric else first
    loci = select_stars_nested(
        exposure, np.r_[x, bx[:last]], np.r_[y, by[:last]], sorted({len(x) + first, len(x) + last})
    )
    locus, everyone = loci[0], loci[-1]
    if locus is not None:
        est = _stacked(
            exposure,
            locus.x[:MAX_STARS],
            locus.y[:MAX_STARS],
            f"the kernel stars and the brightest peaks: {locus.describe()}",
        )
        if est is not None and not photometric:
            return est
        if est is not None:
            locus = everyone if everyone is not None else locus
            return _with_photometric(exposure, est, locus.x[:MAX_STARS], locus.y[:MAX_STARS])
    why = f"no size-flux locus of {MIN_STARS} stars with S/N >= {LOCUS_MIN_SNR:g}"
    if len(x) >= MIN_STARS:
        est = _stacked(exposure, x, y, f"{len(x)} kernel stars as selected ({why})")
        if est is not None:
            return est
    why = f"{why}, fewer than {MIN_STARS} usable kernel stars"
    if given:
        return _estimate(
            np.asarray(exposure.psf, dtype=float),
            0,
            "given",
            f"the file's PSF image, in the unwarped grid ({why})",
        )
    if bright is not None:
        cx, cy, fwhm = compact_sources(exposure, *bright)
        if len(cx):
            half = int(np.clip(np.ceil(3.0 * np.median(fwhm)), 6, BRIGHT_HALF))
            stack, n, _, _ = stack_stars(exposure, cx, cy, half)
            if n:
                relaxed = _estimate(
                    stack, n, "bright sources", f"{n} brightest compact sources ({why})"
                )
                if relaxed.fwhm >= MIN_FWHM:
                    return relaxed
    card = header_fwhm(exposure)
    if card is not None:
        return _gaussian_estimate(
            card[0], "header", f"a Gaussian of the header's {card[1]} card ({why})"
        )
    return _gaussian_estimate(
        DEFAULT_FWHM, "default", f"a Gaussian of {DEFAULT_FWHM} px, no header FWHM ({why})"
    )
