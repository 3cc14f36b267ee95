"""The Alard-Lupton kernel fit on synthetic pairs whose matching kernel is known."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from diffviewer.config import KernelConfig
from diffviewer.engine import (
    diagnostics,
    kernel,
    kernel_basis,
    kernel_direction,
    kernel_spatial,
    kernel_spread,
    kernel_stamps,
    psf,
    subtract,
)
from diffviewer.engine.kernel_design import Stamps, basis_spectra, convolve_stamps, stamp_design
from diffviewer.engine.kernel_outliers import (
    clip_mask,
    intrinsic_scatter,
    outliers,
    residual_power_outliers,
)
from diffviewer.engine.kernel_stamps import fit_chunk
from diffviewer.engine.pipeline import run_subtraction
from diffviewer.engine.progress import null_reporter
from diffviewer.errors import InsufficientKernelSources
from diffviewer.exposure import MaskPlane
from diffviewer.outputs import build_metadata
from diffviewer.stats import FWHM_PER_SIGMA, robust_std
from diffviewer.synthetic import SyntheticPair, make_pair, moffat_alpha, render_moffats
from tests.engine.helpers import fit_kernel_to
from tests.engine.kernel_stars import moffat_kernel_stars


def fit_pair(pair: SyntheticPair, **options: Any) -> kernel.KernelFit:
    """Select candidates, measure both PSFs and fit the kernel with ``KernelConfig(**options)``."""
    return fit_kernel_to(pair.science, pair.template, KernelConfig(**options))


def sampled_gaussian(size: int, sigma: float) -> np.ndarray:
    """The true matching kernel: a Gaussian sampled at pixel centres, sum 1.

    The stars are pixel-integrated Gaussians, i.e. samples of (Gaussian * pixel box);
    the discrete kernel mapping the template's samples onto the science's is then the
    sampled continuous kernel, up to aliasing, which at these widths is below 1e-3.
    """
    r = np.arange(size) - size // 2
    g = np.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2) / sigma**2)
    return g / g.sum()


def psf_of(fwhm: float) -> psf.PsfEstimate:
    """A measured-looking circular Gaussian PSF estimate of ``fwhm`` px."""
    return psf.PsfEstimate(fwhm, 0.0, psf.gaussian_image(fwhm, 12), 10, "measured")


def moffat_psf(fwhm: float, beta: float, half: int = 15) -> psf.PsfEstimate:
    """A measured-looking circular Moffat PSF estimate."""
    side = 2 * half + 1
    c = np.array([float(half)])
    image = render_moffats(
        (side, side), c, c, np.array([1.0]), np.array([fwhm]), beta, np.zeros(1), np.zeros(1), half
    )
    return psf.PsfEstimate(fwhm, 0.0, image, 10, "measured")


AUTO = KernelConfig(mode="auto")


def choose(
    config: KernelConfig, sci: psf.PsfEstimate, tmpl: psf.PsfEstimate, n_sci: float, n_tmpl: float
) -> tuple[kernel_direction.Direction, list[str]]:
    """:func:`kernel_direction.choose_direction` with a flux ratio of 1."""
    return kernel_direction.choose_direction(config, sci, tmpl, n_sci, n_tmpl, 1.0)


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.sum((a - b) ** 2) / np.sum(b**2)))


@pytest.fixture(scope="module")
def pair() -> SyntheticPair:
    return make_pair((768, 768), 1000, seed=0)


def test_basis_widths_and_normalisation() -> None:
    # A matching width of 1.59 px: the narrowest Gaussian (0.79 px) above min_sigma.
    sigmas, deconv = kernel_basis.basis_sigmas(2.5, 4.5, KernelConfig())
    match = np.sqrt(4.5**2 - 2.5**2) / FWHM_PER_SIGMA
    assert not deconv
    np.testing.assert_allclose(sigmas, [match / 2, match, match * 2], rtol=1e-12)
    size = kernel_basis.kernel_size(sigmas, KernelConfig())
    assert size % 2 == 1 and size == 2 * int(np.ceil(2.5 * 2 * match)) + 1
    basis = kernel_basis.make_basis(sigmas, (4, 2, 2), size)
    assert basis.shape == (15 + 6 + 6, size, size)
    assert basis[0].sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(basis[1:].sum(axis=(1, 2)), 0.0, atol=1e-10)
    rest = basis[1:].reshape(len(basis) - 1, -1)
    np.testing.assert_allclose(rest @ rest.T, np.eye(len(rest)), atol=1e-8)


@pytest.mark.parametrize("sigmas", [(0.5, 1.0, 2.0), (0.7, 1.4, 2.8), (1.0, 2.0, 4.0)])
def test_the_basis_keeps_the_same_functions_at_every_kernel_side(
    sigmas: tuple[float, ...],
) -> None:
    # HOTPANTS's degrees 6, 4, 2 on a Gaussian of 0.5 px: its high powers are numerically
    # dependent on the lower ones (the Gaussian spans 3 px). Judged by an absolute norm,
    # the polynomials' (x / half)^d scaling dropped more of them the wider the kernel
    # (47 functions at 11 px, 36 at 71); judged against each function's own norm, the
    # same 43 at every side, and all 49 where every Gaussian spans enough pixels.
    counts = {
        kernel_basis.make_basis(np.array(sigmas), (6, 4, 2), size).shape[0]
        for size in (11, 15, 21, 31, 51, 71)
    }
    assert counts == ({43} if sigmas[0] == 0.5 else {28 + 15 + 6})


def test_kernel_size_is_clamped() -> None:
    config = KernelConfig(min_size=11, max_size=21)
    assert kernel_basis.kernel_size(np.array([0.1]), config) == 11
    assert kernel_basis.kernel_size(np.array([20.0]), config) == 21


def test_the_fit_region_covers_where_the_model_of_a_star_reaches() -> None:
    # Issue 12's Moffat pair (science FWHM 4.0 beta 2.5 from a 2.8 px beta 3.5 template):
    # the wing makes the kernel 53 px wide; a 39 px region (4 FWHM of the broader PSF)
    # left the flux the kernel puts beyond it to the basis's extrapolation (the stamps'
    # sums 0.15 % lower on the noise-free pair: kernel_basis.wing_fit_half).
    sci, tmpl = moffat_psf(4.0, 2.5), moffat_psf(2.8, 3.5, half=12)
    plan = kernel_basis.plan_basis(tmpl, sci, KernelConfig(), kernel_basis.WING_MIN_STAMPS)
    assert plan.wing is not None and plan.size > 2 * 4 * 4.0
    assert plan.fit_half >= plan.size // 2 + np.ceil(tmpl.fwhm)
    # Without the wing (few stamps) the region stays at CORE_FIT_HALF_FWHM (the DECam demo
    # host's lobe grows with it).
    core = kernel_basis.plan_basis(tmpl, sci, KernelConfig(), 0)
    assert core.wing is None
    assert core.fit_half == np.ceil(kernel_basis.CORE_FIT_HALF_FWHM * 4.0)


def test_the_spread_carries_the_wing_the_target_has_and_the_source_lacks() -> None:
    # Issue 12's Moffat PSFs: the kernel from a 2.8 px beta 3.5 template onto a 4.0 px
    # beta 2.5 science. The wing's amplitude per unit sum the kernel between the true
    # PSF images gives on the basis with the wing function is 0.0313 (0.0311-0.0314 for
    # images 25-61 px wide); from the profiles fitted to them 0.0302 (0.0297 when the fit
    # sampled the profile at the pixels' centres): 10 % holds that and what the stacks'
    # noise adds.
    sci, tmpl = moffat_psf(4.0, 2.5), moffat_psf(2.8, 3.5)
    config = KernelConfig()
    sigmas = kernel_basis.basis_sigmas(tmpl.fwhm, sci.fwhm, config)[0]
    found = kernel_spread.wing_spread(tmpl, sci, sigmas, config, 99)
    assert found is not None
    assert found.wing.weight == pytest.approx(0.0313, rel=0.1)
    assert found.image.sum() == pytest.approx(1.0, abs=1e-12)
    assert found.image.shape[0] % 2 == 1 and found.image.shape[0] <= 99
    # Noise-free profiles fit exactly: their errors, and the sum's, are nil.
    assert found.sum_error < 1e-6
    # Capped at the size it may take.
    capped = kernel_spread.wing_spread(tmpl, sci, sigmas, config, 31)
    assert capped is not None and capped.image.shape == (31, 31)
    # No wing to add the other way, or with the wing switched off; nor where the
    # profiles' kernel puts no share, or more than all, of its flux in the wing: a
    # target as steep within the fits (4.0 px beta 3.0 onto 3.0 px beta 2.9, w -0.021)
    # and a deconvolution (3.0 px beta 4 onto 2.5 px beta 3.8, w 1.18, w sum(P) 10.3).
    assert kernel_spread.wing_spread(sci, tmpl, sigmas, config, 99) is None
    for src, tgt in (((4.0, 3.0), (3.0, 2.9)), ((3.0, 4.0), (2.5, 3.8))):
        src_psf, tgt_psf = moffat_psf(*src), moffat_psf(*tgt)
        widths = kernel_basis.basis_sigmas(src_psf.fwhm, tgt_psf.fwhm, config)[0]
        assert kernel_spread.wing_spread(src_psf, tgt_psf, widths, config, 99) is None
    off = dataclasses.replace(config, wing=False)
    assert kernel_spread.wing_spread(tmpl, sci, sigmas, off, 99) is None


@pytest.mark.parametrize(("fwhm", "beta"), [(4.0, 2.5), (2.8, 3.5), (2.5, 3.8)])
def test_the_wing_fit_recovers_a_pixel_integrated_moffat(fwhm: float, beta: float) -> None:
    # The synthetic pairs' stars are Moffats averaged over 3 x 3 sub-pixels of each pixel
    # (render_moffats), as a detector integrates them. A fit of the profile sampled at the
    # pixels' centres read them steep and wide (indices 2.58, 3.76 and 4.18 for these
    # three); the fit of the model averaged as the pixels are recovers both to the
    # optimiser's tolerance.
    psf_image = moffat_psf(fwhm, beta)
    fitted = kernel_basis.fit_wing(psf_image)
    assert fitted is not None
    wing, covariance = fitted
    assert np.all(np.sqrt(np.diag(covariance)) < 1e-4 * np.array([wing.alpha, wing.beta]))
    assert wing.beta == pytest.approx(beta, rel=1e-4)
    assert wing.alpha == pytest.approx(float(moffat_alpha(fwhm, beta)), rel=1e-4)
    # The profile the basis and the spread are made of reproduces the PSF image.
    model = kernel_spread.moffat_model(psf_image, wing).image
    assert np.max(np.abs(model - psf_image.image)) < 1e-6 * psf_image.image.max()


def test_deconvolution_is_flagged_and_auto_never_deconvolves() -> None:
    assert kernel_basis.basis_sigmas(4.0, 2.5, KernelConfig())[1]
    sharp, broad = psf_of(2.5), psf_of(4.0)
    direction, notes = choose(KernelConfig(mode="template"), sharp, broad, 10.0, 10.0)
    assert direction.convolved == "template" and "deconvolution" in notes[0]
    # Whichever image is sharper is convolved, whatever the noises.
    for noise_sci, noise_tmpl in ((10.0, 10.0), (10.0, 30.0), (30.0, 10.0)):
        assert choose(AUTO, broad, sharp, noise_sci, noise_tmpl)[0].convolved == "template"
        assert choose(AUTO, sharp, broad, noise_sci, noise_tmpl)[0].convolved == "science"


def test_auto_convolves_the_sharper_psf_image_when_the_fwhms_agree() -> None:
    # GOTO-like (issue 12): the measured FWHMs agree (3.85 px both), but the template's PSF
    # image is the science's smoothed by a 0.9 px Gaussian (as GOTO's template has the
    # broader wing), and the template is the noisier (sky 21.6 against 15.7). The kernel
    # onto the template smooths (norm < 1); the other way it deconvolves (norm > 1): the
    # science is convolved. Before, 'auto' compared FWHMs only and convolved the template.
    sci = moffat_psf(3.6, 4.0)
    smooth = ndimage.gaussian_filter(np.asarray(sci.image), 0.9)
    sci = dataclasses.replace(sci, fwhm=3.85)
    tmpl = dataclasses.replace(sci, image=smooth / smooth.sum())
    direction, notes = choose(AUTO, sci, tmpl, 15.7, 21.6)
    assert notes == [] and direction.convolved == "science" and direction.requested == "auto"
    norm_s = kernel_direction.kernel_norm(sci, tmpl, KernelConfig())
    norm_t = kernel_direction.kernel_norm(tmpl, sci, KernelConfig())
    assert norm_s < 0.9 and norm_t > 1.0
    assert direction.noise_science_convolved == pytest.approx(np.hypot(norm_s * 15.7, 21.6))
    assert direction.noise_template_convolved == pytest.approx(np.hypot(15.7, norm_t * 21.6))
    assert direction.noise_science_convolved < direction.noise_template_convolved
    assert "least noise" in direction.reason


def test_recovered_kernel_matches_the_truth(pair: SyntheticPair) -> None:
    fit = fit_pair(pair, spatial_order=0)
    k = fit.solution.evaluate(384.0, 384.0)
    # ~100 stars constrain the constant kernel; over seeds 0-2 the error is 0.9-1.6%.
    assert rel_l2(k, sampled_gaussian(k.shape[0], pair.kernel_sigma)) < 0.02
    # The default spatial model (order 2) has 6x the freedom, hence more noise: 1.4-2.2%.
    k2 = fit_pair(pair).solution.evaluate(384.0, 384.0)
    assert rel_l2(k2, sampled_gaussian(k2.shape[0], pair.kernel_sigma)) < 0.03
    # Kernel sum = flux ratio 1; the sum is fixed by >1e7 counts of star flux: 0.3% is 10 sigma.
    assert fit.photometric_scale == pytest.approx(1.0, abs=3e-3)
    assert fit.convolved == "template" and fit.warnings == ()


def test_photometric_scale_and_background_are_recovered() -> None:
    pair = make_pair((512, 512), 600, seed=3, photometric_scale=1.3, background_offset=25.0)
    fit = fit_pair(pair, spatial_order=0, background_order=0)
    assert fit.photometric_scale == pytest.approx(1.3, rel=3e-3)
    # Each stamp's background has an error ~ 32 / sqrt(17^2) ~ 2 counts; ~40 stamps: 0.3.
    assert float(fit.solution.background(256.0, 256.0)) == pytest.approx(25.0, abs=1.5)


def test_candidate_table_has_qa_and_controls_are_never_fitted(pair: SyntheticPair) -> None:
    fit = fit_pair(pair)
    tab = fit.candidates
    for col in ("status", "reason", "chi2", "kernel_sum", "resid_mean", "resid_std"):
        assert col in tab.colnames
    control = np.asarray(tab["control"])
    status = np.asarray(tab["status"]).astype(str)
    assert np.all(status[control] == "CONTROL") and np.all(status[~control] != "CONTROL")
    assert np.all(np.isnan(fit.own_coefficients[control]))
    good = status == "GOOD"
    assert good.sum() > 0.8 * (~control).sum()
    # Residuals normalised by the propagated variance have unit spread on a correct model.
    assert np.median(np.asarray(tab["resid_std"])[good]) == pytest.approx(1.0, abs=0.1)
    # (control stars whose wider wing-basis stamp leaves the image have none: NaN)
    assert np.nanmedian(np.asarray(tab["spatial_resid_std"])[control]) == pytest.approx(
        1.0, abs=0.1
    )
    assert np.all(np.asarray(tab["reason"])[good] == "")
    # A control star's held-out residual is its residual against the spatial model.
    for held, spatial in (
        ("held_out_mean", "spatial_resid_mean"),
        ("held_out_std", "spatial_resid_std"),
    ):
        np.testing.assert_array_equal(tab[held][control], tab[spatial][control])


def test_each_good_star_is_judged_by_the_fit_without_its_fold(pair: SyntheticPair) -> None:
    # A good star's own fit and the spatial model both saw it; the spatial fit made
    # without its tenth of the stars (the cross-validation's fold) did not, as the
    # spatial model did not see a control star.
    fit = fit_pair(pair)
    tab = fit.candidates
    status = np.asarray(tab["status"]).astype(str)
    good = status == "GOOD"
    held = {c: np.asarray(tab[f"held_out_{c}"]) for c in ("chi2", "mean", "std")}
    assert all(np.all(np.isfinite(v[good])) for v in held.values())
    assert all(np.all(np.isnan(v[status == "BAD"])) for v in held.values())
    # On a correct model the held-out residual has unit spread and no offset, as a
    # control star's has (measured over this pair's good stars: 1.00 and 0.00);
    # against the stars' own fits, which saw them, chi^2 is lower.
    assert np.median(held["std"][good]) == pytest.approx(1.0, abs=0.1)
    assert abs(np.median(held["mean"][good])) < 0.05
    assert np.median(held["chi2"][good]) > np.median(np.asarray(tab["chi2"])[good])
    diag = diagnostics.raw_residuals(
        pair.science,
        pair.template,
        fit,
        subtract.subtract_images(pair.science, pair.template, fit, null_reporter()).difference,
        null_reporter(),
    )
    # The runDebug panel of held-out stars shows the control stars' pixels and theirs.
    assert diag.control_by_difference.size > 100 * (good.sum() + np.sum(status == "CONTROL"))
    assert robust_std(diag.control_by_difference) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize(("stars", "judges"), [(40, 23), (120, 10)])
def test_few_stars_are_each_judged_by_the_fit_without_them_alone(stars: int, judges: int) -> None:
    # A constant kernel is the same at every star, so the stars judged by one fit share
    # it: 23 good stars (up to 30) are judged by 23 fits without each alone, where folds of
    # the ten would pair a bright star with a faint one; 33 good stars by the ten folds'.
    # Either way the held-out residual of a correct model has unit spread (measured
    # 1.003 and 1.009).
    pair = make_pair((384, 384), stars, seed=1 if stars == 40 else 3)
    fit = fit_pair(pair, spatial_order=0, background_order=0)
    good = np.asarray(fit.candidates["status"]) == "GOOD"
    held = fit.held_out_coefficients[good]
    assert len(np.unique(held[:, :-1], axis=0)) == judges
    assert (good.sum() <= kernel_spatial.LEAVE_ONE_OUT) == (judges == good.sum())
    spread = np.asarray(fit.candidates["held_out_std"])[good]
    assert np.median(spread) == pytest.approx(1.0, abs=0.05)


def test_kernel_solution_evaluates_anywhere(pair: SyntheticPair) -> None:
    sol = fit_pair(pair).solution
    k = sol.evaluate(10.0, 700.0)
    assert k.shape == (sol.size, sol.size)
    assert float(sol.kernel_sum(10.0, 700.0)) == pytest.approx(k.sum(), rel=1e-10)
    ksum = sol.kernel_sum_map(step=64)
    assert ksum.shape == (12, 12)
    # a flat photometric field: the held-out stars keep one photometric scale for the
    # whole image (kernel_sum_order chosen: 0)
    assert np.ptp(ksum) < 1e-6 and ksum[0, 0] == pytest.approx(1.0, abs=3e-3)
    bg = sol.background_image()
    assert bg.shape == pair.science.shape
    assert bg[700, 10] == pytest.approx(float(sol.background(10.0, 700.0)), abs=1e-3)
    assert "3 Gaussians" in sol.describe()


def test_too_few_stars_without_psfs_fall_back_to_a_delta_kernel() -> None:
    blank = make_pair((64, 64), 1, seed=1, flux_range=(1.0, 1.0))
    fit = fit_pair(blank)
    assert fit.science_psf.source == fit.template_psf.source == "default"
    assert any("delta" in w and "plain difference" in w for w in fit.warnings)
    k = fit.solution.evaluate(32.0, 32.0)
    c = k.shape[0] // 2
    # The basis's narrowest Gaussian (0.5 px for a fit to PSFs alone) fitted to map a PSF
    # onto itself: nearly all of the kernel is in the central pixel, and it sums to 1 (no
    # zero points).
    assert k.sum() == pytest.approx(1.0) and fit.photometric_scale == pytest.approx(1.0)
    assert k[c, c] > 0.9 and np.abs(k).sum() < 1.1


@pytest.mark.parametrize(("shared", "usable"), [(0, 0), (1, 64)])
def test_too_few_pixels_usable_on_both_images_raise_with_the_counts(
    shared: int, usable: int
) -> None:
    # Halves masked on each image, sharing no column (or one: 64 pixels, where a fuzz
    # campaign's 1 usable pixel ran on to ZOGY's "sky noise (0.0) is not positive").
    blank = make_pair((64, 64), 1, seed=1, flux_range=(1.0, 1.0))
    left = np.zeros((64, 64), dtype=blank.science.mask.dtype)
    right = left.copy()
    left[:, : 32 - shared] = right[:, 32:] = int(MaskPlane.NO_DATA)
    pair = dataclasses.replace(
        blank,
        science=blank.science.replace(mask=left),
        template=blank.template.replace(mask=right),
    )
    counts = f"science {2048 + 64 * shared}, template 2048"
    with pytest.raises(
        InsufficientKernelSources,
        match=rf"^{usable} pixels are usable on both .*\({counts} of 4096\), fewer than the 100",
    ):
        fit_pair(pair)


def test_too_few_stars_with_given_psfs_falls_back_to_the_psf_kernel() -> None:
    blank = make_pair((64, 64), 1, seed=1, flux_range=(1.0, 1.0))
    sci = blank.science.replace(psf=psf.gaussian_image(4.0, 12))
    tmpl = blank.template.replace(psf=psf.gaussian_image(2.5, 8))
    fit = fit_pair(dataclasses.replace(blank, science=sci, template=tmpl))
    assert fit.solution.spatial_order == 0 and fit.photometric_scale == pytest.approx(1.0)
    k = fit.solution.evaluate(32.0, 32.0)
    # The warning (metadata.json's) names the source and the kernel's size.
    side = k.shape[0]
    assert any(
        f"{side} x {side} px kernel is derived from the two PSF images" in w for w in fit.warnings
    )
    # Noise-free PSF images: only the basis' flexibility limits the match (measured 0.4%).
    assert rel_l2(k, sampled_gaussian(k.shape[0], blank.kernel_sigma)) < 0.02
    # Its sum (1: no zero points, no star) is set, not measured, and the metadata says so
    # (it read {mean 1.0, error None} as a fitted sum would).
    result = run_subtraction(sci, tmpl)
    assert not result.kernel.candidates["status"].tolist().count("GOOD")
    assert build_metadata(result)["kernel"]["kernel_sum"]["fitted"] is False


def test_stamp_half_width_covers_fit_region_and_kernel_in_either_direction() -> None:
    config = KernelConfig()
    sci, tmpl = psf_of(4.0), psf_of(2.5)
    half = kernel_basis.stamp_half_width(sci, tmpl, config)
    for src, tgt in ((tmpl, sci), (sci, tmpl)):
        plan = kernel_basis.plan_basis(src, tgt, config, 0)
        assert half >= plan.fit_half + plan.size // 2


def test_fallback_background_is_measured_on_sky_not_on_the_transient() -> None:
    """40 x 40 cutouts (no kernel stamp: the PSF-derived fallback) holding a bright
    transient of 20,000 counts, truth background 0, sky noise 10 counts per pixel.

    The background is the difference's level over sky pixels (>= 1 FWHM from every
    source: :func:`~diffviewer.engine.subtract.sky_corrected`), known to ~0.7 counts per
    cutout, so the mean of four is within 0.7 (2 sigma) of 0 (none is taken out on these
    seeds); the former median over every pixel was biased by the transient (+1.36)."""
    from diffviewer.engine.pipeline import run_subtraction

    levels = []
    for seed in range(4):
        pair = make_pair(
            (40, 40), 1, seed=seed, sci_fwhm=6.0, tmpl_fwhm=5.0, flux_range=(500.0, 500.0),
            sky=100.0, tmpl_sky=100.0, transients=[(19.5, 19.5, 20000.0)],
        )  # fmt: skip
        levels.append(
            float(run_subtraction(pair.science, pair.template).subtraction.background.mean())
        )
    assert abs(float(np.mean(levels))) < 0.7, levels


def _cutout_with_given_psfs(seed: int, offset: float) -> Any:
    """A 36 x 36 px cutout pair (science FWHM 8 px, template 5 px, both PSFs given, sky
    noise about 6 counts a pixel, no star) with a 2,000-count transient at its centre and
    ``offset`` counts added to the science, run through the engine."""
    from diffviewer.engine.pipeline import run_subtraction

    pair = make_pair(
        (36, 36), 1, seed=seed, sci_fwhm=8.0, tmpl_fwhm=5.0, flux_range=(1.0, 1.0), sky=30.0,
        tmpl_sky=30.0, transients=[(17.5, 17.5, 2000.0)], background_offset=offset,
    )  # fmt: skip
    return run_subtraction(
        dataclasses.replace(pair.science, psf=psf.gaussian_image(8.0, 16)),
        dataclasses.replace(pair.template, psf=psf.gaussian_image(5.0, 16)),
    )


def test_a_fallback_background_within_its_noise_is_not_subtracted() -> None:
    """The inputs agree on their sky (both background-subtracted, as survey cutouts are).

    The level over the cutout's 200-500 sky pixels is known to about 0.3-0.4 counts, which
    this PSF turns into 0.6-0.7 of the transient's flux error, and the catalog's errors do
    not hold it: subtracted on every cutout, the transient's flux pulls over 40 cutouts
    scattered by 1.23 of their errors; within 3 of its errors of none it is not, and they
    scatter by 0.97 (1.07 with the median of the fallback's own estimate, before the
    difference's sky level replaced it), where complete errors give 1 (a 40-draw scatter
    is itself uncertain by 0.11)."""
    pulls = []
    for seed in range(40):
        cat = _cutout_with_given_psfs(seed, 0.0).diasources
        cat = cat[~np.asarray(cat["sky_source"])]
        near = np.hypot(np.asarray(cat["x"]) - 17.5, np.asarray(cat["y"]) - 17.5) < 2
        assert near.sum() == 1
        pulls.append(float((cat["psf_flux"][near][0] - 2000.0) / cat["psf_flux_err"][near][0]))
    assert np.std(pulls) < 1.15


def test_a_significant_fallback_background_is_subtracted() -> None:
    """5 counts left on the science's sky, about 13 standard errors of its level: it is
    subtracted to within 1 count (3 standard errors at these cutouts' 200-500 sky pixels;
    4.4-5.4 here) on every cutout with at least
    :data:`~diffviewer.engine.sky.MIN_BACKGROUND_SKY` of them, 8 of these 10."""
    levels = [
        float(_cutout_with_given_psfs(seed, 5.0).subtraction.background.mean())
        for seed in range(10)
    ]
    subtracted = [level for level in levels if level != 0.0]
    assert len(subtracted) == 8
    assert np.allclose(subtracted, 5.0, atol=1.0), levels


def _moffat_image(fwhm: float, beta: float, half: int) -> np.ndarray:
    """A round Moffat PSF image of side ``2 * half + 1``, centred, sum 1."""
    centre = np.array([float(half)])
    one = np.ones(1)
    return render_moffats(
        (2 * half + 1,) * 2, centre, centre, one, np.array([fwhm]), beta, 0 * one, 0 * one, half
    )


def _cutout_with_host(seed: int, below: float, flux: float = 5e4) -> Any:
    """A 30 px cutout without stars (science Moffat FWHM 9.5 px, beta 2.5; template 5 px,
    beta 3; both PSFs given, as Rubin's alert cutouts) holding a static source of ``flux``
    counts ``below`` px below the centre, run through the engine."""
    from diffviewer.engine.pipeline import run_subtraction

    n, centre = 30, 14.5
    pair = make_pair(
        (n, n), 1, seed=seed, sci_fwhm=9.5, tmpl_fwhm=5.0, flux_range=(1.0, 1.0), sky=100.0,
        tmpl_sky=100.0,
    )  # fmt: skip
    at, zero = np.array([centre]), np.zeros(1)
    exposures = []
    for exposure, (fwhm, beta) in ((pair.science, (9.5, 2.5)), (pair.template, (5.0, 3.0))):
        host = render_moffats(
            (n, n), at, at + below, np.array([flux]), np.array([fwhm]), beta, zero, zero, 25
        )
        exposures.append(
            dataclasses.replace(
                exposure,
                image=(exposure.image + host).astype(np.float32),
                psf=_moffat_image(fwhm, beta, 20),
            )
        )
    return run_subtraction(*exposures)


def _host_pull(seed: int) -> tuple[float, int]:
    """The difference's PSF flux at the centre of :func:`_cutout_with_host` (the source
    8 px below) over its error, and the kernel's side."""
    from diffviewer.engine.photometry import PsfModel, forced_psf_flux

    result = _cutout_with_host(seed, 8.0)
    diff = result.difference
    value, error = forced_psf_flux(
        diff.image.astype(float),
        diff.variance.astype(float),
        np.ones(diff.shape, dtype=bool),
        PsfModel(result.science.psf),
        14.5,
        14.5,
    )
    return value / error, result.kernel.solution.size


