"""The shared robust statistics."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffviewer import stats
from diffviewer.stats import (
    FWHM_PER_SIGMA,
    MAD_TO_SIGMA,
    MEDIAN_BRACKETED,
    PARTITION_LENGTH,
    SAMPLE_BLOCK,
    clip_range,
    masked_sample,
    median,
    nanmedian_last,
    robust_std,
    window_mad,
    window_median,
    window_within,
)


@pytest.mark.parametrize("length", [101, PARTITION_LENGTH + 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nanmedian_last_equals_numpy_with_nans_and_empty_rows(length: int, dtype: type) -> None:
    # Rows sorted (short) or partitioned (long): numpy's nanmedian to the bit.
    rng = np.random.default_rng(1)
    values = rng.normal(size=(4, 6, length)).astype(dtype)
    values[3] = np.round(values[3])  # ties
    values[0, :, :50] = np.nan
    values[1, 2] = np.nan
    values[1, 3, 1:] = np.nan  # one value
    values[2, 3, ::2] = np.nan  # an even count of finite values
    values[2, 4, 1::2] = np.nan  # an odd one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy warns on the all-NaN row
        expected = np.nanmedian(values, axis=-1)
    got = nanmedian_last(values)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nanmedian_last_of_no_values_is_nan(dtype: type) -> None:
    # A star's local-level annulus holds no pixel when the measured FWHM is 0.17 px (two
    # difference images as a pair): that median was an IndexError that ended the run.
    got = nanmedian_last(np.zeros((5, 0), dtype=dtype))
    assert got.shape == (5,) and got.dtype == dtype and np.isnan(got).all()


def test_robust_std_of_a_gaussian_with_outliers() -> None:
    values = np.random.default_rng(2).normal(0.0, 3.0, 200_000)
    values[:2000] = 1e6  # 1 % of wild outliers barely move the MAD
    # The MAD-based sigma of 2e5 samples is good to ~0.5 %; the outliers bias it by ~1 %.
    assert abs(robust_std(values) / 3.0 - 1.0) < 0.03
    assert np.isnan(robust_std(np.array([])))


def test_fwhm_per_sigma() -> None:
    x = np.linspace(-10, 10, 200_001)
    half = x[np.exp(-0.5 * x**2) >= 0.5]
    assert abs((half[-1] - half[0]) - FWHM_PER_SIGMA) < 1e-3


def _off_the_sample() -> np.ndarray:
    """Values whose strided sample (every 4th) lies far above the median: numpy's path."""
    values = np.random.default_rng(7).normal(size=MEDIAN_BRACKETED + 4)
    values[:: values.size // 65_536] += 100.0
    return values


def _with_nan() -> np.ndarray:
    values = np.random.default_rng(5).normal(size=1_500_000)
    values[123_457] = np.nan  # off the strided sample: numpy's NaN all the same
    return values


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(1).normal(size=2_000_001).astype(np.float32),
        np.random.default_rng(2).exponential(size=2_000_000),
        np.random.default_rng(3).integers(0, 5, 1_500_000).astype(np.float32),
        np.full(1_200_001, 2.5, dtype=np.float32),
        np.sort(np.random.default_rng(4).normal(size=2_000_000)),
        np.r_[np.ones(1_100_000), np.arange(1_000_000.0)],
        _with_nan(),
        np.random.default_rng(8).normal(size=MEDIAN_BRACKETED).astype(np.float32),
        np.random.default_rng(9).normal(size=MEDIAN_BRACKETED + 1),
        _off_the_sample(),
    ],
    ids=[
        "normal",
        "even-length",
        "ties",
        "constant",
        "sorted",
        "clustered",
        "nan",
        "fewest-even",
        "fewest-odd",
        "off-the-sample",
    ],
)
def test_median_is_numpys(values: np.ndarray) -> None:
    np.testing.assert_array_equal(median(values), np.median(values))


def test_robust_std_is_numpys_mad() -> None:
    values = np.random.default_rng(6).standard_t(3, size=3_000_000)
    mad = np.median(np.abs(values - np.median(values)))
    assert robust_std(values) == float(MAD_TO_SIGMA * mad)


def _rows(dtype: type) -> np.ndarray:
    """Rows with NaN, ties, no value, one value, two values, one constant value."""
    rng = np.random.default_rng(10)
    rows = rng.normal(100.0, 5.0, (60, 257))
    rows[:, :20] += rng.uniform(50, 5e4, (60, 20))  # sources
    rows[rng.random(rows.shape) < 0.4] = np.nan  # even and odd counts
    rows[10:20] = np.round(rows[10:20] / 5.0)  # many ties
    rows[20] = np.nan
    rows[21, 1:] = np.nan
    rows[22, 2:] = np.nan
    rows[23] = 42.0
    return np.sort(rows.astype(dtype), axis=1)


