"""Warping the template onto the science grid, and the coverage check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats
from photutils.centroids import centroid_com, centroid_sources
from reproject import reproject_interp
from scipy import ndimage

from diffviewer.config import WarpConfig
from diffviewer.engine import peaks, resample, warp, warp_map
from diffviewer.engine.progress import CancelToken, Reporter
from diffviewer.engine.register_fit import PolynomialTransform
from diffviewer.engine.warp import warp_template
from diffviewer.engine.warp_map import pixel_map, wcs_mapping
from diffviewer.errors import Cancelled, InputError, NoWorkFound
from diffviewer.exposure import Exposure, MaskPlane
from diffviewer.io import read_exposure
from diffviewer.synthetic import SyntheticPair, make_pair
from tests.conftest import data_path

NO_DATA, BAD = int(MaskPlane.NO_DATA), int(MaskPlane.BAD)
CP = "legacypipe/testcase3/decam/CP/V4.8.2a/"
BASS = "legacypipe/mzlsbass3/"


def _isolated_bright(pair: SyntheticPair, margin: float = 12.0) -> np.ndarray:
    """Stars brighter than 5e4 counts with no other star within 10 px, away from the edges."""
    x, y = pair.star_x, pair.star_y
    ny, nx = pair.science.shape
    d = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(d, np.inf)
    return (
        (d.min(axis=1) > 10)
        & (pair.star_flux > 5e4)
        & (x > margin)
        & (x < nx - 1 - margin)
        & (y > margin)
        & (y < ny - 1 - margin)
    )


def _centroid_errors(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    cx, cy = centroid_sources(
        np.asarray(image, dtype=float), x, y, box_size=11, centroid_func=centroid_com
    )
    return np.hypot(cx - x, cy - y)


@pytest.fixture(scope="module")
def rotated_pair() -> SyntheticPair:
    return make_pair((256, 256), 150, seed=3, tmpl_rotation_deg=3.0, tmpl_shift=(4.3, -2.7))


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_stars_land_on_science_positions(rotated_pair: SyntheticPair, interpolation: str) -> None:
    # Bright isolated stars (S/N > 300): the centre of light in an 11 px box has a noise
    # error of ~0.005 px, and interpolation preserves it for a shift; 0.05 px is the
    # requirement. Nearest-neighbour resampling misses it (errors up to ~0.4 px).
    pair = rotated_pair
    result = warp_template(pair.template, pair.science, WarpConfig(interpolation=interpolation))
    assert result.warped
    assert result.max_offset > 4.0  # the 4.3 px shift plus rotation
    stars = _isolated_bright(pair)
    assert stars.sum() >= 8
    x, y = pair.star_x[stars], pair.star_y[stars]
    assert _centroid_errors(result.exposure.image, x, y).max() < 0.05
    assert _centroid_errors(pair.template.image, x, y).min() > 1.0  # before warping
    assert result.exposure.wcs is pair.science.wcs
    assert result.exposure.image.dtype == np.float32 and np.isfinite(result.exposure.image).all()


def test_uncovered_pixels_and_mask_planes(rotated_pair: SyntheticPair) -> None:
    pair = rotated_pair
    mask = np.zeros(pair.template.shape, np.int32)
    mask[100, 120] = BAD
    template = pair.template.replace(mask=mask)
    result = warp_template(template, pair.science, WarpConfig())
    warped_mask = result.exposure.mask
    # NO_DATA exactly where the science pixel's sky falls off the template.
    tx, ty, _ = pixel_map(wcs_mapping(pair.science.wcs, template.wcs), pair.science.shape)
    outside = (tx < -0.5) | (tx > 255.5) | (ty < -0.5) | (ty > 255.5)
    np.testing.assert_array_equal((warped_mask & NO_DATA) != 0, outside)
    assert result.coverage == pytest.approx(1 - outside.mean())
    assert 0.9 < result.coverage < 0.99
    assert result.exposure.image[outside].max() == 0.0
    # The BAD pixel marks the science pixels whose bilinear kernel touches it (1 to 4).
    bad = np.argwhere(warped_mask & BAD)
    assert 1 <= len(bad) <= 4
    d = np.hypot(tx[bad[:, 0], bad[:, 1]] - 120, ty[bad[:, 0], bad[:, 1]] - 100)
    assert d.max() < np.sqrt(2)


def _wiggle(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A shift plus a 0.05 px ripple of 20 px period: no coarse grid can follow it."""
    return x + 3.2 + 0.05 * np.sin(2 * np.pi * np.asarray(x) / 20.0), y - 1.7