def test_a_cutout_narrower_than_twice_the_kernel_is_matched_with_the_whole_kernel() -> None:
    """The PSFs call for a 43 px kernel. Cut to 15 px (half the cutout) with its wing
    renormalised into its core, it moved the source's light: the centre's PSF flux read
    -12.0 of its errors on average over these 10 noise draws. The whole kernel leaves
    -1.6, of which about -0.75 is the PSF-derived kernel's own mismatch (the same source
    on an 80 px image, where nothing is cut, leaves -3.0 at 4x the flux). The bound, 3,
    is that mismatch plus five standard errors of the mean (0.44)."""
    runs = [_host_pull(seed) for seed in range(10)]
    assert all(size == 43 for _, size in runs)
    assert abs(float(np.mean([pull for pull, _ in runs]))) < 3.0


def test_a_source_cut_by_a_cutouts_edge_flags_what_it_could_move() -> None:
    """The same source on the cutout's bottom edge (14 px below the centre). The whole
    kernel reaches beyond the edge, where the source goes on and the convolution takes
    the median level: the centre's PSF flux read +4.7 of its errors on average over 6
    noise draws. Pixels whose PSF-filtered difference the source, mirrored beyond the
    edge, would move by a sigma are EDGE, the centre among them, and nothing is
    detected. A cutout of sky alone flags nothing beyond the footprint's border."""
    result = _cutout_with_host(0, 14.0)
    cut = result.subtraction.cut_by_edge
    assert cut is not None and cut[14, 14] and cut[22, 7:23].all()
    assert ((result.difference.mask & int(MaskPlane.EDGE)) != 0)[cut].all()
    assert len(result.diasources[~np.asarray(result.diasources["sky_source"])]) == 0
    blank = _cutout_with_host(0, 14.0, flux=0.0).subtraction.cut_by_edge
    assert blank is not None and not blank.any()


