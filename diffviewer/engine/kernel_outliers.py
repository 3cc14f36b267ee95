"""Kernel stamps judged by their residuals: residual statistics, the pixels clipped from a
stamp's fit, and the outlier rules that reject whole stamps.

A stamp's residual is normalised by its propagated noise (:func:`normalised_residuals`)
and summed up as chi^2, mean and standard deviation (:func:`residual_stats`: against the
stamp's own kernel, or the spatial model's by :func:`kernel_residual_stats`). Within a
stamp, :func:`clip_mask` finds other sources by a matched filter; across the stamps,
:func:`outliers` and :func:`residual_power_outliers` find the values that stand out from
the others', in units of their own errors with the stamps' intrinsic scatter added. The
stamps' own fits (:mod:`kernel_stamps`) clip and reject by these rules; the spatial fit
(:mod:`kernel_spatial`) judges its residuals by the same statistics.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from diffviewer.engine.kernel_design import Stamps, kernel_model, pair_batches
from diffviewer.stats import FWHM_PER_SIGMA


def normalised_residuals(
    target: np.ndarray, model: np.ndarray, var_total: np.ndarray
) -> np.ndarray:
    """``(target - model) / sqrt(variance)`` of each stamp, ``(n, npix)``."""
    return np.asarray((target - model) / np.sqrt(var_total))


def residual_stats(
    resid: np.ndarray, used: np.ndarray, n_params: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """chi^2/dof, mean and std of each stamp's normalised residual over ``used`` pixels.

    Parameters
    ----------
    resid : numpy.ndarray
        ``(n, npix)`` :func:`normalised_residuals`.
    used : numpy.ndarray
        ``(n, npix)`` bool, the pixels counted.
    n_params : int
        Parameters of each stamp's model (for the degrees of freedom).
    """
    r = resid.astype(np.float64)
    n = np.maximum(used.sum(axis=1), 1)
    dof = np.maximum(n - n_params, 1)
    mean = np.where(used, r, 0.0).sum(axis=1) / n
    var = np.where(used, (r - mean[:, None]) ** 2, 0.0).sum(axis=1) / n
    return np.where(used, r**2, 0.0).sum(axis=1) / dof, mean, np.sqrt(var)


def kernel_residual_stats(
    stamps: Stamps,
    idx: np.ndarray,
    coef: np.ndarray,
    basis: np.ndarray,
    var_total: np.ndarray,
    used: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`residual_stats` of the stamps ``idx`` against kernels ``coef`` given from
    outside their own fits (the spatial model's), by :func:`kernel_design.kernel_model`, a
    batch of stamps at a time (:func:`kernel_design.pair_batches`)."""
    out = np.empty((3, len(idx)))
    for sl in pair_batches(stamps, len(idx)):
        model = kernel_model(stamps, idx[sl], coef[sl], basis)
        resid = normalised_residuals(stamps.target[idx[sl]], model, var_total[sl])
        out[:, sl] = residual_stats(resid, used[sl], coef.shape[1])
    return out[0], out[1], out[2]


def star_power(
    star: np.ndarray, var_total: np.ndarray, used: np.ndarray, n_params: int
) -> tuple[np.ndarray, np.ndarray]:
    """Degrees of freedom of each stamp's fit over ``used`` pixels, and its star's power:
    the fitted kernel model ``star`` (without the background) squared over the variance,
    summed over those pixels (the star's squared S/N)."""
    power = np.where(used, star.astype(np.float64) ** 2 / var_total, 0.0).sum(axis=1)
    return np.maximum(used.sum(axis=1) - n_params, 1), power


#: Matched-filter S/N of the residual beyond which the pixels around it (outside a star's
#: core) are masked.
CLIP_SIGMA = 5.0


def clip_mask(resid: np.ndarray, fit_half: int, core_radius: float, fwhm: float) -> np.ndarray:
    """Pixels to keep (``(n, npix)`` bool): all but other sources outside the star's core.

    The normalised residual is filtered by a Gaussian of the PSF's width and divided by the
    filtered noise's sigma (a matched filter: a faint transient stands out there, not pixel
    by pixel); pixels beyond ``core_radius`` where it exceeds :data:`CLIP_SIGMA`, grown by
    one FWHM, are masked.
    """
    side = 2 * fit_half + 1
    sigma = max(fwhm / FWHM_PER_SIGMA, 0.5)
    filtered = ndimage.gaussian_filter(
        resid.reshape(-1, side, side), (0, sigma, sigma), mode="constant"
    )
    # unit white noise filtered by a unit-sum Gaussian has sigma 1 / (2 sqrt(pi) sigma)
    z = filtered * (2.0 * np.sqrt(np.pi) * sigma)
    r = np.arange(side) - fit_half
    rr = np.hypot(r[:, None], r[None, :])
    outside = rr > core_radius
    grow = int(np.ceil(fwhm))
    disk = np.hypot(*np.mgrid[-grow : grow + 1, -grow : grow + 1]) <= fwhm
    bad = (np.abs(z) > CLIP_SIGMA) & outside[None]
    # Grown only on the stamps that have something to grow (most have nothing).
    hit = np.flatnonzero(bad.any(axis=(1, 2)))
    bad[hit] = ndimage.binary_dilation(bad[hit], structure=disk[None])
    return ~(bad & outside[None]).reshape(resid.shape)


