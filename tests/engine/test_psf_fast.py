"""The PSF's fast paths give what the direct computations they replace give.

Each reference here is the plain form of the computation (pixel by pixel, star by star,
one candidate list at a time); the engine's version must agree to rounding, so that
speeding it up moves no science figure.
"""

from __future__ import annotations

import numpy as np
import pytest

from diffviewer.engine import moments, psf, psf_stars, psf_wing
from diffviewer.synthetic import make_pair, moffat_alpha


def _direct_moments(stamp: np.ndarray, iterations: int = 20) -> tuple[float, float, np.ndarray]:
    """Adaptive moments of one stamp with the weight written out pixel by pixel."""
    ny, nx = stamp.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    x0, y0, cov = (nx - 1) / 2.0, (ny - 1) / 2.0, np.eye(2) * 4.0
    for _ in range(iterations):
        inv = np.linalg.inv(cov)
        dx, dy = xx - x0, yy - y0
        q = inv[0, 0] * dx**2 + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy**2
        f = np.exp(-0.5 * q) * stamp
        s = f.sum()
        x1, y1 = (f * xx).sum() / s, (f * yy).sum() / s
        dx, dy = xx - x1, yy - y1
        m = np.array([[(f * dx * dx).sum(), (f * dx * dy).sum()], [0.0, (f * dy * dy).sum()]])
        m[1, 0] = m[0, 1]
        new = np.minimum(2.0 * m / s, (max(nx, ny) / 2.0) ** 2)
        done = np.all(np.abs(new - cov) <= 1e-8 + 1e-4 * np.abs(cov))
        done &= abs(x1 - x0) < 1e-4 and abs(y1 - y0) < 1e-4
        x0, y0, cov = x1, y1, new
        if done:
            break
    return x0, y0, cov


def test_adaptive_moments_of_a_stack_equal_the_direct_ones() -> None:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:25, 0:25] - 12.0
    stamps = []
    for _ in range(40):
        sx, sy, rho = rng.uniform(1.0, 3.0), rng.uniform(1.0, 3.0), rng.uniform(-0.5, 0.5)
        x, y = xx - rng.uniform(-1, 1), yy - rng.uniform(-1, 1)
        q = ((x / sx) ** 2 + (y / sy) ** 2 - 2 * rho * x * y / (sx * sy)) / (1 - rho**2)
        stamps.append(100 * np.exp(-0.5 * q) + rng.normal(0, 1.0, xx.shape))
    cx, cy, cov = moments.adaptive_moments_stack(np.array(stamps))
    for k, stamp in enumerate(stamps):
        x, y, c = _direct_moments(stamp)
        assert (cx[k], cy[k]) == pytest.approx((x, y), abs=1e-9)
        np.testing.assert_allclose(cov[k], c, rtol=1e-9, atol=1e-12)


def test_weighted_sums_of_shifted_stamps_from_their_spectra() -> None:
    rng = np.random.default_rng(4)
    for shape in ((7, 9), (8, 6)):
        stamps = rng.normal(size=(5, *shape))
        weights = rng.normal(size=(3, *shape))
        dx, dy = rng.uniform(-1.5, 1.5, 5), rng.uniform(-1.5, 1.5, 5)
        shifted = psf.fourier_shift(stamps, dx, dy)
        direct = np.einsum("nij,tij->tn", shifted, weights)
        spectrum = np.fft.rfft2(stamps, axes=(1, 2))
        np.testing.assert_allclose(
            psf.shifted_sums(spectrum, weights, dx, dy), direct, rtol=1e-10, atol=1e-12
        )


def test_unique_positions_follow_the_rule_in_turn() -> None:
    rng = np.random.default_rng(5)
    # clusters, so that a position close to a dropped one (and to no kept one) occurs
    x = np.repeat(rng.uniform(0, 200, 60), 3) + rng.uniform(-2.5, 2.5, 180)
    y = np.repeat(rng.uniform(0, 200, 60), 3) + rng.uniform(-2.5, 2.5, 180)
    keep: list[int] = []
    for k in range(len(x)):
        if not keep or np.min(np.hypot(x[keep] - x[k], y[keep] - y[k])) > 2.0:
            keep.append(k)
    np.testing.assert_array_equal(psf_stars.unique_index(x, y, 2.0), keep)


def test_nested_star_selections_equal_each_selection_alone() -> None:
    pair = make_pair((512, 512), 400, seed=6)
    order = np.argsort(-pair.star_flux)
    x, y = pair.star_x[order], pair.star_y[order]
    counts = [60, 150, 400]
    nested = psf_stars.select_stars_nested(pair.science, x, y, counts)
    for count, locus in zip(counts, nested, strict=True):
        alone = psf_stars.select_stars(pair.science, x[:count], y[:count])
        assert locus is not None and alone is not None
        np.testing.assert_array_equal(locus.x, alone.x)
        np.testing.assert_array_equal(locus.y, alone.y)
        assert locus.describe() == alone.describe()


