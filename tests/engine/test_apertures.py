"""Exact circular apertures: analytic areas, and photutils' ``do_photometry`` as the oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffviewer.engine.apertures import aperture_sums, pixel_weights


def _flat(shape: tuple[int, int] = (64, 64)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A flat image of ones, its unit variance and an all-usable map."""
    ones = np.ones(shape, dtype=np.float32)
    return ones, ones, np.ones(shape, dtype=bool)


@pytest.mark.parametrize("r", [0.5, 1.0, 2.3, 9.0, 17.7])
@pytest.mark.parametrize("centre", [(30.0, 31.0), (30.5, 30.5), (30.123, 29.771)])
def test_a_whole_circle_on_a_flat_image_sums_to_its_area(r, centre) -> None:
    image, variance, usable = _flat()
    x, y = np.array([centre[0]]), np.array([centre[1]])
    sums, errors, _ = aperture_sums(image, variance, usable, x, y, r)
    assert sums[0] == pytest.approx(math.pi * r * r, rel=1e-13)
    assert errors[0] == pytest.approx(math.sqrt(math.pi * r * r), rel=1e-13)


def test_a_unit_circle_on_a_pixel_corner_gives_each_pixel_a_quarter_disc() -> None:
    # Centred on the corner shared by four pixels, a quarter of the disc of radius 1
    # lies in each of them (it fits within the unit square) and nothing in any other.
    weights = pixel_weights(
        np.array([[-1.5, -0.5, 0.5, 1.5]]), np.array([[-1.5, -0.5, 0.5, 1.5]]), 1.0
    )[0]
    expected = np.zeros((4, 4))
    expected[1:3, 1:3] = math.pi / 4
    np.testing.assert_allclose(weights, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    ("r", "area"), [(0.5, math.pi / 16), (1.0, math.pi / 4), (math.sqrt(2.0), 1.0)]
)
def test_four_pixels_around_the_centre_share_the_circle(r, area) -> None:
    # Each of the pixels [0, 1] x [0, 1], ... holds a quarter disc for r <= 1, and the
    # whole of itself once the circle passes through its far corner (r = sqrt(2)).
    weights = pixel_weights(np.array([[-0.5, 0.5]]), np.array([[-0.5, 0.5]]), r)[0]
    np.testing.assert_allclose(weights, np.full((2, 2), area), rtol=1e-14)


def test_a_pixel_that_only_touches_the_circle_has_no_weight() -> None:
    # Radius 0.5 at a pixel centre: the disc is inside that pixel, its neighbours get 0.
    weights = pixel_weights(np.array([[-1.0, 0.0, 1.0]]), np.array([[-1.0, 0.0, 1.0]]), 0.5)[0]
    assert weights[1, 1] == pytest.approx(math.pi / 4, rel=1e-14)
    assert np.count_nonzero(weights) == 1


def test_partial_edges_masked_and_nan_pixels() -> None:
    image, variance, usable = _flat((40, 40))
    image, usable = image.copy(), usable.copy()
    # Half of a circle centred on the left edge (x = -0.5 is the image's border).
    sums, _, cut = aperture_sums(image, variance, usable, np.array([-0.5]), np.array([20.0]), 5.0)
    assert sums[0] == pytest.approx(math.pi * 25 / 2, rel=1e-13)
    assert cut[0], "half the aperture is off the image"
    # A masked pixel is left out whatever it holds, NaN included, and said; an aperture
    # it does not reach (its nearest corner 3.5 px from the centre) is whole.
    image[20, 20], usable[20, 20] = np.nan, False
    sums, errors, cut = aperture_sums(
        image, variance, usable, np.array([20.0, 23.0]), np.array([20.0, 23.0]), 3.0
    )
    assert sums[0] == pytest.approx(math.pi * 9 - 1, rel=1e-13)
    assert errors[0] == pytest.approx(math.sqrt(math.pi * 9 - 1), rel=1e-13)
    assert cut[0] and not cut[1]
    # A usable NaN pixel makes the sum NaN; an aperture wholly off the image is NaN; an
    # aperture whose every pixel is masked sums to 0.
    usable[20, 20] = True
    off = aperture_sums(
        image, variance, usable, np.array([20.0, -10.0]), np.array([20.0, 5.0]), 3.0
    )
    assert np.isnan(off[0]).all() and np.isnan(off[1][1])
    usable[:] = False
    assert (
        aperture_sums(image, variance, usable, np.array([10.0]), np.array([10.0]), 3.0)[0][0] == 0.0
    )


def test_no_positions_give_empty_columns() -> None:
    image, variance, usable = _flat()
    sums, errors, _ = aperture_sums(image, variance, usable, np.zeros(0), np.zeros(0), 3.0)
    assert sums.shape == errors.shape == (0,)


@pytest.mark.parametrize("r", [0.5, 1.7, 3.0, 6.0, 9.0])
def test_photutils_exact_photometry_is_reproduced(r) -> None:
    aperture = pytest.importorskip("photutils.aperture")
    rng = np.random.default_rng(7)
    shape = (90, 120)
    image = rng.normal(3.0, 10.0, size=shape).astype(np.float32)
    variance = rng.uniform(0.5, 4.0, size=shape).astype(np.float32)
    usable = rng.uniform(size=shape) > 0.05
    image[~usable & (rng.uniform(size=shape) > 0.5)] = np.nan  # masked NaNs stay out
    # Centres anywhere, a few across the image's edges, one wholly off it.
    xs = np.append(rng.uniform(-4.0, shape[1] + 3.0, 300), -20.0)
    ys = np.append(rng.uniform(-4.0, shape[0] + 3.0, 300), 40.0)
    sums, errors, _ = aperture_sums(image, variance, usable, xs, ys, r)
    oracle = aperture.CircularAperture(np.column_stack([xs, ys]), r=r)
    # The error plane in float64, so that its square is the variance to the last bits.
    ref_sums, ref_errors = oracle.do_photometry(
        image, error=np.sqrt(variance.astype(np.float64)), mask=~usable
    )
    # photutils gives 0 where only the circle's bounding box touches the image; here
    # an aperture that reaches no pixel of the image is NaN, as one wholly off it.
    nearest_x = np.clip(xs, -0.5, shape[1] - 0.5) - xs
    nearest_y = np.clip(ys, -0.5, shape[0] - 0.5) - ys
    reaches = nearest_x**2 + nearest_y**2 < r * r
    assert np.isnan(sums[~reaches]).all() and not reaches[-1]
    np.testing.assert_array_equal(np.isnan(sums[reaches]), np.isnan(ref_sums[reaches]))
    np.testing.assert_allclose(sums[reaches], ref_sums[reaches], rtol=1e-12, atol=1e-11 * r * r)
    np.testing.assert_allclose(errors[reaches], ref_errors[reaches], rtol=1e-12, equal_nan=True)