def test_stamp_outliers_judge_bright_stars_by_the_samples_scatter() -> None:
    # 180 faint stamps whose kernel sums scatter by their own errors (3 %), 20 bright ones
    # with 0.2 % errors and a 1 % intrinsic scatter (colour terms), one contaminated faint
    # stamp 20 % off. Bright stars are judged by the scatter added in quadrature (its
    # maximum-likelihood value, set by the precise values): none goes; the contaminated
    # one does. Each stamp judged by its formal error, times the sample's spread of those
    # scaled deviations, cut 6-11 of the 20 bright ones (seeds 0-4).
    rng = np.random.default_rng(0)
    err = np.r_[np.full(180, 0.03), np.full(20, 0.002), 0.03]
    values = 1.0 + err * rng.normal(size=err.size)
    values[180:200] += 0.01 * rng.normal(size=20)
    values[-1] = 1.2
    bad = outliers(values, err, np.ones((err.size, 1)), 3.0)
    assert bad[-1] and not bad[180:200].any()
    assert bad[:180].sum() <= 2
    assert intrinsic_scatter(values[180:200] - 1.0, err[180:200]) == pytest.approx(0.01, rel=0.5)


def test_residual_power_outliers_are_contamination_not_brightness() -> None:
    # PSF mismatch leaves a fraction of each star's power (0.1 % +- 0.05 %), so chi^2
    # grows with the star's S/N squared (here to 11 per dof); a transient leaves its own
    # power (2000: S/N 45) whatever the star. On the faintest star it is 20 % of the
    # star's power and is cut; on the brightest, 0.02 %: harmless to that kernel, kept.
    rng = np.random.default_rng(1)
    dof = np.full(60, 1000.0)
    power = np.exp(rng.uniform(np.log(1e4), np.log(1e7), 60))
    mismatch = 1e-3 * (1 + 0.5 * rng.normal(size=60)).clip(0.1)
    resid = dof + mismatch * power + np.sqrt(2 * dof) * rng.normal(size=60)
    faint, bright = int(np.argmin(power)), int(np.argmax(power))
    resid[[faint, bright]] += 2000.0
    bad = residual_power_outliers(resid / dof, dof, power, 5.0)
    assert bad[faint] and bad.sum() == 1
    # chi^2 alone, against the median and its spread, would have cut the bright ones
    chi2 = resid / dof
    spread = 1.4826 * np.median(np.abs(chi2 - np.median(chi2)))
    assert np.sum(chi2 > np.median(chi2) + 5 * spread) > 5


