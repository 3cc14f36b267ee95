"""The catalog's PSF fluxes of bright transients against the truth (issue 12 point 2)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from diffviewer.engine import kernel_basis, psf, psf_stars, psf_wing
from diffviewer.exposure import Exposure, MaskPlane
from diffviewer.synthetic import (
    make_pair,
    moffat_alpha,
    render_gaussians,
    render_moffats,
    with_defects,
)
from tests.engine.helpers import injected_flux_ratios, run_as_command

#: Injected transients per pair, and the pairs (seeds) pooled: 12 pairs make the pooled
#: median good to ~0.15 %, under a third of the tolerance (three pairs, 0.3 %, put the
#: Gaussian's at 1.0057 where 18 give 1.0018).
N_TRANSIENTS = 80
SEEDS = tuple(range(12))

#: Scatter of the median of one pair's ratios from pair to pair (18 pairs: 0.48 % with
#: Gaussian stars, 0.49 % with Moffat stars).
PAIR_SCATTER = 0.005

#: Least distance (px) between transients: another transient 24 px away adds 0.02 % of
#: its flux to a PSF flux of a Moffat of index 2.5 and FWHM 4 px (at 12 px: 1.3 %, and
#: transients drawn anywhere put one within 12 px of a fifth of them, whose tail moved
#: the median by +0.3 %, the "second bias" with the true PSF). It is the renderer's
#: reach (6 FWHM).
SEPARATION = 24.0


def pair_flux_ratios(
    seed: int, profile: str, sci_fwhm: float = 4.0, true_psf: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Catalog psf_flux over the injected flux, and the catalog's relative errors, of one
    512^2 pair's transients of S/N 50-200 (science index 2.5, template index 3.5 and 0.7
    of the science's FWHM, flux ratio 1.3, template 0.3 px off; ``true_psf``: the
    science's true PSF given). ``benchmarks/bench_psf_flux.py`` runs it at other widths."""
    # The difference's noise is ~38 counts a pixel (science sky 1000, template 250 times
    # 1.3^2): a 4 px PSF gives S/N ~ flux / 230, so 1.1e4-4.5e4 is S/N 50-200.
    _, ratio, rel_err, _ = injected_flux_ratios(
        (512, 512),
        300,
        N_TRANSIENTS,
        (1.1e4, 4.5e4),
        40,
        seed=seed,
        separation=SEPARATION,
        true_psf=true_psf,
        profile=profile,
        sci_beta=2.5,
        tmpl_beta=3.5,
        sci_fwhm=sci_fwhm,
        tmpl_fwhm=0.7 * sci_fwhm,
        photometric_scale=1.3,
        tmpl_shift=(0.3, 0.3),
    )
    return ratio, rel_err


