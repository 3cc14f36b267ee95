"""Issue 12's kernel figures: the sum on wingy PSFs, transients in stamps, the direction.

Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from diffviewer.config import CandidatesConfig, KernelConfig, SubtractionConfig
from diffviewer.engine import kernel, pipeline, subtract
from diffviewer.engine.apertures import aperture_sums
from diffviewer.engine.kernel_star_sums import profiles
from diffviewer.engine.moments import cutouts
from diffviewer.engine.progress import null_reporter
from diffviewer.exposure import Exposure
from diffviewer.io import estimate_variance, read_exposure
from diffviewer.outputs import build_metadata
from diffviewer.synthetic import make_pair
from tests.conftest import data_path
from tests.engine.helpers import fit_kernel_to, select

#: Issue 12's Moffat conditions: a wingy science PSF (beta 2.5) matched from a steeper
#: template (beta 3.5), a sub-pixel shift; the true kernel sum is the photometric scale.
MOFFAT = {
    "profile": "moffat",
    "sci_beta": 2.5,
    "tmpl_beta": 3.5,
    "photometric_scale": 1.3,
    "tmpl_shift": (0.3, 0.3),
}


@pytest.mark.slow
def test_kernel_sum_of_wingy_psfs_is_the_flux_ratio() -> None:
    # Before: 1.249-1.250 (the 17 px kernel of Gaussians cut the wings; the stamps'
    # backgrounds took 7-8 counts of them). Then 1.2973-1.2986 over seeds 0-3 with the
    # Moffat wing function; 1.2973-1.3018 since the fit region covers the kernel's reach
    # (seed 1: 1.2972 -> 1.2989). The formal error of the sum is ~0.05 %; the limit is
    # issue 12's target, 0.3 %.
    pair = make_pair((768, 768), 800, seed=1, **MOFFAT)
    fit = fit_kernel_to(pair.science, pair.template)
    print(f"\nkernel sum {fit.photometric_scale:.4f} (true 1.3), {fit.solution.describe()}")
    assert fit.convolved == "template"
    assert fit.photometric_scale == pytest.approx(1.3, rel=3e-3)
    # The differential background is 0: its leak from the wings was 7-8 counts (sky 32),
    # now 0.1-0.3.
    assert abs(float(fit.solution.background(384.0, 384.0))) < 0.5


def test_few_stars_keep_the_wing_and_the_kernel_sum() -> None:
    # The same Moffat conditions on 300^2 with 25 stars: 8-16 good stamps, fewer than the
    # wing function needs (kernel_basis.WING_MIN_STAMPS). With the Gaussians alone the
    # sums were 1.2546-1.2731 over these eight draws, 7-21 times their stated errors
    # below the truth; with the wing fixed by the PSFs' profiles (kernel_spread) they are
    # 1.2897-1.3002, mean 1.2952 (-0.37 %), while the wing fit sampled the profile at the
    # pixels' centres (indices 2.54-2.72 where the truth is 2.5); with the profile as
    # pixels see it (kernel_basis.fit_wing) 1.2922-1.3023, mean 1.2974 (-0.20 %; with the
    # true profiles -0.08 %), pulls -4.2 to 0.5 while the sum's error left out the
    # profiles' fit errors; with them (kernel_spread.profile_sum_error) -3.1 to 0.5, the
    # rest the stacks' indices, 1.5 of their stated errors from the truth in rms while
    # the stacks' pixels were taken as independent, 1.34 with their residuals'
    # correlation in the errors (kernel_basis.correlated_covariance; pulls -3.0 to 0.5,
    # seeds 4 and 6 at -3.0 and -2.8, 2026-12-07). The bounds: no draw 3.5 of its errors off
    # (was 7-21, then 5.3, then 4.2), the mean within issue 12's 0.3 % (was 3.0 %, then
    # 0.37 %).
    sums, pulls = [], []
    for seed in range(8):
        pair = make_pair((300, 300), 25, seed=seed, **MOFFAT)
        fit = fit_kernel_to(pair.science, pair.template)
        assert fit.solution.wing is not None and fit.solution.wing.weight is not None
        assert any("fixed by the two PSFs" in w for w in fit.warnings)
        assert "fixed by the PSFs" in fit.solution.describe()
        assert fit.solution.size <= KernelConfig().max_size
        sums.append(fit.photometric_scale)
        pulls.append((fit.photometric_scale - 1.3) / fit.kernel_sum_error)
    print(f"\nkernel sums {np.round(sums, 4)}, pulls {np.round(pulls, 1)}")
    assert np.max(np.abs(pulls)) < 3.5
    assert np.mean(sums) == pytest.approx(1.3, rel=3e-3)
    assert any("holds the wing profiles'" in w for w in fit.warnings)
    # metadata.json says how the wing was set.
    result = pipeline.run_subtraction(pair.science, pair.template)
    wing = build_metadata(result)["kernel"]["wing"]
    assert wing["weight"] == result.kernel.solution.wing.weight and wing["weight"] > 0


@pytest.mark.slow
def test_a_variance_plane_from_the_image_itself_does_not_bias_the_kernel_sum() -> None:
    # The same pixels with the exact variance planes and with planes estimated from the
    # images (io.estimate_variance: sky plus each pixel's own counts over the gain, as
    # for files without a variance plane, e.g. bench_peers_science.py's). Inverse-variance
    # weights from the latter favour the pixels that fluctuated low: the sum came out
    # 0.0014 (seed 1) and 0.0012 (seed 2) below the exact-variance fit's. With the source
    # term of the variance taken from the first fit's model, +0.0001 and +0.0002. The
    # noise is the same in both fits, so the difference has no sampling error of its
    # own; 0.0006 is half the former bias.
    pair = make_pair((768, 768), 800, seed=1, **MOFFAT)
    exact = fit_kernel_to(pair.science, pair.template).photometric_scale
    own = [
        exposure.replace(
            variance=estimate_variance(exposure.image + 1000.0, exposure.mask, gain).astype(
                np.float32
            )
        )
        for exposure, gain in ((pair.science, 1.0), (pair.template, 4.0))
    ]
    estimated = fit_kernel_to(*own).photometric_scale
    print(f"\nkernel sum {estimated:.4f} with the images' own variance, {exact:.4f} exact")
    assert abs(estimated - exact) < 6e-4


@pytest.mark.slow
def test_transients_inside_kernel_stamps_leave_the_background_and_sum_alone() -> None:
    # 3000-count transients (matched-filter S/N ~15) 9 px from the 40 brightest stars:
    # inside their stamps, below the isolation and flux-ratio cuts of the selection.
    base = make_pair((768, 768), 800, seed=5, photometric_scale=1.3)
    bright = np.argsort(-base.star_flux)[:40]
    transients = [(base.star_x[i] + 7.0, base.star_y[i] + 6.0, 3000.0) for i in bright]
    pair = make_pair((768, 768), 800, seed=5, photometric_scale=1.3, transients=transients)
    fit = fit_kernel_to(pair.science, pair.template)
    tab = fit.candidates
    x, y = np.asarray(tab["x"]), np.asarray(tab["y"])
    near = (
        np.hypot(x[:, None] - pair.transient_x[None], y[:, None] - pair.transient_y[None]).min(
            axis=1
        )
        < 15
    )
    good = np.asarray(tab["status"]) == "GOOD"
    own_bg = fit.own_coefficients[:, -1]
    hit = near & good
    print(
        f"\n{hit.sum()} good stamps hold a transient: their background median "
        f"{np.median(own_bg[hit]):.2f} (others {np.median(own_bg[good & ~near]):.2f}); "
        f"spatial background {float(fit.solution.background(384.0, 384.0)):.2f}; "
        f"kernel sum {fit.photometric_scale:.4f}"
    )
    # Before: those stamps passed every cut with backgrounds of 5.9 counts (median), the
    # spatial background was 0.95 and the sum 1.3029. Each stamp's background error is
    # ~32 / 33 ~ 1 count, so the median of ~25 has ~0.25: 0.75 is 3 sigma.
    assert hit.sum() >= 10
    assert abs(np.median(own_bg[hit]) - np.median(own_bg[good & ~near])) < 0.75
    # ~60 stamps: the spatial background's error is ~0.15 at the centre.
    assert abs(float(fit.solution.background(384.0, 384.0))) < 0.5
    # The clean pair's sum is 1.2998 (the Gaussian pair's truth is 1.3).
    assert fit.photometric_scale == pytest.approx(1.3, rel=1.5e-3)


@pytest.mark.slow
def test_science_only_sources_near_kernel_stars_do_not_move_the_sum() -> None:
    # The science convolved (template broader, noisier), Moffat PSFs with the kernel's wing:
    # 3e5-count points (S/N ~500) 18 px from the 40 brightest stars, on the science only.
    # In the convolved image the kernel spreads such a point over its star's stamp (53 px
    # half-width), beyond the fit's clipping, which sees only the fit region's residual.
    # Before: the kernel sum came out 1.5 % above the one the same stamps give without the
    # points (1.0150 against 0.9998 of the truth; 0.9-2.1 % at 10-26 px). Now a star is not
    # fitted when its stamp on the convolved image holds a neighbour's light on that
    # image only as bright as the star or brighter, and the sum is the one the remaining
    # stamps give on the clean pair (1.0011 against 1.0010 of the truth, 21 good stamps;
    # the two pairs' noise differs only where the points add Poisson noise).
    kw = dict(MOFFAT, sci_fwhm=2.5, tmpl_fwhm=4.0, sci_beta=3.5, tmpl_beta=2.5)
    clean = make_pair((768, 768), 800, seed=5, tmpl_noise_scale=1.5, **kw)
    bright = np.argsort(-clean.star_flux)[:40]
    points = [(clean.star_x[i] + 14.4, clean.star_y[i] + 10.8, 3e5) for i in bright]
    pair = make_pair((768, 768), 800, seed=5, tmpl_noise_scale=1.5, transients=points, **kw)
    cands = select(pair.science, pair.template)
    fit = fit_kernel_to(pair.science, pair.template, cands=cands)
    assert fit.convolved == "science"
    tab = fit.candidates
    x, y = np.asarray(tab["x"]), np.asarray(tab["y"])
    good = np.asarray(tab["status"]) == "GOOD"
    reach = fit.fit_half + fit.solution.size // 2
    beside = np.any(
        (np.abs(x[:, None] - pair.transient_x[None]) <= reach)
        & (np.abs(y[:, None] - pair.transient_y[None]) <= reach),
        axis=1,
    )
    # The same stamps on the clean pair (the PSFs from its own bright stars).
    same = dataclasses.replace(cands, bright=select(clean.science, clean.template).bright)
    same_stamps = fit_kernel_to(clean.science, clean.template, cands=same)
    print(
        f"\nkernel sum {fit.photometric_scale / 1.3:.5f} of the truth with the points, "
        f"{same_stamps.photometric_scale / 1.3:.5f} with the same stamps without; "
        f"{good.sum()} good stamps"
    )
    assert fit.photometric_scale == pytest.approx(same_stamps.photometric_scale, rel=2e-3)
    assert np.sum(np.asarray(tab["reason"]) == "unmatched neighbour") >= 20
    # No star fainter than a point (a third of its flux: any aperture holds more than a
    # third of the point's) is fitted beside one.
    assert not np.any(good & beside & (np.asarray(tab["flux_sci"]) < 1e5))


def test_metadata_states_the_direction_and_why() -> None:
    pair = make_pair((256, 256), 150, seed=2, sci_fwhm=2.5, tmpl_fwhm=4.0)
    config = SubtractionConfig(kernel=KernelConfig(mode="auto"))
    result = pipeline.run_subtraction(pair.science, pair.template, config)
    direction = build_metadata(result)["kernel"]["direction"]
    # The science is the sharper: 'auto' convolves it, never deconvolves.
    assert result.kernel.convolved == "science" and direction["requested"] == "auto"
    assert "broader" in direction["why"] and "deconvolve" in direction["why"]
    assert direction["expected_noise_science_convolved"] > 0
    assert direction["expected_noise_template_convolved"] > 0


def bright_star_residual(fit, difference) -> tuple[float, float]:
    """Median and 90th percentile over the 50 brightest kernel stars of the difference's rms
    within 1.5 FWHM, over the local sky noise (robust sigma in a 20-40 px annulus)."""
    tab = fit.candidates
    order = np.argsort(-np.asarray(tab["snr"]))[:50]
    fwhm = max(fit.science_psf.fwhm, fit.template_psf.fwhm)
    r = int(np.ceil(1.5 * fwhm))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    core = np.hypot(dx, dy) <= 1.5 * fwhm
    ay, ax = np.mgrid[-40:41, -40:41]
    annulus = (np.hypot(ax, ay) >= 20) & (np.hypot(ax, ay) <= 40)
    img, good = difference.image.astype(float), difference.good_pixels()
    out = []
    for i in order:
        xi, yi = round(float(tab["x"][i])), round(float(tab["y"][i]))
        if not (40 <= xi < img.shape[1] - 40 and 40 <= yi < img.shape[0] - 40):
            continue
        ring = img[yi - 40 : yi + 41, xi - 40 : xi + 41][
            annulus & good[yi - 40 : yi + 41, xi - 40 : xi + 41]
        ]
        med = np.median(ring)
        sigma = 1.4826 * np.median(np.abs(ring - med))
        out.append(
            np.sqrt(np.mean((img[yi - r : yi + r + 1, xi - r : xi + r + 1][core] - med) ** 2))
            / sigma
        )
    return float(np.median(out)), float(np.percentile(out, 90))


@pytest.fixture(scope="module")
def goto_fits() -> dict[str, tuple[kernel.KernelFit, Exposure, Exposure]]:
    """GOTO's kernel fit, difference and target (the image not convolved) with
    ``kernel.mode`` auto and template."""
    science = read_exposure(data_path("goto/1.fits"))
    template = read_exposure(data_path("goto/2.fits"))
    out = {}
    for mode in ("auto", "template"):
        fit = fit_kernel_to(science, template, KernelConfig(mode=mode))
        products = subtract.subtract_images(science, template, fit, null_reporter())
        out[mode] = (fit, products.difference, fit.source_target(science, template)[1])
    return out


def filtered_fraction(
    difference: Exposure, target: Exposure, x: np.ndarray, y: np.ndarray, fwhm: float
) -> np.ndarray:
    """Each star's matched-filter flux on the difference over that on the target, with
    the profile of :func:`kernel_star_sums.profiles`."""
    half = 12
    prof = profiles(x, y, half, fwhm, np.ones((len(x), (2 * half + 1) ** 2), dtype=bool))
    xi, yi = np.rint(x).astype(np.intp), np.rint(y).astype(np.intp)
    on = [cutouts(np.asarray(e.image, float), xi, yi, half)[0] for e in (difference, target)]
    return np.sum(prof * on[0], axis=(1, 2)) / np.sum(prof * on[1], axis=(1, 2))


@pytest.mark.slow
def test_goto_auto_convolves_the_science_and_halves_the_bright_star_residual(
    goto_fits: dict[str, tuple[kernel.KernelFit, Exposure, Exposure]],
) -> None:
    auto, forced = (
        (fit, bright_star_residual(fit, difference))
        for fit, difference, _ in (goto_fits["auto"], goto_fits["template"])
    )
    print(
        f"\nGOTO: auto convolves the {auto[0].convolved} ({auto[0].direction.reason}); "
        f"bright-star residual median/p90 {auto[1][0]:.1f}/{auto[1][1]:.1f} against "
        f"{forced[1][0]:.1f}/{forced[1][1]:.1f} with the template convolved; kernel sums "
        f"{auto[0].photometric_scale:.4f} and {forced[0].photometric_scale:.4f}"
    )
    # HOTPANTS's figure of merit convolves the science here too (its kernel sum 1.0005).
    assert auto[0].convolved == "science"
    assert auto[0].direction.noise_science_convolved < auto[0].direction.noise_template_convolved
    # Measured 8.8/14.6 against 15.9/28.9 (HOTPANTS's difference: 7.0/11.4 by this measure).
    assert auto[1][0] < 0.7 * forced[1][0] and auto[1][1] < 0.7 * forced[1][1]
    # The brightest stars leave a few per cent of their flux (the coadds' flux ratio
    # drifts with brightness by 1-5 %): a cut on chi^2 alone, and kernel sums judged by
    # their formal errors alone, rejected 25 of the 50 brightest stamps (17 and 8) and
    # left 9.0 / 15.2 at them. Judged by the stamps' intrinsic scatter and by the
    # fraction of each star's power left in its residual, none is a contaminant: at most
    # a few of 50 may go by chance at these cuts.
    tab = auto[0].candidates
    brightest = np.argsort(-np.asarray(tab["snr"]))[:50]
    assert np.sum(np.asarray(tab["status"])[brightest] == "BAD") <= 5
    # Which stars are held out as controls moves the mean kernel sum (every 4th to 7th, or
    # none: photometric scales 0.9887-0.9912, each with the sum a plane over the image,
    # chosen by 2.4-3.8 standard errors); held constant, 0.9943-0.9976. How well the sum
    # follows the stars' own flux ratios is the next test's.
    science, template = (read_exposure(data_path(f"goto/{n}.fits")) for n in (1, 2))
    sums = [auto[0].photometric_scale] + [
        fit_kernel_to(
            science, template, KernelConfig(mode="auto"), CandidatesConfig(control_every=n)
        ).photometric_scale
        for n in (4, 6, 7, 0)
    ]
    print(f"GOTO kernel sums, controls every 5th, 4th, 6th, 7th, none: {np.round(sums, 4)}")
    assert max(sums) - min(sums) < 5e-3


def total_flux_ratios(
    science: Exposure, template: Exposure, x: np.ndarray, y: np.ndarray, fwhm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each star's template and science flux within 3.4 FWHM (exact apertures:
    :func:`apertures.aperture_sums`), less the median of an annulus 7-9.8 FWHM out (12
    and 25-35 px on GOTO): total fluxes, whatever either PSF's shape; NaN where the
    annulus leaves the image."""
    half = int(np.ceil(9.8 * fwhm))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    xi, yi = np.rint(x).astype(np.intp), np.rint(y).astype(np.intp)
    r = np.hypot(xx[None] - (x - xi)[:, None, None], yy[None] - (y - yi)[:, None, None])
    outer = (r >= 7.0 * fwhm) & (r < 9.8 * fwhm)
    ones = np.ones(science.shape)
    area, *_ = aperture_sums(ones, ones, ones > 0, x, y, 3.4 * fwhm)
    fluxes = []
    for exposure in (template, science):
        image = np.asarray(exposure.image, float)
        stamps = cutouts(image, xi, yi, half, fill=np.nan)[0]
        level = np.array([np.median(c[o]) for c, o in zip(stamps, outer, strict=True)])
        inner, *_ = aperture_sums(image, ones, ones > 0, x, y, 3.4 * fwhm)
        fluxes.append(inner - level * area)
    return fluxes[0], fluxes[1]


