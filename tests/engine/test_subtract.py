"""Convolution with the spatially varying kernel, the difference, its variance and mask."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from numpy.polynomial import chebyshev
from scipy import ndimage, signal

from diffviewer.config import KernelConfig, ScoreConfig, SubtractionConfig
from diffviewer.engine import field_terms, kernel, psf, sky, subtract, tiles
from diffviewer.engine.diagnostics import noise_ratio
from diffviewer.engine.pipeline import run_subtraction
from diffviewer.engine.progress import null_reporter
from diffviewer.exposure import Exposure, MaskPlane, set_planes
from diffviewer.synthetic import SyntheticPair, make_pair, render_gaussians
from tests.engine.helpers import fit_kernel_to


def run(
    science: Exposure, template: Exposure, **options: Any
) -> tuple[kernel.KernelFit, subtract.SubtractionProducts]:
    """Candidates, PSFs, kernel fit (``KernelConfig(**options)``) and subtraction."""
    fit = fit_kernel_to(science, template, KernelConfig(**options))
    return fit, subtract.subtract_images(science, template, fit, null_reporter())


def sky_z(diff: Exposure, pair: SyntheticPair, radius: float = 12.0) -> np.ndarray:
    """difference / sqrt(variance) over pixels further than ``radius`` from every star."""
    ny, nx = diff.shape
    far = np.ones((ny, nx), dtype=bool)
    for x, y in zip(
        np.r_[pair.star_x, pair.transient_x], np.r_[pair.star_y, pair.transient_y], strict=True
    ):
        x0, y0 = int(x), int(y)
        r = int(radius)
        far[max(0, y0 - r) : y0 + r + 1, max(0, x0 - r) : x0 + r + 1] = False
    far &= (diff.mask & int(MaskPlane.EDGE | MaskPlane.NO_DATA | MaskPlane.BAD)) == 0
    return (diff.image / np.sqrt(diff.variance))[far]


@pytest.fixture(scope="module")
def pair() -> SyntheticPair:
    return make_pair((512, 512), 300, seed=11)


def test_convolution_matches_brute_force_per_pixel() -> None:
    rng = np.random.default_rng(4)
    ny, nx, size, order = 37, 45, 7, 2
    image = rng.normal(size=(ny, nx)).astype(np.float32)
    kernels = rng.normal(size=(field_terms.n_terms(order), size, size))
    fast = subtract.convolve_terms(image, kernels, order)
    tx = chebyshev.chebvander(2.0 * np.arange(nx) / (nx - 1) - 1.0, order)
    ty = chebyshev.chebvander(2.0 * np.arange(ny) / (ny - 1) - 1.0, order)
    padded = np.pad(image.astype(np.float64), size // 2)
    slow = np.zeros((ny, nx))
    for y in range(ny):
        for x in range(nx):
            k = sum(
                ty[y, py] * tx[x, px] * kernels[s]
                for s, (px, py) in enumerate(field_terms.term_powers(order))
            )
            # true convolution: the kernel flipped over the neighbourhood
            slow[y, x] = np.sum(k[::-1, ::-1] * padded[y : y + size, x : x + size])
    assert np.max(np.abs(fast - slow)) < 1e-5 * np.max(np.abs(slow))


def test_tiled_convolution_equals_whole_image_one() -> None:
    # An image longer than a tile on both axes: the tiles, their margins and each term's
    # polynomial on each tile must give the whole-image sum_s P_s (K_s * I) (float64
    # reference, zeros beyond the edges) to float32 rounding.
    rng = np.random.default_rng(9)
    ny, nx, size, order = 900, 1700, 25, 2
    assert min(ny, nx) > tiles.MAX_TILE_FFT
    image = rng.normal(size=(ny, nx)).astype(np.float32)
    kernels = rng.normal(size=(field_terms.n_terms(order), size, size))
    got = subtract.convolve_terms(image, kernels, order)
    tx = chebyshev.chebvander(2.0 * np.arange(nx) / (nx - 1) - 1.0, order)
    ty = chebyshev.chebvander(2.0 * np.arange(ny) / (ny - 1) - 1.0, order)
    whole = np.zeros((ny, nx))
    for s, (px, py) in enumerate(field_terms.term_powers(order)):
        conv = signal.fftconvolve(image.astype(np.float64), kernels[s], mode="same")
        whole += ty[:, py, None] * tx[None, :, px] * conv
    # float32 transforms of a few hundred px: relative errors of order 1e-6 of the peak.
    assert np.max(np.abs(got - whole)) < 1e-5 * np.max(np.abs(whole))


@pytest.mark.parametrize("order", [0, 2])
def test_level_is_the_world_beyond_the_edges_and_at_invalid_pixels(order: int) -> None:
    # sum_s P_s (K_s * J) over an image longer than a tile, J the image with c at its
    # invalid pixels: J padded far beyond the kernel's reach with c, convolved, and cut
    # back (float64 reference).
    rng = np.random.default_rng(12)
    ny, nx, size, c = 800, 1000, 21, 250.0
    image = rng.normal(size=(ny, nx)).astype(np.float32)
    kernels = rng.normal(size=(field_terms.n_terms(order), size, size))
    invalid = rng.random((ny, nx)) < 0.01
    got = subtract.convolve_terms(image, kernels, order, level=c, invalid=invalid)
    tx = chebyshev.chebvander(2.0 * np.arange(nx) / (nx - 1) - 1.0, order)
    ty = chebyshev.chebvander(2.0 * np.arange(ny) / (ny - 1) - 1.0, order)
    padded = np.pad(np.where(invalid, c, image.astype(np.float64)), size, constant_values=c)
    whole = np.zeros((ny, nx))
    for s, (px, py) in enumerate(field_terms.term_powers(order)):
        conv = signal.fftconvolve(padded, kernels[s], mode="same")[size:-size, size:-size]
        whole += ty[:, py, None] * tx[None, :, px] * conv
    assert np.max(np.abs(got - whole)) < 1e-5 * np.max(np.abs(whole))


def test_difference_noise_is_described_by_its_variance(pair: SyntheticPair) -> None:
    fit, products = run(pair.science, pair.template)
    z = sky_z(products.difference, pair)
    # ~120k sky pixels: the robust std is known to 0.3%; 3% is the acceptance band.
    assert np.std(z) == pytest.approx(1.0, abs=0.03)
    assert noise_ratio(products.difference) == pytest.approx(1.0, abs=0.03)
    # Mean consistent with zero: the pixels' own standard error is ~0.003, but the fitted
    # background (3 terms from ~40 stamps of 225 px, each constant good to ~3 counts) is
    # uncertain by ~0.5 counts = 0.016 sigma; 0.05 is 3 of those.
    assert abs(np.mean(z)) < 0.05
    # Variance in the sky is var_sci + sum(K^2) var_tmpl (constant kernel).
    k = fit.solution.evaluate(256.0, 256.0)
    expected = 1000.0 + np.sum(k**2) * 0.25 * 1000.0
    assert np.median(products.difference.variance[100:400, 100:400]) == pytest.approx(
        expected, rel=0.01
    )


def test_spatially_varying_psf_needs_a_spatial_model() -> None:
    pair = make_pair((768, 768), 1200, seed=5, sci_fwhm_gradient=0.3)
    ny, nx = pair.science.shape
    inner = (
        (pair.star_x > 15) & (pair.star_x < nx - 16) & (pair.star_y > 15) & (pair.star_y < ny - 16)
    )
    idx = np.nonzero(inner)[0]
    idx = idx[np.argsort(-pair.star_flux[idx])][:50]
    yy, xx = np.mgrid[0:ny, 0:nx]

    def median_rms(order: int) -> float:
        _, products = run(pair.science, pair.template, spatial_order=order)
        d = products.difference
        z = d.image / np.sqrt(d.variance)
        rms = []
        for i in idx:
            fwhm = 4.0 * (1.0 + 0.3 * (pair.star_x[i] / (nx - 1) - 0.5))
            near = (xx - pair.star_x[i]) ** 2 + (yy - pair.star_y[i]) ** 2 <= (2 * fwhm) ** 2
            rms.append(np.sqrt(np.mean(z[near] ** 2)))
        return float(np.median(rms))

    # Measured 1.00 (order 2) and 1.06 (order 1) against 2.8 for a constant kernel.
    assert median_rms(2) <= 1.10
    assert median_rms(0) > 1.5


def test_science_convolution_keeps_the_sign_and_the_fluxes() -> None:
    transients = [(150.0, 160.0, 1e5), (350.0, 300.0, 1e5)]
    normal = make_pair((512, 512), 300, seed=8, transients=transients)
    swapped = make_pair(
        (512, 512),
        300,
        seed=8,
        transients=transients,
        sci_fwhm=2.5,
        tmpl_fwhm=4.0,
        tmpl_noise_scale=1.0,
    )
    fit_t, prod_t = run(normal.science, normal.template)
    fit_s, prod_s = run(swapped.science, swapped.template, mode="auto")
    assert fit_t.convolved == "template" and fit_s.convolved == "science"
    assert fit_s.photometric_scale == pytest.approx(1.0, abs=0.01)
    yy, xx = np.mgrid[0:512, 0:512]
    for x, y, flux in transients:
        ap = (xx - x) ** 2 + (yy - y) ** 2 <= 12**2
        for prod in (prod_t, prod_s):
            d = prod.difference
            # aperture flux error ~ sqrt(450 px * 2000) ~ 950 counts: 5% is > 5 sigma
            assert d.image[ap].sum() == pytest.approx(flux, rel=0.05)
    # The difference PSF is the broader one either way: the science PSF, or K * science PSF.
    assert psf.adaptive_moments(prod_s.psf)[2].trace() / 2 == pytest.approx(
        (4.0 / psf.FWHM_PER_SIGMA) ** 2, rel=0.05
    )
    assert prod_s.psf.sum() == pytest.approx(1.0)


def test_masks_are_grown_by_the_kernel_footprint(pair: SyntheticPair) -> None:
    where_bad = np.zeros(pair.template.shape, dtype=bool)
    where_bad[200, 300] = True
    where_nodata = np.zeros(pair.template.shape, dtype=bool)
    where_nodata[:40, :40] = True
    mask = set_planes(
        set_planes(pair.template.mask, where_bad, MaskPlane.BAD), where_nodata, MaskPlane.NO_DATA
    )
    template = pair.template.replace(mask=mask)
    fit, products = run(pair.science, template)
    half = subtract.footprint_half_width(fit.solution.evaluate(256.0, 256.0))
    assert 0 < half < fit.solution.size // 2
    dmask = products.difference.mask
    bad = (dmask & int(MaskPlane.BAD)) != 0
    assert bad[200 - half : 201 + half, 300 - half : 301 + half].all()
    assert bad.sum() == (2 * half + 1) ** 2
    edge = (dmask & int(MaskPlane.EDGE)) != 0
    assert edge[: 40 + half, : 40 + half].all() and not edge[45 + half, 45 + half]
    assert (
        edge[:half].all()
        and edge[:, -half:].all()
        and not edge[half:-half, half:-half][100:, 100:].any()
    )
    assert ((dmask & int(MaskPlane.NO_DATA)) != 0).sum() == 40 * 40
    assert not (pair.template.mask != 0).any()  # inputs untouched


def test_variance_follows_the_varying_kernel_power() -> None:
    pair = make_pair((512, 512), 500, seed=6, sci_fwhm_gradient=0.4, tmpl_noise_scale=1.0)
    flat = pair.template.replace(variance=np.full(pair.template.shape, 100.0, dtype=np.float32))
    fit, products = run(pair.science, flat, spatial_order=2)
    var = products.matched.variance
    for x, y in ((60, 60), (256, 256), (450, 120), (450, 450)):
        k = fit.solution.evaluate(float(x), float(y))
        # flat variance: K^2 * V = V sum(K^2) exactly; the grid interpolation adds < 0.1%
        assert var[y, x] == pytest.approx(100.0 * np.sum(k**2), rel=2e-3)


def test_edges_see_the_median_level_beyond_the_image(pair: SyntheticPair) -> None:
    lifted = pair.template.replace(image=pair.template.image + np.float32(500.0))
    fit, products = run(pair.science, lifted, spatial_order=0)
    matched = products.matched.image
    # Beyond the edge the template is taken at its median (~500), not 0: the outermost
    # rows keep the level instead of dropping by up to half of it.
    assert np.median(matched[0, 50:-50]) == pytest.approx(500.0 * fit.photometric_scale, abs=10.0)
    assert np.median(matched[:, -1][50:-50]) == pytest.approx(
        500.0 * fit.photometric_scale, abs=10.0
    )


@pytest.mark.parametrize(
    ("sci_fwhm", "tmpl_fwhm", "convolved"), [(4.0, 2.5, "template"), (2.5, 4.0, "science")]
)
def test_difference_is_in_science_counts_whichever_image_is_convolved(
    sci_fwhm: float, tmpl_fwhm: float, convolved: str
) -> None:
    # The template is half as bright as the science (flux ratio 2): K * science - template
    # is in template counts unless put back on the science's scale.
    flux, shape = 2e4, (384, 384)
    transients = [(150.3, 200.6, flux), (300.0, 100.0, flux)]
    pair = make_pair(
        shape,
        250,
        seed=3,
        sci_fwhm=sci_fwhm,
        tmpl_fwhm=tmpl_fwhm,
        photometric_scale=2.0,
        transients=transients,
    )

    def star(x: float, y: float, f: float, fwhm: float) -> np.ndarray:
        sigma = np.array([fwhm / psf.FWHM_PER_SIGMA])
        return render_gaussians(shape, np.array([x]), np.array([y]), np.array([f]), sigma, 20)

    # A source that moved by 2 px along x between the epochs: a dipole.
    science = pair.science.replace(image=pair.science.image + star(201.0, 301.0, 1e5, sci_fwhm))
    template = pair.template.replace(image=pair.template.image + star(199.0, 301.0, 5e4, tmpl_fwhm))
    config = SubtractionConfig()
    config = dataclasses.replace(config, kernel=dataclasses.replace(config.kernel, mode="auto"))
    result = run_subtraction(science, template, config)
    assert result.kernel.convolved == convolved
    assert result.kernel.photometric_scale == pytest.approx(2.0, rel=0.01)
    tab = result.diasources
    for x, y, _ in transients:
        i = int(np.argmin(np.hypot(tab["x"] - x, tab["y"] - y)))
        # Forced PSF flux within 3 sigma of the injected science flux (before: half of it,
        # 30 sigma off, when the science was convolved).
        assert abs(tab["psf_flux"][i] - flux) < 3.0 * tab["psf_flux_err"][i]
    i = int(np.argmin(np.hypot(tab["x"] - 200.0, tab["y"] - 301.0)))
    assert tab["is_dipole"][i]
    # The dipole fit ties the positive lobe to the science image: in template counts it
    # put the lobes 1.0 px apart. 0.2 px is ~10 times the fit's error at this S/N (~400).
    assert tab["dipole_separation"][i] == pytest.approx(2.0, abs=0.2)
    assert tab["pos_flux"][i] == pytest.approx(1e5, rel=0.02)


@pytest.mark.parametrize("size", [1, 4, 9, 21])
@pytest.mark.parametrize("density", [0.0, 0.0005, 0.01, 0.3])
def test_grow_square_is_scipys_maximum_filter(size: int, density: float) -> None:
    # Sparse maps are painted, denser ones filtered on their bounding box: both are the
    # whole map's filter, set pixels on the borders included.
    hit = np.random.default_rng(size).random((83, 120)) < density
    if density:
        hit[0, 5] = hit[82, 119] = hit[40, 0] = True
    want = ndimage.maximum_filter(hit.view(np.uint8), size=size, mode="constant") > 0
    np.testing.assert_array_equal(subtract.grow_square(hit, size), want)


@pytest.mark.parametrize("size", [1, 5, 13])
def test_grown_planes_are_each_planes_square_and_the_same_added_in_place(size: int) -> None:
    # Each chosen plane grows by the square of its own pixels (NO_DATA into EDGE), the
    # other planes stay; given a mask that holds the planes already, the grown ones are
    # added to it in place (the ZOGY score's mask grows its SAT planes so, without a copy).
    rng = np.random.default_rng(size)
    planes = [MaskPlane.SAT, MaskPlane.BAD, MaskPlane.NO_DATA, MaskPlane.CR]
    mask = np.zeros((61, 47), dtype=np.int32)
    for plane in planes:
        np.bitwise_or(mask, np.int32(plane), out=mask, where=rng.random(mask.shape) < 0.01)
    grown = int(MaskPlane.SAT | MaskPlane.NO_DATA | MaskPlane.CR)
    want = mask.copy()
    for plane in (MaskPlane.SAT, MaskPlane.NO_DATA, MaskPlane.CR):
        hit = ndimage.maximum_filter((mask & int(plane)) != 0, size=size, mode="constant")
        target = MaskPlane.EDGE if plane == MaskPlane.NO_DATA else plane
        want[hit] |= np.int32(target)
    np.testing.assert_array_equal(subtract.grow_planes(mask, size, grown), want)
    into = mask | np.int32(MaskPlane.INTRP)
    out = subtract.grow_planes(mask, size, grown, out=into)
    assert out is into
    np.testing.assert_array_equal(out, want | np.int32(MaskPlane.INTRP))


@pytest.mark.parametrize("direction", ["template", "science"])
def test_the_difference_sky_level_is_taken_out_of_the_background(direction: str) -> None:
    """A kernel fit's background 5 counts off (0.16 of the science's pixel noise, 31; as
    a fit on a few stamps can be) is measured on the difference's sky, 150,000 pixels,
    and taken out: the level read is the offset, to within 4 of its standard errors
    (0.10 counts, from the scatter of its 32 px cells, which holds the noise's
    correlation), and the background comes back to the one corrected without the
    offset."""
    kwargs = {} if direction == "template" else {"sci_fwhm": 2.5, "tmpl_fwhm": 4.0}
    made = make_pair((512, 512), 300, seed=8, tmpl_noise_scale=1.0, **kwargs)  # type: ignore[arg-type]
    fit, products = run(made.science, made.template, mode="auto")
    assert fit.convolved == direction
    sources = sky.input_sources(made.science, made.template, sky.input_backgrounds(
        made.science, made.template, ScoreConfig().background_mesh))  # fmt: skip
    on_sky = sources.beyond_psfs(fit.science_psf.fwhm, fit.template_psf.fwhm)
    as_fitted = subtract.sky_corrected(products, on_sky)
    level = as_fitted.fit.sky_level
    assert level is not None and level.n_pixels > 100_000
    offset = 5.0 / subtract.science_scale(fit)
    shifted = dataclasses.replace(fit, solution=fit.solution.with_background_offset(offset))
    corrected = subtract.sky_corrected(dataclasses.replace(products, fit=shifted), on_sky)
    level = corrected.fit.sky_level
    assert level is not None and level.applied
    first = as_fitted.fit.sky_level.level
    assert level.level == pytest.approx(first - 5.0, abs=4 * level.error)
    # the same background wherever the fit's started
    assert corrected.background.mean() == pytest.approx(
        as_fitted.background.mean(), abs=4 * level.error
    )
    assert np.mean(corrected.difference_pixels()[on_sky]) == pytest.approx(0.0, abs=0.1)
