"""The sky level and noise of an image without a variance plane: clipped statistics in blocks.

:func:`robust_sky` samples the image in blocks and clips each block's values three times
at 3 sigma about their median (sigma from the median absolute deviation);
:func:`clipped_rows` does that clipping for many rows at once, sorting each row once.
"""

from __future__ import annotations

import warnings

import numpy as np

from diffviewer.stats import (
    MAD_TO_SIGMA,
    dithered,
    integral,
    undithered_sigma,
    window_mad,
    window_median,
    window_within,
)

#: Side of the blocks in which the sky level and noise are measured (px).
SKY_BLOCK = 64
#: Most blocks used for the sky statistics (a regular subset keeps 8k images fast).
SKY_BLOCKS_MAX = 400
#: Most pixels used for the sky statistics in all (a regular subsample within each block):
#: a million values pin the noise far below a percent and keep large images fast.
SKY_SAMPLES_MAX = 1_000_000


def robust_sky(image: np.ndarray, good: np.ndarray) -> tuple[float, float]:
    """Sky level and sky noise from sigma-clipped, MAD-based statistics in blocks.

    The image is cut into blocks of about :data:`SKY_BLOCK` px; in each, values
    beyond 3 sigma are clipped (three rounds) and the median and the MAD-based
    sigma are taken; the sky is the median over the blocks. Whole-number data are
    :func:`~diffviewer.stats.dithered` first (their sigma then less the dither's).
    Working in blocks keeps sky gradients and large galaxies from inflating the noise
    (on the two ``properimage`` frames the noise of one frame from a whole-image MAD is 87
    counts, from blocks 76, and from the frame-to-frame difference 73).

    Parameters
    ----------
    image : numpy.ndarray
        The image (image units).
    good : numpy.ndarray
        Boolean map of pixels to use.

    Returns
    -------
    (float, float)
        Sky level and sky noise (image units per pixel); NaN without good pixels.
    """
    blocks = _block_samples(image, good)
    whole = integral(blocks)
    level, sigma, kept = clipped_rows(dithered(blocks) if whole else blocks, rounds=3, clip=3.0)
    if whole:
        sigma = undithered_sigma(sigma)
    filled = kept / blocks.shape[1] >= 0.25
    if not filled.any():
        filled = np.isfinite(level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all blocks empty
        return (float(np.nanmedian(level[filled])), float(np.nanmedian(sigma[filled])))


def _block_samples(image: np.ndarray, good: np.ndarray) -> np.ndarray:
    """The sky statistics' sample: one row per block, NaN where ``good`` is False.

    The image is cut into ``by x bx`` blocks of ``h x w`` px (about :data:`SKY_BLOCK`
    on a side; the last rows and columns that do not fill a block are left out); at
    most :data:`SKY_BLOCKS_MAX` blocks are used (every k-th), and within each block
    every s-th pixel in row-major order, so :data:`SKY_SAMPLES_MAX` values are used in
    all. Only the chosen pixels are gathered.
    """
    ny, nx = image.shape
    by, bx = max(1, ny // SKY_BLOCK), max(1, nx // SKY_BLOCK)
    h, w = ny // by, nx // bx
    rows = np.arange(by * bx)[:: max(1, (by * bx) // SKY_BLOCKS_MAX)]
    step = max(1, (rows.size * h * w) // SKY_SAMPLES_MAX)
    within = np.arange(0, h * w, step)
    origin = (rows // bx) * (h * nx) + (rows % bx) * w  # flat index of each block's corner
    flat = origin[:, None] + ((within // w) * nx + within % w)[None, :]
    return np.where(np.ravel(good)[flat], np.ravel(image)[flat].astype(np.float64), np.nan)


def clipped_rows(
    values: np.ndarray, rounds: int, clip: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: median and MAD-based sigma after ``rounds`` of clipping at ``clip`` sigma.

    Each round takes the median and the sigma (:data:`MAD_TO_SIGMA` times the median
    absolute deviation) of the values kept so far, then drops those farther than
    ``clip`` sigma from the median; NaN values are never used. The rows are sorted
    once: the values a round keeps are a contiguous run of the sorted row (they lie
    within a distance of the median), so the median is read off that run; their
    absolute deviations are two ascending runs (below the median, read backwards, and
    above it), whose median is found by bisection, as are the run's new ends. The
    figures are those of re-sorting the kept values every round, bit for bit.

    Parameters
    ----------
    values : numpy.ndarray
        2-D; one sample per row (not modified).
    rounds : int
        Clipping rounds (at least 1).
    clip : float
        Clipping distance in sigmas.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        Per row: the median and the sigma of the last round (before its clipping; NaN
        for a row without values), and how many values that round's clipping kept.
    """
    ordered = np.sort(values, axis=-1)  # NaN last
    start = np.zeros(ordered.shape[0], dtype=np.intp)
    count = np.sum(np.isfinite(ordered), axis=-1)
    level = sigma = np.full(ordered.shape[0], np.nan)
    for _ in range(rounds):
        level, sigma, start, count = _clip_round(ordered, start, count, clip)
    return level, sigma, count


def _clip_round(
    ordered: np.ndarray, start: np.ndarray, count: np.ndarray, clip: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One round of :func:`clipped_rows` on the run ``ordered[i, start : start + count]``.

    Returns the run's median and sigma, and the start and length of the run it keeps.
    """
    level = window_median(ordered, start, count)
    sigma = MAD_TO_SIGMA * window_mad(ordered, start, count, level)
    reach = clip * sigma
    with np.errstate(invalid="ignore"):
        first, kept = window_within(ordered, start, count, level, lambda d: ~(d > reach))
    return level, sigma, first, kept
