"""The shared robust statistics."""

import warnings

import numpy as np
import pytest

from diffviewer.stats import FWHM_PER_SIGMA, MAD_TO_SIGMA, median, nanmedian_last, robust_std


def test_nanmedian_last_equals_numpy_with_nans_and_empty_rows() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(4, 6, 101))
    values[0, :, :50] = np.nan
    values[1, 2] = np.nan
    values[2, 3, ::2] = np.nan  # an even count of finite values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy warns on the all-NaN row
        expected = np.nanmedian(values, axis=-1)
    np.testing.assert_allclose(nanmedian_last(values), expected, equal_nan=True)


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
    ],
    ids=["normal", "even-length", "ties", "constant", "sorted", "clustered", "nan"],
)
def test_median_is_numpys(values: np.ndarray) -> None:
    np.testing.assert_array_equal(median(values), np.median(values))


def test_robust_std_is_numpys_mad() -> None:
    values = np.random.default_rng(6).standard_t(3, size=3_000_000)
    mad = np.median(np.abs(values - np.median(values)))
    assert robust_std(values) == float(MAD_TO_SIGMA * mad)
