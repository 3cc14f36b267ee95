"""Smooth sky background and sky noise of an image, from sigma-clipped statistics per mesh cell."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline

from diffviewer.errors import InputError
from diffviewer.stats import robust_std


def estimate_background(image: np.ndarray, good: np.ndarray, mesh: int) -> tuple[np.ndarray, float]:
    """Smooth sky background and sky noise from sigma-clipped statistics per mesh.

    The image is cut into ``mesh`` x ``mesh`` cells; in each, the median of the good
    pixels is clipped at 3 sigma (sigma from the interquartile range) three times.
    Cells more than sigma from the median of their 3 x 3 neighbours take that median,
    and the grid is interpolated with a bicubic spline through the cell centres
    (SExtractor/photutils Background2D style) by natural cubic splines along x, then y.

    Parameters
    ----------
    image : numpy.ndarray
        The image (image units).
    good : numpy.ndarray
        Boolean map of usable pixels.
    mesh : int
        Cell side (px); a side shorter than the image uses one cell along it.

    Returns
    -------
    background : numpy.ndarray
        float32 background image.
    sigma : float
        Sky noise per pixel: the median over the cells of the clipped sigma.

    Raises
    ------
    InputError
        When no pixel is usable.
    """
    ny, nx = image.shape
    my, mx = min(mesh, ny), min(mesh, nx)
    gy, gx = -(-ny // my), -(-nx // mx)
    med, sig, n_valid, n_kept = _clipped_cell_statistics(image, good, my, mx)
    # A cell needs half its pixels: the median of a mostly masked cell stands for the
    # unmasked part, off the cell centre. Other cells take their nearest usable cell's value.
    cell_pixels = np.outer(
        np.minimum(my, ny - np.arange(gy) * my), np.minimum(mx, nx - np.arange(gx) * mx)
    )
    usable = (n_valid >= 0.5 * cell_pixels) & np.isfinite(med) & (n_kept > 0)
    if not np.any(usable):
        usable = (n_valid > 0) & np.isfinite(med)
    nearest = ndimage.distance_transform_edt(~usable, return_distances=False, return_indices=True)
    grid = med[tuple(nearest)]
    sigma = float(np.median(sig[usable]))
    if grid.size == 1:
        return np.full(image.shape, grid.flat[0], dtype=np.float32), sigma
    # Cells pulled off by a bright object (more than sigma from the median of their
    # 3 x 3 neighbours) take that median; the others are kept, as a 3 x 3 median filter
    # biases a sky gradient at the edges of the grid.
    if min(gy, gx) >= 3:
        smooth = ndimage.median_filter(grid, size=3, mode="nearest")
        grid = np.where(np.abs(grid - smooth) > sigma, smooth, grid)
    yc = np.arange(gy) * my + (np.minimum(my, ny - np.arange(gy) * my) - 1) / 2.0
    xc = np.arange(gx) * mx + (np.minimum(mx, nx - np.arange(gx) * mx) - 1) / 2.0
    wy, wx = _natural_spline_weights(yc, ny), _natural_spline_weights(xc, nx)
    # float32 products (the background is float32; 15 x 15 spline weights sum to 1, so the
    # rounding is that of a float32 sum of ~16 terms): no float64 image-sized temporary.
    background = wy.astype(np.float32) @ (grid @ wx.T).astype(np.float32)
    return background, sigma


def _clipped_cell_statistics(
    image: np.ndarray, good: np.ndarray, my: int, mx: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Clipped median and sigma of the good pixels of each ``my`` x ``mx`` cell.

    Each cell's pixels are sorted once; the quartiles of each clipping iteration are
    read at their indices in the clipped range, and the clipped range's ends are
    counted by bisection (a pass over every pixel costs more than ~15 gathers per cell).

    Returns
    -------
    median, sigma : numpy.ndarray
        float32 (rows of cells, columns of cells): the last iteration's median and
        interquartile sigma.
    n_valid, n_kept : numpy.ndarray
        int64: finite good pixels, and those within the last 3 sigma clip.

    Raises
    ------
    InputError
        When no pixel is usable.
    """
    cells = _sorted_cells(image, good, my, mx)
    # Finite pixels: those below +inf, less those at -inf (NaN sorts last).
    n_valid = _count_below(cells, np.float32(np.inf), inclusive=False) - _count_below(
        cells, np.float32(-np.inf), inclusive=True
    )
    if not np.any(n_valid):
        raise InputError("no usable pixel to estimate the background: every pixel is masked")
    lo_idx = np.zeros(n_valid.shape, dtype=np.int64)
    hi_idx = n_valid
    last = cells.shape[2] - 1
    for _ in range(3):
        n = np.maximum(hi_idx - lo_idx, 1)
        q1, med, q3 = (
            np.take_along_axis(
                cells, np.minimum(lo_idx + (n * f).astype(np.int64), last)[..., None], 2
            )[..., 0]
            for f in (0.25, 0.5, 0.75)
        )
        sig = (q3 - q1) / 1.349
        lo_idx = _count_below(cells, med - 3.0 * sig, inclusive=False)
        hi_idx = _count_below(cells, med + 3.0 * sig, inclusive=True)
    return med, sig, n_valid, hi_idx - lo_idx