def _neighbours_one_by_one(
    stamps: np.ndarray, flux: np.ndarray, model: np.ndarray, core: float, fwhm: float
) -> np.ndarray:
    """:func:`psf_wing.without_neighbours` written star by star, each neighbour's model
    subtracted over the whole cutout."""
    from scipy import ndimage

    n, m, _ = stamps.shape
    half, big = m // 2, model.shape[0] // 2
    off = np.arange(m, dtype=float) - half
    r = np.hypot(off[:, None], off[None, :])
    box = max(3, 2 * int(np.ceil(fwhm / 2.0)) + 1)
    rc = int(np.ceil(core))
    kernel = model[big - rc : big + rc + 1, big - rc : big + rc + 1]
    disc = np.hypot(*np.mgrid[-rc : rc + 1, -rc : rc + 1]) <= core
    out = stamps.copy()
    for k in range(n):
        stamp = out[k]
        known = np.isfinite(stamp)
        own = flux[k] * model[big - half : big + half + 1, big - half : big + half + 1]
        rest = np.where(known, stamp - own, 0.0)
        smooth = ndimage.uniform_filter(rest, 3)
        level = 1.482602218505602 * float(np.median(np.abs(smooth[known])))
        peak = (smooth == ndimage.maximum_filter(smooth, box)) & known & (r > core)
        ys, xs = np.nonzero(peak & (smooth > 5.0 * level))
        rest = stamp - own
        for j in np.argsort(-smooth[ys, xs]):
            py, px = int(ys[j]), int(xs[j])
            if min(py, px) < rc or max(py, px) + rc >= m:
                continue
            patch = rest[py - rc : py + rc + 1, px - rc : px + rc + 1]
            use = disc & np.isfinite(patch)
            f = float((kernel[use] * patch[use]).sum() / (kernel[use] ** 2).sum())
            if not f > 0:
                continue
            light = f * model[big - py : big - py + m, big - px : big - px + m]
            near = np.hypot(off[:, None] - (py - half), off[None, :] - (px - half)) <= core
            stamp -= light
            rest -= light
            stamp[near] = np.nan
            rest[near] = np.nan
    return out


def test_neighbours_taken_out_of_all_cutouts_at_once_as_one_by_one() -> None:
    rng = np.random.default_rng(7)
    half, fwhm = 12, 4.0
    model = psf_wing.pixel_moffat(1.0, moffat_alpha(fwhm, 2.5), 2.5, 2 * 2 * half)
    big = model.shape[0] // 2
    m = 2 * half + 1
    stamps = np.empty((20, m, m))
    flux = rng.uniform(50, 200, 20)
    for k in range(20):
        stamps[k] = flux[k] * model[big - half : big + half + 1, big - half : big + half + 1]
        for _ in range(rng.integers(0, 4)):
            py, px = rng.integers(-half + 3, half - 3, 2)
            stamps[k] += (
                rng.uniform(20, 300) * model[big - py : big - py + m, big - px : big - px + m]
            )
        stamps[k] += rng.normal(0, 0.5, (m, m))
    stamps[3, :4, :4] = np.nan
    fast = psf_wing.without_neighbours(stamps, flux, model, half / 2.0, fwhm)
    slow = _neighbours_one_by_one(stamps, flux, model, half / 2.0, fwhm)
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(slow))
    assert np.isnan(fast).sum() > np.isnan(stamps).sum()  # neighbours were found
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-9, equal_nan=True)


def test_cutouts_equal_slices_of_the_padded_image() -> None:
    rng = np.random.default_rng(8)
    image = rng.normal(size=(40, 60)).astype(np.float32)
    x, y = rng.integers(-8, 68, 200), rng.integers(-8, 48, 200)
    stamps, inside = moments.cutouts(image, x, y, 6, fill=np.nan)
    padded = np.pad(image, 14, constant_values=np.nan)  # every cutout lies in it
    for k in range(len(x)):
        direct = padded[y[k] + 8 : y[k] + 21, x[k] + 8 : x[k] + 21]
        np.testing.assert_array_equal(stamps[k], direct)
        assert inside[k] == (6 <= x[k] < 54 and 6 <= y[k] < 34)


@pytest.mark.parametrize("extent", [1, 2])
def test_stars_stacked_by_blocks_of_any_size_give_the_same_bits(
    monkeypatch: pytest.MonkeyPatch, extent: int
) -> None:
    pair = make_pair((384, 384), 200, seed=9)
    order = np.argsort(-pair.star_flux)
    x, y = pair.star_x[order][:80], pair.star_y[order][:80]
    results = []
    for pixels, stars in [(1, 1), (2**12, 3), (2**40, 10**6)]:
        monkeypatch.setattr(psf, "ALIGN_BLOCK_PIXELS", pixels)
        monkeypatch.setattr(psf_wing, "STAR_BLOCK", stars)
        results.append(psf.stack_stars(pair.science, x, y, 8, extent))
    image, n, enclosed, wing = results[0]
    assert n > 20 and (wing is not None) == (extent > 1)
    for other in results[1:]:
        np.testing.assert_array_equal(other[0], image)
        assert other[1:] == (n, enclosed, wing)
