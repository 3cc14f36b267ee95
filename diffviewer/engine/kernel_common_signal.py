"""The light both images hold on their sky, told apart from the noise they share.

The kernel fit's shared-noise correction (:mod:`kernel_noise`) takes the two images'
cross-covariance on sky as noise common to both (coadds built from common frames). It is
that only where the sky holds no signal. In a crowded field the "sky" between detected
stars is full of fainter ones, on both images: on the pyDIA frames (independent single
exposures, which share no noise) the sky's zero-lag correlation reads 0.76 (0060) and
0.86 (0018), and it falls with the lag as the PSFs do (half its zero-lag value at 4 px,
0.24-0.29 at 6 px), where GOTO's, noise shared by its coadds, is gone one pixel out (0.14
at 1 px, below 0.07 beyond). Taken as noise, that light was taken out of the kernel's
equations, and the kernel no longer matched it: the difference held -1.1 % of 0018's
kernel stars' filtered flux (HOTPANTS's -0.1 %), and the bright stars' residual was
1.2-2.7 % above HOTPANTS's on 0060, 0018, 0120 and 0150; with this, -0.1 to +2.3 %, every
interval reaching HOTPANTS's (``bench_direction.py``; ``benchmarks/SCIENCE.md``).

Faint point sources scattered at random give the two images a cross-covariance shaped
as the cross-correlation of their PSFs, ``X(d) = sum_u P_s(u) P_t(u + d)``. Noise shared
by common frames reaches no further than their resampling. So the sky's cross-covariance
is fitted, over lags from :data:`NOISE_REACH` to :data:`SIGNAL_REACH_FWHM` FWHM, by
``a X(d)`` (``a >= 0``), and ``a X`` is taken out of it before it is read as shared noise.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from diffviewer.engine import fftconv
from diffviewer.engine.kernel_noise import SkyCovariance

#: Lag (px) beyond which noise shared by common frames is taken to be gone: GOTO's
#: coadds' cross-covariance is 0.14 of its zero-lag value at 1 px and within 0.07 of 0 at
#: 2-6 px (resampling kernels reach 1-2 px).
NOISE_REACH = 2.0

#: Largest lag of the fit, in FWHM of the broader PSF: the PSFs' cross-correlation there
#: is 2^-8 of its peak for Gaussians (its FWHM is sqrt(2) times theirs).
SIGNAL_REACH_FWHM = 2.0


def psf_cross_correlation(
    source_psf: np.ndarray, target_psf: np.ndarray, max_lag: int
) -> np.ndarray:
    """``X(d) = sum_u P_s(u) P_t(u + d)`` at lags up to ``max_lag``, over its value at 0.

    Parameters
    ----------
    source_psf, target_psf : numpy.ndarray
        Odd-sized, centred PSF images.
    max_lag : int
        Largest lag (px) along either axis.

    Returns
    -------
    numpy.ndarray
        ``(2 L + 1, 2 L + 1)``, element ``[L + dy, L + dx]`` (the layout of
        :class:`kernel_noise.SkyCovariance`), zero beyond the PSFs' reach.
    """
    full = fftconv.convolve(target_psf, source_psf[::-1, ::-1], "full")
    centre = np.array(full.shape) // 2
    out = np.zeros((2 * max_lag + 1, 2 * max_lag + 1))
    reach = np.minimum(centre, max_lag)
    out[
        max_lag - reach[0] : max_lag + reach[0] + 1, max_lag - reach[1] : max_lag + reach[1] + 1
    ] = full[
        centre[0] - reach[0] : centre[0] + reach[0] + 1,
        centre[1] - reach[1] : centre[1] + reach[1] + 1,
    ]
    return out / out[max_lag, max_lag]


def common_signal(cross: np.ndarray, profile: np.ndarray, fwhm: float) -> float:
    """The amplitude ``a >= 0`` of ``profile`` in ``cross``, fitted by least squares over
    the lags from :data:`NOISE_REACH` to :data:`SIGNAL_REACH_FWHM` times ``fwhm``.

    Parameters
    ----------
    cross, profile : numpy.ndarray
        ``(2 L + 1, 2 L + 1)`` the sky's cross-covariance and the PSFs' normalised
        cross-correlation (:func:`psf_cross_correlation`).
    fwhm : float
        FWHM (px) of the broader PSF.

    Returns
    -------
    float
        0 when no lag lies in the range or the fit is negative.
    """
    lag = cross.shape[0] // 2
    d = np.arange(-lag, lag + 1)
    r = np.hypot(d[:, None], d[None, :])
    ring = (r >= NOISE_REACH) & (r <= SIGNAL_REACH_FWHM * fwhm)
    power = float(np.sum(profile[ring] ** 2))
    if power <= 0:
        return 0.0
    return max(0.0, float(np.sum(cross[ring] * profile[ring])) / power)


def without_common_signal(
    cov: SkyCovariance, source_psf: np.ndarray, target_psf: np.ndarray, fwhm: float
) -> tuple[SkyCovariance, float]:
    """``cov`` with the faint sources' share taken out of its cross-covariance, and that
    share of its zero lag.

    Parameters
    ----------
    cov : SkyCovariance
        Measured on sky (:func:`kernel_noise.measure_sky_covariance`).
    source_psf, target_psf : numpy.ndarray
        The two images' PSF images.
    fwhm : float
        FWHM (px) of the broader PSF.

    Returns
    -------
    (SkyCovariance, float)
        The share is ``a / C_st(0)``, ``a`` at most ``C_st(0)`` (0 where ``C_st(0) <= 0``).
    """
    profile = psf_cross_correlation(source_psf, target_psf, cov.max_lag)
    zero = float(cov.cross[cov.max_lag, cov.max_lag])
    # at most the whole zero lag: the sources' share of it is not above 1 (pyDIA 0018's
    # fit, its PSFs' shape a little narrower than its sky's, reached 1.09)
    a = min(common_signal(cov.cross, profile, fwhm), max(zero, 0.0))
    share = a / zero if zero > 0 else 0.0
    return dataclasses.replace(cov, cross=cov.cross - a * profile), share
