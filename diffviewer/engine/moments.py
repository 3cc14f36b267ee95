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
    side = 2 * half + 1
    inside = (yc - half >= 0) & (yc + half < ny) & (xc - half >= 0) & (xc + half < nx)
    stamps = np.empty((len(xc), side, side), dtype=array.dtype)
    if inside.any():
        # whole rows of the image copied at once from a strided view of all windows
        windows = np.lib.stride_tricks.sliding_window_view(array, (side, side))
        stamps[inside] = windows[yc[inside] - half, xc[inside] - half]
    if not inside.all():
        out = ~inside
        off = np.arange(-half, half + 1)
        rows = yc[out, None] + off[None, :]
        cols = xc[out, None] + off[None, :]
        near = array[np.clip(rows, 0, ny - 1)[:, :, None], np.clip(cols, 0, nx - 1)[:, None, :]]
        outside = ((rows < 0) | (rows >= ny))[:, :, None] | ((cols < 0) | (cols >= nx))[:, None, :]
        stamps[out] = np.where(outside, np.asarray(fill, dtype=array.dtype), near)
    return stamps, inside


def _positive_definite(cov: np.ndarray) -> np.ndarray:
    """Whether 2x2 symmetric matrices ``(..., 2, 2)`` are covariances (trace, determinant > 0)."""
    trace = cov[..., 0, 0] + cov[..., 1, 1]
    det = cov[..., 0, 0] * cov[..., 1, 1] - cov[..., 0, 1] * cov[..., 1, 0]
    return (trace > 0) & (det > 0)


def adaptive_moments_stack(
    stamps: np.ndarray, iterations: int = 20
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroids and covariances of compact sources by iterated Gaussian-weighted moments.

    With weight covariance ``W`` the weighted moments of a Gaussian of covariance ``C``
    are ``(C^-1 + W^-1)^-1``; iterating ``W <- 2 M`` converges to ``W = C``. All cutouts
    iterate together; each stops on its own when it has converged (relative change of
    the covariance below 1e-4 and of the centroid below 1e-4 px) or when its weighted
    flux or its new covariance is no longer valid (it keeps its last valid state).

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(n, ny, nx)`` background-subtracted cutouts, each source near its centre.
    iterations : int
        Most iterations.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        x and y centroids ``(n,)`` (px, cutout coordinates) and covariances
        ``(n, 2, 2)`` (px^2).
    """
    stamps = np.asarray(stamps, dtype=np.float64)
    n, ny, nx = stamps.shape
    xs, ys = np.arange(nx, dtype=float), np.arange(ny, dtype=float)
    x0 = np.full(n, (nx - 1) / 2.0)
    y0 = np.full(n, (ny - 1) / 2.0)
    cov = np.tile(np.eye(2) * 2.0**2, (n, 1, 1))
    cap = (max(nx, ny) / 2.0) ** 2  # keep the weight inside the cutout
    active = np.ones(n, dtype=bool)
    for _ in range(iterations):
        if not active.any():
            break
        k = np.nonzero(active)[0]
        c = cov[k]
        det = c[:, 0, 0] * c[:, 1, 1] - c[:, 0, 1] ** 2
        ia, ib, ic = c[:, 1, 1] / det, -c[:, 0, 1] / det, c[:, 0, 0] / det
        # The weight's exponent from the offsets along each axis (the quadratic form is
        # a sum of a row term, a column term and their product): one image-sized product.
        ex = xs[None, :] - x0[k, None]
        ey = ys[None, :] - y0[k, None]
        q = (-ib[:, None] * ey)[:, :, None] * ex[:, None, :]
        q += (-0.5 * ia[:, None] * ex * ex)[:, None, :]
        q += (-0.5 * ic[:, None] * ey * ey)[:, :, None]
        f = np.exp(q, out=q)
        f *= stamps if len(k) == n else stamps[k]
        # The moments from the weighted image's column and row sums, and its product
        # with the column offsets for the cross term (matrix products: faster sums).
        fx = np.matmul(np.ones(ny), f)
        s = fx.sum(axis=1)
        with np.errstate(all="ignore"):
            x1 = fx @ xs / s
            ex = xs[None, :] - x1[:, None]
            rows = np.matmul(f, np.stack([np.ones((len(k), nx)), ex], axis=-1))
            fy, fxy = rows[..., 0], rows[..., 1]
            y1 = fy @ ys / s
            ey = ys[None, :] - y1[:, None]
            mxx = (fx * ex * ex).sum(axis=1) / s
            myy = (fy * ey * ey).sum(axis=1) / s
            mxy = (fxy * ey).sum(axis=1) / s
        new = 2.0 * np.stack([np.stack([mxx, mxy], -1), np.stack([mxy, myy], -1)], -2)
        ok = np.isfinite(s) & (s > 0) & np.all(np.isfinite(new), axis=(1, 2))
        ok &= _positive_definite(new)
        new = np.minimum(new, cap)
        ok &= _positive_definite(new)
        with np.errstate(all="ignore"):
            done = (
                np.all(np.abs(new - c) <= 1e-8 + 1e-4 * np.abs(c), axis=(1, 2))
                & (np.abs(x1 - x0[k]) < 1e-4)
                & (np.abs(y1 - y0[k]) < 1e-4)
            )
        upd = k[ok]
        x0[upd], y0[upd], cov[upd] = x1[ok], y1[ok], new[ok]
        active[k[~ok | done]] = False
    return x0, y0, cov


def adaptive_moments(image: np.ndarray, iterations: int = 20) -> tuple[float, float, np.ndarray]:
    """Centroid and covariance of one compact source (:func:`adaptive_moments_stack`).

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
    x, y, cov = adaptive_moments_stack(np.asarray(image)[None], iterations)
    return float(x[0]), float(y[0]), cov[0]


def shapes_from_covariances(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FWHM (px) of the equal-area circular Gaussian and ellipticity ``1 - b/a`` of each
    covariance of a stack (``(n, 2, 2)``, px^2): one batched eigenvalue call."""
    ev = np.clip(np.linalg.eigvalsh(cov), 1e-6, None)  # ascending
    a, b = np.sqrt(ev[..., -1]), np.sqrt(ev[..., 0])
    return FWHM_PER_SIGMA * np.sqrt(a * b), 1.0 - b / a


def shape_from_covariance(cov: np.ndarray) -> tuple[float, float]:
    """:func:`shapes_from_covariances` of one 2 x 2 covariance (px^2), as floats."""
    fwhm, ell = shapes_from_covariances(np.asarray(cov)[None])
    return float(fwhm[0]), float(ell[0])
