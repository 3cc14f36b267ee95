"""Box extrema of stamp stacks are scipy's maximum and minimum filters to the bit; adaptive
moments of sources narrower than a pixel stay finite."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from diffviewer.engine import moments
from diffviewer.engine.lent import lend
from diffviewer.engine.moments import MIN_AXIS_VARIANCE, adaptive_moments_stack, box_extremum
from diffviewer.stats import FWHM_PER_SIGMA

SHAPES = st.tuples(
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=1, max_value=12),
    st.integers(min_value=1, max_value=12),
)


@settings(max_examples=60, deadline=None)
@given(shape=SHAPES, half=st.integers(min_value=0, max_value=7), seed=st.integers(0, 2**16))
def test_box_maximum_of_floats_is_the_reflecting_maximum_filter(
    shape: tuple[int, int, int], half: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    # repeated values too, so that ties at the box's edge are met
    stamps = rng.integers(-3, 4, shape).astype(np.float64) + rng.normal(0, 1e-3, shape) * (
        rng.random(shape) < 0.5
    )
    side = 2 * half + 1
    expected = ndimage.maximum_filter(stamps, (1, side, side))
    got = box_extremum(stamps, half, largest=True)
    assert got.dtype == stamps.dtype
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(
        box_extremum(stamps, half, largest=False), ndimage.minimum_filter(stamps, (1, side, side))
    )


@settings(max_examples=60, deadline=None)
@given(
    shape=SHAPES,
    half=st.integers(min_value=0, max_value=7),
    seed=st.integers(0, 2**16),
    unknown=st.floats(0.0, 0.5),
)
def test_box_minimum_of_booleans_is_the_erosion_with_true_outside(
    shape: tuple[int, int, int], half: int, seed: int, unknown: float
) -> None:
    known = np.random.default_rng(seed).random(shape) >= unknown
    side = 2 * half + 1
    expected = ndimage.minimum_filter(known, (1, side, side), mode="constant", cval=1)
    got = box_extremum(known, half, largest=False)
    assert got.dtype == bool
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(
        box_extremum(known, half, largest=True),
        ndimage.maximum_filter(known, (1, side, side), mode="constant", cval=0),
    )


def test_box_extremum_of_integers_uses_their_range() -> None:
    stamps = np.array([[[-32768, 5, 7], [1, 32767, -2]]], dtype=np.int16)
    np.testing.assert_array_equal(
        box_extremum(stamps, 1, largest=True), ndimage.maximum_filter(stamps, (1, 3, 3))
    )
    np.testing.assert_array_equal(
        box_extremum(stamps, 1, largest=False), ndimage.minimum_filter(stamps, (1, 3, 3))
    )


def test_moments_of_sources_narrower_than_a_pixel_stay_at_a_pixels_size() -> None:
    # A star of 0.6 px FWHM, a single hot pixel, and a resolved star (FWHM 3 px) in one
    # stack. The two unresolved ones used to shrink their weight without end (1e-300 px^2
    # and an overflowing exponent); their covariance now stops at a pixel's own variance,
    # and the resolved star is measured as before: its Gaussian variance plus the pixel's.
    half = 10
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(float)

    def star(fwhm: float) -> np.ndarray:
        sigma = fwhm / FWHM_PER_SIGMA
        return np.exp(-0.5 * (xx**2 + yy**2) / sigma**2)

    hot = np.zeros_like(xx)
    hot[half, half] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        x, y, cov = adaptive_moments_stack(np.stack([star(0.6), hot, star(3.0)]))
    assert np.isfinite(cov).all() and np.isfinite(x).all() and np.isfinite(y).all()
    smallest = np.linalg.eigvalsh(cov)[:, 0]
    assert np.all(smallest[:2] >= MIN_AXIS_VARIANCE)
    sigma2 = (3.0 / FWHM_PER_SIGMA) ** 2
    # sampled at pixel centres, the resolved star's moments are its own variance (the
    # pixel's 1/12 is added by pixel-integrated profiles only)
    np.testing.assert_allclose(cov[2], [[sigma2, 0.0], [0.0, sigma2]], atol=1e-3)
    np.testing.assert_allclose([x[2], y[2]], [half, half], atol=1e-6)


def test_moments_of_a_stack_are_each_cutouts_own_on_any_threads() -> None:
    """Cutouts are measured a chunk at a time, on lent threads when there are: each
    cutout's iteration is its own, so any threads give the same bits, and a cutout gives
    its size alone as within a stack (to rounding: the batched sums' order)."""
    rng = np.random.default_rng(3)
    n, half = 2 * moments.MOMENTS_CHUNK + 37, 8  # two full chunks and a part
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(float)
    sigma = rng.uniform(0.8, 3.0, n)[:, None, None]
    dx, dy = (rng.uniform(-1.0, 1.0, n)[:, None, None] for _ in range(2))
    stamps = 500.0 * np.exp(-0.5 * ((x - dx) ** 2 + (y - dy) ** 2) / sigma**2)
    stamps += rng.normal(size=stamps.shape)
    alone = moments.adaptive_moments_stack(stamps)
    with ThreadPoolExecutor(3) as pool, lend(pool):
        lent = moments.adaptive_moments_stack(stamps)
    for a, b in zip(alone, lent, strict=True):
        np.testing.assert_array_equal(a, b)
    for i in (0, moments.MOMENTS_CHUNK, n - 1):
        one = moments.adaptive_moments(stamps[i])
        np.testing.assert_allclose(one[0], alone[0][i], rtol=0, atol=1e-10)
        np.testing.assert_allclose(one[2], alone[2][i], rtol=1e-10)
    # The sizes are the stamps' own (2 sigma^2 weights converge to the covariance).
    fwhm = np.sqrt(alone[2][:, 0, 0]) * FWHM_PER_SIGMA
    assert np.median(np.abs(fwhm / (sigma.ravel() * FWHM_PER_SIGMA) - 1.0)) < 0.02
