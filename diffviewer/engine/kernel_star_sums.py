"""Each kernel star's flux ratio under the fitted kernel: the per-star kernel sum.

A star's own kernel (:mod:`kernel_stamps`), fitted on its stamp alone with its own
background, does not pin its sum where the images hold their sky: a broad kernel
component of sum ``e`` adds ``e`` times the convolved image's sky to the whole stamp,
which the stamp's background takes back, and only the little light of the star's wing
tells the two apart. On GOTO (sky 516 counts) the own fits' sums and backgrounds
correlate at -0.9999 along ``d(sum) / d(background) = -1 / 516``; each sum's formal error
is 14 % (median), and the brightest quarter sat 2.0 % above the spatial solution's sum
with the science convolved and 0.8 % below it with the template, where the two
directions' solutions agree to 0.1 %.

Here the kernel is the solution's at the star, and the star's flux ratio is that of its
matched-filter fluxes on the target and on the convolved source: with a profile ``p``
that holds no noise (a Gaussian of the broader FWHM at the star, less its mean over the
pixels within 3 FWHM that the stamp's fit kept, so that constant backgrounds drop out),
``ratio = sum(p * target) / sum(p * (K * source))``, and the star's kernel sum is
``ratio * sum(K)``. Noise enters numerator and denominator linearly, so neither is
biased by it (a least-squares scale of ``K * source`` on the target is: the convolved
image's noise in its normal equations attenuated GOTO's faintest quarter to 0.83 of the
solution's sum with the template convolved, and taking out the noise measured on sky
overshot to 1.04).
"""

from __future__ import annotations

import numpy as np

from diffviewer.engine import fftconv
from diffviewer.engine.kernel_design import Stamps, pair_batches
from diffviewer.engine.kernel_stamps import central_pixels
from diffviewer.stats import FWHM_PER_SIGMA

#: Radius of the profile's aperture, in FWHM: the Gaussian there is 1e-11 of its peak,
#: and its mean over the aperture (taken out, so that constant backgrounds drop out) is
#: weighed against light within 3 FWHM of the star only. Over the whole fit region (35 px
#: on GOTO) it weighed every neighbour there, and 8 of GOTO's kernel stars had negative
#: filtered fluxes; over the aperture 3 (positions on a bright neighbour's halo).
APERTURE_FWHM = 3.0


def profiles(x: np.ndarray, y: np.ndarray, half: int, fwhm: float, used: np.ndarray) -> np.ndarray:
    """Each star's matched-filter profile over a box around it: a Gaussian of ``fwhm`` at
    the star, within :data:`APERTURE_FWHM` of it on the ``used`` pixels, less its mean
    there, and zero elsewhere.

    Parameters
    ----------
    x, y : numpy.ndarray
        ``(n,)`` star positions (px); the box is centred on the nearest pixel.
    half : int
        Half-width (px) of the box.
    fwhm : float
        The Gaussian's FWHM (px).
    used : numpy.ndarray
        ``(n, side * side)`` bool, the box's pixels to use, ``side = 2 * half + 1``.

    Returns
    -------
    numpy.ndarray
        ``(n, side, side)`` float64.
    """
    grid = np.arange(-half, half + 1, dtype=float)
    dx = grid[None, :] - (x - np.rint(x))[:, None]
    dy = grid[None, :] - (y - np.rint(y))[:, None]
    r2 = dy[:, :, None] ** 2 + dx[:, None, :] ** 2
    gauss = np.exp(-0.5 * r2 / (fwhm / FWHM_PER_SIGMA) ** 2)
    keep = used.reshape(gauss.shape) & (r2 <= (APERTURE_FWHM * fwhm) ** 2)
    with np.errstate(invalid="ignore"):
        mean = np.where(keep, gauss, 0.0).sum(axis=(1, 2)) / keep.sum(axis=(1, 2))
    return np.where(keep, gauss - mean[:, None, None], 0.0)


def star_kernel_sums(
    stamps: Stamps,
    rows: np.ndarray,
    kernels: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    fwhm: float,
    used: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The stars' kernel sums under the solution's kernels, and their formal errors.

    Only the box of the profile's aperture is read from each stamp (the 2048 x 4096
    pair's fit region is 93 px across, the box 29: 0.59 s over the region, 0.21 s over
    the box, 0.11 s with the convolutions in float32).

    Parameters
    ----------
    stamps : Stamps
        The stamps (source stamps reach the kernel's half-width beyond the fit region).
    rows : numpy.ndarray
        Which stamps to measure.
    kernels : numpy.ndarray
        ``(len(rows), size, size)`` the solution's kernel at each (the stamps' kernel size).
    x, y : numpy.ndarray
        All the stars' positions (px).
    fwhm : float
        FWHM (px) of the broader PSF: the profile's.
    used : numpy.ndarray
        ``(n, npix)`` the pixels each stamp's fit kept.

    Returns
    -------
    sums, errors : numpy.ndarray
        ``(len(rows),)``; NaN where the profile holds no flux on either image.
    """
    half = min(stamps.fit_half, int(np.ceil(APERTURE_FWHM * fwhm)))
    box = central_pixels(stamps.fit_half, half)
    c, reach = stamps.source.shape[-1] // 2, half + kernels.shape[-1] // 2
    around = slice(c - reach, c + reach + 1)
    sums, errors = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
    for sl in pair_batches(stamps, len(rows)):
        idx = rows[sl]
        prof = profiles(x[idx], y[idx], half, fwhm, used[idx[:, None], box])
        target = stamps.target[idx[:, None], box].reshape(prof.shape)
        var_target = stamps.var_target[idx[:, None], box].reshape(prof.shape)
        # sum_p prof(p) (K * s)(p) = sum_q s(q) g(q), g = prof correlated with K (in
        # float32, as the fit's convolutions: 0.16 -> 0.08 s on the 2048 x 4096 pair)
        flipped = kernels[sl, ::-1, ::-1].astype(np.float32)
        g = fftconv.convolve(prof.astype(np.float32), flipped, "full", axes=(1, 2))
        num = np.sum(prof * target, axis=(1, 2))
        den = np.sum(g * stamps.source[idx, around, around], axis=(1, 2), dtype=np.float64)
        var_num = np.sum(prof**2 * var_target, axis=(1, 2))
        var_den = np.sum(
            g**2 * stamps.var_source[idx, around, around], axis=(1, 2), dtype=np.float64
        )
        total = kernels[sl].sum(axis=(1, 2))
        with np.errstate(all="ignore"):
            ratio = num / den
            rel = np.sqrt(var_num / num**2 + var_den / den**2)
        ok = (num > 0) & (den > 0)
        sums[sl] = np.where(ok, ratio * total, np.nan)
        errors[sl] = np.where(ok, np.abs(ratio * total) * rel, np.nan)
    return sums, errors
