"""ZOGY's S_corr and the Alard-Lupton preconvolution score on synthetic pairs with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from diffviewer.config import ScoreConfig
from diffviewer.engine import score_psfs, zogy
from diffviewer.engine.background import estimate_background
from diffviewer.engine.progress import CancelToken, Reporter, null_reporter
from diffviewer.engine.subtract import template_planes
from diffviewer.errors import Cancelled, InputError
from diffviewer.exposure import UNUSABLE, Exposure, MaskPlane, set_planes
from diffviewer.stats import FWHM_PER_SIGMA
from diffviewer.synthetic import SyntheticPair, make_pair, render_gaussians
from tests.engine.helpers import fit_kernel_to, gaussian_psf

SHAPE = (384, 384)


def far_from(shape: tuple[int, int], xs: np.ndarray, ys: np.ndarray, radius: float) -> np.ndarray:
    """Pixels farther than ``radius`` from every (x, y), and 15 px from the edges."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.ones(shape, dtype=bool)
    for x, y in zip(xs, ys, strict=True):
        out &= (xx - x) ** 2 + (yy - y) ** 2 > radius**2
    out[:15], out[-15:], out[:, :15], out[:, -15:] = False, False, False, False
    return out


def optimal_snr_per_flux(
    shape: tuple[int, int], sci_fwhm: float, tmpl_fwhm: float, var_n: float, var_r: float
) -> float:
    """S/N per unit flux of a new point source in the optimal (ZOGY) difference.

    ZOGY eq. 23 with F_n = F_r = 1: SNR^2 / f^2 = sum_k |P_n|^2 |P_r|^2 /
    (sigma_n^2 |P_r|^2 + sigma_r^2 |P_n|^2) / N_pix, written independently of the code
    with analytic Gaussian transfer functions.
    """
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    k2 = fx**2 + fy**2

    def otf(fwhm: float) -> np.ndarray:
        s = fwhm / FWHM_PER_SIGMA
        # Gaussian times the pixel response (sinc), as the synthetic stars are pixel-integrated.
        return np.exp(-2 * np.pi**2 * s**2 * k2) * np.sinc(fx) * np.sinc(fy)

    pn, pr = otf(sci_fwhm), otf(tmpl_fwhm)
    ratio = pn**2 * pr**2 / (var_n * pr**2 + var_r * pn**2)
    return float(np.sqrt(ratio.sum() / (shape[0] * shape[1])))


@pytest.fixture(scope="module")
def transient_pair():
    """Faint transients (S/N 7-25) at integer pixels on a sky-dominated pair, PSFs 4.0 / 2.5 px."""
    rng = np.random.default_rng(11)
    grid = np.stack(np.meshgrid(np.arange(6) * 56 + 40, np.arange(6) * 56 + 40), -1).reshape(-1, 2)
    flux = rng.uniform(4000.0, 14000.0, len(grid))
    transients = [(float(x), float(y), float(f)) for (x, y), f in zip(grid, flux, strict=True)]
    # sky 1e4 (sigma 100): a 14000-count source adds < 4 % to the variance under its
    # filter, so the background-only optimal S/N is the truth to ~2 %.
    return make_pair(SHAPE, 120, seed=5, sky=1e4, tmpl_sky=1e4, transients=transients)


def score_with_true_psfs(pair: SyntheticPair, reporter: Reporter) -> zogy.ScoreResult:
    """ZOGY score of a default synthetic pair (FWHM 4.0 and 2.5 px) with its true PSFs."""
    psfs = gaussian_psf(4.0), gaussian_psf(2.5)
    return zogy.zogy_score(pair.science, pair.template, *psfs, 1.0, ScoreConfig(), reporter)