def test_stamp_outliers_leave_values_without_an_error_out_of_the_fit() -> None:
    # A degenerate stamp fit (its kernel-sum error computes to 0) cannot be judged: it is
    # never an outlier, and it never enters the clipped fit. Before, its infinite total
    # error (err = inf, plus the scatter) let it in on the second round, and the scatter's
    # likelihood divided inf by inf (a RuntimeWarning on properimage, science convolved).
    rng = np.random.default_rng(1)
    values = 1.0 + 0.01 * rng.normal(size=40)
    errors = np.full(40, 0.01)
    values[0], errors[0] = 5.0, 0.0
    values[1] = 1.2
    out = outliers(values, errors, np.ones((40, 1)), 3.0)
    assert out[1] and not out[0]
    assert out.sum() == 1


def test_clip_mask_masks_a_source_grown_by_a_fwhm_outside_the_core_only() -> None:
    # Stamps of unit white noise; every third holds a 60 sigma pixel off the star's core,
    # one holds it on the core. Its matched-filter S/N (Gaussian of the PSF's sigma, 1.7
    # px) is 20 and stays above 5 within 0.7 FWHM of it; grown by one FWHM (on the pixel
    # grid, a pixel's diagonal more), the mask stays within 2 FWHM of it, never in the core.
    half, fwhm, core = 20, 4.0, 6.0
    side = 2 * half + 1
    rng = np.random.default_rng(5)
    resid = rng.normal(size=(30, side, side)).astype(np.float32)
    resid[::3, 30, 10] += 60.0
    resid[1, half, half] += 60.0
    keep = clip_mask(resid.reshape(30, -1), half, core, fwhm).reshape(resid.shape)
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    in_core = np.hypot(yy, xx) <= core
    near_blob = np.hypot(yy + half - 30, xx + half - 10) <= 2.0 * fwhm
    for i in range(30):
        masked = ~keep[i]
        assert not masked[in_core].any()
        if i % 3 == 0:
            assert masked[30, 10] and masked[30, 10 + int(fwhm)]
            assert not masked[~near_blob].any()
        else:
            assert not masked.any()


