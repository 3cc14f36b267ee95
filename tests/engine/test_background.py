"""The background's clipped cell statistics (read from per-cell histograms) against a plain
per-cell sort, and its map against a known sky."""

from __future__ import annotations

import numpy as np
import pytest

from diffviewer.engine.background import (
    _clipped_cell_statistics,
    estimate_background,
    fit_background,
)
from diffviewer.errors import InputError
from diffviewer.sky_stats import robust_sky
from diffviewer.stats import dithered, undithered_sigma


def reference_cell_statistics(
    image: np.ndarray, good: np.ndarray, mesh: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The clipped statistics written one cell at a time, as the estimator defines them.

    Each cell's good pixels are sorted and padded with NaN to the cell size; three times,
    the quartiles are read at 1/4, 1/2, 3/4 of the kept range and the range is reset to
    the pixels within 3 sigma (sigma from the interquartile range) of the median.
    """
    ny, nx = image.shape
    my, mx = min(mesh, ny), min(mesh, nx)
    gy, gx = -(-ny // my), -(-nx // mx)
    med = np.zeros((gy, gx), dtype=np.float32)
    sig = np.zeros((gy, gx), dtype=np.float32)
    n_valid = np.zeros((gy, gx), dtype=np.int64)
    n_kept = np.zeros((gy, gx), dtype=np.int64)
    for iy in range(gy):
        for ix in range(gx):
            box = np.s_[iy * my : (iy + 1) * my, ix * mx : (ix + 1) * mx]
            values = np.full(my * mx, np.nan, dtype=np.float32)
            kept = np.sort(image[box][good[box]].astype(np.float32))
            values[: kept.size] = kept
            n_valid[iy, ix] = np.sum(np.isfinite(values))
            lo, hi = 0, int(n_valid[iy, ix])
            for _ in range(3):
                n = max(hi - lo, 1)
                q1, m, q3 = (
                    values[min(lo + int(n * f), values.size - 1)] for f in (0.25, 0.5, 0.75)
                )
                s = (q3 - q1) / np.float32(1.349)
                lo = int(np.sum(values < m - np.float32(3.0) * s))
                hi = int(np.sum(values <= m + np.float32(3.0) * s))
            med[iy, ix], sig[iy, ix], n_kept[iy, ix] = m, s, hi - lo
    return med, sig, n_valid, n_kept


def field(seed: int, rounded: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Sky of sigma 5 with 2 % star pixels, masked pixels and non-finite values, on shapes
    the mesh does not divide and meshes longer than a side; ``rounded``: integer values
    and a mostly flat quarter (ties at the quartiles, sigma 0 in its cells)."""
    rng = np.random.default_rng(seed)
    ny, nx = (int(v) for v in rng.integers(20, 300, 2))
    mesh = int(rng.choice([16, 37, 64, 128]))
    image = rng.normal(100.0, 5.0, (ny, nx))
    stars = rng.random((ny, nx)) < 0.02
    image[stars] += rng.exponential(200.0, int(stars.sum()))
    if rounded:
        image = np.round(image)
        corner = image[ny // 2 :, nx // 2 :]
        corner[rng.random(corner.shape) < 0.8] = 100.0
    good = rng.random((ny, nx)) > rng.choice([0.0, 0.2, 0.7])
    good[: ny // 3, : nx // 4] = seed % 3 != 0
    image[rng.random((ny, nx)) < 0.01] = np.nan
    image[rng.random((ny, nx)) < 0.003] = np.inf
    image[rng.random((ny, nx)) < 0.003] = -np.inf
    return image, good, mesh


def both_cell_statistics(
    seed: int, rounded: bool
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """The histogram's cell statistics of :func:`field` and the per-cell sort's."""
    image, good, mesh = field(seed, rounded=rounded)
    my, mx = min(mesh, image.shape[0]), min(mesh, image.shape[1])
    return (
        _clipped_cell_statistics(image, good, my, mx),
        reference_cell_statistics(image, good, mesh),
    )


@pytest.mark.parametrize("seed", range(12))
def test_cell_statistics_follow_a_per_cell_sort(seed: int) -> None:
    # The histogram reads the same clipped statistics as sorting each cell: the same
    # usable pixels, and a median and sigma that differ by less than their own noise
    # (1.2533 sigma / sqrt(n) and ~1.17 sigma / sqrt(n)): well within it on cells of
    # 256 px and more, where the noise, not the binning, makes the estimate.
    (med, sig, n_valid, n_kept), want = both_cell_statistics(seed, rounded=False)
    want_med, want_sig, want_valid, want_kept = want
    np.testing.assert_array_equal(n_valid, want_valid)
    np.testing.assert_array_equal(np.isfinite(med), np.isfinite(want_med))
    cells = np.isfinite(want_med)
    root_n = np.sqrt(want_valid[cells])
    assert np.all(np.abs(med - want_med)[cells] <= 0.5 * 1.2533 * 5.0 / root_n)
    assert np.all(np.abs(sig - want_sig)[cells] <= 1.17 * 5.0 / root_n)
    assert np.all(np.abs(n_kept - want_kept)[cells] <= 0.02 * want_kept[cells] + 1)


@pytest.mark.parametrize("seed", range(12))
def test_integer_cells_are_read_dithered(seed: int) -> None:
    # Integer values (with a mostly flat quarter: ties at the quartiles) are spread over
    # the unit around each as their cells are histogrammed, a seed per row of cells: the
    # histogram then reads what a per-cell sort of those values reads, within their
    # noise as on float data, its sigma less the dither's: on cells of 256 px and more,
    # where the noise, not the binning (no more bins than half a cell's pixels), makes
    # the estimate.
    image, good, mesh = field(seed, rounded=True)
    my, mx = min(mesh, image.shape[0]), min(mesh, image.shape[1])
    spread = np.concatenate(
        [dithered(image[y0 : y0 + my], seed=k) for k, y0 in enumerate(range(0, image.shape[0], my))]
    )
    med, sig, n_valid, n_kept = _clipped_cell_statistics(image, good, my, mx)
    want_med, want_sig, want_valid, want_kept = reference_cell_statistics(spread, good, mesh)
    np.testing.assert_array_equal(n_valid, want_valid)
    cells = np.isfinite(want_med) & (want_valid >= 256)
    root_n = np.sqrt(want_valid[cells])
    assert np.all(np.abs(med - want_med)[cells] <= 0.5 * 1.2533 * 5.0 / root_n)
    assert np.all(np.abs(sig - undithered_sigma(want_sig))[cells] <= 1.17 * 5.0 / root_n)
    assert np.all(np.abs(n_kept - want_kept)[cells] <= 0.02 * want_kept[cells] + 1)


@pytest.mark.parametrize("noise", [1.0, 2.0, 5.0])
def test_integer_images_give_their_noise(noise: float) -> None:
    # An integer image's median and quartiles are whole or half numbers: at a noise of 2
    # units its sky sigma was 0.73 of the pixels' standard deviation (a variance plane
    # 0.54 of the truth: 106 false detections in 300 pure-noise 48 x 48 cutouts, none as
    # floats), and 0 at 0.7. Read dithered, the background's and the block statistics'
    # sigmas are within 3 % of it (1 % of it is their noise and their shape's: the
    # dithered values' distribution is the noise's spread by two units' uniforms), and
    # the level within 0.02 sigma of the sky's, whatever the sky's fraction of a unit.
    rng = np.random.default_rng(5)
    good = np.ones((512, 512), bool)
    for sky in (100.0, 100.25, 100.5):
        image = np.round(sky + rng.normal(size=good.shape) * noise).astype(np.float32)
        level, sigma = robust_sky(image, good)
        background = fit_background(image, good, 128)
        for found in (sigma, background.sigma):
            assert found == pytest.approx(float(np.std(image)), rel=0.03)
        assert abs(level - sky) < 0.02 * noise
        assert abs(float(np.mean(background.image())) - sky) < 0.02 * noise


def test_background_of_a_known_sky() -> None:
    # A gradient and a broad bump under noise of sigma 10 with 3 % of the pixels lifted by
    # stars: each cell's clipped median carries 1.2533 / 128 = 0.01 sigma of noise, and
    # the spline through the cells adds no more than that again.
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:1024, :1536]
    truth = (
        1000.0 + 0.02 * xx - 0.01 * yy + 30.0 * np.exp(-((xx - 700) ** 2 + (yy - 500) ** 2) / 2e5)
    )
    image = (truth + rng.normal(0.0, 10.0, truth.shape)).astype(np.float32)
    stars = rng.random(truth.shape) < 0.03
    image[stars] += rng.exponential(100.0, int(stars.sum())).astype(np.float32)
    model = fit_background(image, np.ones(truth.shape, dtype=bool), 128)
    error = (model.image() - truth) / 10.0
    # The stars lift the median of the kept pixels by ~0.003 sigma and their faint pixels
    # within the clip the sigma by ~1.4 % (the sorting estimator gave the same: 0.0027,
    # 0.0152 sigma, 10.13).
    assert abs(float(np.mean(error))) < 0.01
    assert float(np.std(error)) < 0.02
    assert abs(model.sigma - 10.0) < 0.25
    # Any box of the background is that box of the whole (float32 products).
    box = np.s_[100:357, 900:1201]
    np.testing.assert_allclose(model.image(box), model.image()[box], rtol=1e-6)


def test_a_fully_masked_image_has_no_background() -> None:
    image = np.ones((50, 70), dtype=np.float32)
    with pytest.raises(InputError, match="every pixel is masked"):
        estimate_background(image, np.zeros(image.shape, dtype=bool), 16)