def test_zogy_unit_variance_and_transient_snr(transient_pair) -> None:
    pair = transient_pair
    result = score_with_true_psfs(pair, null_reporter())
    assert result.method == "zogy" and result.image.dtype == np.float32
    assert not result.image.flags.writeable
    # Empty sky: farther than 15 px (> 3 FWHM of the score's filter) from every source.
    sky = far_from(
        SHAPE, np.r_[pair.star_x, pair.transient_x], np.r_[pair.star_y, pair.transient_y], 15.0
    )
    assert sky.sum() > 20000
    std = float(np.std(result.image[sky]))
    # 20000+ pixels of a correlated field (~50 px per independent sample): the std is
    # known to ~2 %, so the 0.95-1.05 window is a 2.5-sigma test of the normalisation.
    assert 0.95 <= std <= 1.05, std
    assert 0.95 <= result.noise_std <= 1.05
    per_flux = optimal_snr_per_flux(SHAPE, 4.0, 2.5, 1e4, 0.25 * 1e4)
    peaks = result.image[pair.transient_y.astype(int), pair.transient_x.astype(int)]
    ratio = peaks / (pair.transient_flux * per_flux)
    # Each peak carries +-1 of noise (5-15 %); the median of 36 is known to ~2.5 %,
    # the source noise lowers it by ~2 %: within 10 % of the analytic S/N.
    assert 0.9 <= float(np.median(ratio)) <= 1.1, np.median(ratio)
    # Static stars cancel: S_corr near the bright stars (but away from the transients)
    # is noise, no residual above the 5-sigma detection threshold.
    bright = pair.star_flux > 1e5
    near = ~far_from(SHAPE, pair.star_x[bright], pair.star_y[bright], 6.0)
    near &= far_from(SHAPE, pair.transient_x, pair.transient_y, 12.0)
    assert np.max(np.abs(result.image[near])) < 5.0


def test_proper_difference_psf_of_equal_psfs_is_that_psf() -> None:
    # With P_n = P_r and sigma_n = sigma_r, P_D^ = P^2 / sqrt(2 |P|^2) * const = P^ (ZOGY eq. 14).
    psf = gaussian_psf(3.0)
    kern = zogy.zogy_kernels(psf, psf, 5.0, 5.0, 1.0, 1.0)
    assert kern.psf_d.shape == psf.shape
    assert np.isclose(kern.psf_d.sum(), 1.0)
    assert np.max(np.abs(kern.psf_d - psf / psf.sum())) < 1e-3 * psf.max()


def test_flux_ratio_sets_the_zero_points() -> None:
    # The template is 2.5 times fainter: with flux_ratio 2.5 the stars cancel, with 1 they do not.
    pair = make_pair(SHAPE, 80, seed=2, photometric_scale=2.5)
    kwargs = {
        "sci_psf": gaussian_psf(4.0),
        "tmpl_psf": gaussian_psf(2.5),
        "config": ScoreConfig(),
        "reporter": null_reporter(),
    }
    bright = pair.star_flux > 5e4
    near = ~far_from(SHAPE, pair.star_x[bright], pair.star_y[bright], 6.0)
    good = zogy.zogy_score(pair.science, pair.template, flux_ratio=2.5, **kwargs)
    bad = zogy.zogy_score(pair.science, pair.template, flux_ratio=1.0, **kwargs)
    assert np.max(np.abs(good.image[near])) < 5.0
    assert np.max(bad.image[near]) > 20.0


def test_astrometric_noise_term_absorbs_misregistration() -> None:
    # Template grid shifted by 0.3 px but treated as aligned: bright stars leave dipoles.
    pair = make_pair(SHAPE, 80, seed=3, tmpl_shift=(0.3, 0.0))
    tmpl = Exposure(pair.template.image, pair.template.variance, pair.template.mask)
    args = (pair.science, tmpl, gaussian_psf(4.0), gaussian_psf(2.5), 1.0)
    plain = zogy.zogy_score(*args, ScoreConfig(), null_reporter())
    corrected = zogy.zogy_score(*args, ScoreConfig(astrometric_noise=0.3), null_reporter())
    bright = pair.star_flux > 1e5
    near = ~far_from(SHAPE, pair.star_x[bright], pair.star_y[bright], 6.0)
    assert np.max(np.abs(plain.image[near])) > 20.0
    # The term is the variance of a 0.3 px registration error, so the residuals become
    # ~1 sigma; empty sky (no gradients) keeps unit variance.
    assert np.max(np.abs(corrected.image[near])) < 5.0
    assert 0.95 <= corrected.noise_std <= 1.05


