"""Smooth sky background and sky noise of an image, from sigma-clipped statistics per mesh cell."""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline

from diffviewer.errors import InputError
from diffviewer.stats import dithered, integral, masked_sample, robust_std, undithered_sigma

#: The clipped statistics are read from a histogram of each cell: bins of ``BIN_WIDTH``
#: times a rough sigma of the cell, over ``WINDOW`` rough sigmas either side of its rough
#: median (both from every ``SUBSAMPLE``-th row and column). Within a bin the pixels are
#: taken as evenly spread: a quantile then differs from the sorted pixel by about the bin
#: width over twice the square root of the bin's count (cells of 128^2 px: 4e-4 sigma
#: rms, measured on GOTO and synthetic fields), 1/25 of the ~0.01 sigma noise of their
#: median. Smaller cells get no more bins than half their pixels (wider bins), so
#: the histograms take no more memory than a sort of the cells would.
BIN_WIDTH = 0.005
WINDOW = 6.0
SUBSAMPLE = 4

#: Good pixels on which an image is tested for whole-number values (an integer image's).
INTEGRAL_SAMPLES = 10_000

#: Rows of each band of the background's product (:meth:`SkyBackground.image`).
PRODUCT_ROWS = 64

#: Fewest subsampled pixels for a cell's rough statistics; fewer, and all its pixels are used.
MIN_ROUGH_PIXELS = 64


@dataclasses.dataclass(frozen=True)
class SkyBackground:
    """A smooth sky background (the spline through the mesh values) and the sky noise.

    The background is held as a separable product, its values on any box computed when
    asked, so one estimate serves every step that needs the image's sky (no image-sized
    plane is kept between them).

    Attributes
    ----------
    row_weights : numpy.ndarray
        float32 (rows, rows of cells): each pixel row's spline weights of the cell rows.
    columns : numpy.ndarray
        float32 (rows of cells, columns): the mesh values interpolated along x.
    sigma : float
        Sky noise per pixel (image units): the median over the cells of the clipped sigma.
    """

    row_weights: np.ndarray
    columns: np.ndarray
    sigma: float

    def __post_init__(self) -> None:
        for name in ("row_weights", "columns"):
            getattr(self, name).flags.writeable = False

    def image(self, box: tuple[slice, slice] = (slice(None), slice(None))) -> np.ndarray:
        """The float32 background on ``box`` (rows, a slice of step 1; columns) of the image
        (all by default).

        A float32 product (the 15 x 15 spline weights sum to 1, so the rounding is that of
        a float32 sum of ~16 terms): no float64 image-sized temporary. Made in bands of
        :data:`PRODUCT_ROWS` rows fixed on the image, so a pixel's value does not depend
        on the box it is asked in (BLAS rounds a product's rows differently by how many it
        is given at once), and a run by blocks of rows is the same to the bit.
        """
        rows = range(*box[0].indices(self.row_weights.shape[0]))
        first = rows.start - rows.start % PRODUCT_ROWS
        columns = self.columns[:, box[1]]
        out = np.empty((len(rows), columns.shape[1]), dtype=np.float32)
        for start in range(first, rows.stop, PRODUCT_ROWS):
            band = self.row_weights[start : start + PRODUCT_ROWS] @ columns
            lo, hi = max(start, rows.start), min(start + PRODUCT_ROWS, rows.stop)
            out[lo - rows.start : hi - rows.start] = band[lo - start : hi - start]
        return out


def estimate_background(image: np.ndarray, good: np.ndarray, mesh: int) -> tuple[np.ndarray, float]:
    """The background image and sky noise of :func:`fit_background`.

    Returns
    -------
    background : numpy.ndarray
        float32 background image.
    sigma : float
        Sky noise per pixel (image units).
    """
    model = fit_background(image, good, mesh)
    return model.image(), model.sigma


