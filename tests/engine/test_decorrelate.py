"""Noise decorrelation (Reiss & Lupton 2016) of the difference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage
from scipy.signal import fftconvolve

from diffviewer.config import KernelConfig
from diffviewer.engine import decorrelate, kernel, renormalise, subtract
from diffviewer.engine.diagnostics import noise_ratio
from diffviewer.engine.photometry import PsfModel, forced_psf_flux
from diffviewer.engine.progress import null_reporter
from diffviewer.exposure import UNUSABLE, Exposure, MaskPlane
from diffviewer.synthetic import SyntheticPair, make_pair
from tests.engine.helpers import fit_kernel_to

Correlated = tuple[SyntheticPair, kernel.KernelFit, subtract.SubtractionProducts]


def lag1(diff: Exposure) -> tuple[float, float]:
    """Lag-1 autocorrelation of difference / sqrt(variance) along x and y, over sky pixels.

    Sky: |z| < 4 over the pixel's 9x9 neighbourhood (sources and their residuals excluded).
    """
    z = (diff.image / np.sqrt(diff.variance)).astype(np.float64)
    sky = ndimage.maximum_filter(np.abs(z), size=9) < 4.0
    sky[:20], sky[-20:], sky[:, :20], sky[:, -20:] = False, False, False, False
    a = np.where(sky, z - np.mean(z[sky]), 0.0)
    norm = np.sum(a * a)
    return float(np.sum(a[:, 1:] * a[:, :-1]) / norm), float(np.sum(a[1:] * a[:-1]) / norm)


#: The two directions' test pairs, each strongly correlated before decorrelation: the
#: noisier image is the sharper one, convolved by a wide kernel. The mirror pair convolves
#: the science (``auto``: the template's PSF is the broader) and its template holds 1/1.3
#: of the science's flux, so the difference must come out in science units: the
#: decorrelation's white level and flux conservation are checked in both conventions.
PAIRS = {
    "template": ({"sci_fwhm": 5.5, "tmpl_fwhm": 2.5, "tmpl_noise_scale": 5.0}, KernelConfig()),
    "science": (
        {"sci_fwhm": 2.5, "tmpl_fwhm": 5.5, "tmpl_noise_scale": 0.2, "photometric_scale": 1.3},
        KernelConfig(mode="auto"),
    ),
}


@pytest.fixture(scope="module", params=list(PAIRS))
def correlated(request: pytest.FixtureRequest) -> Correlated:
    """A pair whose raw difference is strongly correlated, with each image convolved."""
    arguments, config = PAIRS[request.param]
    pair = make_pair((512, 512), 250, seed=7, **arguments)  # type: ignore[arg-type]
    fit = fit_kernel_to(pair.science, pair.template, config)
    assert fit.convolved == request.param
    return pair, fit, subtract.subtract_images(pair.science, pair.template, fit, null_reporter())


def test_decorrelation_whitens_the_noise(correlated: Correlated) -> None:
    pair, fit, products = correlated
    before = lag1(products.difference)
    result = decorrelate.decorrelate(products, fit, pair.science, pair.template, null_reporter())
    after = lag1(result.difference)
    assert min(before) > 0.15  # the test pair is correlated to begin with (measured ~0.3)
    assert max(abs(v) for v in after) < 0.02


def test_variance_plane_matches_the_whitened_noise(correlated: Correlated) -> None:
    pair, fit, products = correlated
    result = decorrelate.decorrelate(products, fit, pair.science, pair.template, null_reporter())
    # The analytic variance (white level) alone describes the noise: no empirical help.
    assert noise_ratio(result.difference) == pytest.approx(1.0, abs=0.03)
    # The one empirical correction, measured on sky at PSF scale, then finds nothing to
    # correct (independent white noise; ~20 000 sky pixels give the scale to ~3 %).
    half = subtract.footprint_half_width(fit.solution.evaluate(255.5, 255.5))
    _, renorm, _ = renormalise.renormalise(
        result.difference, result.psf, pair.science, pair.template, half, null_reporter()
    )
    assert renorm.applied and not renorm.shared_noise
    assert renorm.noise_scale == pytest.approx(1.0, abs=0.08)
    assert renorm.warnings == ()


def with_difference_added(
    products: subtract.SubtractionProducts, signal: np.ndarray
) -> subtract.SubtractionProducts:
    """Products whose raw difference is theirs plus ``signal`` (science counts).

    The raw difference is made from the inputs when read, so the signal goes into the
    unconvolved image: added to the science, or taken from the template over the
    photometric scale (the difference is ``matched - scale * template - background``).
    """
    if products.fit.convolved == "template":
        sci = products.science
        return dataclasses.replace(products, science=sci.replace(image=sci.image + signal))
    tmpl = products.template
    scale = subtract.science_scale(products.fit)
    return dataclasses.replace(products, template=tmpl.replace(image=tmpl.image - signal / scale))


def test_decorrelation_preserves_point_source_flux(correlated: Correlated) -> None:
    pair, fit, products = correlated
    # Nine sources of flux 2e4 (PSF S/N ~ 60 each) with the difference's PSF, 25 px or
    # more from every star and 60 px from the edges.
    flux = 2e4
    grid = np.arange(60, 460, 40)
    gx, gy = (a.ravel() for a in np.meshgrid(grid, grid))
    dist = np.min(np.hypot(gx[:, None] - pair.star_x, gy[:, None] - pair.star_y), axis=1)
    gx, gy = gx[dist > 25][:9], gy[dist > 25][:9]
    assert len(gx) == 9
    deltas = np.zeros(products.difference.shape)
    deltas[gy, gx] = flux
    with_sources = with_difference_added(products, fftconvolve(deltas, products.psf, mode="same"))
    result = decorrelate.decorrelate(
        with_sources, fit, pair.science, pair.template, null_reporter()
    )
    assert result.kernel.sum() == pytest.approx(1.0, abs=1e-9)
    assert result.psf.sum() == pytest.approx(1.0, abs=1e-9)
    assert not result.difference.image.flags.writeable
    without = decorrelate.decorrelate(products, fit, pair.science, pair.template, null_reporter())
    diff = result.difference
    usable = diff.variance > 0
    model = PsfModel(result.psf)
    for x, y in zip(gx, gy, strict=True):
        f, err = forced_psf_flux(diff.image, diff.variance, usable, model, float(x), float(y))
        # Within its error of the injected flux (4 sigma: nine tries).
        assert abs(f - flux) < 4.0 * err
        # The filter is linear: with minus without the sources is the filtered sources
        # alone, noise-free, and the decorrelated PSF must give back their flux to
        # float32 rounding (1e-4; a phi(0) or PSF normalisation off by 1 % fails).
        f0, _ = forced_psf_flux(
            without.difference.image, diff.variance, usable, model, float(x), float(y)
        )
        assert f - f0 == pytest.approx(flux, rel=1e-4)


def test_decorrelation_kernel_of_a_delta_is_a_delta() -> None:
    delta = np.zeros((11, 11))
    delta[5, 5] = 1.0
    phi, factor = decorrelate.decorrelation_kernel(delta, 2.0, 3.0)
    expected = np.zeros_like(phi)
    expected[phi.shape[0] // 2, phi.shape[1] // 2] = 1.0
    np.testing.assert_allclose(phi, expected, atol=1e-12)
    assert factor == pytest.approx(1.0)


def test_sky_variance_leaves_the_sources_out(correlated: Correlated) -> None:
    pair = correlated[0]
    # The science variance is 1000 (sky) plus each star's own counts: 250 stars of mean
    # flux ~5e4 over 512^2 px lift the plain mean by ~5 %; the clipped mean is the sky's.
    plain = float(np.mean(pair.science.variance, dtype=np.float64))
    assert plain > 1030.0
    assert decorrelate.sky_variance(pair.science) == pytest.approx(1000.0, rel=0.005)


def test_clipped_mean_is_astropys_sigma_clipped_mean() -> None:
    from astropy.stats import sigma_clipped_stats

    rng = np.random.default_rng(5)
    # Sky variance with a tail of sources' Poisson variance and a few non-finite pixels.
    values = np.concatenate([rng.normal(1000.0, 30.0, 20_000), rng.exponential(3e3, 800)])
    values[::997] = np.nan
    for iterations in (1, 2, 5):
        mean = sigma_clipped_stats(values, sigma=3.0, maxiters=iterations, stdfunc="std")[0]
        assert decorrelate.clipped_mean(values, 3.0, iterations) == pytest.approx(mean, rel=1e-12)
    # float32 samples (a variance plane's) are clipped as their float64 values.
    single = values.astype(np.float32)
    mean = sigma_clipped_stats(single.astype(np.float64), sigma=3.0, maxiters=5, stdfunc="std")[0]
    assert decorrelate.clipped_mean(single, 3.0, 5) == pytest.approx(mean, rel=1e-12)
    assert np.isnan(decorrelate.clipped_mean(np.array([np.nan, np.inf]), 3.0, 5))


@pytest.mark.parametrize("plane", [MaskPlane.CR, MaskPlane.BAD, MaskPlane.SAT])
def test_a_defects_value_is_not_spread_by_the_whitening(
    correlated: Correlated, plane: MaskPlane
) -> None:
    # Cosmic rays of 5e4 counts on 0.1 % of the raw difference's pixels, masked: whitened
    # with the rest, each spread over the filter's footprint beyond its mask (on a
    # synthetic pair's whole run, 951 of 1051 detections lay beside them). Whitened as
    # the difference's expected value, 0, their neighbours differ from the clean
    # difference's by the filter's ring times the value left out (a sky pixel's): well
    # under the sky noise. The defects keep their own values.
    pair, fit, products = correlated
    raw = products.difference
    hit = np.random.default_rng(3).random(raw.shape) < 0.001
    defect = raw.replace(
        image=np.where(hit, np.float32(5e4), raw.image), mask=raw.mask | np.where(hit, plane, 0)
    )
    args = (products, fit, pair.science, pair.template, null_reporter())
    clean = decorrelate.decorrelate(*args, raw=raw).difference
    spoilt = decorrelate.decorrelate(*args, raw=defect).difference
    beside = ndimage.binary_dilation(hit, iterations=5) & ~hit & ((raw.mask & UNUSABLE) == 0)
    change = np.abs(spoilt.image - clean.image)[beside]
    sky_sigma = float(np.sqrt(np.median(clean.variance)))
    print(f"\nlargest change beside a defect: {change.max() / sky_sigma:.3f} sigma")
    assert change.max() < 0.3 * sky_sigma
    assert np.all(spoilt.image[hit] == np.float32(5e4))
