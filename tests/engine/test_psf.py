"""PSF estimation by the fallback chain: given, stars (size-flux locus), bright sources, header."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from diffviewer.engine import psf, psf_stars
from diffviewer.exposure import Exposure, MaskPlane
from diffviewer.io import normalize_psf
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


def test_a_lone_stars_defect_in_its_wing_is_filled_from_its_ring() -> None:
    # One star with a bad pixel (masked, 5e3 counts) 7 px from its centre, outside its core:
    # no other star gives that pixel of the stack, which is the median of the stack's
    # pixels at its distance from the centre (a NaN there made the PSF NaN and a later
    # least-squares fit fail). The same PSF as without the defect, within 2 %.
    clean = _one_star(4.0)
    image, mask = clean.image.copy(), clean.mask.copy()
    image[26, 37], mask[26, 37] = 5e3, int(MaskPlane.BAD)
    bright = (np.array([30.0]), np.array([26.0]))
    nothing = np.zeros(0)
    est = psf.estimate_psf(clean.replace(image=image, mask=mask), nothing, nothing, bright=bright)
    ref = psf.estimate_psf(clean, nothing, nothing, bright=bright)
    assert est.source == ref.source == "bright sources"
    assert np.all(np.isfinite(est.image))
    np.testing.assert_allclose(est.image, ref.image, atol=0.02 * ref.image.max())


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
    # ... unless its comment names pixels (PTF's and LCO's SEEING, read as 15.6 px for
    # LCO's 4.35 px at 0.279"/px), and a FWHM card whose comment names arcsec is.
    for card, want in (
        (("SEEING", 4.35, "[pixels]"), 4.35),
        (("SEEING", 4.35, "[pix] Seeing FWHM"), 4.35),
        (("FWHM", 1.2, "[arcsec] PSF FWHM"), 4.0),
    ):
        header = fits.Header([card])
        est = psf.estimate_psf(blank.replace(header=header, wcs=wcs), nothing, nothing)
        assert est.source == "header" and est.fwhm == pytest.approx(want), card
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


def test_a_psf_the_file_provides_comes_first_unless_resampled() -> None:
    pair = make_pair((256, 256), 80, seed=2)
    given = pair.science.replace(psf=psf.gaussian_image(4.6, 12))
    xs, ys = pair.star_x, pair.star_y
    est = psf.estimate_psf(given, xs, ys)
    assert est.source == "given" and est.fwhm == pytest.approx(4.6, rel=0.01)
    assert "file provides" in est.reason
    # A warped exposure's PSF image is in its original grid: its stars come first.
    warped = psf.estimate_psf(given, xs, ys, resampled=True)
    assert warped.source == "measured" and warped.fwhm == pytest.approx(4.03, rel=0.02)


def test_metadata_says_which_psf_and_why() -> None:
    import json

    from diffviewer.engine.pipeline import run_subtraction
    from diffviewer.outputs import build_metadata

    pair = make_pair((256, 256), 120, seed=4)
    science = pair.science.replace(psf=psf.gaussian_image(4.0, 12))
    meta = json.loads(json.dumps(build_metadata(run_subtraction(science, pair.template))))
    sci, tmpl = meta["psf"]["science"], meta["psf"]["template"]
    assert sci["source"] == "given" and "file provides" in sci["reason"]
    assert tmpl["source"] == "measured" and tmpl["n_stars"] >= psf.MIN_STARS
    # The reason counts the kernel stars and how many lie on the size-flux locus.
    assert "kernel stars" in tmpl["reason"] and "on the size-flux locus" in tmpl["reason"]
    assert tmpl["fwhm_px"] == pytest.approx(2.55, rel=0.03)  # pixel-integrated 2.5 px


def _stars_and_galaxies(fwhm: float, seed: int) -> tuple[Exposure, np.ndarray, np.ndarray]:
    """A 400^2 field of 40 stars (PSF ``fwhm`` px) and 80 brighter galaxies (1.5-3 x wider).

    Returns the exposure and every source position, galaxies first (as a candidate list
    that does not know which is which would give them).
    """
    rng = np.random.default_rng(seed)
    n_star, n_gal = 40, 80
    xs, ys = rng.uniform(20, 380, (2, n_star + n_gal))
    sigma = np.full(n_star + n_gal, fwhm / psf.FWHM_PER_SIGMA)
    sigma[n_star:] *= rng.uniform(1.5, 3.0, n_gal)
    flux = np.r_[rng.uniform(5e3, 5e4, n_star), rng.uniform(2e4, 2e5, n_gal)]
    image = render_gaussians((400, 400), xs, ys, flux, sigma, 30)
    noise = rng.normal(size=image.shape) * 10.0
    exposure = Exposure(image + noise, np.full(image.shape, 100.0), np.zeros(image.shape, int))
    order = np.r_[np.arange(n_star, n_star + n_gal), np.arange(n_star)]
    return exposure, xs[order], ys[order]


@pytest.mark.parametrize("fwhm", [4.0, 2.2])
def test_the_size_flux_locus_holds_the_stars_not_the_galaxies(fwhm) -> None:
    # Issue 12: a stack of every candidate takes galaxies for stars (here it gives 8.44 px
    # for 4.0 px stars and 4.25 px for 2.2 px ones). Stars are the narrow band of the
    # size-flux plane; galaxies (twice as many and brighter) lie above it. 2.2 px is a
    # sharp, undersampled space-telescope PSF.
    exposure, xs, ys = _stars_and_galaxies(fwhm, seed=int(10 * fwhm))
    locus = psf_stars.select_stars(exposure, xs, ys)
    assert locus is not None
    stack, n, _, _ = psf.stack_stars(exposure, locus.x, locus.y, int(np.ceil(3 * fwhm)))
    measured = psf.shape_from_covariance(psf.adaptive_moments(stack)[2])[0]
    expected = psf.FWHM_PER_SIGMA * np.sqrt((fwhm / psf.FWHM_PER_SIGMA) ** 2 + 1 / 12)
    print(f"\nFWHM {fwhm}: locus {locus.fwhm:.3f}, stack of its {n} stars {measured:.3f} px")
    # Stars only: within 2 % of the pixel-integrated truth (the stack's noise is < 0.5 %,
    # as in test_measured_psf_of_a_synthetic_pair; one galaxy in it moves it more). The
    # moments of the 2.2 px stack are read on the raw pixels (no upsampling): 3 %.
    assert measured == pytest.approx(expected, rel=0.02 if fwhm > 3 else 0.03)
    assert locus.fwhm == pytest.approx(expected, rel=0.03)
    # Of the 40 stars, those on a galaxy's wings (a centroid pulled by more than 1.5 px,
    # or a size off the locus) are left out: at least half remain, and every galaxy
    # measured is counted as larger.
    assert 20 <= n <= 40 and locus.n_extended >= 40


def test_demo_stacks_report_the_locus_at_the_header_fwhm() -> None:
    # The DECam demo stacks (resources/demo): header FWHM 5.23 px (science) and 3.85 px
    # (template). The locus among the kernel stars and the brightest peaks is at 5.40
    # and 4.00 px: 3-4 % above the header's own estimator (adaptive moments of a profile
    # with wings read a little wider than a core fit), so 5 % is the tolerance; the
    # kernel-star stacks (6.43, 5.11 px) hold galaxies.
    from diffviewer.config import CandidatesConfig, KernelConfig
    from diffviewer.engine import candidates
    from diffviewer.engine.progress import null_reporter
    from diffviewer.io import read_exposure

    sci = read_exposure("resources/demo/science.fits")
    tmpl = read_exposure("resources/demo/template.fits")
    cands = candidates.select_candidates(
        sci, tmpl, CandidatesConfig(), null_reporter(), kernel_config=KernelConfig()
    )
    for exposure in (sci, tmpl):
        xy = np.r_[cands.table["x"], cands.bright[0]], np.r_[cands.table["y"], cands.bright[1]]
        locus = psf_stars.select_stars(exposure, *xy)
        header = float(exposure.header["FWHM"])
        assert locus is not None and len(locus.x) >= psf.MIN_STARS
        assert locus.fwhm == pytest.approx(header, rel=0.05)
        assert locus.n_extended >= 4
        est = psf.estimate_psf(exposure, cands.table["x"], cands.table["y"], bright=cands.bright)
        assert f"moment FWHM {locus.fwhm:.2f} px" in est.reason


@pytest.mark.parametrize("fwhm", [4.0, 2.2])
def test_the_psf_is_stacked_from_the_locus_not_the_galaxies(fwhm) -> None:
    # Issue 12 point 8: candidates given as kernel stars hold galaxies too (here twice as
    # many as the stars, brighter, listed first). The estimate stacks the stars of the
    # size-flux locus among them; stacking every candidate gave 8.44 px for 4.0 px stars
    # and 4.25 px for sharp, undersampled 2.2 px ones.
    exposure, xs, ys = _stars_and_galaxies(fwhm, seed=int(10 * fwhm))
    est = psf.estimate_psf(exposure, xs, ys)
    expected = psf.FWHM_PER_SIGMA * np.sqrt((fwhm / psf.FWHM_PER_SIGMA) ** 2 + 1 / 12)
    print(f"\nFWHM {fwhm}: estimate {est.fwhm:.3f} px from {est.n_stars} stars ({est.reason})")
    assert est.source == "measured" and "size-flux locus" in est.reason
    # As in the test above: stars only, 2 % (3 % for the 2.2 px PSF, whose moments are
    # read on the upsampled stack); one galaxy in the stack moves it by more.
    assert est.fwhm == pytest.approx(expected, rel=0.02 if fwhm > 3 else 0.03)
    assert 20 <= est.n_stars <= 40


def _varying_field(seed: int) -> tuple[Exposure, np.ndarray, np.ndarray, np.ndarray]:
    """A 600^2 field whose PSF FWHM grows from 3.0 px (left) to 4.5 px (right): 120 stars
    and 120 galaxies 1.4-2.5 x the local PSF, galaxies first. Also says which are stars."""
    rng = np.random.default_rng(seed)
    n_star, n_gal = 120, 120
    xs, ys = rng.uniform(25, 575, (2, n_star + n_gal))
    local = (3.0 + 1.5 * xs / 600.0) / psf.FWHM_PER_SIGMA
    sigma = local * np.r_[np.ones(n_star), rng.uniform(1.4, 2.5, n_gal)]
    flux = np.r_[rng.uniform(5e3, 5e4, n_star), rng.uniform(2e4, 2e5, n_gal)]
    image = render_gaussians((600, 600), xs, ys, flux, sigma, 30)
    image += rng.normal(size=image.shape) * 10.0
    exposure = Exposure(image, np.full(image.shape, 100.0), np.zeros(image.shape, int))
    order = np.r_[np.arange(n_star, n_star + n_gal), np.arange(n_star)]
    return exposure, xs[order], ys[order], order < n_star


def test_the_locus_follows_a_psf_that_varies_across_the_field() -> None:
    # A wide field's PSF varies: here by 50 % from left to right, so a galaxy on the left
    # (1.4-2.5 x its local PSF) is as large as a star on the right. One band for the field
    # (15 % wide) holds the stars of one part and takes galaxies for stars elsewhere; the
    # locus surface follows the PSF and keeps the stars of every part.
    exposure, xs, ys, is_star = _varying_field(seed=5)
    locus = psf_stars.select_stars(exposure, xs, ys)
    assert locus is not None
    print(f"\nvarying field: {locus.describe()}")
    picked = np.array(
        [np.min(np.hypot(locus.x - x, locus.y - y)) < 1.0 for x, y in zip(xs, ys, strict=True)]
    )
    # Stars lost: those on a galaxy's wings (as in the uniform field above, up to half of
    # them there with twice the density); galaxies taken: none or one whose size scatters
    # onto the locus at its position.
    for part in (xs < 200, (xs >= 200) & (xs < 400), xs >= 400):
        assert picked[is_star & part].mean() >= 0.6
    assert picked[~is_star].sum() <= 2
    # The surface spans the PSF's range at the stars (3.0-4.5 px, pixel-integrated).
    lo, hi = locus.fwhm_range
    assert lo == pytest.approx(3.15, rel=0.06) and hi == pytest.approx(4.45, rel=0.06)


def test_hot_pixels_are_compact_sources_not_the_stellar_locus() -> None:
    # Light in one pixel is unresolved at the moments' first pass, which kept its
    # starting weight (4 px^2: FWHM 4.71 px, a star's size) as if measured. Among 30
    # stars of FWHM 7 px, 16 hot pixels (one flux each, so they agreed to the bit) were
    # taken as the locus and the stars as galaxies, and the PSF was a single pixel.
    rng = np.random.default_rng(5)
    shape, fwhm = (512, 512), 7.0
    x, y = rng.uniform(45, 467, 30), rng.uniform(45, 467, 30)
    image = render_gaussians(
        shape, x, y, np.full(30, 1e5), np.full(30, fwhm / psf.FWHM_PER_SIGMA), 25
    )
    hx, hy = rng.integers(45, 467, 16), rng.integers(45, 467, 16)
    image[hy, hx] += rng.uniform(3000, 8000, 16)
    image += rng.normal(0.0, 5.0, shape)
    exposure = Exposure(
        image.astype(np.float32), np.full(shape, 25.0, np.float32), np.zeros(shape, np.int32)
    )
    assert (
        psf.shape_from_covariance(psf.adaptive_moments(np.pad([[1.0]], 12))[2])[0]
        < psf_stars.MIN_FWHM
    )
    xs, ys = np.r_[x, hx].astype(float), np.r_[y, hy].astype(float)
    locus = psf_stars.select_stars(exposure, xs, ys)
    assert locus is not None and locus.fwhm == pytest.approx(7.0, rel=0.03)
    assert locus.n_compact == 16
    assert not any(
        np.hypot(locus.x - a, locus.y - b).min() < 1 for a, b in zip(hx, hy, strict=True)
    )
    est = psf.estimate_psf(exposure, xs, ys)
    assert est.fwhm == pytest.approx(7.0, rel=0.03)


@pytest.mark.parametrize("centre", [15.5, 16.0, 15.0])
def test_an_even_psf_image_keeps_its_centre_on_the_odd_one(centre: float) -> None:
    # A 32 x 32 PSF image centred between its middle pixels (15.5) lost a row and a
    # column and stayed centred at 15.5 of a 31 x 31 image: half a pixel off each axis, a
    # forced flux 7 % low at FWHM 3 px. Centred on a pixel (16.0, FFT's convention, or
    # 15.0) it keeps that pixel as the centre.
    sigma = 3.0 / psf.FWHM_PER_SIGMA
    given = render_gaussians(
        (32, 32), np.array([centre]), np.array([centre]), np.ones(1), np.array([sigma]), 15
    )
    image = normalize_psf(given, "test")
    assert image.shape == (31, 31) and image.sum() == pytest.approx(1.0)
    cx, cy, _ = psf.adaptive_moments(image)
    assert cx == pytest.approx(15.0, abs=1e-3) and cy == pytest.approx(15.0, abs=1e-3)


def test_a_stack_for_fluxes_must_peak_at_its_centre() -> None:
    # A stack of clipped cores (no saturation level known) was noise: a pixel off its
    # centre it swung from -0.4 to 2 times the centre, the difference's PSF then swung
    # from row to row, and detection crashed on its autocorrelation (a fuzz draw). Such
    # a stack is not used for fluxes; a star's, even skewed by a pixel, is.
    r = np.arange(-7, 8)
    gauss = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 8.0)
    skewed = np.exp(-((r[:, None] - 1.0) ** 2 + r[None, :] ** 2) / 8.0)
    assert psf.peaked_at_centre(gauss) and psf.peaked_at_centre(skewed)
    striped = gauss.copy()
    striped[6::2] *= -0.4  # rows a pixel off the centre's, negative
    off = np.exp(-((r[:, None] - 3.0) ** 2 + r[None, :] ** 2) / 8.0)  # peak 3 px away
    assert not psf.peaked_at_centre(striped) and not psf.peaked_at_centre(off)
