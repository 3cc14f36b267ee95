"""Cutouts and adaptive second moments of compact sources (the PSF's measuring tools)."""

from __future__ import annotations

import numpy as np

from diffviewer.stats import FWHM_PER_SIGMA


def cutouts(
    array: np.ndarray, xc: np.ndarray, yc: np.ndarray, half: int, fill: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Square cutouts of side ``2 * half + 1`` centred on integer pixels (vectorised).

    Parameters
    ----------
    array : numpy.ndarray
        2-D image.
    xc, yc : numpy.ndarray
        Integer centres (0-based column, row).
    half : int
        Half-width (px).
    fill : float
        Value of cutout pixels that fall outside the image.

    Returns
    -------
    stamps : numpy.ndarray
        ``(n, 2 * half + 1, 2 * half + 1)`` cutouts, same dtype as ``array``.
    inside : numpy.ndarray
        True where the whole cutout lies inside the image.
    """
    xc = np.asarray(xc, dtype=np.intp)
    yc = np.asarray(yc, dtype=np.intp)
    ny, nx = array.shape
    off = np.arange(-half, half + 1)
    rows = yc[:, None] + off[None, :]
    cols = xc[:, None] + off[None, :]
    stamps = array[np.clip(rows, 0, ny - 1)[:, :, None], np.clip(cols, 0, nx - 1)[:, None, :]]
    inside = (yc - half >= 0) & (yc + half < ny) & (xc - half >= 0) & (xc + half < nx)
    if not inside.all():
        outside = ((rows < 0) | (rows >= ny))[:, :, None] | ((cols < 0) | (cols >= nx))[:, None, :]
        stamps = np.where(outside, np.asarray(fill, dtype=stamps.dtype), stamps)
    return stamps, inside


def _positive_definite(cov: np.ndarray) -> bool:
    """Whether a 2x2 symmetric matrix is a covariance (positive trace and determinant)."""
    return bool(np.trace(cov) > 0 and np.linalg.det(cov) > 0)


def adaptive_moments(image: np.ndarray, iterations: int = 20) -> tuple[float, float, np.ndarray]:
    """Centroid and covariance of a compact source by iterated Gaussian-weighted moments.

    With weight covariance ``W`` the weighted moments of a Gaussian of covariance ``C``
    are ``(C^-1 + W^-1)^-1``; iterating ``W <- 2 M`` converges to ``W = C``.

    Parameters
    ----------
    image : numpy.ndarray
        Background-subtracted cutout with the source near its centre.
    iterations : int
        Most iterations.

    Returns
    -------
    (float, float, numpy.ndarray)
        x and y centroid (px, cutout coordinates) and the 2x2 covariance (px^2).
    """
    ny, nx = image.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    x0, y0 = (nx - 1) / 2.0, (ny - 1) / 2.0
    cov = np.eye(2) * 2.0**2
    for _ in range(iterations):
        inv = np.linalg.inv(cov)
        dx, dy = xx - x0, yy - y0
        w = np.exp(-0.5 * (inv[0, 0] * dx * dx + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy * dy))
        f = w * image
        s = f.sum()
        if not np.isfinite(s) or s <= 0:
            break
        x1, y1 = (f * xx).sum() / s, (f * yy).sum() / s
        dx, dy = xx - x1, yy - y1
        m = (
            np.array(
                [
                    [(f * dx * dx).sum(), (f * dx * dy).sum()],
                    [(f * dx * dy).sum(), (f * dy * dy).sum()],
                ]
            )
            / s
        )
        new = 2.0 * m
        if not (np.all(np.isfinite(new)) and _positive_definite(new)):
            break
        new = np.minimum(new, (max(nx, ny) / 2.0) ** 2)  # keep the weight inside the cutout
        if not _positive_definite(new):
            break
        done = np.allclose(new, cov, rtol=1e-4) and abs(x1 - x0) < 1e-4 and abs(y1 - y0) < 1e-4
        x0, y0, cov = x1, y1, new
        if done:
            break
    return float(x0), float(y0), cov


def shape_from_covariance(cov: np.ndarray) -> tuple[float, float]:
    """FWHM (px) of the equal-area circular Gaussian and ellipticity ``1 - b/a``."""
    ev = np.clip(np.linalg.eigvalsh(cov), 1e-6, None)
    a, b = np.sqrt(ev.max()), np.sqrt(ev.min())
    return float(FWHM_PER_SIGMA * np.sqrt(a * b)), float(1.0 - b / a)