def test_design_from_shared_basis_spectra_is_each_stamps_own_convolution() -> None:
    # The basis spectra are computed once for every batch of stamps: each stamp's design
    # must be the same bits as its convolution with the basis images themselves, whatever
    # batch it falls in (7 stamps of 21 px, kernels of 7 px, a 7 px fit region).
    rng = np.random.default_rng(3)
    basis = kernel_basis.make_basis(np.array([1.0, 2.0]), (2, 1), 7)
    source = rng.normal(size=(7, 21, 21)).astype(np.float32)
    half = 3
    npix = (2 * half + 1) ** 2
    stamps = Stamps(
        source,
        np.zeros((7, npix), np.float32),
        np.ones((7, npix), np.float32),
        np.ones_like(source),
        np.ones(7, dtype=bool),
        np.ones((7, npix), dtype=bool),
        half,
    )
    idx = np.array([6, 0, 3, 4])
    design = stamp_design(stamps, idx, basis_spectra(stamps, basis))
    nb = basis.shape[0]
    for row, i in enumerate(idx):
        own = convolve_stamps(source[i : i + 1], basis, half)[0].reshape(nb, npix).T
        assert np.array_equal(design[row, :, :nb], own)
    assert np.all(design[:, :, nb] == 1.0)


def _stamps_with_corner_sources(rows: list[int]) -> tuple[Any, Stamps, np.ndarray]:
    """The Moffat pair's stars, their stamps with a 100-sigma source in a corner of the fit
    region (outside the star's core) of the stamps at ``rows`` of the first twelve, and
    those twelve's indices."""
    stars = moffat_kernel_stars()
    stamps = stars.stamps()
    idx = np.nonzero(stamps.ok & ~stars.control)[0][:12]
    side, corner = 2 * stamps.fit_half + 1, stamps.fit_half // 3
    yy, xx = np.mgrid[:side, :side]
    blob = np.exp(-((xx - corner) ** 2 + (yy - corner) ** 2) / (2 * 1.5**2)).ravel()
    target = stamps.target.copy()
    hit = idx[rows]
    target[hit] += 100.0 * np.sqrt(stamps.var_target[hit]) * blob
    return stars, dataclasses.replace(stamps, target=target), idx


