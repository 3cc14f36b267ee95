"""One metric code for every difference image: diffviewer's, HOTPANTS's and the oracle's.

Every difference is taken in science flux units with its median sky removed. On a
synthetic pair the truth is known exactly: the science PSF ``P``, the matching kernel
``K`` (the science PSF deconvolved by the template PSF, times the flux ratio, with the
template's shift), the inputs' sky noise ``s_S`` and ``s_T``, the stars and the injected
transients.

Like is compared with like: each difference is scored against the exact expectation of
the same kind of image made with the true kernel. A plain difference ``S - K T`` is
scored against that; a decorrelated (whitened) one ``phi (S - K T)``, with ``phi`` the
Reiss & Lupton (2016) filter of the true kernel (:func:`decorrelation_filter`), against
that (:func:`whitened`): its per-pixel noise is ``sqrt(s_S^2 + sum(K)^2 s_T^2)`` by
design, its PSF is ``phi P``, and its local noise at a star is the stars' and sky's
variance through ``phi^2`` and ``(phi K)^2``. Scoring a whitened difference against the
plain expectation read its star residuals 20 % high and its PSF fluxes 5 % high on
issue 12's pair when nothing but noise was left (the fluxes, before they were
measured with the decorrelated PSF). The figures (``P``, the filters and the
local noise being those of the difference's kind):

- ``noise``: robust (MAD) sigma of the difference over sky pixels, over its exact
  per-pixel sky noise (``sqrt(s_S^2 + sum(K^2) s_T^2)`` for a plain difference).
- ``mf noise``: the same for the difference filtered with its PSF (what detection
  thresholds), over its exact expectation.
- ``star res med/p90``: over the brightest stars, the rms within 1.5 FWHM of the
  difference in units of its exact local noise (sky and the star's own Poisson noise,
  through the true filters): 1 means nothing left but noise.
- ``flux ratio``: median forced PSF flux (with the difference's PSF shifted to each
  sub-pixel position) of the injected transients with true S/N > 20, over their true flux.
- ``found S/N a-b``: injections recovered in each bin of true PSF S/N, by the same
  detection for every difference: a local maximum of the PSF-filtered difference
  above 5 times its measured sky sigma within 2 px.
- ``false peaks``: that detection's peaks farther than :data:`FALSE_PEAK_PX` from every
  injection (star residuals and noise; the oracle's are what the noise gives).
- ``found S/N a-b at equal false peaks``: the same at the threshold (``threshold at
  equal false peaks``, in sigma) above which the difference has as many false peaks as
  the programs' difference with the fewest at 5 sigma (:func:`found_at_budget`):
  completeness at equal purity, as detectors are compared on a receiver operating
  characteristic. A difference that leaves light around stars lifts its faint
  injections and its false peaks alike; at 5 sigma it finds more of both, at equal
  false peaks the lift is paid for.
- ``faint S/N / true``: median over the injections of true S/N 3-7 of the filtered
  difference at the injection, in its measured sky sigma, over the true S/N: 1 for an
  unbiased difference whose noise is the exact one. Light a difference leaves around
  stars (a kernel sum too low leaves every star's wing) lifts it, and with it the faint
  bins' recovered fractions, as false peaks do.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy import ndimage

from diffviewer.synthetic import render_moffats

#: True PSF S/N bins of the injected transients.
SNR_BINS = ((3.0, 5.0), (5.0, 7.0), (7.0, 10.0), (10.0, 20.0), (20.0, 60.0))
#: Injections per bin: a recovered fraction near 0.9 is then known to +-0.04 (binomial),
#: where 12 a bin (to 2026-12-02) could not tell one missed transient from chance.
PER_BIN = 48
#: Detection threshold of the shared detector (sigma of the filtered difference).
THRESHOLD = 5.0
#: Match radius of a detection to an injection (px).
MATCH_PX = 2.0
#: Stars used for the bright-star residual.
N_BRIGHT = 50
#: A detected peak farther than this from every injection is false (px): two FWHM and
#: more of the pairs' PSFs, beyond a faint injection's noise-shifted peak.
FALSE_PEAK_PX = 5.0
#: Least threshold (sigma) searched for the one that leaves a given number of false peaks.
FLOOR = 3.0
#: True S/N range of the injections whose measured significance is compared with it.
FAINT_SNR = (3.0, 7.0)
#: Reach (px) about a given mask's defects within which a difference may have no value
#: and still cover a filter's footprint (:func:`significance`): HOTPANTS grows a masked
#: pixel by its kernel's half-width (``-r 10``), diffviewer by its kernel's footprint on
#: the image convolved.
DEFECT_REACH = 12


@dataclass(frozen=True)
class Injections:
    """Where sources were injected, and their true S/N."""

    x: np.ndarray  # px
    y: np.ndarray  # px
    snr: np.ndarray


@dataclass(frozen=True)
class Truth:
    """What is known exactly about a synthetic pair."""

    psf: np.ndarray  # the difference's PSF at the centre, sum 1, odd square
    kernel: np.ndarray  # matching kernel, same side, sum = flux ratio
    sci_filter: np.ndarray  # what the difference applies to the science (a delta, or phi)
    tmpl_filter: np.ndarray  # what it applies to the template (K, or phi K)
    sigma_s: float  # science sky noise per pixel (counts)
    sigma_t: float  # template sky noise per pixel (counts)
    fwhm: float  # science FWHM (px)
    star_x: np.ndarray
    star_y: np.ndarray
    star_flux: np.ndarray
    inj_x: np.ndarray
    inj_y: np.ndarray
    inj_flux: np.ndarray
    inj_snr: np.ndarray
    sky: np.ndarray  # boolean: pixels far from every star and injection
    local_sigma: np.ndarray  # exact per-pixel noise of the true-kernel difference (stars' too)
    # boolean, a spoilt pair's: the pixels of the mask both programs were given
    defects: np.ndarray | None = None

    @property
    def injections(self) -> Injections:
        """The injected transients' positions and true S/N."""
        return Injections(self.inj_x, self.inj_y, self.inj_snr)


