"""Stars' aperture fluxes on both images: light on one image only beside kernel stars."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffviewer.engine import peaks, star_fluxes
from diffviewer.engine.lent import lend
from diffviewer.exposure import Exposure, MaskPlane
from diffviewer.synthetic import make_pair
from tests.engine.helpers import select


def test_light_on_one_image_beside_a_star_spoils_its_stamp_on_that_image_only() -> None:
    # A 2e5-count point on the science only, 20 px from a candidate of ~5e4: listed
    # with its light on the science (a 1.5 FWHM aperture of a Gaussian of FWHM 4 holds
    # 99.8 % of it) and none on the template; it spoils that star's stamp when the science
    # is convolved (the kernel spreads it there), not when the template is (on the target
    # it is a residual, which the fit's clipping finds).
    base = make_pair((384, 384), 150, seed=3, sci_fwhm=4.0, tmpl_fwhm=2.5)
    first = select(base.science, base.template)
    k = int(np.argmin(np.abs(np.asarray(first.table["flux_sci"]) - 5e4)))
    x0, y0 = float(first.table["x"][k]), float(first.table["y"][k])
    pair = make_pair(
        (384, 384), 150, seed=3, sci_fwhm=4.0, tmpl_fwhm=2.5, transients=[(x0 + 16, y0 + 12, 2e5)]
    )
    cands = select(pair.science, pair.template)
    light = cands.unmatched
    hit = np.hypot(light.x - (x0 + 16), light.y - (y0 + 12)) < 1.5
    assert hit.sum() == 1 and len(light.x) == 1
    assert float(light.science[hit][0]) == pytest.approx(2e5, rel=0.05)
    assert float(light.template[hit][0]) == 0.0
    x, y = np.asarray(cands.table["x"]), np.asarray(cands.table["y"])
    star = np.hypot(x - x0, y - y0) < 1.0
    on_science = light.spoils(x, y, 30, "science")
    assert on_science[star].all() and on_science.sum() < len(x)
    # Brighter than the point on the template side: only the point's own image counts.
    assert not light.spoils(x, y, 30, "template").any()
    # Beyond the stamp: not spoiled.
    assert not light.spoils(x, y, 10, "science")[star].any()


def test_a_neighbour_without_data_on_one_image_is_not_taken_for_light_on_the_other() -> None:
    # A template with no data over a star beside a candidate (a warped template's edge):
    # the star looks as if on the science only, but its ratio cannot be judged.
    pair = make_pair((384, 384), 150, seed=3, sci_fwhm=4.0, tmpl_fwhm=2.5)
    # the five brightest stars judged, the sixth their neighbour (within 400 px)
    bright = np.argsort(-pair.star_flux)[:6]
    xi = np.rint(pair.star_x[bright]).astype(np.intp)
    yi = np.rint(pair.star_y[bright]).astype(np.intp)
    image = pair.template.image.copy()
    mask = pair.template.mask.copy()
    box = (slice(yi[5] - 6, yi[5] + 7), slice(xi[5] - 6, xi[5] + 7))
    image[box] = 0.0
    grids = tuple(
        peaks.coarse_background(e.image, e.good_pixels())[0] for e in (pair.science, pair.template)
    )

    def listed(template: Exposure) -> int:
        light = star_fluxes.unmatched_light(
            pair.science, template, xi, yi, np.arange(5), 400, grids, 6.0, (4.0, 2.5)
        )
        return len(light.x)

    blank = pair.template.replace(image=image)
    mask[box] |= int(MaskPlane.NO_DATA)
    # Blanked without a mask, it is light on the science only; masked, it is not judged.
    assert listed(blank) == 1 and listed(pair.template.replace(image=image, mask=mask)) == 0


def test_local_snr_is_a_sources_own_light_above_a_gradient_and_a_halo() -> None:
    # Noise-free, variance 100 a pixel: a Gaussian star of 10,000 counts (FWHM 4) on a
    # steep gradient (5 counts a pixel) reads its own aperture flux over its error, the
    # gradient cancelled by the mirrored annulus pixels; the gradient alone reads 0; a
    # masked neighbour in the annulus changes nothing; a point on a halo's convex flank
    # (a Moffat wing) reads below 0.
    yy, xx = np.mgrid[0:128, 0:128].astype(float)
    sigma = 4.0 / 2.3548
    star = (
        1e4 / (2 * np.pi * sigma**2) * np.exp(-((xx - 64) ** 2 + (yy - 64) ** 2) / (2 * sigma**2))
    )
    gradient = 1000.0 + 5.0 * xx - 3.0 * yy
    mask = np.zeros((128, 128), dtype=np.int16)
    mask[50:54, 70:74] = int(MaskPlane.BAD)
    halo = 5000.0 * (1 + ((xx - 40) ** 2 + (yy - 64) ** 2) / 25.0) ** -1.5

    def snr(image: np.ndarray, x: int, y: int) -> float:
        exposure = Exposure(image=image, variance=np.full((128, 128), 100.0), mask=mask)
        return float(star_fluxes.local_snr(exposure, np.array([x]), np.array([y]), 6.0, 4.0)[0])

    r = np.arange(-16, 17)
    rr = np.hypot(r[:, None], r[None, :])
    core, ring = rr <= 6.0, (rr >= 10.0) & (rr <= 16.0)
    usable = mask[48:81, 48:81] == 0
    pairs = np.count_nonzero(ring & usable & usable[::-1, ::-1]) // 2
    own = star[48:81, 48:81][core].sum()
    # the level: a median of `pairs` means of two pixels of variance 100
    level_var = np.pi / 2 * 50.0 / pairs
    expected = own / np.sqrt(100.0 * core.sum() + core.sum() ** 2 * level_var)
    assert pairs < np.count_nonzero(ring) // 2
    assert snr(gradient + star, 64, 64) == pytest.approx(expected, rel=0.005)
    assert snr(gradient, 64, 64) == pytest.approx(0.0, abs=1e-6)
    assert snr(halo + 1000.0, 62, 64) < 0.0


@settings(max_examples=60, deadline=None)
@given(
    ny=st.integers(1, 40),
    nx=st.integers(1, 40),
    fwhm=st.floats(0.5, 12.0),
    bad=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_local_snr_of_any_image_is_finite_or_nan_without_warnings(
    ny: int, nx: int, fwhm: float, bad: float, seed: int
) -> None:
    # Any shape (annuli far larger than the image), positions on every edge, NaN pixels
    # flagged NO_DATA and BAD pixels in any share: a value where the annulus has a usable
    # pair and the aperture its pixels, NaN otherwise; never a warning or an exception.
    rng = np.random.default_rng(seed)
    image = rng.normal(100.0, 10.0, (ny, nx))
    masked = rng.random((ny, nx)) < bad
    image[masked & (rng.random((ny, nx)) < 0.5)] = np.nan
    mask = np.where(masked, int(MaskPlane.BAD), 0).astype(np.int16)
    mask[np.isnan(image)] |= int(MaskPlane.NO_DATA)
    exposure = Exposure(image=image, variance=np.full((ny, nx), 100.0), mask=mask)
    xi = rng.integers(0, nx, 8)
    yi = rng.integers(0, ny, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = star_fluxes.local_snr(exposure, xi, yi, 1.5 * fwhm, fwhm)
    assert out.shape == (8,)
    assert np.all(np.isfinite(out) | np.isnan(out))


def test_sources_measured_in_chunks_and_on_threads_give_the_same_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # local_snr and aperture_fluxes measure SOURCE_CHUNK sources at a time on the lent
    # threads: each source's figures are its own, whatever the chunks and threads.
    pair = make_pair((256, 256), 300, seed=4)
    rng = np.random.default_rng(2)
    xi, yi = rng.integers(0, 256, 700), rng.integers(0, 256, 700)  # edges included
    grids = (np.full((4, 4), 100.0), np.full((4, 4), 80.0))

    def measure() -> tuple[np.ndarray, ...]:
        ap = star_fluxes.aperture_fluxes(
            pair.science, pair.template, xi, yi, grids, 5.0, (1.2, 0.0)
        )
        snr = star_fluxes.local_snr(pair.science, xi, yi, 5.0, 3.5)
        return (snr, ap.flux_s, ap.flux_t, ap.var_s, ap.var_t, ap.max_s, ap.max_t)

    whole = measure()
    monkeypatch.setattr(star_fluxes, "SOURCE_CHUNK", 7)
    with ThreadPoolExecutor(2) as pool, lend(pool):
        chunked = measure()
    assert np.isfinite(whole[0]).sum() > 500
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_array_equal(a, b)
    empty = np.zeros(0, dtype=int)
    assert star_fluxes.local_snr(pair.science, empty, empty, 5.0, 3.5).shape == (0,)
