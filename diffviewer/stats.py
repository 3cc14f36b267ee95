"""Small robust statistics shared by the engine, the reader and the display (no Qt)."""

from __future__ import annotations

import numpy as np

#: Ratio of the standard deviation to the median absolute deviation of a Gaussian.
MAD_TO_SIGMA = 1.482602218505602

#: Ratio of a Gaussian's FWHM to its standard deviation, 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = float(2.0 * np.sqrt(2.0 * np.log(2.0)))


def robust_std(values: np.ndarray, centre: float | None = None) -> float:
    """Robust standard deviation: :data:`MAD_TO_SIGMA` times the median absolute deviation.

    Parameters
    ----------
    values : numpy.ndarray
        Finite values (any shape).
    centre : float, optional
        Their median, when the caller has it already (not computed again).

    Returns
    -------
    float
        NaN for an empty array.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return float("nan")
    med = np.median(values) if centre is None else centre
    return float(MAD_TO_SIGMA * np.median(np.abs(values - med)))


def nanmedian_last(values: np.ndarray) -> np.ndarray:
    """Median over the last axis ignoring NaN (NaN where all are NaN), by one vectorised sort.

    ``numpy.nanmedian`` along an axis loops over the other axes in Python; sorting every
    row at once (NaN sorts last) and picking the middle of each row's finite values is
    several times faster on the hundreds of boxes of a background grid.

    Parameters
    ----------
    values : numpy.ndarray
        Any shape; the median is taken over the last axis.

    Returns
    -------
    numpy.ndarray
        Shape ``values.shape[:-1]``.
    """
    ordered = np.sort(values, axis=-1)
    n = np.sum(np.isfinite(ordered), axis=-1)
    lo = np.take_along_axis(ordered, np.maximum((n - 1) // 2, 0)[..., None], -1)[..., 0]
    hi = np.take_along_axis(ordered, np.maximum(n // 2, 0)[..., None], -1)[..., 0]
    return np.where(n > 0, 0.5 * (lo + hi), np.nan)