def test_masked_pixels_are_zero_and_do_not_ring() -> None:
    pair = make_pair(SHAPE, 60, seed=4)
    image = pair.science.image.copy()
    mask = pair.science.mask.copy()
    image[100:160, 200:260] = np.nan
    mask[100:160, 200:260] |= int(MaskPlane.NO_DATA)
    image[300, 50:60] = 1e7
    mask[300, 50:60] |= int(MaskPlane.SAT)
    sci = pair.science.replace(image=np.nan_to_num(image, nan=0.0), mask=mask)
    result = zogy.zogy_score(
        sci,
        pair.template,
        gaussian_psf(4.0),
        gaussian_psf(2.5),
        1.0,
        ScoreConfig(),
        null_reporter(),
    )
    assert np.all(np.isfinite(result.image))
    assert np.all(result.image[100:160, 200:260] == 0.0)
    assert np.all(result.image[300, 50:60] == 0.0)
    assert np.all(result.mask[100:160, 200:260] & int(MaskPlane.NO_DATA))
    assert np.all(result.mask[300, 50:60] & int(MaskPlane.SAT))
    assert np.all((result.mask[result.image != 0] & int(UNUSABLE)) == 0)
    # Right beside the hole and the saturated pixels the score is still noise: the
    # masked pixels were set to 0 in both images and their variance, nothing leaks.
    ring = np.zeros(SHAPE, dtype=bool)
    ring[95:165, 195:265] = True
    ring[100:160, 200:260] = False
    ring[295:306, 45:65] = True
    ring[300, 50:60] = False
    assert np.max(np.abs(result.image[ring])) < 5.0


def test_al_score_peak_is_psf_snr_and_sky_has_unit_variance() -> None:
    rng = np.random.default_rng(8)
    shape, sigma = (256, 256), 20.0
    psf = gaussian_psf(3.5)
    xs = np.arange(5) * 45.0 + 30.0
    xx, yy = (a.ravel() for a in np.meshgrid(xs, xs))
    flux = rng.uniform(3000.0, 12000.0, xx.size) * rng.choice([-1.0, 1.0], xx.size)
    model = render_gaussians(shape, xx, yy, flux, np.full(xx.size, 3.5 / FWHM_PER_SIGMA), 12)
    diff = Exposure(
        model + rng.normal(size=shape) * sigma,
        np.full(shape, sigma**2),
        np.zeros(shape, dtype=np.int32),
    )
    result = zogy.al_score(diff, psf, null_reporter())
    assert result.method == "al"
    expected = flux * np.sqrt(np.sum((psf / psf.sum()) ** 2)) / sigma
    peaks = result.image[yy.astype(int), xx.astype(int)]
    # Signs preserved; each peak has +-1 noise on S/N 10-40: the median ratio is known to ~2 %.
    assert np.all(np.sign(peaks) == np.sign(flux))
    assert 0.95 <= float(np.median(peaks / expected)) <= 1.05
    sky = far_from(shape, xx, yy, 12.0)
    assert 0.95 <= float(np.std(result.image[sky])) <= 1.05


def test_a_score_divided_by_a_scale_is_divided_in_place_and_frozen() -> None:
    rng = np.random.default_rng(3)
    shape = (64, 48)
    diff = Exposure(rng.normal(size=shape), np.ones(shape), np.zeros(shape, dtype=np.int32))
    score = zogy.al_score(diff, gaussian_psf(3.0), null_reporter())
    before, noise = score.image.copy(), score.noise_std
    scaled = score.divided_by(1.25)
    # The renormalisation's scale, applied as the float32 product it was before: no new
    # image plane (the renormalised difference's filtered image at 4096^2 is 64 MB).
    np.testing.assert_array_equal(scaled.image, before * np.float32(1.0 / 1.25))
    assert np.shares_memory(scaled.image, score.image)
    assert not scaled.image.flags.writeable
    assert scaled.noise_std == noise / 1.25
    # A score whose image another array owns (a view) is copied, never written through.
    view = zogy.ScoreResult(before[::1, :], "al", score.psf, score.mask, noise)
    owner = view.image.base
    kept = owner.copy()
    assert not np.shares_memory(view.divided_by(2.0).image, owner)
    np.testing.assert_array_equal(owner, kept)


