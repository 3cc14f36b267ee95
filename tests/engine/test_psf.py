"""PSF estimation by the fallback chain: stars, given, bright sources, header, default."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from diffviewer.engine import psf
from diffviewer.exposure import Exposure
from diffviewer.synthetic import make_pair, render_gaussians


def test_measured_psf_of_a_synthetic_pair() -> None:
    pair = make_pair((512, 512), 300, seed=2)
    bright = np.argsort(-pair.star_flux)[:60]
    for exposure, fwhm in ((pair.science, 4.0), (pair.template, 2.5)):
        est = psf.estimate_psf(exposure, pair.star_x[bright], pair.star_y[bright])
        assert est.source == "measured" and est.n_stars >= 50
        # Pixel-integrated Gaussians are broader than the Gaussian by the pixel's 1/12 px^2
        # of variance: FWHM 4.0 -> 4.03, 2.5 -> 2.55. Stacking noise is < 0.5%.
        expected = psf.FWHM_PER_SIGMA * np.sqrt((fwhm / psf.FWHM_PER_SIGMA) ** 2 + 1 / 12)
        assert est.fwhm == pytest.approx(expected, rel=0.01)
        assert est.ellipticity < 0.03
        img = est.image
        assert img.shape[0] % 2 == 1 and img.shape[0] == img.shape[1]
        assert img.sum() == pytest.approx(1.0) and not img.flags.writeable
        cx, cy, _ = psf.adaptive_moments(img)
        c = img.shape[0] // 2
        assert abs(cx - c) < 0.05 and abs(cy - c) < 0.05


def test_elliptical_psf_shape() -> None:
    rng = np.random.default_rng(0)
    ny = nx = 200
    yy, xx = np.mgrid[0:ny, 0:nx]
    image = np.zeros((ny, nx))
    xs, ys = rng.uniform(20, 180, 12), rng.uniform(20, 180, 12)
    for x, y in zip(xs, ys, strict=True):
        image += 1e4 * np.exp(-0.5 * (((xx - x) / 2.0) ** 2 + ((yy - y) / 1.5) ** 2))
    exposure = Exposure(
        image + rng.normal(size=(ny, nx)), np.ones((ny, nx)), np.zeros((ny, nx), int)
    )
    est = psf.estimate_psf(exposure, xs, ys)
    # b/a = 1.5/2 -> ellipticity 0.25; equal-area FWHM 2.3548 sqrt(2 * 1.5) = 4.08 px
    assert est.ellipticity == pytest.approx(0.25, abs=0.02)
    assert est.fwhm == pytest.approx(psf.FWHM_PER_SIGMA * np.sqrt(3.0), rel=0.02)


def test_given_psf_is_used_when_stars_are_too_few() -> None:
    pair = make_pair((64, 64), 1, seed=1, flux_range=(1.0, 1.0))
    given = pair.science.replace(psf=psf.gaussian_image(5.0, 15))
    est = psf.estimate_psf(given, np.array([10.0]), np.array([10.0]))
    assert est.source == "given" and est.fwhm == pytest.approx(5.0, rel=0.01)


def test_default_psf_when_nothing_is_known() -> None:
    pair = make_pair((64, 64), 1, seed=1, flux_range=(1.0, 1.0))
    est = psf.estimate_psf(pair.science, np.zeros(0), np.zeros(0))
    assert est.source == "default" and est.n_stars == 0
    assert est.fwhm == pytest.approx(psf.DEFAULT_FWHM, rel=0.01)


def _one_star(fwhm: float) -> Exposure:
    """A 63 x 63 cutout (an alert's size) with one bright Gaussian star at (30.3, 25.6)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:63, 0:63]
    s = fwhm / psf.FWHM_PER_SIGMA
    star = 1e4 * np.exp(-0.5 * ((xx - 30.3) ** 2 + (yy - 25.6) ** 2) / s**2) / (2 * np.pi * s**2)
    return Exposure(
        star + rng.normal(size=star.shape), np.ones(star.shape), np.zeros(star.shape, int)
    )


def test_one_bright_source_gives_the_psf_when_kernel_stars_are_too_few() -> None:
    image = _one_star(2.8).image.copy()
    image[45, 12] += 5e3  # a cosmic ray, brighter than the star: narrower than any PSF
    exposure = _one_star(2.8).replace(image=image)
    bright = (np.array([12.0, 30.0]), np.array([45.0, 26.0]))
    est = psf.estimate_psf(exposure, np.zeros(0), np.zeros(0), bright=bright)
    assert est.source == "bright sources" and est.n_stars == 1
    # A ~1000-sigma star: the stack is the star itself (pixel sampling adds < 1 %).
    assert est.fwhm == pytest.approx(2.8, rel=0.03)
    # Without the bright list the chain goes on to the default.
    assert psf.estimate_psf(exposure, np.zeros(0), np.zeros(0)).source == "default"


def test_header_fwhm_when_no_source_is_usable() -> None:
    blank = _one_star(2.0).replace(image=np.zeros((63, 63)))
    nothing = np.zeros(0)
    est = psf.estimate_psf(blank.replace(header=fits.Header({"FWHM": 4.2})), nothing, nothing)
    assert est.source == "header" and est.fwhm == pytest.approx(4.2)
    # SEEING is in arcsec: 1.2" at 0.3"/px is 4 px (only with a celestial WCS).
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cdelt = [-0.3 / 3600, 0.3 / 3600]
    seeing = blank.replace(header=fits.Header({"SEEING": 1.2}), wcs=wcs)
    assert psf.estimate_psf(seeing, nothing, nothing).fwhm == pytest.approx(4.0)
    # Implausible values are ignored.
    zero = blank.replace(header=fits.Header({"FWHM": 0.0}))
    assert psf.estimate_psf(zero, nothing, nothing).source == "default"


def test_sharp_psfs_are_measured_without_collapsing() -> None:
    # Moments of a PSF sampled by ~2 pixels collapse onto the central pixel unless the
    # image is interpolated onto a finer grid (a point-sampled 1.5 px Gaussian gives 1.47).
    for fwhm in (1.5, 2.0):
        given = _one_star(3.0).replace(psf=psf.gaussian_image(fwhm, 8))
        est = psf.estimate_psf(given, np.zeros(0), np.zeros(0))
        assert est.source == "given" and est.fwhm == pytest.approx(fwhm, rel=0.03)


def test_cutouts_flag_and_fill_the_outside() -> None:
    image = np.arange(25.0).reshape(5, 5)
    stamps, inside = psf.cutouts(image, np.array([2, 0]), np.array([2, 4]), 1, fill=-1.0)
    np.testing.assert_array_equal(stamps[0], image[1:4, 1:4])
    assert inside.tolist() == [True, False]
    np.testing.assert_array_equal(stamps[1], [[-1, 15, 16], [-1, 20, 21], [-1, -1, -1]])


def test_given_psf_images_become_odd_squares_with_the_same_centre() -> None:
    rect = psf.gaussian_image(4.0, 10)[:, 1:-1]  # 21 x 19, centre (9, 10)
    rect = np.pad(rect, ((0, 0), (3, 3)))[1:-1]  # 19 x 25, centre (9, 12)
    sq = psf.odd_square(rect)
    assert sq.shape == (25, 25)
    cx, cy, _ = psf.adaptive_moments(sq / sq.sum())
    assert cx == pytest.approx(12.0, abs=1e-6) and cy == pytest.approx(12.0, abs=1e-6)
    assert psf.odd_square(np.ones((4, 6))).shape == (7, 7)


def test_neighbours_in_the_cutouts_do_not_bias_the_stack() -> None:
    # Ten stars of 2e4 counts, every other one with a neighbour three times brighter 9 px
    # away (inside the 12 px cutout), as the bright-source fallback may pick. Normalised by
    # the whole cutout and centred by a wide weight, the stack came out 12 % too broad.
    rng = np.random.default_rng(1)
    shape, n, sigma = (300, 300), 10, 4.0 / psf.FWHM_PER_SIGMA
    xs = 30 + 60 * (np.arange(n) % 4) + rng.uniform(-0.5, 0.5, n)
    ys = 40 + 70 * (np.arange(n) // 4) + rng.uniform(-0.5, 0.5, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    pick = np.arange(n) % 2 == 0
    bx, by = xs[pick] + 9 * np.cos(angle[pick]), ys[pick] + 9 * np.sin(angle[pick])
    image = render_gaussians(
        shape,
        np.r_[xs, bx],
        np.r_[ys, by],
        np.r_[np.full(n, 2e4), np.full(pick.sum(), 6e4)],
        np.full(n + pick.sum(), sigma),
        20,
    )
    exposure = Exposure(
        image + rng.normal(size=shape) * 10.0,
        np.full(shape, 100.0),
        np.zeros(shape, dtype=np.int32),
    )
    est = psf.estimate_psf(exposure, xs, ys)
    assert est.source == "measured" and est.n_stars == n
    # Pixel-integrated Gaussian: FWHM 4.06 px. Ten stars of S/N ~ 500: 2 % (measured 0.3 %).
    expected = psf.FWHM_PER_SIGMA * np.sqrt(sigma**2 + 1 / 12)
    assert est.fwhm == pytest.approx(expected, rel=0.02)