def fit_background(image: np.ndarray, good: np.ndarray, mesh: int) -> SkyBackground:
    """Smooth sky background and sky noise from sigma-clipped statistics per mesh.

    The image is cut into ``mesh`` x ``mesh`` cells; in each, the median of the good
    finite pixels is clipped at 3 sigma (sigma from the interquartile range) three times
    (:func:`_clipped_cell_statistics`). Cells more than sigma from the median of their
    3 x 3 neighbours take that median, and the grid is interpolated with a bicubic spline
    through the cell centres (SExtractor/photutils Background2D style) by natural cubic
    splines along x, then y.

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
    SkyBackground

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
    # Cells pulled off by a bright object (more than sigma from the median of their
    # 3 x 3 neighbours) take that median; the others are kept, as a 3 x 3 median filter
    # biases a sky gradient at the edges of the grid.
    if min(gy, gx) >= 3:
        smooth = ndimage.median_filter(grid, size=3, mode="nearest")
        grid = np.where(np.abs(grid - smooth) > sigma, smooth, grid)
    yc = np.arange(gy) * my + (np.minimum(my, ny - np.arange(gy) * my) - 1) / 2.0
    xc = np.arange(gx) * mx + (np.minimum(mx, nx - np.arange(gx) * mx) - 1) / 2.0
    wy, wx = _natural_spline_weights(yc, ny), _natural_spline_weights(xc, nx)
    return SkyBackground(wy.astype(np.float32), (grid @ wx.T).astype(np.float32), sigma)


def _clipped_cell_statistics(
    image: np.ndarray, good: np.ndarray, my: int, mx: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Clipped median and sigma of the good finite pixels of each ``my`` x ``mx`` cell.

    Three times, the quartiles of the kept pixels are read, and the kept pixels reset
    to those within 3 sigma (sigma = interquartile range / 1.349) of the median; the
    first round keeps every pixel. Quartiles and counts are read from each cell's
    histogram (:func:`_cell_histograms`; linear in the number of pixels, where a sort
    is not), the pixels of a bin taken as spread evenly over it. Pixels beyond the
    histogram's window (:data:`WINDOW` rough sigmas from the rough median) count in the
    first round's ranks and are clipped from the second. Whole-number data (tested on
    :data:`INTEGRAL_SAMPLES` good pixels) are :func:`~diffviewer.stats.dithered` as
    their cells are histogrammed, and their sigmas are then less the dither's.

    Returns
    -------
    median, sigma : numpy.ndarray
        float32 (rows of cells, columns of cells): the last iteration's median and
        interquartile sigma; NaN for a cell without a usable pixel.
    n_valid, n_kept : numpy.ndarray
        int64: good finite pixels, and those within the last 3 sigma clip.

    Raises
    ------
    InputError
        When no pixel is usable.
    """
    whole = integral(masked_sample(image, good, INTEGRAL_SAMPLES))
    hist, start, width = _cell_histograms(image, good, my, mx, whole)
    n_valid = hist.sum(axis=2)
    if not np.any(n_valid):
        raise InputError("no usable pixel to estimate the background: every pixel is masked")
    nbins = hist.shape[2] - 2
    upper = np.cumsum(hist, axis=2, dtype=np.int32)  # pixels up to the end of each bin
    empty = n_valid == 0
    # Each cell's running counts lifted above the previous cell's: one increasing array.
    lift = (np.arange(n_valid.size) * (int(n_valid.max()) + 1)).reshape(n_valid.shape)
    lifted = (upper + lift[..., None]).ravel()
    first = np.arange(n_valid.size).reshape(n_valid.shape) * hist.shape[2]

    def value_at(rank: np.ndarray) -> np.ndarray:
        """The value of each cell's pixel of index ``rank`` in increasing order."""
        # Searched as integers: float ranks would convert the whole of ``lifted`` each call.
        k = np.searchsorted(lifted, (rank + lift).astype(lifted.dtype), side="right") - first
        k = np.clip(k, 1, nbins)[..., None]
        count = np.take_along_axis(hist, k, 2)[..., 0]
        below = np.take_along_axis(upper, k, 2)[..., 0] - count
        within = np.clip((rank - below + 0.5) / np.maximum(count, 1), 0.0, 1.0)
        k = k[..., 0]
        return start + width * (k - 1 + within)

    def count_below(value: np.ndarray) -> np.ndarray:
        """Each cell's pixels below ``value`` (those below / above the window: all / none)."""
        position = np.clip((value - start) / width, 0.0, nbins)
        k = np.minimum(position.astype(np.int64), nbins - 1) + 1
        count = np.take_along_axis(hist, k[..., None], 2)[..., 0]
        below = np.take_along_axis(upper, k[..., None], 2)[..., 0] - count
        return below + count * (position - (k - 1))

    lo = np.zeros(n_valid.shape, dtype=np.int64)
    hi = n_valid
    for _ in range(3):
        # The pixels at 1/4, 1/2 and 3/4 of the kept range, counted from its lowest.
        n = np.maximum(hi - lo, 1)
        q1, med, q3 = (value_at(lo + np.floor(n * f)) for f in (0.25, 0.5, 0.75))
        sig = (q3 - q1) / 1.349
        lo = np.rint(count_below(med - 3.0 * sig)).astype(np.int64)
        hi = np.rint(count_below(med + 3.0 * sig)).astype(np.int64)
    if whole:
        sig = undithered_sigma(sig)
    med[empty] = np.nan
    sig[empty] = np.nan
    return (
        med.astype(np.float32),
        sig.astype(np.float32),
        n_valid,
        hi - lo,
    )