def test_background_estimate_recovers_a_gradient_and_the_noise() -> None:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:300, :400]
    truth = 500.0 + 0.05 * xx - 0.03 * yy
    image = truth + rng.normal(size=truth.shape) * 10.0
    good = np.ones(truth.shape, dtype=bool)
    good[:50, :50] = False
    background, sigma = estimate_background(image, good, 64)
    # Per-cell clipped medians of 4096 samples carry ~0.03 sigma of noise; inside the
    # grid of cell centres the spline follows the gradient to 0.1 sigma ...
    err = np.abs(background - truth)
    assert np.max(err[64:-22, 32:-16]) < 1.0
    assert np.max(err[32:-22, 64:-16]) < 1.0
    # ... and its near-linear extrapolation to the image edges stays within 0.25 sigma.
    # The top-left cell is 60 % masked: it takes its neighbour's value, which misses the
    # gradient across one cell (~3 counts), so that cell is left out.
    assert np.max(err[64:, :]) < 2.5
    assert np.max(err[:, 64:]) < 2.5
    # The gradient across a cell adds ~0.4 % to the clipped sigma.
    assert abs(sigma - 10.0) < 0.2


def test_inputs_are_checked() -> None:
    pair = make_pair((64, 64), 5, seed=1)
    small = Exposure(np.zeros((32, 32)), np.ones((32, 32)), np.zeros((32, 32), dtype=np.int32))
    psf = gaussian_psf(3.0)
    with pytest.raises(InputError, match="one grid"):
        zogy.zogy_score(pair.science, small, psf, psf, 1.0, ScoreConfig(), null_reporter())
    with pytest.raises(InputError, match="odd"):
        zogy.zogy_score(
            pair.science, pair.template, np.ones((4, 4)), psf, 1.0, ScoreConfig(), null_reporter()
        )
    with pytest.raises(InputError, match="flux ratio"):
        zogy.zogy_score(pair.science, pair.template, psf, psf, 0.0, ScoreConfig(), null_reporter())


def test_al_score_of_a_fully_masked_difference_is_empty() -> None:
    shape = (30, 30)
    diff = Exposure(np.ones(shape), np.ones(shape), np.full(shape, int(MaskPlane.EDGE)))
    result = zogy.al_score(diff, gaussian_psf(3.0), null_reporter())
    assert np.all(result.image == 0) and np.all(result.mask & int(MaskPlane.NO_DATA))


def test_cancel_stops_the_score() -> None:
    pair = make_pair((64, 64), 5, seed=1)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        score_with_true_psfs(pair, Reporter(token=token))


