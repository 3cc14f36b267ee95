"""Small robust statistics shared by the engine, the reader and the display (no Qt)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Ratio of the standard deviation to the median absolute deviation of a Gaussian.
MAD_TO_SIGMA = 1.482602218505602

#: Ratio of a Gaussian's FWHM to its standard deviation, 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = float(2.0 * np.sqrt(2.0 * np.log(2.0)))

#: Variance of a value spread evenly over one unit, what rounding to whole numbers adds
#: (Sheppard's correction): an integer image's noise holds it, and so does the spread
#: that :func:`dithered` adds.
QUANTUM_VARIANCE = 1.0 / 12.0

#: Seed of :func:`dithered` (the same values give the same statistics).
DITHER_SEED = 2024


def integral(values: np.ndarray) -> bool:
    """Whether the finite values are whole numbers that vary (an integer image's noise).

    Values at least half of which sit on their median (a constant image, a sky clipped
    at 0, a noise well below one unit) are not: their spread is nil, which the callers
    refuse or keep as it is (an all-zero background stays exactly 0), where a dither
    would make one up.

    Parameters
    ----------
    values : numpy.ndarray
        Any shape; NaN and infinities are left out.

    Returns
    -------
    bool
    """
    finite = values[np.isfinite(values)]
    if not finite.size or not np.all(finite == np.round(finite)):
        return False
    return bool(np.median(np.abs(finite - np.median(finite))) > 0)


def dithered(values: np.ndarray, seed: int = DITHER_SEED) -> np.ndarray:
    """Whole-number values spread evenly over the unit around each: ranks interpolated.

    The median and the quartiles or MAD of integer data are integers or half-integers:
    at a noise of 2 units the MAD-based sigma was 0.73 of the data's standard deviation,
    and 0 at 0.7. Spread by a seeded uniform draw in [-0.5, 0.5), their order statistics
    are those of the continuous distribution the integers sample, whose variance is the
    integers' plus :data:`QUANTUM_VARIANCE` (take it off a sigma found on them).

    Parameters
    ----------
    values : numpy.ndarray
        Whole numbers (NaN stays NaN).
    seed : int
        Seed of the draw.

    Returns
    -------
    numpy.ndarray
        float64, a new array.
    """
    rng = np.random.default_rng(seed)
    return values.astype(np.float64) + rng.uniform(-0.5, 0.5, values.shape)


def undithered_sigma(sigma: np.ndarray) -> np.ndarray:
    """A sigma found on :func:`dithered` values, less the spread the dither added."""
    return np.sqrt(np.maximum(np.square(sigma) - QUANTUM_VARIANCE, 0.0))


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
    med = median(values) if centre is None else centre
    return float(MAD_TO_SIGMA * median(np.abs(values - med)))


def clip_range(values: np.ndarray, nsigma: float = 3.0) -> tuple[float, float]:
    """The range within ``nsigma`` robust standard deviations (:func:`robust_std`) of the
    values' median: what a clipped mean keeps (a linear measurement, a PSF flux, reads a
    level's mean, and the clip keeps it from the rare values far out).

    Parameters
    ----------
    values : numpy.ndarray
        Finite values (any shape).
    nsigma : float
        Half-width of the range, in robust standard deviations.

    Returns
    -------
    (float, float)
        Its ends (NaN, NaN for an empty array).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return float("nan"), float("nan")
    centre = median(values)
    half = nsigma * robust_std(values, centre)
    return centre - half, centre + half


#: Values sampled to bracket a median (:func:`median`): the sample's middle ranks, 5
#: sigma of a sample rank either side, hold the median of a randomly ordered array but
#: about once in 10^6 (when they do not, :func:`median` takes the whole array).
MEDIAN_SAMPLE = 65_536

#: Fewest values whose median :func:`median` brackets; below, ``numpy.median`` is as fast
#: (at 376,800 values, the 3 robust_std calls of the GOTO diagnostics, 3.3 -> 1.6 ms).
MEDIAN_BRACKETED = 4 * MEDIAN_SAMPLE


def median(values: np.ndarray) -> float:
    """``numpy.median`` of a 1-D array (the same value), at a third of its cost on millions.

    A strided sample brackets the median (two of its ranks, selected, not sorted); the
    values below the bracket are counted, and only those inside it are partitioned
    (``numpy.median`` partitions a copy of them all: 0.2 s of a 4096^2 image's
    variance). An array with NaN is numpy's (NaN).

    Parameters
    ----------
    values : numpy.ndarray
        1-D.

    Returns
    -------
    float
    """
    n = values.size
    if n < MEDIAN_BRACKETED or np.isnan(values).any():
        return float(np.median(values))
    sample = values[:: n // MEDIAN_SAMPLE]
    m, reach = sample.size, int(2.5 * np.sqrt(sample.size)) + 1
    ends = [max(m // 2 - reach, 0), min(m // 2 + reach, m - 1)]
    lo, hi = np.partition(sample, ends)[ends]
    below = int(np.count_nonzero(values < lo))
    if below > (n - 1) // 2 or n // 2 >= np.count_nonzero(values <= hi):
        return float(np.median(values))
    if lo == hi:  # a plane of one value: nothing to partition
        return float(lo)
    ranks = ((n - 1) // 2 - below, n // 2 - below)
    inside = values[(values >= lo) & (values <= hi)]
    return float(np.mean(np.partition(inside, ranks)[list(ranks)]))


#: Row length from which :func:`nanmedian_last` selects each row's middle values instead
#: of sorting the rows: a partition costs ~12 ns a value at any length, a sort more as
#: rows grow (float32 rows of 4096: 33 against 28 ms for 2 million values; float64 rows
#: of 11,236, the PSF stamps' neighbour search: 33 against 14 ms).
PARTITION_LENGTH = 4096


def nanmedian_last(values: np.ndarray) -> np.ndarray:
    """Median over the last axis ignoring NaN (NaN where all are NaN, or the axis is
    empty), vectorised.

    ``numpy.nanmedian`` along an axis loops over the other axes in Python; sorting every
    row at once (NaN sorts last) and picking the middle of each row's finite values is
    several times faster on the hundreds of boxes of a background grid. Rows of at
    least :data:`PARTITION_LENGTH` values are partitioned at their upper middle rank
    instead (one ``numpy.partition`` per count of finite values; the same values as the
    sort).

    Parameters
    ----------
    values : numpy.ndarray
        Any shape; the median is taken over the last axis.

    Returns
    -------
    numpy.ndarray
        Shape ``values.shape[:-1]``.
    """
    n = np.sum(np.isfinite(values), axis=-1)
    if values.shape[-1] == 0:
        return np.full(values.shape[:-1], np.nan, dtype=np.result_type(values.dtype, np.float32))
    if values.shape[-1] < PARTITION_LENGTH:
        ordered = np.sort(values, axis=-1)
        lo = np.take_along_axis(ordered, np.maximum((n - 1) // 2, 0)[..., None], -1)[..., 0]
        hi = np.take_along_axis(ordered, np.maximum(n // 2, 0)[..., None], -1)[..., 0]
    else:
        rows = values.reshape(-1, values.shape[-1])
        lo = np.zeros(rows.shape[0], dtype=values.dtype)
        hi = np.zeros(rows.shape[0], dtype=values.dtype)
        for count in np.unique(n[n > 0]):
            pick = (n == count).ravel()
            some = rows[pick]  # a copy, partitioned in place
            # At the upper middle rank alone: the lower middle value of an even count is
            # the largest value left of it (the same value; partitioning at both ranks at
            # once was 8x slower: 8 rows of 5329, 0.48 against 0.06 ms).
            some.partition(count // 2, axis=-1)
            hi[pick] = some[:, count // 2]
            lo[pick] = some[:, : count // 2].max(axis=-1) if count % 2 == 0 else hi[pick]
        lo, hi = lo.reshape(n.shape), hi.reshape(n.shape)
    return np.where(n > 0, 0.5 * (lo + hi), np.nan)


#: Values of a block of rows that :func:`masked_sample` indexes at once (a few MB of
#: indices, reused from the heap, where ``values[mask]`` of a 4096^2 float32 image is a
#: fresh 64 MB array: its page faults cost more than the copy).
SAMPLE_BLOCK = 1 << 20


def masked_sample(values: np.ndarray, mask: np.ndarray, max_samples: int) -> np.ndarray:
    """``values[mask][::step]`` with ``step = max(1, count // max_samples)``, ``count`` the
    number of pixels in ``mask``: every ``step``-th masked value in C order, the first
    included, without the copy of all masked values.

    Parameters
    ----------
    values : numpy.ndarray
        Any shape.
    mask : numpy.ndarray
        Boolean, of ``values``' shape.
    max_samples : int
        At least 1.

    Returns
    -------
    numpy.ndarray
        1-D, in ``values``' dtype: at most ``2 max_samples - 1`` values (all the masked
        ones when there are fewer than ``2 max_samples``).
    """
    step = max(1, int(np.count_nonzero(mask)) // max_samples)
    if step == 1 or values.ndim < 2:
        return values[mask][::step]
    rows = max(1, SAMPLE_BLOCK // max(1, values[0].size))
    parts, taken = [], 0
    for r0 in range(0, values.shape[0], rows):
        at = np.flatnonzero(mask[r0 : r0 + rows])
        # The block's first pick is the masked value whose rank overall is a multiple of step.
        parts.append(np.ravel(values[r0 : r0 + rows])[at[(-taken) % step :: step]])
        taken += at.size
    return np.concatenate(parts)


def window_median(ordered: np.ndarray, start: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Per row, the median of ``ordered[i, start[i] : start[i] + count[i]]`` (NaN when empty).

    Parameters
    ----------
    ordered : numpy.ndarray
        2-D, each row ascending over its window.
    start, count : numpy.ndarray
        Integer, per row: the window's first index and length.

    Returns
    -------
    numpy.ndarray
        The mean of the window's two middle values (its middle value when the count is
        odd), in ``ordered``'s dtype: ``numpy.nanmedian`` of the window's values.
    """
    rows = np.arange(ordered.shape[0])
    lo = ordered[rows, start + np.maximum((count - 1) // 2, 0)]
    hi = ordered[rows, start + np.maximum(count // 2, 0)]
    return np.where(count > 0, 0.5 * (lo + hi), np.nan)


def first_true(
    predicate: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Per row, the least ``i`` in ``[lo, hi)`` where ``predicate(i)`` holds (``hi`` if none).

    ``predicate`` takes one index per row and must be False then True along each range
    (monotone); it is evaluated by bisection, on indices no larger than ``hi.max() - 1``.
    """
    lo, hi = lo.copy(), hi.copy()
    top = max(int(hi.max(initial=0)) - 1, 0)
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) // 2
        holds = predicate(np.minimum(mid, top))
        lo = np.where(active & ~holds, mid + 1, lo)
        hi = np.where(active & holds, mid, hi)


def _kth_of_two_runs(
    left: Callable[[np.ndarray], np.ndarray],
    right: Callable[[np.ndarray], np.ndarray],
    n_left: np.ndarray,
    n_right: np.ndarray,
    k: np.ndarray,
) -> np.ndarray:
    """Per row, the ``k``-th smallest (from 0) of two ascending runs taken together.

    ``left(j)`` and ``right(j)`` give each run's ``j``-th value per row; ``k`` must be
    below ``n_left + n_right``. The least count ``i`` taken from the left run such that
    ``right[k - i] <= left[i]`` is found by bisection; the answer is then the larger of
    ``left[i - 1]`` and ``right[k - i]``. Both functions must accept any index (their
    values outside the runs are not used).
    """

    def enough(i: np.ndarray) -> np.ndarray:
        j = k - i
        return (j < 0) | (i >= n_left) | (right(np.maximum(j, 0)) <= left(i))

    i = first_true(enough, np.maximum(k + 1 - n_right, 0), np.minimum(k + 1, n_left))
    from_left = np.where(i > 0, left(np.maximum(i - 1, 0)), -np.inf)
    from_right = np.where(k - i >= 0, right(np.maximum(k - i, 0)), -np.inf)
    return np.maximum(from_left, from_right)


def _row_values(ordered: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``value(i)``: per row, ``ordered[row, i]`` (``i`` clipped to the row), by one flat
    ``take`` (twice as fast as the 2-D fancy index on thousands of rows)."""
    flat = np.ravel(ordered)
    first = np.arange(ordered.shape[0]) * ordered.shape[1]
    last = max(ordered.shape[1] - 1, 0)
    return lambda i: flat.take(first + np.minimum(np.maximum(i, 0), last))


def _deviation(ordered: np.ndarray, level: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``deviation(i)``: per row, ``abs(ordered[row, i] - level[row])`` (``i`` clipped)."""
    value = _row_values(ordered)
    return lambda i: np.abs(value(i) - level)


def _split(
    ordered: np.ndarray, start: np.ndarray, end: np.ndarray, level: np.ndarray
) -> np.ndarray:
    """Per row, the first index of ``[start, end)`` whose value is at least ``level``."""
    value = _row_values(ordered)
    return first_true(lambda i: value(i) >= level, start, end)


def window_mad(
    ordered: np.ndarray, start: np.ndarray, count: np.ndarray, level: np.ndarray
) -> np.ndarray:
    """Per row, the median absolute deviation of a window of ``ordered`` from ``level``.

    The window's absolute deviations are two ascending runs, those below ``level`` read
    backwards and those above it, whose middle values are found by bisection: no sort.

    Parameters
    ----------
    ordered : numpy.ndarray
        2-D, each row ascending over its window.
    start, count : numpy.ndarray
        Integer, per row: the window's first index and length.
    level : numpy.ndarray
        Per row, the centre (usually the window's median).

    Returns
    -------
    numpy.ndarray
        ``numpy.nanmedian(abs(window - level))`` per row, in the dtype of
        ``ordered - level`` (NaN for an empty window).
    """
    end = start + count
    deviation = _deviation(ordered, level)
    split = _split(ordered, start, end, level)
    halves = [
        _kth_of_two_runs(
            lambda j: deviation(split - 1 - j),  # below the level, nearest first
            lambda j: deviation(split + j),
            split - start,
            end - split,
            np.maximum(k, 0),
        )
        for k in ((count - 1) // 2, count // 2)
    ]
    return np.where(count > 0, 0.5 * (halves[0] + halves[1]), np.nan)


def window_within(
    ordered: np.ndarray,
    start: np.ndarray,
    count: np.ndarray,
    level: np.ndarray,
    near: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the values of a window of ``ordered`` near enough to ``level``.

    ``near(deviation)`` says which absolute deviations ``abs(value - level)`` are near; it
    must hold for every deviation below one that it holds for (e.g. ``deviation < reach``).
    As ``value - level`` rounds monotonically, the near values are then a contiguous run
    of the window, whose ends are found by bisection.

    Parameters
    ----------
    ordered : numpy.ndarray
        2-D, each row ascending over its window.
    start, count : numpy.ndarray
        Integer, per row: the window's first index and length.
    level : numpy.ndarray
        Per row, the centre.
    near : callable
        Per row, whether each of an array of deviations (one per row) is near.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Per row, the first index and the length of the near run.
    """
    end = start + count
    deviation = _deviation(ordered, level)
    split = _split(ordered, start, end, level)
    first = first_true(lambda i: near(deviation(i)), start, split)
    stop = first_true(lambda i: ~near(deviation(i)), split, end)
    return first, stop - first