def _cell_histograms(
    image: np.ndarray, good: np.ndarray, my: int, mx: int, whole: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Histogram of the good finite pixels of each ``my`` x ``mx`` cell (``whole``: of
    their :func:`~diffviewer.stats.dithered` values, one seed per row of cells).

    Each cell's bins are :data:`BIN_WIDTH` of its rough sigma wide, centred on its rough
    median, :data:`WINDOW` rough sigmas either side (:func:`_rough_statistics`); one row
    of cells at a time (no image-sized temporary).

    Returns
    -------
    hist : numpy.ndarray
        int32 (rows of cells, columns of cells, bins + 2): the pixels below the window,
        in each bin, and above it.
    start, width : numpy.ndarray
        float64 (rows of cells, columns of cells): the first bin's lower edge and the
        bin width (image units).
    """
    ny, nx = image.shape
    gy, gx = -(-ny // my), -(-nx // mx)
    half = min(round(WINDOW / BIN_WIDTH), max(my * mx // 4, 8))
    nbins = 2 * half + 1
    hist = np.zeros((gy, gx, nbins + 2), dtype=np.int32)
    start = np.zeros((gy, gx))
    width = np.ones((gy, gx))
    band = np.empty((my, gx * mx), dtype=np.float32)
    offsets = (np.arange(gx) * (nbins + 2))[None, :, None]
    for iy in range(gy):
        rows = slice(iy * my, min((iy + 1) * my, ny))
        # Unusable and missing pixels are +inf: in the top bin, taken off it below.
        band.fill(np.inf)
        values = dithered(image[rows], seed=iy) if whole else image[rows]
        np.copyto(band[: rows.stop - rows.start, :nx], values, where=good[rows], casting="unsafe")
        band[~np.isfinite(band)] = np.inf
        cells = band.reshape(my, gx, mx)  # a view: row, cell, column
        centre, sigma = _rough_statistics(cells.transpose(1, 0, 2))
        width[iy] = (WINDOW / half) * np.where(
            sigma > 0.0, sigma, 1e-6 * np.maximum(np.abs(centre), 1.0)
        )
        start[iy] = centre - (half + 0.5) * width[iy]
        # Bin index + 1, clipped to the outer bins (float32, then truncated: >= 0).
        index = np.subtract(cells, start[iy, None, :, None].astype(np.float32))
        index *= (1.0 / width[iy, None, :, None]).astype(np.float32)
        index += np.float32(1.0)
        np.clip(index, 0.0, nbins + 1, out=index)
        flat = index.astype(np.int64)
        flat += offsets
        counts = np.bincount(flat.ravel(), minlength=gx * (nbins + 2)).reshape(gx, -1)
        counts[:, -1] -= np.count_nonzero(np.isinf(cells), axis=(0, 2))
        hist[iy] = counts
    return hist, start, width


def _rough_statistics(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and interquartile sigma of each cell's every :data:`SUBSAMPLE`-th row and
    column (all its pixels when fewer than :data:`MIN_ROUGH_PIXELS` of those are usable).

    ``cells`` is (cells, rows, columns) with unusable pixels +inf; a cell without a
    usable pixel gives (0, 1).
    """
    n = len(cells)
    sample = np.sort(cells[:, ::SUBSAMPLE, ::SUBSAMPLE].reshape(n, -1), axis=1)
    count = np.sum(np.isfinite(sample), axis=1)
    centre, sigma = _sorted_quartile_statistics(sample, count)
    few = count < MIN_ROUGH_PIXELS
    if np.any(few):
        whole = np.sort(cells[few].reshape(int(few.sum()), -1), axis=1)
        centre[few], sigma[few] = _sorted_quartile_statistics(
            whole, np.sum(np.isfinite(whole), axis=1)
        )
    return centre, sigma


def _sorted_quartile_statistics(
    values: np.ndarray, count: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Median and interquartile sigma of rows sorted with their ``count`` usable values
    first ((0, 1) for a row without any)."""
    last = values.shape[1] - 1
    q1, med, q3 = (
        np.take_along_axis(values, np.minimum((count * f).astype(np.int64), last)[:, None], 1)[
            :, 0
        ].astype(np.float64)
        for f in (0.25, 0.5, 0.75)
    )
    empty = count == 0
    spread = np.full(q1.shape, 1.349)
    np.subtract(q3, q1, out=spread, where=~empty)
    return np.where(empty, 0.0, med), spread / 1.349


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


def sampled_robust_std(values: np.ndarray, mask: np.ndarray, max_samples: int = 1_000_000) -> float:
    """Robust (1.4826 MAD) standard deviation of ``values`` over ``mask``, at most about
    ``max_samples`` evenly spaced ones (:func:`~diffviewer.stats.masked_sample`).

    Parameters
    ----------
    values : numpy.ndarray
        Samples (any shape).
    mask : numpy.ndarray
        Boolean, of ``values``' shape: the values to use.
    max_samples : int
        More values are subsampled regularly (a median of 16 M values costs 0.3 s).

    Returns
    -------
    float
        NaN when the mask is empty.
    """
    return robust_std(masked_sample(values, mask, max_samples).astype(np.float64))