def test_kernel_matched_psfs_remove_the_dipoles_of_a_misregistered_template() -> None:
    # The template's stars sit (0.5, -0.3) px from the science's. With PSFs that do not
    # know it (the true, centred ones) ZOGY leaves a dipole at every star; with the
    # science PSF built from the template PSF and the fitted kernel, which absorbed the
    # shift, only noise remains.
    offset = (0.5, -0.3)
    pair = make_pair(SHAPE, 60, seed=11, flux_range=(2e4, 5e4), tmpl_shift=offset)
    stars = (pair.star_y.astype(int), pair.star_x.astype(int))
    fit = fit_kernel_to(pair.science, pair.template)

    def star_peaks(sci_psf: np.ndarray, tmpl_psf: np.ndarray) -> np.ndarray:
        result = zogy.zogy_score(
            pair.science,
            pair.template,
            sci_psf,
            tmpl_psf,
            fit.photometric_scale,
            ScoreConfig(astrometric_noise=0.0),
            null_reporter(),
        )
        inside = (stars[0] > 5) & (stars[0] < SHAPE[0] - 5) & (stars[1] > 5)
        inside &= stars[1] < SHAPE[1] - 5
        window = [
            np.abs(result.image[y - 3 : y + 4, x - 3 : x + 4]).max()
            for y, x in zip(stars[0][inside], stars[1][inside], strict=True)
        ]
        return np.asarray(window)

    sci_psf, tmpl_psf = score_psfs.kernel_matched_psfs(fit, (SHAPE[1] - 1) / 2, (SHAPE[0] - 1) / 2)
    assert np.array_equal(tmpl_psf, fit.template_psf.image), "the convolved image keeps its PSF"
    assert sci_psf.sum() == pytest.approx(1.0) and sci_psf.shape[0] % 2 == 1
    unaware, matched = (
        star_peaks(gaussian_psf(4.0), gaussian_psf(2.5)),
        star_peaks(sci_psf, tmpl_psf),
    )
    print(
        f"\nmedian |S_corr| peak at stars: {np.median(unaware):.1f} with the true centred "
        f"PSFs, {np.median(matched):.1f} with the kernel-matched ones"
    )
    # A 0.58 px shift of a 2e4-5e4 count star leaves a dipole of tens of sigma; matched,
    # only the noise remains (the score is smooth: the largest |S| of a 7x7 window is ~2).
    assert np.median(unaware) > 10.0
    assert np.median(matched) < 5.0


def test_template_saturation_is_unusable_for_both_scores() -> None:
    # Pixels saturated on the template only: ZOGY drops them (and the wings its kernels
    # would sum around them), and the AL score of a difference carrying them as
    # SAT_TEMPLATE must drop the same pixels, so the two scores agree on what is usable.
    pair = make_pair(SHAPE, 60, seed=4)
    hit = np.zeros(SHAPE, dtype=bool)
    hit[200:204, 120:124] = True
    template = pair.template.replace(mask=set_planes(pair.template.mask, hit, MaskPlane.SAT))
    zg = zogy.zogy_score(
        pair.science,
        template,
        gaussian_psf(4.0),
        gaussian_psf(2.5),
        1.0,
        ScoreConfig(),
        null_reporter(),
    )
    difference = Exposure(
        pair.science.image - template.image,
        pair.science.variance + template.variance,
        template_planes(template.mask),
    )
    al = zogy.al_score(difference, gaussian_psf(4.0), null_reporter())
    for score in (zg, al):
        assert np.all(score.image[hit] == 0.0)
        assert np.all(score.mask[hit] & int(MaskPlane.SAT_TEMPLATE))
        assert np.all((score.mask[score.image != 0] & int(UNUSABLE)) == 0)
    # ZOGY's score is not valid where its kernels reach the saturated pixels: the mask
    # is grown by their footprint (at least the 4 px FWHM PSF's half-width).
    grown = (zg.mask & int(MaskPlane.SAT_TEMPLATE)) != 0
    assert grown[200:204, 116:128].all() and grown.sum() > 3 * hit.sum()
    assert not grown[150, 120]


def test_the_node_kernels_hold_their_crops_alone() -> None:
    # ZOGY's kernels are made on a grid wider than their footprint and cropped; a crop
    # that was a view kept every node's uncropped k_n and k_r alive through the score
    # step (17.5 MB on GOTO's 36 nodes), the run's peak of memory.
    psf = gaussian_psf(3.0, 25)
    grid = score_psfs.PsfGrid(
        (0.0, 100.0), (0.0,), ((psf, psf),), ((gaussian_psf(2.0, 25),) * 2,), np.ones((1, 2))
    )
    for row in zogy._node_kernels(grid, 1.0):
        for kern in row:
            for k in (kern.k_n, kern.k_r):
                assert k.base is None and k.shape[0] < 2 * psf.shape[0]