def test_stamps_refitted_after_clipping_are_fitted_as_alone() -> None:
    # Only the stamps whose mask changed are refitted in a clipping round: each stamp's fit
    # must be what it is when the stamp is fitted alone, whether it was clipped or not.
    # Three of twelve stamps (not the first three) get a source that is clipped.
    stars, stamps, idx = _stamps_with_corner_sources([4, 7, 10])
    spectra = basis_spectra(stamps, stars.basis)
    penalty = kernel_basis.roughness_penalty(stars.basis)

    def fit(which: np.ndarray) -> Any:
        design = stamp_design(stamps, which, spectra)
        return fit_chunk(stamps, which, design, stars.basis, penalty, stars.fwhm)

    together = fit(idx)
    clipped = ~together.used.all(axis=1)
    assert clipped[[4, 7, 10]].all() and not clipped.all()
    for row, i in enumerate(idx):
        alone = fit(np.array([i]))
        np.testing.assert_allclose(together.coef[row], alone.coef[0], rtol=1e-10, atol=0)
        assert np.array_equal(together.used[row], alone.used[0])


def test_a_stamps_figures_use_the_mask_its_last_fit_used(monkeypatch: Any) -> None:
    # With no clipping round left, the source found after the last fit is not masked: the
    # stamp's mask and residual figures must be those of the fit it keeps (they took the
    # newer mask when clipping had not converged), so the source shows in its chi^2.
    stars, stamps, idx = _stamps_with_corner_sources([0])
    design = stamp_design(stamps, idx[:1], basis_spectra(stamps, stars.basis))
    penalty = kernel_basis.roughness_penalty(stars.basis)
    clipped = fit_chunk(stamps, idx[:1], design, stars.basis, penalty, stars.fwhm)
    monkeypatch.setattr(kernel_stamps, "CLIP_ROUNDS", 0)
    unclipped = fit_chunk(stamps, idx[:1], design, stars.basis, penalty, stars.fwhm)
    assert not clipped.used.all() and unclipped.used.all()
    # chi^2 per degree of freedom ~1 once the source is clipped (1.03), ~20 with it in
    assert unclipped.chi2[0] > 10.0 * clipped.chi2[0]


