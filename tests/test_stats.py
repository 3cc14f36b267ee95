"""The shared robust statistics."""

import warnings

import numpy as np

from diffviewer.stats import FWHM_PER_SIGMA, nanmedian_last, robust_std


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
