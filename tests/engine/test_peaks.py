"""Peak finding: the fast binomial smoothing, the boxes' background and noise, local maxima."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits

from diffviewer.engine import peaks
from diffviewer.stats import MAD_TO_SIGMA
from tests.conftest import data_path


@pytest.mark.parametrize("rows", [1, 3, 16, 40, 64])
def test_fast_smoothing_equals_the_binomial_filter(rows: int) -> None:
    from scipy import ndimage

    from diffviewer.engine.peaks import _BINOMIAL, _binomial_smooth

    image = np.random.default_rng(1).normal(size=(40, 57)).astype(np.float32)
    ref = ndimage.correlate1d(
        ndimage.correlate1d(image, _BINOMIAL, 0, mode="nearest"), _BINOMIAL, 1, mode="nearest"
    )
    np.testing.assert_allclose(_binomial_smooth(image, rows), ref, atol=1e-6)
    # strips of any height, and float64 input, give the one-strip result bit for bit; a
    # NaN spreads to its 5 x 5 box only
    image[7, 0] = np.nan
    whole = _binomial_smooth(image, len(image))
    np.testing.assert_array_equal(_binomial_smooth(image.astype(np.float64), rows), whole)
    assert whole.dtype == np.float32
    assert np.array_equal(np.isnan(whole), ndimage.maximum_filter(np.isnan(image), 5))


def _box_statistics_by_sorting(
    image: np.ndarray, good: np.ndarray, box: int
) -> tuple[np.ndarray, np.ndarray]:
    """The direct form of ``_box_statistics``: ``numpy.nanmedian`` of the samples, of their
    deviations, of the clipped samples and of theirs."""
    ny, nx = image.shape
    by, bx = max(1, ny // box), max(1, nx // box)
    sy, sx = ny // by, nx // bx
    step = 2 if min(sy, sx) >= 32 else 1
    v = np.empty((by, bx, len(range(0, sy, step)) * len(range(0, sx, step))), np.float32)
    for i in range(by):
        for j in range(bx):
            cut = (slice(i * sy, (i + 1) * sy, step), slice(j * sx, (j + 1) * sx, step))
            v[i, j] = np.where(good[cut], image[cut], np.nan).ravel()
    v[~np.isfinite(v)] = np.nan
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # boxes without a good sample
        med = np.nanmedian(v, axis=-1)
        mad = np.nanmedian(np.abs(v - med[..., None]), axis=-1)
        far = ~(np.abs(v - med[..., None]) < 3 * MAD_TO_SIGMA * mad[..., None] + 1e-30)
        v[far] = np.nan
        bg = np.nanmedian(v, axis=-1).astype(np.float64)
        sd = MAD_TO_SIGMA * np.nanmedian(np.abs(v - bg[..., None]), axis=-1)
    return bg, sd


def _background_image(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Images with stars, ties, masked boxes, constant boxes, +inf; float32 or float64."""
    rng = np.random.default_rng(31)
    shape = (320, 400)  # boxes of 64 x 66, 80 x 80 and 16 x 16 px below
    image = rng.normal(1000.0, 20.0, shape)
    image[rng.integers(0, shape[0], 300), rng.integers(0, shape[1], 300)] += 5e4  # stars
    good = np.ones(shape, dtype=bool)
    if kind == "quantised":
        image = np.round(image / 10.0)  # many ties
    elif kind == "masked":
        good = rng.random(shape) > 0.5  # even and odd counts of good samples
        good[:160, :160] = False  # boxes without a good sample
        good[82, 0] = True  # a box with one good sample (on every box size's samples)
        good[0, 100] = good[2, 102] = True  # a box with two
        image[160:, 240:] = 7.0  # constant boxes: MAD 0
        image[5, 301] = np.inf  # an infinite "good" pixel: left out as NaN is
    elif kind == "real":
        with fits.open(data_path("goto/1.fits")) as hdul:
            image = np.asarray(hdul[0].data[:320, :400], dtype=np.float64)
    return (image if kind == "float64" else image.astype(np.float32)), good


@pytest.mark.parametrize("kind", ["stars", "float64", "quantised", "masked", "real"])
@pytest.mark.parametrize("box", [64, 80, 16])
def test_box_statistics_are_those_of_sorting_every_stage(kind: str, box: int) -> None:
    # One sort of each box's samples gives numpy's medians of the samples, of their
    # deviations, of the clipped samples and of theirs, to the bit (boxes of 16 px take
    # every sample, larger ones every other row and column).
    image, good = _background_image(kind)
    before = image.copy()
    got = peaks._box_statistics(image, good, box)
    want = _box_statistics_by_sorting(image, good, box)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype == np.float64
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(image, before)  # the input is left as it was