def test_the_jackknife_of_a_mean_is_its_standard_error() -> None:
    # Leave-one-out replicates of a mean: sqrt((n - 1) / n * sum((t_i - t)^2)) is s / sqrt(n).
    values = np.random.default_rng(5).normal(10.0, 2.0, 30)
    replicates = np.array([np.delete(values, i).mean() for i in range(30)])
    expected = values.std(ddof=1) / np.sqrt(30)
    assert kernel_spatial.jackknife_error(replicates) == pytest.approx(expected, rel=1e-12)
    assert np.isnan(kernel_spatial.jackknife_error(replicates[:1]))


@pytest.mark.slow
def test_the_kernel_sums_jackknife_error_is_its_scatter_over_independent_pairs() -> None:
    # 24 pairs of 600 Gaussian stars (flux ratio 1.3), each its own stars and noise: the
    # mean kernel sum's jackknife error over the kernel stars' folds against the sums'
    # scatter over the pairs. Measured: scatter 0.00055, median error 0.00084 (1.5x; 0.86x
    # over seeds 12-39, whose scatter is 0.00096), pulls of mean -0.72 and std 0.84. The
    # scatter from 24 draws is known to 15 %; the error is asked to be it within a factor
    # of two, and the pulls' spread 0.5-1.6.
    sums, errors = [], []
    for seed in range(24):
        fit = fit_pair(
            make_pair((512, 512), 600, seed=seed, photometric_scale=1.3),
            spatial_order=0,
            background_order=0,
        )
        sums.append(fit.photometric_scale)
        errors.append(fit.kernel_sum_error)
    sums_a, errors_a = np.array(sums), np.array(errors)
    scatter = float(np.std(sums_a, ddof=1))
    assert 0.5 <= float(np.median(errors_a)) / scatter <= 2.0
    assert 0.5 <= float(np.std((sums_a - 1.3) / errors_a, ddof=1)) <= 1.6


def test_the_last_round_of_spatial_rejection_is_refitted(monkeypatch: pytest.MonkeyPatch) -> None:
    # Six bright stars brighten by half on the science image; with the stamps' own cuts
    # off (so that the spatial fit meets them), a round of spatial rejection that marked
    # one BAD ended the loop without a refit: the kernel held the stamp the table called
    # BAD (sum 1.0091 with one round against 1.0016 with three; truth 1). Each round is
    # now followed by a fit without what it rejected.
    from diffviewer.config import SubtractionConfig
    from diffviewer.engine.pipeline import run_subtraction

    monkeypatch.setattr(kernel_stamps, "_reject", lambda *args, **kwargs: None)
    base = make_pair((320, 320), n_stars=160, seed=5, sci_fwhm=4.0, tmpl_fwhm=2.5)
    brightened = np.argsort(-base.star_flux)[3:40:6]
    transients = [
        (float(base.star_x[i]), float(base.star_y[i]), 0.5 * float(base.star_flux[i]))
        for i in brightened
    ]
    pair = make_pair(
        (320, 320), n_stars=160, seed=5, sci_fwhm=4.0, tmpl_fwhm=2.5, transients=transients
    )
    sums = []
    for rounds in (1, 3):
        config = SubtractionConfig()
        fixed = dict(max_iterations=rounds, spatial_order=0, background_order=0, kernel_sum_order=0)
        config = dataclasses.replace(config, kernel=dataclasses.replace(config.kernel, **fixed))
        fit = run_subtraction(pair.science, pair.template, config).kernel
        reasons = np.asarray(fit.candidates["reason"]).astype(str)
        assert np.sum(np.char.startswith(reasons, "spatial")) >= 1
        sums.append(fit.solution.kernel_sum(160.0, 160.0))
    assert sums[0] == pytest.approx(sums[1], abs=1e-6)
    assert sums[0] == pytest.approx(1.0, abs=0.003)


def test_the_stamps_own_backgrounds_have_the_differences_sign_in_the_fallback_too() -> None:
    # With the science convolved the stamps' own fits give the background in the
    # template-minus-science sense; only the spatial fit's branch turned it round, so a
    # fallback kernel (too few stamps for kernel.min_stamps) left the own-kernel residuals
    # of the diagnostics off by twice the background (1.75 sigma on average here).
    from diffviewer.config import SubtractionConfig
    from diffviewer.engine.pipeline import run_subtraction

    pair = make_pair(
        (256, 256),
        n_stars=120,
        seed=1,
        photometric_scale=1.3,
        background_offset=20,
        sci_fwhm=2.5,
        tmpl_fwhm=4.0,
    )
    for min_stamps in (3, 1000):
        config = SubtractionConfig()
        config = dataclasses.replace(
            config, kernel=dataclasses.replace(config.kernel, min_stamps=min_stamps)
        )
        result = run_subtraction(pair.science, pair.template, config)
        fit = result.kernel
        assert fit.convolved == "science"
        own = np.asarray(fit.own_coefficients)
        finite = np.all(np.isfinite(own), axis=1)
        # 20 science counts: about 15 in the template's, whose scale the own fits keep
        assert np.median(own[finite, -1]) == pytest.approx(20.0 / 1.3, rel=0.1)
        by_difference, _ = diagnostics._own_residuals(pair.science, pair.template, fit)
        assert abs(float(np.mean(by_difference))) < 0.1


@pytest.mark.parametrize(("sci_fwhm", "tmpl_fwhm"), [(2.5, 4.0), (4.0, 2.5)])
def test_a_fallback_kernel_without_zero_points_takes_the_stars_flux_ratio(
    sci_fwhm: float, tmpl_fwhm: float
) -> None:
    # Without zero points the PSF-derived kernel's sum was 1, leaving every star with 30 %
    # of its flux at a flux ratio of 1.3; the stars' aperture fluxes give it, once each
    # PSF's share of the aperture is taken out (the raw ratio was 1.43: the aperture
    # holds 91 % of the broader PSF). Within 2 %: the candidates' median ratio over some
    # twenty stars of S/N 50-500 and the PSFs measured from them.
    from diffviewer.config import SubtractionConfig
    from diffviewer.engine.pipeline import run_subtraction

    pair = make_pair(
        (256, 256),
        n_stars=120,
        seed=1,
        photometric_scale=1.3,
        sci_fwhm=sci_fwhm,
        tmpl_fwhm=tmpl_fwhm,
    )
    assert pair.science.zero_point is None and pair.template.zero_point is None
    config = SubtractionConfig()
    config = dataclasses.replace(config, kernel=dataclasses.replace(config.kernel, min_stamps=1000))
    fit = run_subtraction(pair.science, pair.template, config).kernel
    truth = 1.3 if fit.convolved == "template" else 1 / 1.3
    assert fit.solution.kernel_sum(128.0, 128.0) == pytest.approx(truth, rel=0.02)
    assert any("from the kernel stars' aperture fluxes" in note for note in fit.warnings)