@pytest.mark.parametrize(
    ("mapping", "how"),
    [
        (PolynomialTransform.rotation(2.0, (3.3, -1.2), (150.0, 100.0)), "affine"),
        # 2e-4 x^2 bends the map by 4 px over 150 px: no affine fit, a cubic spline is exact
        (
            PolynomialTransform(2, np.array([[1.0, 1.0, 0.0, 2e-4, 0.0, 0.0], [0, 0, 1, 0, 0, 0]])),
            "spline",
        ),
        (_wiggle, "exact"),
    ],
)
def test_pixel_map_takes_the_cheapest_path_that_is_exact_enough(mapping, how: str) -> None:
    # Each path must reproduce the mapping at every pixel to COARSE_TOLERANCE (1e-3 px);
    # the exact path reports its progress per block of rows.
    shape = (200, 300)
    reports: list[float] = []
    tx, ty, found = pixel_map(mapping, shape, Reporter(callback=lambda s, f: reports.append(f)))
    assert found == how
    ex, ey = mapping(*np.meshgrid(np.arange(300.0), np.arange(200.0)))
    assert np.hypot(tx - ex, ty - ey).max() <= warp_map.COARSE_TOLERANCE
    assert (reports[-1] == pytest.approx(1.0)) if how == "exact" else not reports


def test_template_psf_orientation_is_flagged(rotated_pair: SyntheticPair) -> None:
    psf = np.outer([1.0, 4.0, 1.0], [1.0, 4.0, 1.0])
    template = rotated_pair.template.replace(psf=psf)
    result = warp_template(template, rotated_pair.science, WarpConfig())
    assert any("PSF image" in note for note in result.warnings)
    np.testing.assert_array_equal(result.exposure.psf, template.psf)


def test_template_elsewhere_on_the_sky_covers_nothing_and_says_how_far() -> None:
    pair = make_pair((64, 64), 10, seed=1)
    far = pair.template.wcs.deepcopy()
    far.wcs.crval = [10.0, -60.0]
    far.wcs.set()
    with pytest.raises(NoWorkFound, match=r"covers 0\.0%") as raised:
        warp_template(pair.template.replace(wcs=far), pair.science, WarpConfig())
    # astropy's own separation of the two centres, as the message gives it
    apart = pair.science.wcs.pixel_to_world(31.5, 31.5).separation(far.pixel_to_world(31.5, 31.5))
    assert f"template's centre lies {apart.deg:.3g} deg from the science image's" in str(
        raised.value
    )