def _catalog_flux_ratios(profile: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pair_flux_ratios` of the :data:`SEEDS` pairs, pooled."""
    ratios, errors = zip(*(pair_flux_ratios(seed, profile) for seed in SEEDS), strict=True)
    return np.concatenate(ratios), np.concatenate(errors)


@pytest.mark.parametrize("profile", ["gaussian", "moffat"])
def test_bright_transients_psf_fluxes_are_unbiased(profile: str) -> None:
    # Moffat stars of index 2.5 hold 2.3 % of their flux beyond 3 FWHM: a PSF image cut
    # there and normalised over its stamp, with each star's sky taken at its border (its
    # own wing) and its neighbours' wings in its stack, measured 0.976 of the truth.
    ratio, rel_err = _catalog_flux_ratios(profile)
    # A few fall on a bright star (saturated or masked core): most remain.
    assert len(ratio) >= 0.85 * N_TRANSIENTS * len(SEEDS)
    # The median of n ratios with errors e scatters by 1.25 median(e) / sqrt(n) if the
    # errors were all: ~0.05 % here (each 1-2.5 %). Each pair adds its own common part
    # (its differential background and star residuals under the transients, its PSF
    # estimate): the median of one pair's 80 scatters by :data:`PAIR_SCATTER`, by 0.38 %
    # (Gaussian) and 0.25 % (Moffat) with the true PSF given; the estimated PSF's own
    # error moves a pair's by 0.18 % and 0.51 % (a noiseless true star fitted with it
    # gives the same), on average +0.09 +- 0.04 % and +0.23 +- 0.12 % (18 pairs).
    # 0.5 % is the target; a PSF model off by its wing (1-3 %) fails it.
    spread = 1.2533 * float(np.median(rel_err)) / np.sqrt(len(ratio))
    print(
        f"\n{profile}: catalog psf_flux / truth median {np.median(ratio):.4f} of {len(ratio)} "
        f"(errors alone {spread:.4f}; by pair ~{PAIR_SCATTER / np.sqrt(len(SEEDS)):.4f})"
    )
    assert spread < 0.0015
    assert float(np.median(ratio)) == pytest.approx(1.0, abs=0.005)


def test_wing_fit_recovers_a_moffat_and_its_share_beyond_the_stamp() -> None:
    # A Moffat of index 2.5 and FWHM 4 px rendered whole (to 60 px, as pixels see it),
    # with a sky constant and noise of 3e-6 of its flux a pixel (a stack of ~40 stars):
    # the fit gives back the index and the constant, and the share of the flux within a
    # 31 x 31 image (0.9916 of the whole Moffat) to 0.1 %, where cutting the image
    # there and normalising over it loses 0.8 %.
    one = np.ones(1)
    half = 30
    truth = render_moffats(
        (2 * half + 1,) * 2, one * half, one * half, one, one * 4.0, 2.5, one * 0, one * 0, 60
    )
    whole = 1.0 / (1.0 - (1.0 + (60.0 / moffat_alpha(4.0, 2.5)) ** 2) ** -1.5)
    rng = np.random.default_rng(1)
    extended = truth / whole + 2e-5 + rng.normal(size=truth.shape) * 3e-6
    stack = extended[15:46, 15:46]
    found = psf_wing.psf_image(stack, extended, 4.7)
    assert found is not None
    image, enclosed, wing = found
    assert wing.beta == pytest.approx(2.5, abs=0.05)
    assert wing.constant == pytest.approx(2e-5, abs=2e-6)
    assert image.sum() == pytest.approx(1.0)
    share = (truth / whole)[15:46, 15:46].sum()
    assert enclosed == pytest.approx(share, abs=0.001)


def test_wing_fit_claims_no_flux_beyond_the_stamp_of_a_gaussian() -> None:
    # A Gaussian PSF is a Moffat of infinite index: the fitted index comes out large
    # (230-290 on eight noise draws) and neither the wing nor the sky constant takes the
    # other's place, so the image holds the whole flux and a star fitted with it gives
    # back its flux. On the eight draws: a share of 1.000000, the constant scattering by
    # 0.3 % (1.2 % low with the index held at 3.1), the flux by 0.007 %.
    one = np.ones(1)
    half = 30
    sigma = 4.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    truth = render_gaussians((2 * half + 1,) * 2, one * half, one * half, one, one * sigma, half)
    rng = np.random.default_rng(1)
    extended = truth + 2e-5 + rng.normal(size=truth.shape) * 3e-6
    found = psf_wing.psf_image(extended[15:46, 15:46], extended, 4.06)
    assert found is not None
    image, enclosed, wing = found
    assert wing.beta > 30.0
    assert wing.constant == pytest.approx(2e-5, abs=2e-7)
    assert enclosed == pytest.approx(1.0, abs=1e-4)
    star = truth[15:46, 15:46]
    assert enclosed * float((image * star).sum() / (image**2).sum()) == pytest.approx(1.0, abs=5e-4)


@pytest.mark.parametrize(("fwhm", "warned"), [(2.2, True), (4.0, False)])
def test_a_science_psf_stacked_too_coarsely_is_said(fwhm: float, warned: bool) -> None:
    # Stacks of stars this sharp come out wide in the core, and with that corrected PSF
    # fluxes still 0.2-0.4 % high (psf.COARSE_STACK_FWHM): the run's warnings say so at
    # 2.2 px (moment FWHM ~2.7) and not at 4.0 px (~4.7).
    pair = make_pair(
        (256, 256),
        120,
        seed=2,
        profile="moffat",
        sci_beta=2.5,
        tmpl_beta=3.5,
        sci_fwhm=fwhm,
        tmpl_fwhm=0.7 * fwhm,
    )
    result = run_as_command(pair.science, pair.template)
    said = [w for w in result.warnings if "too coarsely sampled" in w]
    assert result.science_psf.source == "measured"
    assert bool(said) is warned, result.warnings
    if warned:
        assert f"{result.science_psf.fwhm:.2f} px FWHM" in said[0]
        assert "with the stack's core corrected" in said[0]
        assert "core corrected for the coarsely sampled" in result.science_psf.reason
        # A stack without a photometric image (no wing fitted: Gaussian stars) is not
        # corrected, and the warning says so.
        bare = dataclasses.replace(result.science_psf, photometric=None)
        assert "not corrected" in psf.coarse_stack_note(bare)[0]
    else:
        assert "corrected" not in result.science_psf.reason
    # A PSF the file gives is not stacked: nothing is said of it.
    given = dataclasses.replace(result.science_psf, source="given")
    assert psf.coarse_stack_note(given) == ()


def _noise_free_stars(fwhm: float, beta: float) -> tuple[Exposure, np.ndarray, np.ndarray]:
    """36 noise-free Moffat stars at random sub-pixel positions on a 300^2 image."""
    rng = np.random.default_rng(3)
    grid = np.arange(30, 280, 50.0)
    x = np.repeat(grid, grid.size) + rng.uniform(-0.5, 0.5, grid.size**2)
    y = np.tile(grid, grid.size) + rng.uniform(-0.5, 0.5, grid.size**2)
    n = x.size
    one = np.ones(n)
    image = render_moffats(
        (300, 300), x, y, 1e5 * one, fwhm * one, beta, 0 * one, 0 * one, int(6 * fwhm)
    )
    exposure = Exposure(image, np.ones_like(image), np.zeros(image.shape, dtype=np.int16))
    return exposure, x, y


@pytest.mark.parametrize("beta", [2.5, 3.5])
def test_the_stack_of_coarsely_sampled_stars_is_corrected_for_its_recentring(
    beta: float,
) -> None:
    # Moffats of FWHM 2.0 px at random phases: recentred by Fourier shifts and stacked,
    # their photometric PSF image read indices 2.75 and 4.00 and core widths 9 % and 10 %
    # wide; with the Moffat fitted to it stacked the same way and the difference taken
    # out (psf.stacking_bias, twice) 2.50 and 3.55, core widths within 1.1 %.
    exposure, x, y = _noise_free_stars(2.0, beta)
    est = psf.estimate_psf(exposure, x, y, photometric=True)
    assert est.source == "measured" and est.fwhm < psf.COARSE_STACK_FWHM
    fitted = kernel_basis.fit_wing(dataclasses.replace(est, image=est.flux_image))
    assert fitted is not None
    assert fitted[0].beta == pytest.approx(beta, rel=0.02)
    assert fitted[0].alpha == pytest.approx(float(moffat_alpha(2.0, beta)), rel=0.015)


def _peak_in_stack_units(wing: psf_wing.Wing, half: int) -> float:
    """The centred pixel-averaged Moffat's peak over its core flux (within ``half / 2``)."""
    image = psf_wing.pixel_moffat(1.0, wing.alpha, wing.beta, half)
    r = np.arange(-half, half + 1)
    return float(image.max() / image[r[:, None] ** 2 + r[None, :] ** 2 <= (half / 2) ** 2].sum())


@pytest.mark.parametrize(("fwhm", "largest"), [(4.0, 2e-3), (2.0, None)])
def test_the_stacking_bias_is_nil_for_well_sampled_stars_only(fwhm: float, largest) -> None:
    # At FWHM 4 px the stars survive their Fourier recentring: the bias the model
    # measures is 0.11 % of the core's peak at most; at 2 px, 2.7 %.
    wing = psf_wing.Wing(1.0, float(moffat_alpha(fwhm, 2.5)), 2.5, 0.0)
    offsets = np.random.default_rng(5).uniform(-0.5, 0.5, (2, 30))
    half = int(3 * fwhm)
    bias = np.max(np.abs(psf.stacking_bias(wing, offsets, half, 6 * half + 1)))
    peak = _peak_in_stack_units(wing, half)
    print(f"\nFWHM {fwhm}: the bias's largest {bias / peak:.2e} of the peak")
    if largest is None:
        assert bias > 0.01 * peak
    else:
        assert bias < largest * peak


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.0, 0.003), st.floats(1.6, 2.6))
def test_a_coarse_stack_with_bad_pixels_is_corrected_whole(
    seed: int, bad: float, fwhm: float
) -> None:
    # Sharp stars (FWHM 1.6-2.6 px) with noise and bad pixels (masked BAD, holding a
    # value far off) over up to 0.3 % of the image, which reach some stars' wings: the
    # photometric PSF, corrected for its recentring, is finite, sums to 1 and peaks at
    # its centre.
    exposure, x, y = _noise_free_stars(fwhm, 2.5)
    rng = np.random.default_rng(seed)
    holes = rng.random(exposure.shape) < bad
    image = np.where(holes, -1e4, exposure.image + rng.normal(0.0, 5.0, exposure.shape))
    mask = np.where(holes, int(MaskPlane.BAD), 0).astype(np.int16)
    noisy = Exposure(image, np.full(exposure.shape, 25.0), mask)
    est = psf.estimate_psf(noisy, x, y, photometric=True)
    assert est.source == "measured", est.reason
    # Now and then (1.6 px, no bad pixel) the stack's profile gives no wing: said, and
    # nothing to correct.
    assert est.photometric is not None or "no wing fitted" in est.reason
    assume(est.photometric is not None)
    assert est.photometric is not None
    assert np.all(np.isfinite(est.photometric))
    assert float(est.photometric.sum()) == pytest.approx(1.0)
    assert psf.peaked_at_centre(est.photometric)


def _noisy(exposure: Exposure) -> Exposure:
    """``exposure`` with noise of sigma 5 (its variance)."""
    noise = np.random.default_rng(1).normal(0.0, 5.0, exposure.shape)
    return Exposure(exposure.image + noise, np.full(exposure.shape, 25.0), exposure.mask)


def _centred_star_flux(est: psf.PsfEstimate, fwhm: float) -> float:
    """The PSF flux a PSF estimate gives a noise-free centred Moffat (index 2.5) of flux 1
    rendered in its image's box alone (a perfect PSF gives the box's share of the star's
    flux times the PSF's enclosed share: only ratios are read)."""
    image = est.flux_image
    half = image.shape[0] // 2
    centre = np.array([float(half)])
    star = render_moffats(
        image.shape,
        centre,
        centre,
        np.ones(1),
        np.full(1, fwhm),
        2.5,
        np.zeros(1),
        np.zeros(1),
        6 * half,
    )
    return float(np.sum(image * star) / np.sum(image * image) * est.enclosed)


@pytest.mark.parametrize("fwhm", [2.4, 4.0])
def test_cosmic_rays_in_the_stars_wings_leave_the_psf_as_it_was(fwhm: float) -> None:
    # 36 stars with cosmic rays (masked CR, 5e4) on 0.3 % of the pixels, about what a
    # minute's exposure masks once each hit is grown by a pixel. A star with any unusable
    # pixel in its 25 x 25 locus cutout used to be left out, and with it most stars: no
    # PSF at all at 4 px (a default Gaussian of 3 px), 3-4 stars at 2.4 px. A cosmic ray
    # says nothing of the pixels beside it: only the stars' cores must be whole, a defect
    # in a wing is an unknown pixel. Measured: 9 and 16 stars of the clean image's 25,
    # the same FWHM (within 0.05 %) and PSF flux (within 0.05 %).
    exposure, x, y = _noise_free_stars(fwhm, 2.5)
    noisy = _noisy(exposure)
    spoilt, _ = with_defects(noisy, 0.003, (), seed=1)
    clean = psf.estimate_psf(noisy, x, y, photometric=True)
    hit = psf.estimate_psf(spoilt, x, y, photometric=True)
    print(
        f"\nFWHM {fwhm}: {hit.n_stars} of {clean.n_stars} stars, FWHM {hit.fwhm:.4f} against"
        f" {clean.fwhm:.4f}, PSF flux {_centred_star_flux(hit, fwhm):.4f} against"
        f" {_centred_star_flux(clean, fwhm):.4f}"
    )
    assert hit.source == "measured", hit.reason
    # Stars whose core and its 2 px reach (the recentring's) are clean: at 0.3 % about
    # 40 % of the stars at 4 px (a core radius of 9.5 px), 60 % at 2.4 px; 5 is 2
    # binomial sigma below the 4 px star's expected 10.
    assert hit.n_stars >= 5
    # The stack of 10-25 stars of S/N ~ 2000: its FWHM known to a few 0.01 %.
    assert hit.fwhm == pytest.approx(clean.fwhm, rel=0.002)
    assert _centred_star_flux(hit, fwhm) == pytest.approx(
        _centred_star_flux(clean, fwhm), rel=0.002
    )


@pytest.mark.parametrize(
    ("plane", "where", "measurable"),
    [
        (MaskPlane.CR, (3, 3), True),
        (MaskPlane.BAD, (0, 12), True),
        (MaskPlane.CR, (10, 12), False),
        (MaskPlane.SAT, (3, 3), False),
        (MaskPlane.NO_DATA, (0, 12), False),
    ],
)
def test_only_a_pixel_defect_outside_the_core_leaves_a_star_measurable(
    plane: MaskPlane, where: tuple[int, int], measurable: bool
) -> None:
    # A 25 x 25 cutout with a core of radius 6: a cosmic ray or bad pixel in the wing is an
    # unknown pixel; in the core it spoils the star's flux and centre. A saturated pixel
    # marks a neighbour whose unmeasured light reaches the star; no data, a border.
    masks = np.zeros((1, 25, 25), dtype=np.int16)
    masks[0][where] = int(plane)
    assert bool(psf_stars.measurable(masks, 6.0)[0]) is measurable