def delta(side: int) -> np.ndarray:
    """The identity filter on a ``side`` x ``side`` grid (odd)."""
    out = np.zeros((side, side))
    out[side // 2, side // 2] = 1.0
    return out


def decorrelation_filter(kernel: np.ndarray, sigma_s: float, sigma_t: float) -> np.ndarray:
    """The true kernel's decorrelation filter ``phi`` (Reiss & Lupton 2016), sum 1.

    ``phi(k) = sqrt((s_S^2 + sum(K)^2 s_T^2) / (s_S^2 + s_T^2 |K(k)|^2))``, on a grid
    twice the kernel's side (``phi`` reaches past the kernel).
    """
    side = 2 * kernel.shape[0] - 1
    pad = (side - kernel.shape[0]) // 2
    khat = scipy.fft.fft2(np.fft.ifftshift(np.pad(kernel, pad)))
    white = sigma_s**2 + kernel.sum() ** 2 * sigma_t**2
    phi_hat = np.sqrt(white / (sigma_s**2 + sigma_t**2 * np.abs(khat) ** 2))
    return np.fft.fftshift(scipy.fft.ifft2(phi_hat).real)


def local_noise(
    var_s: np.ndarray, var_t: np.ndarray, sci_filter: np.ndarray, tmpl_filter: np.ndarray
) -> np.ndarray:
    """Exact per-pixel noise of ``sci_filter S - tmpl_filter T`` from each input's variance."""
    return np.sqrt(convolve_same(var_s, sci_filter**2) + convolve_same(var_t, tmpl_filter**2))


def whitened(truth: Truth, var_s: np.ndarray, var_t: np.ndarray) -> Truth:
    """The truth of the decorrelated true-kernel difference ``phi (S - K T)``.

    Parameters
    ----------
    truth : Truth
        The plain difference's.
    var_s, var_t : numpy.ndarray
        Exact per-pixel variance of each input (sky and stars), counts^2.
    """
    phi = decorrelation_filter(truth.kernel, truth.sigma_s, truth.sigma_t)
    # On the plain PSF's grid (phi P is no wider than P), so that both kinds of
    # difference are scored on the same stars and pixels.
    psf = convolve_same(truth.psf, phi)
    tmpl_filter = convolve_same(phi, truth.kernel)
    return dataclasses.replace(
        truth,
        psf=psf / psf.sum(),
        sci_filter=phi,
        tmpl_filter=tmpl_filter,
        local_sigma=local_noise(var_s, var_t, phi, tmpl_filter),
    )


def psf_stamp(half: int, fwhm: float, beta: float, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """A unit-sum Moffat on a (2 half + 1)^2 grid, centred at (half + dx, half + dy)."""
    one = np.ones(1)
    side = 2 * half + 1
    return render_moffats(
        (side, side),
        one * (half + dx),
        one * (half + dy),
        one,
        one * fwhm,
        beta,
        one * 0.0,
        one * 0.0,
        half,
    )


def true_kernel(sci_psf: np.ndarray, tmpl_psf: np.ndarray, scale: float) -> np.ndarray:
    """K with ``K * tmpl_psf = scale * sci_psf`` (Fourier division; the template is sharper).

    A template PSF rendered off-centre gives the kernel that undoes that shift.
    """
    ratio = scipy.fft.rfft2(np.fft.ifftshift(sci_psf)) / scipy.fft.rfft2(np.fft.ifftshift(tmpl_psf))
    return scale * np.fft.fftshift(scipy.fft.irfft2(ratio, s=sci_psf.shape))


def exact_noise(
    psf: np.ndarray, sci_filter: np.ndarray, tmpl_filter: np.ndarray, sigma_s: float, sigma_t: float
) -> tuple[float, float]:
    """Exact per-pixel and ``psf``-filtered sky noise of ``sci_filter S - tmpl_filter T``."""
    pix = np.sqrt(sigma_s**2 * np.sum(sci_filter**2) + sigma_t**2 * np.sum(tmpl_filter**2))
    mf = np.sqrt(
        sigma_s**2 * np.sum(convolve_full(psf, sci_filter) ** 2)
        + sigma_t**2 * np.sum(convolve_full(psf, tmpl_filter) ** 2)
    )
    return float(pix), float(mf)


def injection_fluxes(
    truth_psf: np.ndarray, sigma_mf: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Fluxes and true S/N of ``PER_BIN`` injections per S/N bin.

    A point source of flux ``f`` peaks at ``f sum(P^2)`` in the ``P``-filtered
    difference, whose noise is ``sigma_mf``: its S/N is ``f sum(P^2) / sigma_mf``.
    """
    snr = np.concatenate([rng.uniform(lo, hi, PER_BIN) for lo, hi in SNR_BINS])
    return snr * sigma_mf / np.sum(truth_psf**2), snr


def convolve_full(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Full linear convolution of two small arrays."""
    from scipy.signal import fftconvolve

    return fftconvolve(a, b, mode="full")


def convolve_same(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``image`` convolved with a centred odd kernel, same shape (zero padding)."""
    from scipy.signal import fftconvolve

    return fftconvolve(image, kernel, mode="same")


def robust_sigma(values: np.ndarray) -> float:
    """1.4826 x the median absolute deviation."""
    values = values[np.isfinite(values)]
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def forced_flux(diff: np.ndarray, psf: np.ndarray, x: float, y: float) -> float:
    """PSF-weighted flux ``sum(D P) / sum(P^2)`` with ``P`` shifted to (x, y).

    ``P`` is shifted by the sub-pixel offset from the nearest pixel (Fourier shift): a
    PSF left on the nearest pixel weights the source off its centre, which biased every
    flux low (the oracle's by 1.4 % at FWHM 4 px, as ``exp(-<d^2> / 4 s^2)`` predicts).
    """
    half = psf.shape[0] // 2
    ix, iy = round(x), round(y)
    cut = diff[iy - half : iy + half + 1, ix - half : ix + half + 1]
    if cut.shape != psf.shape:
        return float("nan")
    shifted = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(psf), (y - iy, x - ix))).real
    return float(np.sum(cut * shifted) / np.sum(shifted**2))


@dataclass(frozen=True)
class Peaks:
    """Local maxima of a PSF-filtered difference above :data:`FLOOR` sigma."""

    x: np.ndarray  # px
    y: np.ndarray  # px
    height: np.ndarray  # sigma of the filtered difference's sky
    false: np.ndarray  # farther than FALSE_PEAK_PX from every injection

    def false_above(self, level: float) -> int:
        """How many false peaks stand above ``level`` sigma."""
        return int(np.count_nonzero(self.false & (self.height > level)))


def score(diff: np.ndarray, truth: Truth) -> tuple[dict[str, float], Peaks]:
    """Every figure of one difference image (science units, NaN where it has no data),
    against ``truth`` of the same kind (plain, or :func:`whitened`), and its peaks (for
    :func:`found_at_budget`)."""
    # The PSF-filtered difference in its sky sigma; pixels whose filter footprint holds
    # no data are left out (not covered).
    given = None
    if truth.defects is not None:
        given = ndimage.binary_dilation(truth.defects, iterations=DEFECT_REACH)
    filtered, covered, mf_sigma = significance(diff, truth.psf, truth.sky, given)
    good = np.isfinite(diff)
    sky = truth.sky & good
    diff = np.where(good, diff - np.median(diff[sky]), 0.0)
    exact_pix, exact_mf = exact_noise(
        truth.psf, truth.sci_filter, truth.tmpl_filter, truth.sigma_s, truth.sigma_t
    )
    figures: dict[str, float] = {
        "noise": robust_sigma(diff[sky]) / exact_pix,
        "mf noise": mf_sigma / exact_mf,
    }
    order = np.argsort(truth.star_flux)[::-1][:N_BRIGHT]
    radius = 1.5 * truth.fwhm
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    residuals = []
    for i in order:
        ix, iy = round(float(truth.star_x[i])), round(float(truth.star_y[i]))
        box = (slice(iy - r, iy + r + 1), slice(ix - r, ix + r + 1))
        near = np.hypot(dx + ix - truth.star_x[i], dy + iy - truth.star_y[i]) <= radius
        if diff[box].shape != near.shape or not covered[box][near].all():
            continue
        z = diff[box][near] / truth.local_sigma[box][near]
        residuals.append(float(np.sqrt(np.mean(z**2))))
    figures["star res med"] = float(np.median(residuals))
    figures["star res p90"] = float(np.percentile(residuals, 90))
    bright = truth.inj_snr > 20
    fluxes = np.array(
        [forced_flux(diff, truth.psf, x, y) for x, y in zip(truth.inj_x, truth.inj_y, strict=True)]
    )
    figures["flux ratio"] = float(np.nanmedian(fluxes[bright] / truth.inj_flux[bright]))
    peaks = shared_peaks(filtered, covered, truth.injections)
    figures["false peaks"] = float(peaks.false_above(THRESHOLD))
    lo, hi = FAINT_SNR
    faint = (truth.inj_snr >= lo) & (truth.inj_snr < hi)
    fx, fy = np.round(truth.inj_x[faint]).astype(int), np.round(truth.inj_y[faint]).astype(int)
    inside = covered[fy, fx]
    measured = filtered[fy, fx][inside]
    figures["faint S/N / true"] = float(np.median(measured / truth.inj_snr[faint][inside]))
    figures.update(found_above(peaks, truth.injections, THRESHOLD, ""))
    return figures, peaks


def found_at_budget(peaks: Peaks, injections: Injections, budget: int) -> dict[str, float]:
    """The recovered fractions at the threshold that leaves ``budget`` false peaks
    (:func:`budget_threshold`), and that threshold: ``found S/N a-b at equal false
    peaks``, ``threshold at equal false peaks``."""
    level = budget_threshold(peaks.height[peaks.false], budget)
    suffix = " at equal false peaks"
    return {f"threshold{suffix}": level, **found_above(peaks, injections, level, suffix)}


def shared_peaks(filtered: np.ndarray, covered: np.ndarray, injections: Injections) -> Peaks:
    """The shared detector's peaks of a PSF-filtered difference in sigma
    (:func:`significance`), each told false or not by ``injections``."""
    px, py, height = local_peaks(filtered, covered, FLOOR)
    return Peaks(px, py, height, ~near_injections(px, py, injections))


def found_above(
    peaks: Peaks, injections: Injections, level: float, suffix: str
) -> dict[str, float]:
    """:func:`found_fractions` of the peaks above ``level`` sigma."""
    above = peaks.height > level
    return found_fractions(peaks.x[above], peaks.y[above], injections, suffix)


def significance(
    diff: np.ndarray, psf: np.ndarray, sky: np.ndarray, given: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """A difference (NaN where it has no data) less its median on ``sky``, filtered with
    ``psf`` (sum 1) and divided by the robust sigma of that on ``sky``; where the
    filter's footprint holds data (pixels ``given`` without it, a given mask's defects
    and their reach, count as 0 there); that sigma."""
    good = np.isfinite(diff)
    d = np.where(good, diff - np.median(diff[sky & good]), 0.0)
    filtered = convolve_same(d, psf[::-1, ::-1])
    covered = ndimage.minimum_filter(good if given is None else good | given, size=psf.shape[0])
    sigma = robust_sigma(filtered[sky & covered])
    return filtered / sigma, covered, sigma


def local_peaks(
    significance: np.ndarray, covered: np.ndarray, floor: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local maxima (5 x 5) of a PSF-filtered difference in sigma above ``floor``, where
    its footprint holds data: their x, y and height."""
    peaks = (
        (significance == ndimage.maximum_filter(significance, size=5))
        & (significance > floor)
        & covered
    )
    py, px = np.nonzero(peaks)
    return px, py, significance[py, px]


def near_injections(px: np.ndarray, py: np.ndarray, injections: Injections) -> np.ndarray:
    """Whether each peak lies within :data:`FALSE_PEAK_PX` of an injection."""
    near = np.zeros(px.size, dtype=bool)
    for x, y in zip(injections.x, injections.y, strict=True):
        near |= np.hypot(px - x, py - y) <= FALSE_PEAK_PX
    return near


def budget_threshold(false_heights: np.ndarray, budget: int) -> float:
    """The threshold (sigma) above which ``budget`` of the false peaks of heights
    ``false_heights`` stand: halfway between the ``budget``-th highest and the next, so
    that a difference given its own 5 sigma count reads about 5 (:data:`FLOOR` when fewer
    false peaks stand above it)."""
    ranked = np.sort(false_heights)[::-1]
    if ranked.size <= budget:
        return FLOOR
    upper = ranked[budget - 1] if budget > 0 else ranked[0] + 1.0
    return float(max(0.5 * (upper + ranked[budget]), FLOOR))


def found_fractions(
    px: np.ndarray, py: np.ndarray, injections: Injections, suffix: str
) -> dict[str, float]:
    """Fraction of each S/N bin's injections with a peak of (px, py) within
    :data:`MATCH_PX`, as ``found S/N a-b{suffix}`` (NaN for a bin without one)."""
    out = {}
    for lo, hi in SNR_BINS:
        sel = (injections.snr >= lo) & (injections.snr < hi)
        found = [
            bool(np.any(np.hypot(px - x, py - y) <= MATCH_PX))
            for x, y in zip(injections.x[sel], injections.y[sel], strict=True)
        ]
        out[f"found S/N {lo:g}-{hi:g}{suffix}"] = float(np.mean(found)) if found else np.nan
    return out