def test_a_template_off_the_sciences_projection_raises_no_library_warning() -> None:
    # The demo's science (TPV) against GOTO's template (TAN-SIP), 117 degrees apart:
    # astropy's inversion of the SIP distortion warned twice of an all-NaN slice, its
    # source lines printed before the one-line error.
    import warnings

    from diffviewer.io import demo_pair

    science = read_exposure(demo_pair()[0])
    template = read_exposure(data_path("goto/2.fits"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(NoWorkFound, match=r"covers 0\.0%.*lies 117 deg"):
            warp_template(template, science, WarpConfig())
    assert [str(w.message) for w in caught] == []


def test_equal_grids_skip_the_warp() -> None:
    pair = make_pair((64, 64), 10, seed=1)
    result = warp_template(pair.template, pair.science, WarpConfig())
    assert not result.warped and result.max_offset < 1e-6 and result.coverage == 1.0
    assert result.exposure.image is pair.template.image  # no resampling, no copy


@pytest.mark.parametrize(("shift", "kept"), [(0.0, True), (0.3, False)])
def test_the_templates_peaks_are_kept_for_its_own_pixels_only(shift: float, kept: bool) -> None:
    # The registration's template peaks serve the kernel candidates (their background
    # grid) only while the template on the science grid is the template as read.
    pair = make_pair((128, 128), 40, seed=2, tmpl_shift=(shift, 0.0))
    result = warp_template(pair.template, pair.science, WarpConfig())
    assert result.is_input is kept
    assert (result.template_peaks is not None) is kept
    if kept:
        expected, _ = peaks.coarse_background(result.exposure.image, result.exposure.good_pixels())
        np.testing.assert_array_equal(result.template_peaks.background, expected)


@pytest.mark.parametrize(("shift", "warped"), [(0.005, False), (0.02, True)])
def test_grid_tolerance(shift: float, warped: bool) -> None:
    pair = make_pair((64, 64), 10, seed=1, tmpl_shift=(shift, 0.0))
    result = warp_template(pair.template, pair.science, WarpConfig(grid_tolerance=0.01))
    assert result.warped is warped
    assert result.max_offset == pytest.approx(shift, abs=1e-6)


def test_low_coverage_stops_with_the_fraction() -> None:
    pair = make_pair((100, 100), 10, seed=1, tmpl_shift=(95.0, 0.0))
    expected = r"covers 5\.0% .*warp\.required_template_fraction = 0\.1"
    with pytest.raises(NoWorkFound, match=expected):
        warp_template(pair.template, pair.science, WarpConfig())
    result = warp_template(pair.template, pair.science, WarpConfig(required_template_fraction=0.01))
    assert result.coverage == pytest.approx(0.05)
    assert any("covers only 5.0%" in note for note in result.warnings)


def test_without_wcs_and_few_stars_the_images_must_be_aligned() -> None:
    # 10 stars on 64 x 64 px: too few to register on their patterns (6 needed on each
    # image, within the centroid box of the edges). Different shapes are refused with the
    # star counts; equal shapes are taken as one grid, and the result says so.
    pair = make_pair((64, 64), 10, seed=1)
    science = pair.science.replace(wcs=None)
    small = make_pair((60, 64), 4, seed=1).template
    with pytest.raises(InputError, match=r"stars were found on the science image.*register"):
        warp_template(small, science, WarpConfig())
    with pytest.raises(InputError, match=r"\(60, 64\).*\(64, 64\).*pre-aligned"):
        warp_template(small, science, WarpConfig(register="none"))
    result = warp_template(pair.template, science, WarpConfig(register="none"))
    assert not result.warped and math.isnan(result.max_offset) and result.exposure.wcs is None
    assert result.registration.method == "none" and not result.warnings


def test_cancel_stops_the_warp(rotated_pair: SyntheticPair) -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        warp_template(
            rotated_pair.template, rotated_pair.science, WarpConfig(), Reporter(token=token)
        )


def test_alert_triplet_is_already_aligned() -> None:
    path = data_path("rubin_triplets/rubin_169298432605814947.fits")
    science, template = read_exposure(f"{path}[SCI]"), read_exposure(f"{path}[TMPL]")
    result = warp_template(template, science, WarpConfig())
    assert not result.warped and result.coverage == 1.0
    np.testing.assert_array_equal(result.exposure.psf, template.psf)


def _source_centroid(image: np.ndarray, x: float, y: float) -> np.ndarray:
    _, median, _ = sigma_clipped_stats(image)
    cx, cy = centroid_sources(
        np.asarray(image, float) - median, [x], [y], box_size=9, centroid_func=centroid_com
    )
    return np.array([cx[0], cy[0]])


def test_real_source_lands_on_the_same_pixel_across_ccds() -> None:
    # One z band source (S/N ~ 45) seen on CCD N12 in 2014 and N11 in 2015: the grids
    # differ by up to 0.54 px over the cutout. After warping, its centre agrees to the
    # two WCS solutions' accuracy (~0.03 arcsec = 0.1 px each, so 0.15 px combined).
    science = read_exposure(data_path(CP + "CP20140818/c4d_140818_232043_ooi_z_ls9.N12.fits"))
    template = read_exposure(data_path(CP + "CP20150411/c4d_150412_073257_ooi_z_ls9.N11.fits"))
    result = warp_template(template, science, WarpConfig())
    assert result.warped and result.max_offset > 0.3
    here = _source_centroid(science.image, 21.0, 27.0)
    assert np.hypot(*(_source_centroid(result.exposure.image, 21.0, 27.0) - here)) < 0.15
    assert np.hypot(*(_source_centroid(template.image, 21.0, 27.0) - here)) > 0.3


@pytest.mark.parametrize(
    ("science", "template"),
    [
        (
            "90prime/CP20160202/ksb_160203_115029_ooi_r_v1-ccd2.fits",
            "90prime/CP20160202/ksb_160203_125658_ooi_r_v1-ccd2.fits",
        ),
        (
            "mosaic/CP20160312v2/k4m_160313_102424_ooi_zd_v2-ccd3.fits",
            "90prime/CP20160405/ksb_160406_094107_ooi_r_v1-ccd3.fits",
        ),
    ],
)
def test_real_warp_equals_reproject(science: str, template: str) -> None:
    # Two epochs of one 90Prime CCD, and 90Prime onto Mosaic3: our WCS mapping and
    # reproject_interp's give the same bilinear values (to float32 round-off) and the
    # same footprint, ours conserving flux where reproject keeps surface brightness:
    # times the template pixels per science pixel (0.9995 for the second pair).
    sci = read_exposure(data_path(BASS + science))
    tmpl = read_exposure(data_path(BASS + template))
    result = warp_template(tmpl, sci, WarpConfig())
    expected, footprint = reproject_interp(
        (np.asarray(tmpl.image), tmpl.wcs), sci.wcs, shape_out=sci.shape, order="bilinear"
    )
    area = warp_map.pixel_area(wcs_mapping(sci.wcs, tmpl.wcs), sci.shape)
    covered = footprint > 0
    np.testing.assert_array_equal((result.exposure.mask & NO_DATA) == 0, covered)
    np.testing.assert_allclose(
        result.exposure.image[covered],
        (expected * area)[covered],
        rtol=1e-6,
        atol=1e-5,
    )
    assert result.coverage == pytest.approx(covered.mean())
    assert 0.9 < result.coverage < 1.0


def _noise_template(variance: np.ndarray, seed: int) -> Exposure:
    """Pure Gaussian noise of the given variance plane, no WCS (warped through a mapping)."""
    image = np.random.default_rng(seed).normal(0.0, np.sqrt(variance))
    return Exposure(image, variance, np.zeros(variance.shape, np.int32), source="noise")


def _cubic_half_phase() -> float:
    """Sum of the squared weights of the cubic cardinal spline at phase 1/2 (0.7561), from
    its B-spline coefficients sqrt(3) (sqrt(3) - 2)^|k| and B3(1/2) = 23/48, B3(3/2) = 1/48."""
    k = np.arange(-40, 41)
    coefficients = np.sqrt(3) * (np.sqrt(3) - 2.0) ** np.abs(k)
    b3 = {0.5: 23 / 48, 1.5: 1 / 48}
    weights = [
        sum(c * b3.get(abs(m + 0.5 - j), 0.0) for c, j in zip(coefficients, k, strict=True))
        for m in range(-20, 21)
    ]
    return float(np.sum(np.square(weights)))


@pytest.mark.parametrize(
    ("interpolation", "shift", "ratio"),
    [
        # bilinear: weights (1/2, 1/2) per shifted axis, so sum w^2 = 1/2 per axis
        ("bilinear", (0.5, 0.0), 0.5),
        ("bilinear", (0.5, 0.5), 0.25),
        ("bicubic", (0.5, 0.0), None),  # the cubic cardinal spline: see _cubic_half_phase
    ],
)
def test_warped_variance_is_the_variance_of_the_warped_noise(
    interpolation: str, shift: tuple[float, float], ratio: float | None
) -> None:
    # White noise of variance 4 shifted by half a pixel: each warped pixel is a weighted
    # mean of its neighbours, of variance 4 sum w^2 (not 4, which interpolating the
    # variance gives). Over the N interior pixels the measured variance has a relative
    # error sqrt(2 (1 + 2 sum rho^2) / N) <= sqrt(6 / N) (neighbours correlated by
    # rho <= 0.5 along each shifted axis): 5 sigma of that is 5.0 % for N = 246^2.
    shape = (256, 256)
    template = _noise_template(np.full(shape, 4.0), seed=11)
    mapping = PolynomialTransform.rotation(0.0, shift, (127.5, 127.5))
    warped, factor = warp.warp_exposure(template, template, interpolation, mapping=mapping)
    inner = (slice(5, -5), slice(5, -5))
    propagated = warped.variance[inner].astype(np.float64)
    measured = float(np.var(warped.image[inner]))
    n = propagated.size
    assert propagated.std() < 1e-6 * propagated.mean()  # one phase: one variance
    assert measured == pytest.approx(propagated.mean(), rel=5 * np.sqrt(6 / n))
    assert factor == pytest.approx(4.0 / propagated.mean(), rel=1e-3)  # one pixel scale
    expected = _cubic_half_phase() if ratio is None else ratio
    assert propagated.mean() == pytest.approx(4.0 * expected, rel=3e-4)  # 3 taps each side


def test_warped_variance_follows_a_variance_that_changes_from_pixel_to_pixel() -> None:
    # Columns alternate variance 1 and 9, and the grid is rotated by 7 degrees and shifted,
    # so the sub-pixel phase runs through all values: the squared bicubic weights must give
    # each pixel its own variance. z = warped / sqrt(propagated) then has E[z^2] = 1 at
    # every pixel; interpolating the variance instead gives E[z^2] = 0.73. The mean of z^2
    # over N pixels has a standard error sqrt(2 (1 + sum rho^2) / N), with the correlations
    # of a 4 x 4 kernel summing to < 3: 5 sigma is 5 sqrt(8 / N) = 6.1 % for N ~ 231^2.
    shape = (256, 256)
    variance = np.where(np.arange(256) % 2 == 0, 1.0, 9.0)[None, :] * np.ones(shape)
    template = _noise_template(variance, seed=5)
    mapping = PolynomialTransform.rotation(7.0, (0.3, -0.4), (127.5, 127.5))
    warped, _ = warp.warp_exposure(template, template, "bicubic", mapping=mapping)
    good = warped.good_pixels()
    good[:8], good[-8:], good[:, :8], good[:, -8:] = False, False, False, False
    good = ndimage.binary_erosion(good, iterations=4)
    z2 = warped.image[good].astype(np.float64) ** 2 / warped.variance[good]
    assert np.mean(z2) == pytest.approx(1.0, abs=5 * np.sqrt(8 / good.sum()))
    # the propagated variance does follow the columns: odd-phase pixels see mostly 9s
    assert warped.variance[good].min() < 2.0 < 8.0 < warped.variance[good].max()


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_a_pure_shift_resamples_as_the_per_pixel_path_does(
    interpolation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A translation is resampled by separable shifts; the result must be the per-pixel
    # interpolation's to float64 round-off (the bilinear variance to its 2e-6 phase table),
    # template and science of different shapes, edges included.
    rng = np.random.default_rng(2)
    variance = rng.uniform(1.0, 9.0, (90, 110))
    template = Exposure(rng.normal(0.0, 3.0, (90, 110)), variance, np.zeros((90, 110), np.int32))
    template = template.replace(mask=np.where(variance > 8.9, BAD, 0).astype(np.int32))
    science = Exposure(np.zeros((100, 100)), np.ones((100, 100)), np.zeros((100, 100), np.int32))
    mapping = PolynomialTransform.rotation(0.0, (3.4, -2.7), (0.0, 0.0))
    fast, _ = warp.warp_exposure(template, science, interpolation, mapping=mapping)
    monkeypatch.setattr(resample, "TRANSLATION_TOLERANCE", -1.0)
    slow, _ = warp.warp_exposure(template, science, interpolation, mapping=mapping)
    np.testing.assert_allclose(fast.image, slow.image, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fast.variance, slow.variance, rtol=1e-5)
    np.testing.assert_array_equal(fast.mask, slow.mask)


def test_the_warped_templates_variance_is_its_noise_at_psf_scale() -> None:
    # Detection, decorrelation and the kernel fit sum the template over a PSF, where the
    # warped noise keeps its whole variance (the covariance factor undoes sum w^2): white
    # noise of variance 4 shifted by half a pixel, filtered by a Gaussian PSF (sigma 2 px),
    # has variance 4 sum(g^2) as the plane predicts; the per-pixel plane (2) predicts half.
    # The filtered image has about N / (4 pi sigma^2) independent values, N = 492^2: a
    # relative error of sqrt(2 / 4800) = 2 %, so 10 % is 5 sigma.
    template = _noise_template(np.full((512, 512), 4.0), seed=3)
    mapping = PolynomialTransform.rotation(0.0, (0.5, 0.0), (255.5, 255.5))
    resampled, factor = warp.warp_exposure(template, template, "bilinear", mapping=mapping)
    placed = warp.at_psf_scale(resampled, factor)
    inner = (slice(10, -10), slice(10, -10))
    assert placed.variance[inner].mean() == pytest.approx(4.0, rel=1e-3)
    sigma = 2.0
    filtered = ndimage.gaussian_filter(resampled.image.astype(np.float64), sigma)[inner]
    g2 = 1.0 / (4.0 * np.pi * sigma**2)  # sum of the squared normalised Gaussian
    assert float(np.var(filtered)) == pytest.approx(4.0 * g2, rel=0.10)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_a_template_of_another_pixel_scale_keeps_its_fluxes_and_its_noise_at_psf_scale(
    interpolation: str,
) -> None:
    # A 0.454"/px template onto a 0.262"/px science grid (a third of a template pixel per
    # science pixel, rotated by 10 degrees): interpolation keeps surface brightness, so
    # the star's flux came out 3.0 times its own and the kernel sum took the factor. The
    # warp conserves flux: the star's sum is its flux (to 1e-6 here; 1e-3 allowed). Its
    # noise, summed over a PSF, is what the variance plane says after the covariance
    # factor: white noise of variance 4 filtered by a Gaussian of sigma 4 science px,
    # whose variance over 230^2 px scatters by about 3 % from seed to seed (0.93-1.03 of
    # the prediction over seeds 8-10): 10 % is 3 sigma. The per-pixel plane alone
    # predicted a quarter (bicubic) to a seventh (bilinear) of it.
    scale = (0.262 / 0.454) ** 2  # template pixels per science pixel
    mapping = PolynomialTransform(
        1,
        np.sqrt(scale)
        * np.array(
            [[0.0, math.cos(0.1745), -math.sin(0.1745)], [0.0, math.sin(0.1745), math.cos(0.1745)]]
        )
        + np.array([[40.0, 0.0, 0.0], [20.0, 0.0, 0.0]]),
    )
    shape_t, shape_s = (200, 200), (256, 256)
    yy, xx = np.indices(shape_t)
    cx, cy = mapping(np.array(127.3), np.array(128.6))
    star = 1e5 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8.0) / (8.0 * np.pi)
    science = Exposure(np.zeros(shape_s), np.ones(shape_s), np.zeros(shape_s, np.int32))
    template = Exposure(star, np.full(shape_t, 4.0), np.zeros(shape_t, np.int32))
    warped, factor = warp.warp_exposure(template, science, interpolation, mapping=mapping)
    assert warp_map.pixel_area(mapping, shape_s) == pytest.approx(scale, rel=1e-9)
    assert float(warped.image.sum()) == pytest.approx(1e5, rel=1e-3)
    noise = _noise_template(np.full(shape_t, 4.0), seed=8)
    resampled, factor = warp.warp_exposure(noise, science, interpolation, mapping=mapping)
    placed = warp.at_psf_scale(resampled, factor)
    inner = (slice(13, -13), slice(13, -13))
    sigma = 4.0
    filtered = ndimage.gaussian_filter(resampled.image.astype(np.float64), sigma)[inner]
    g2 = 1.0 / (4.0 * np.pi * sigma**2)
    predicted = float(placed.variance[inner].mean()) * g2
    assert float(np.var(filtered)) == pytest.approx(predicted, rel=0.10)
    assert float(resampled.variance[inner].mean()) * g2 < 0.5 * float(np.var(filtered))


def test_a_distorted_mapping_gives_a_pixel_area_that_varies_over_the_image() -> None:
    # A quadratic map whose scale grows along x: the area plane follows the Jacobian's
    # determinant d(tx)/dx d(ty)/dy = (1 + 2 a x) (1) to the bilinear grid's error.
    a = 2e-4
    mapping = PolynomialTransform(
        2, np.array([[0.0, 1.0, 0.0, a, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    )
    area = warp_map.pixel_area(mapping, (100, 300))
    assert isinstance(area, np.ndarray) and area.shape == (100, 300)
    np.testing.assert_allclose(area[0], 1.0 + 2 * a * np.arange(300), rtol=1e-6)


@pytest.mark.parametrize("interpolation", ["biquadratic", "bicubic"])
def test_a_no_data_hole_does_not_leak_into_pixels_with_data(interpolation: str) -> None:
    # The reader sets NO_DATA pixels to 0; a spline's prefilter spread that step beyond
    # the one pixel the warped NO_DATA plane grows by (a 4 x 4 hole in a sky of 1000 with
    # noise 1 left pixels 34 sigma off beside it). Each pixel with data must be within a
    # sigma of the same warp of the image whose hole holds sky (measured 0.05 sigma).
    rng = np.random.default_rng(0)
    shape = (128, 128)
    sky = (1000.0 + rng.normal(0.0, 1.0, shape)).astype(np.float32)
    holed = sky.copy()
    holed[60:64, 60:64] = 0.0
    mask = np.zeros(shape, np.int32)
    mask[60:64, 60:64] = int(MaskPlane.NO_DATA)
    mapping = PolynomialTransform.rotation(3.0, (0.41, 0.37), (63.5, 63.5))
    template = Exposure(holed, np.ones(shape), mask)
    warped, _ = warp.warp_exposure(template, template, interpolation, mapping=mapping)
    clean, _ = warp.warp_exposure(
        Exposure(sky, np.ones(shape), np.zeros(shape, np.int32)),
        template,
        interpolation,
        mapping=mapping,
    )
    with_data = (warped.mask & int(MaskPlane.NO_DATA)) == 0
    assert (~with_data).sum() >= 16
    error = np.abs(warped.image - clean.image) / np.sqrt(warped.variance)
    assert float(error[with_data].max()) < 1.0