def _windows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A random window of each row's finite values (empty ones among them)."""
    rng = np.random.default_rng(11)
    finite = np.sum(np.isfinite(rows), axis=1)
    start = rng.integers(0, np.maximum(finite // 4, 1))
    count = np.minimum(rng.integers(0, finite + 1), finite - start)
    count[::7] = finite[::7] - start[::7]  # up to the last finite value
    return start, np.maximum(count, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_window_median_and_mad_are_numpys(dtype: type) -> None:
    # numpy.nanmedian of each window, and of its deviations from a level of the rows'
    # dtype and from a float64 one, to the bit (NaN for an empty window).
    rows = _rows(dtype)
    start, count = _windows(rows)
    window = np.full(rows.shape, np.nan, dtype=dtype)
    for i, (s, c) in enumerate(zip(start, count, strict=True)):
        window[i, s : s + c] = rows[i, s : s + c]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy warns on empty windows
        level = np.nanmedian(window, axis=1)
        got = window_median(rows, start, count)
        assert got.dtype == level.dtype
        np.testing.assert_array_equal(got, level)
        for centre in (level, level.astype(np.float64) + 0.3):
            want = np.nanmedian(np.abs(window - centre[:, None]), axis=1)
            got = window_mad(rows, start, count, centre)
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_window_within_is_the_run_of_near_values(dtype: type) -> None:
    rows = _rows(dtype)
    start, count = _windows(rows)
    level = window_median(rows, start, count)
    reach = 2.0 * MAD_TO_SIGMA * window_mad(rows, start, count, level)
    with np.errstate(invalid="ignore"):
        first, kept = window_within(rows, start, count, level, lambda d: d < reach)
        near = np.abs(rows - level[:, None]) < reach[:, None]
    for i, (s, c) in enumerate(zip(start, count, strict=True)):
        inside = np.zeros(rows.shape[1], dtype=bool)
        inside[s : s + c] = True
        (index,) = np.nonzero(near[i] & inside)
        assert kept[i] == len(index)
        if len(index):
            assert first[i] == index[0] and index[-1] == first[i] + kept[i] - 1


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 40),
    density=st.floats(0.0, 1.0),
    max_samples=st.integers(1, 50),
    block=st.integers(1, 100),
    seed=st.integers(0, 2**16),
)
def test_masked_sample_is_every_step_th_masked_value(
    rows: int, cols: int, density: float, max_samples: int, block: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(rows, cols)).astype(np.float32)
    values[rng.random(values.shape) < 0.1] = np.nan
    mask = rng.random(values.shape) < density
    step = max(1, int(mask.sum()) // max_samples)
    expected = values[mask][::step]
    # Blocks of one row to several rows, as on images of any size.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stats, "SAMPLE_BLOCK", block)
        got = masked_sample(values, mask, max_samples)
    assert got.dtype == values.dtype
    np.testing.assert_array_equal(got, expected)


def test_masked_sample_across_row_blocks_of_a_view() -> None:
    # Rows longer than a block, a non-contiguous view, and a step that does not divide
    # any block's count: the picks keep their overall ranks from block to block.
    rng = np.random.default_rng(3)
    big = rng.normal(size=(7, 2 * SAMPLE_BLOCK + 10))
    values = big[:, 3:-4]
    mask = rng.random(values.shape) < 0.37
    for max_samples in (1, 1000, 123_457):
        step = max(1, int(mask.sum()) // max_samples)
        np.testing.assert_array_equal(
            masked_sample(values, mask, max_samples), values[mask][::step]
        )


def test_clip_range_is_three_robust_sigmas_about_the_median() -> None:
    # 1 % of 100,000 Gaussian values (sigma 2) hold a source 30 sigma up: the range is
    # the sky's +-3 sigma (the MAD's sampling error at this size, ~0.3 %) and leaves them
    # all out, where the mean moves by 0.3 sigma.
    rng = np.random.default_rng(5)
    values = rng.normal(10.0, 2.0, 100_000)
    values[:1000] += 60.0
    low, high = clip_range(values)
    assert (low + high) / 2 == pytest.approx(10.0, abs=0.05)
    assert (high - low) / 2 == pytest.approx(6.0, rel=0.03)
    assert not np.any((values[:1000] >= low) & (values[:1000] <= high))
    assert all(np.isnan(clip_range(np.zeros(0))))