def ratio_by_thirds(
    flux_t: np.ndarray, flux_s: np.ndarray, y: np.ndarray, height: int
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The stars' template/science flux ratio (flux-weighted) in each third of the image's
    height, its bootstrap standard error (500 draws, seeded) and each third's stars."""
    rng = np.random.default_rng(0)
    ok = np.isfinite(flux_t) & np.isfinite(flux_s) & (flux_s > 0)
    members = [np.nonzero(ok & (y * 3 // height == k))[0] for k in range(3)]
    ratios, errors = [], []
    for m in members:
        ratios.append(flux_t[m].sum() / flux_s[m].sum())
        draws = (rng.choice(m, m.size) for _ in range(500))
        errors.append(np.std([flux_t[d].sum() / flux_s[d].sum() for d in draws]))
    return np.array(ratios), np.array(errors), members


@pytest.mark.slow
def test_goto_kernel_sum_follows_the_stars_total_flux_ratios(
    goto_fits: dict[str, tuple[kernel.KernelFit, Exposure, Exposure]],
) -> None:
    # GOTO's two coadds differ in transparency or flat field across the field: the kernel
    # stars' total fluxes give template/science 0.990 +- 0.005 on the lowest third of the
    # image, 1.008 +- 0.006 on the middle one and 1.024 +- 0.006 on the highest. A
    # constant sum (1.0057; HOTPANTS's 0.998) misses two of them by 3.2 and 2.9 of their
    # errors (chi^2 19.1 over the three thirds); the plane the held-out stars choose (2.8
    # standard errors better than a constant) reads 1.000, 1.012, 1.023 there (chi^2 4.9;
    # 7.8 is chi^2(3)'s 95 % point). Before, the sum was held constant.
    fit, _, _ = goto_fits["auto"]
    science, template = (read_exposure(data_path(f"goto/{n}.fits")) for n in (1, 2))
    constant = fit_kernel_to(science, template, KernelConfig(mode="auto", kernel_sum_order=0))
    tab = fit.candidates
    good = np.asarray(tab["status"]) == "GOOD"
    x, y = np.asarray(tab["x"])[good], np.asarray(tab["y"])[good]
    fwhm = max(fit.science_psf.fwhm, fit.template_psf.fwhm)
    stars, errors, members = ratio_by_thirds(
        *total_flux_ratios(science, template, x, y, fwhm), y, science.shape[0]
    )
    assert fit.convolved == "science"  # the sum is the template/science ratio
    chi2 = []
    for run in (fit, constant):
        sums = np.array([np.mean(run.solution.kernel_sum(x[m], y[m])) for m in members])
        chi2.append(float(np.sum(((sums - stars) / errors) ** 2)))
        print(f"\nkernel sum by thirds {np.round(sums, 4)}; chi^2 {chi2[-1]:.1f}")
    print(f"stars' total-flux ratios {np.round(stars, 4)} +- {np.round(errors, 4)}")
    assert fit.sum_order_choice is not None and fit.sum_order_choice.chosen == 1
    assert chi2[0] < 7.8 < chi2[1]


@pytest.mark.slow
def test_goto_star_kernel_sums_agree_with_the_solution_and_the_difference(
    goto_fits: dict[str, tuple[kernel.KernelFit, Exposure, Exposure]],
) -> None:
    # Each star's own kernel, fitted with its own background, traded its sum against it
    # through the convolved image's sky (516 counts; correlation -0.9999): the brightest
    # quarter's own sums sat 2.0 % above the solution's with the science convolved, 0.8 %
    # below it with the template. The star's flux ratio under the solution's kernel:
    # with the science convolved it is the solution's sum (measured -0.05 %), within
    # errors that hold (pulls rms 1.07; 1.30 for the own sums).
    fit, _, _ = goto_fits["auto"]
    tab = fit.candidates
    good = np.asarray(tab["status"]) == "GOOD"
    x, y = np.asarray(tab["x"])[good], np.asarray(tab["y"])[good]
    star = np.asarray(tab["kernel_sum"])[good]
    pulls = (star - fit.solution.kernel_sum(x, y)) / np.asarray(tab["kernel_sum_err"])[good]
    bright = np.asarray(tab["snr"])[good] >= np.percentile(np.asarray(tab["snr"])[good], 75)
    ratio = star / fit.solution.kernel_sum(x, y)
    print(
        f"\nGOTO, science convolved: brightest quarter's kernel_sum / solution "
        f"{np.nanmedian(ratio[bright]):.4f}, pulls rms {np.nanstd(pulls):.2f}"
    )
    assert np.nanmedian(ratio[bright]) == pytest.approx(1.0, abs=5e-3)
    assert np.nanstd(pulls) < 1.5
    # With the template convolved the kernel leaves 4 % of the brightest stars' filtered
    # flux in the difference (the residual the direction test measures); the column says
    # so: 1 - solution / kernel_sum is what the difference holds at each star (measured
    # +0.0417 against +0.0427; the own sums said -0.009).
    fit, difference, target = goto_fits["template"]
    tab = fit.candidates
    good = np.asarray(tab["status"]) == "GOOD"
    x, y = np.asarray(tab["x"])[good], np.asarray(tab["y"])[good]
    bright = np.asarray(tab["snr"])[good] >= np.percentile(np.asarray(tab["snr"])[good], 75)
    said = 1.0 - fit.solution.kernel_sum(x, y) / np.asarray(tab["kernel_sum"])[good]
    fwhm = max(fit.science_psf.fwhm, fit.template_psf.fwhm)
    held = filtered_fraction(difference, target, x, y, fwhm)
    print(
        f"template convolved: the difference holds {np.median(held[bright]):+.4f} of the "
        f"brightest quarter's filtered flux, kernel_sum says {np.nanmedian(said[bright]):+.4f}"
    )
    assert np.nanmedian(said[bright]) > 0.02
    assert np.nanmedian(held[bright] - said[bright]) == pytest.approx(0.0, abs=5e-3)
