"""The background's clipped cell statistics against a plain per-cell reference."""

from __future__ import annotations

import numpy as np
import pytest

from diffviewer.engine.background import _clipped_cell_statistics, estimate_background
from diffviewer.errors import InputError


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


@pytest.mark.parametrize("seed", range(12))
def test_cell_statistics_equal_a_per_cell_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Shapes that the mesh does not divide, and meshes longer than a side.
    ny, nx = (int(v) for v in rng.integers(20, 300, 2))
    mesh = int(rng.choice([16, 37, 64, 128]))
    image = rng.normal(100.0, 5.0, (ny, nx))
    stars = rng.random((ny, nx)) < 0.02
    image[stars] += rng.exponential(200.0, int(stars.sum()))
    # Rounded values give ties at the quartiles; a mostly flat corner (sigma 0) gives
    # ties at the clipping limits.
    if seed % 2:
        image = np.round(image)
    corner = image[ny // 2 :, nx // 2 :]
    corner[rng.random(corner.shape) < 0.8] = 100.0
    # Masked pixels, and non-finite values among the good ones.
    good = rng.random((ny, nx)) > rng.choice([0.0, 0.2, 0.7])
    good[: ny // 3, : nx // 4] = seed % 3 != 0
    image[rng.random((ny, nx)) < 0.01] = np.nan
    image[rng.random((ny, nx)) < 0.003] = np.inf
    image[rng.random((ny, nx)) < 0.003] = -np.inf
    my, mx = min(mesh, ny), min(mesh, nx)
    fast = _clipped_cell_statistics(image, good, my, mx)
    reference = reference_cell_statistics(image, good, mesh)
    for got, want in zip(fast, reference, strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_a_fully_masked_image_has_no_background() -> None:
    image = np.ones((50, 70), dtype=np.float32)
    with pytest.raises(InputError, match="every pixel is masked"):
        estimate_background(image, np.zeros(image.shape, dtype=bool), 16)