def _sorted_cells(image: np.ndarray, good: np.ndarray, my: int, mx: int) -> np.ndarray:
    """Good pixels of each ``my`` x ``mx`` cell, sorted, NaN for masked or missing ones.

    Returns a float32 array (rows of cells, columns of cells, my * mx), NaN last in each
    cell.
    """
    ny, nx = image.shape
    gy, gx = -(-ny // my), -(-nx // mx)
    data = np.full((gy * my, gx * mx), np.nan, dtype=np.float32)
    np.copyto(data[:ny, :nx], image, where=good)
    # The reshape copies (or is a view of ``data`` when a single column of cells needs
    # no transposition): sorted in place, no third image-sized array.
    cells = data.reshape(gy, my, gx, mx).transpose(0, 2, 1, 3).reshape(gy, gx, my * mx)
    cells.sort(axis=2)
    return cells


def _count_below(cells: np.ndarray, value: np.ndarray | np.floating, inclusive: bool) -> np.ndarray:
    """Per cell, how many of its sorted values are below (or at, if inclusive) ``value``.

    Equal to ``np.sum(cells < value[..., None], axis=2)`` (``<=`` if inclusive), NaN
    compared as false, by bisection: on rows sorted with NaN last the comparison is
    true on a prefix.
    """
    lo = np.zeros(cells.shape[:2], dtype=np.int64)
    hi = np.full(cells.shape[:2], cells.shape[2], dtype=np.int64)
    compare = np.less_equal if inclusive else np.less
    value = np.broadcast_to(value, lo.shape)
    while np.any(active := lo < hi):
        mid = (lo + hi) // 2
        at_mid = np.take_along_axis(cells, np.minimum(mid, cells.shape[2] - 1)[..., None], 2)
        below = compare(at_mid[..., 0], value) & active
        lo = np.where(below, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)
    return lo


def _natural_spline_weights(centres: np.ndarray, n: int) -> np.ndarray:
    """Weights (n, len(centres)) that interpolate values at cell centres to ``n`` pixels.

    A natural cubic spline (zero curvature at the ends, so it extrapolates nearly
    linearly to the image edges: a gradient is followed and cell noise is not blown
    up) is linear in the values, so it is a matrix; a single cell gives a constant.
    """
    if len(centres) == 1:
        return np.ones((n, 1))
    spline = CubicSpline(centres, np.eye(len(centres)), axis=0, bc_type="natural", extrapolate=True)
    return np.asarray(spline(np.arange(n, dtype=np.float64)))


def sampled_robust_std(values: np.ndarray, max_samples: int = 1_000_000) -> float:
    """Robust (1.4826 MAD) standard deviation of at most ``max_samples`` evenly spaced values.

    Parameters
    ----------
    values : numpy.ndarray
        Samples (any shape).
    max_samples : int
        Larger inputs are subsampled regularly (a median of 16 M values costs 0.3 s).

    Returns
    -------
    float
        NaN for an empty input.
    """
    flat = np.asarray(values).ravel()
    return robust_std(flat[:: max(1, flat.size // max_samples)].astype(np.float64))