def test_box_statistics_clip_values_at_exactly_three_sigma() -> None:
    # Ten samples whose deviation from the median is the clip distance itself are clipped
    # (the clip keeps deviations below it), as by the direct form.
    values = np.random.default_rng(5).normal(0.0, 1.0, 256).astype(np.float32)
    values[:10] = 1e3  # far out: the median and the MAD do not depend on where
    med = np.median(values)
    reach = 3 * MAD_TO_SIGMA * np.median(np.abs(values - med)) + 1e-30
    edge = np.float32(med + reach)
    while np.abs(edge - med) > reach:
        edge = np.nextafter(edge, np.float32(0.0))
    while np.abs(edge - med) < reach:
        edge = np.nextafter(edge, np.float32(np.inf))
    assert np.abs(edge - med) == reach
    values[:10] = edge
    image, good = values.reshape(16, 16), np.ones((16, 16), dtype=bool)
    got = [float(a[0, 0]) for a in peaks._box_statistics(image, good, 16)]
    assert got == [float(a[0, 0]) for a in _box_statistics_by_sorting(image, good, 16)]
    assert got[0] != float(np.median(values[np.abs(values - med) <= reach]))  # they count


def test_coarse_background_leaves_a_single_box_image_alone() -> None:
    # One box of every pixel: the samples are the image itself, not a copy of it.
    image = np.random.default_rng(4).normal(5.0, 1.0, (40, 40)).astype(np.float32)
    before = image.copy()
    peaks.coarse_background(image, image > 6.0)
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize("shape", [(483, 502), (495, 489), (2100, 130), (97, 1301), (64, 64)])
def test_coarse_background_takes_any_shape(shape: tuple[int, int]) -> None:
    """Box sides that are odd (483 // 7 = 69) once crashed the subsampled reshape."""
    rng = np.random.default_rng(3)
    image = rng.normal(10.0, 2.0, shape).astype(np.float32)
    bg, sd = peaks.coarse_background(image, np.ones(shape, bool))
    assert bg.shape == (max(1, shape[0] // 64), max(1, shape[1] // 64))
    # sky level and noise within 5 % of the truth (each box holds >= 1000 samples)
    assert np.allclose(bg, 10.0, atol=0.2)
    assert np.allclose(sd, 2.0, rtol=0.1)


def test_local_maxima_on_plateaus_ties_and_edges() -> None:
    rng = np.random.default_rng(5)
    image = rng.integers(0, 4, size=(23, 31)).astype(np.float32)  # many ties
    image[8:13, 10:16] = 9.0  # a plateau: one maximum, its first pixel in raster order
    image[0, 0] = image[22, 17] = image[11, 30] = 9.0  # on the corner and edges
    image[3, 25] = np.nan
    image[0, 5:8] = 9.0  # a plateau on the first row: its first pixel
    # reference, pixel by pixel: larger than every other pixel of its 5 x 5 box (clipped
    # into the image: edges repeated) before it in raster order, at least as large as
    # every one after it
    ny, nx = image.shape
    expected = np.zeros(image.shape, dtype=bool)
    for y in range(ny):
        for x in range(nx):
            others = {
                (min(max(y + dy, 0), ny - 1), min(max(x + dx, 0), nx - 1))
                for dy in range(-2, 3)
                for dx in range(-2, 3)
            } - {(y, x)}
            expected[y, x] = all(
                image[y, x] >= image[o] if o > (y, x) else image[y, x] > image[o] for o in others
            )
    flat = np.flatnonzero(np.isfinite(image))
    found = peaks._local_maxima(image, flat)
    np.testing.assert_array_equal(found, np.flatnonzero(expected))
    found_at = set(zip(*np.divmod(found, nx), strict=True))
    # the corner, edges and first row are peaks like any other pixel
    assert {(8, 10), (22, 17), (11, 30), (0, 0), (0, 5)} <= found_at
    assert not found_at & {(0, 6), (0, 7)}
    assert not found_at & {(y, x) for y in range(8, 13) for x in range(10, 16)} - {(8, 10)}