def test_the_wing_fits_stated_errors_are_its_scatter_over_noise_draws() -> None:
    # A Moffat PSF image of index 2.5 (FWHM 4 px, sum 1, peak 0.037) with independent
    # noise of 2e-4 a pixel (0.5 % of the peak, as a stack of some 15 stars). Over 40
    # draws the fitted indices scatter as the fit's covariance says: their standard
    # deviation over the median stated error is 1 within the 11 % a 40-draw deviation is
    # known to, and 0.75-1.33 holds it at 2.6 of those.
    truth = moffat_psf(4.0, 2.5)
    rng = np.random.default_rng(7)
    betas, errors = [], []
    for _ in range(40):
        noisy = dataclasses.replace(
            truth, image=truth.image + rng.normal(0, 2e-4, truth.image.shape)
        )
        fitted = kernel_basis.fit_wing(noisy)
        assert fitted is not None
        betas.append(fitted[0].beta)
        errors.append(float(np.sqrt(fitted[1][1, 1])))
    ratio = float(np.std(betas, ddof=1) / np.median(errors))
    print(
        f"\nindex {np.mean(betas):.3f} +- {np.std(betas, ddof=1):.3f}, "
        f"stated {np.median(errors):.3f}"
    )
    assert 0.75 < ratio < 1.33
    assert abs(np.mean(betas) - 2.5) < 3 * np.median(errors) / np.sqrt(40)


def test_the_wing_fits_errors_hold_noise_correlated_between_pixels() -> None:
    # A stack's pixels are not independent (its stars recentred by Fourier shifts and
    # medianed). The same Moffat PSF image with noise averaged over 3 x 3 boxes (the
    # same 2e-4 a pixel): taken as independent, the fit stated errors 2.7 times too
    # small over 40 draws; with the residuals' autocovariance in the fit's covariance
    # (kernel_basis.correlated_covariance), the scatter over 100 draws (known to 7 %) is
    # their median, 0.75-1.33 holding it at 3.5 of those. White noise keeps its errors
    # (the test above).
    truth = moffat_psf(4.0, 2.5)
    rng = np.random.default_rng(7)
    betas, errors = [], []
    for _ in range(100):
        noise = ndimage.uniform_filter(rng.normal(0, 6e-4, truth.image.shape), 3, mode="wrap")
        fitted = kernel_basis.fit_wing(dataclasses.replace(truth, image=truth.image + noise))
        assert fitted is not None
        betas.append(fitted[0].beta)
        errors.append(float(np.sqrt(fitted[1][1, 1])))
    ratio = float(np.std(betas, ddof=1) / np.median(errors))
    print(f"\ncorrelated noise: scatter over stated error {ratio:.2f}")
    assert 0.75 < ratio < 1.33


def test_correlated_covariance_is_the_usual_one_for_independent_residuals() -> None:
    # The sandwich never narrows the fit's covariance; on white residuals it is the usual
    # (J^T J)^-1 c(0) or a little wider (the autocovariances' own scatter).
    rng = np.random.default_rng(3)
    jac = rng.normal(size=(30, 30, 3))
    residuals = rng.normal(size=(30, 30))
    flat = jac.reshape(-1, 3)
    usual = np.linalg.inv(flat.T @ flat) * np.mean((residuals - residuals.mean()) ** 2)
    got = kernel_basis.correlated_covariance(jac, residuals)
    assert np.all(np.diag(got) >= np.diag(usual) * (1 - 1e-9))
    assert np.allclose(np.diag(got), np.diag(usual), rtol=0.3)


def test_profiles_moved_beyond_their_bounds_give_the_sums_error_or_none_not_a_crash() -> None:
    # A 300 px GOTO crop fitted its template's profile with index 1.86 +- 0.97: moved
    # back by its error, below the fit's bounds, its radius raised a math domain error
    # and the run failed. A move that leaves the bounds is taken the other way; with
    # neither way inside them, the error is NaN (the kernel's note says it is left out).
    sci, tmpl = moffat_psf(4.0, 2.5), moffat_psf(2.8, 3.5)
    config = KernelConfig()
    sigmas = kernel_basis.basis_sigmas(tmpl.fwhm, sci.fwhm, config)[0]
    source, target = kernel_basis.fit_wing(tmpl), kernel_basis.fit_wing(sci)
    assert source is not None and target is not None
    spread = kernel_spread.spread_of(tmpl, sci, (source[0], target[0]), sigmas, config, 99)
    assert spread is not None

    def error(beta_error: float) -> float:
        wide = np.diag([1e-6, beta_error**2])
        fits = (source, (target[0], wide))
        return kernel_spread.profile_sum_error(tmpl, sci, fits, sigmas, config, (99, spread[1]))

    # the target's index 2.5 +- 0.9: forward gives a spread (still below the source's 3.5)
    assert 0.0 < error(0.9) < 0.2
    # +- 1.7: forward is steeper than the source (no spread), back is 0.8, below the
    # bounds' 1.5 (before: a math domain error, an index below 1 having no radius)
    assert np.isnan(error(1.7))
    assert np.isnan(error(25.0))


@settings(max_examples=25, deadline=None)
@given(
    st.floats(1.6, 8.0),
    st.floats(1.55, 6.0),
    st.floats(1e-4, 3.0),
    st.floats(1e-4, 8.0),
    st.floats(1e-4, 3.0),
    st.floats(1e-4, 8.0),
)
def test_the_wing_profiles_sum_error_is_a_number_or_nan_for_any_fits(
    source_beta: float,
    target_beta: float,
    source_alpha_error: float,
    source_beta_error: float,
    target_alpha_error: float,
    target_beta_error: float,
) -> None:
    # Any profiles the fits may give, with any errors, moved by them: the sum's relative
    # error is a number at least 0 or NaN (no move gave a spread), never an exception.
    sci, tmpl = moffat_psf(4.0, 2.5), moffat_psf(2.8, 3.5)
    config = KernelConfig()
    sigmas = kernel_basis.basis_sigmas(tmpl.fwhm, sci.fwhm, config)[0]
    source = kernel_basis.Wing(2.5, source_beta)
    target = kernel_basis.Wing(3.5, target_beta)
    spread = kernel_spread.spread_of(tmpl, sci, (source, target), sigmas, config, 99)
    assume(spread is not None)
    assert spread is not None
    fits = (
        (source, np.diag([source_alpha_error, source_beta_error]) ** 2),
        (target, np.diag([target_alpha_error, target_beta_error]) ** 2),
    )
    error = kernel_spread.profile_sum_error(tmpl, sci, fits, sigmas, config, (99, spread[1]))
    assert np.isnan(error) or error >= 0.0