def intrinsic_scatter(resid: np.ndarray, errors: np.ndarray) -> float:
    """The maximum-likelihood scatter ``s`` (>= 0) of deviations whose variances are their
    formal errors squared plus ``s^2`` (Gaussian); 0 when the errors alone explain them.

    The likelihood's root in ``s^2`` weights each value by ``1 / (e^2 + s^2)^2``, so the
    precise values (bright stars) set ``s`` and the loose ones, which hardly see it, do
    not dilute it.

    Parameters
    ----------
    resid, errors : numpy.ndarray
        ``(n,)`` deviations from the model and their formal errors (finite, positive).

    Returns
    -------
    float
        ``s``, in the units of the values.
    """

    def slope(s2: float) -> float:
        total = errors**2 + s2
        return float(np.sum((resid**2 - total) / total**2))

    if slope(0.0) <= 0.0:
        return 0.0
    # slope(max resid^2) < 0: every term's numerator is then <= 0, one of them < 0
    lo, hi = 0.0, float(np.max(resid**2))
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if slope(mid) > 0.0 else (lo, mid)
    return float(np.sqrt(hi))


def outliers(
    values: np.ndarray,
    errors: np.ndarray,
    terms: np.ndarray,
    nsigma: float,
    high_only: bool = False,
) -> np.ndarray:
    """Values further than ``nsigma`` from an iteratively clipped fit, in units of their errors.

    The fit is weighted least squares on ``terms`` (a column of ones: the mean; Chebyshev
    terms in x, y: a smooth function of position). Each deviation is divided by its own
    error (faint stars have loose kernels) with the sample's intrinsic scatter added in
    quadrature (:func:`intrinsic_scatter`, over the values kept: colour terms, PSF
    mismatch), so a sample with extra scatter is not mostly rejected, and a bright star,
    whose formal error is far below that scatter, is judged by the scatter.

    Parameters
    ----------
    values, errors : numpy.ndarray
        ``(n,)`` per-stamp values and their formal errors.
    terms : numpy.ndarray
        ``(n, t)`` the fit's design.
    nsigma : float
        The cut.
    high_only : bool
        Cut only the values above the fit.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` bool (non-finite values are outliers).
    """
    n = len(values)
    if n < max(3, 2 * terms.shape[1] + 1):
        return np.zeros(n, dtype=bool)
    err = np.where(np.isfinite(errors) & (errors > 0), errors, np.inf)
    ok = np.isfinite(values)
    v = np.where(ok, values, 0.0)
    model = np.full(n, float(np.median(v[ok]))) if ok.any() else np.zeros(n)
    keep = ok & np.isfinite(err)
    total = err
    for _ in range(5):
        if keep.sum() > 2:
            s = intrinsic_scatter((v - model)[keep], err[keep])
            total = np.sqrt(err**2 + s**2)
        # values without a finite error (degenerate fits) cannot weigh in the fit
        new = ok & np.isfinite(err) & (np.abs(v - model) <= nsigma * total)
        if new.sum() < max(2, terms.shape[1]):
            break
        w = 1.0 / total[new]
        coef, *_ = np.linalg.lstsq(terms[new] * w[:, None], v[new] * w, rcond=None)
        model = terms @ coef
        if np.array_equal(new, keep):
            break
        keep = new
    deviation = v - model if high_only else np.abs(v - model)
    return ~ok | (deviation > nsigma * total)


def residual_power_outliers(
    chi2: np.ndarray, dof: np.ndarray, power: np.ndarray, nsigma: float
) -> np.ndarray:
    """Stamps whose residual keeps more of their star's power than the others'.

    What a contaminant (a transient, a variable, a blend) does to a stamp's kernel is its
    flux relative to the star's, so the figure is the residual's sum of squares as a
    fraction of the star's power (its squared S/N). Over clean stamps it follows
    ``a dof / power + b``: the noise (``a`` near 1 when the variance planes are right)
    plus the fraction ``b`` of PSF mismatch every model leaves. A plain cut on chi^2
    would reject the brightest stars for that mismatch, which grows with the flux
    squared, and pass a transient on a faint star. The cut is :func:`outliers`' on that
    fit (high side only), each stamp's error the noise of its chi^2
    (``median chi^2 sqrt(2 dof)``) over its power.

    Parameters
    ----------
    chi2, dof, power : numpy.ndarray
        ``(n,)`` chi^2 per degree of freedom, degrees of freedom and the star's power
        (:func:`residual_stats`, :func:`star_power`).
    nsigma : float
        The cut.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` bool.
    """
    level = float(np.median(chi2)) if len(chi2) else 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = chi2 * dof / power
        error = level * np.sqrt(2.0 * dof) / power
        terms = np.column_stack([dof / power, np.ones(len(chi2))])
    return outliers(fraction, error, terms, nsigma, high_only=True)
