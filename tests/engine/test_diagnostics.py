"""runDebug diagnostics: residual panels, stamp views, kernel mosaic and the noise ratio."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from diffviewer.config import KernelConfig, SubtractionConfig, apply_overrides
from diffviewer.engine import decorrelate, diagnostics, kernel, subtract
from diffviewer.engine.kernel_basis import make_basis
from diffviewer.engine.pipeline import run_subtraction
from diffviewer.engine.progress import null_reporter
from diffviewer.exposure import Exposure, MaskPlane
from diffviewer.fits_write import write_exposure
from diffviewer.io import read_exposure
from diffviewer.outputs import write_outputs
from diffviewer.results import read_saved_run
from diffviewer.synthetic import SyntheticPair, make_pair
from tests.engine.helpers import fit_kernel_to

Run = tuple[SyntheticPair, kernel.KernelFit, subtract.SubtractionProducts, Exposure]


@pytest.fixture(scope="module")
def run() -> Run:
    pair = make_pair((512, 512), 400, seed=31)
    rep = null_reporter()
    fit = fit_kernel_to(pair.science, pair.template, KernelConfig(spatial_order=0))
    products = subtract.subtract_images(pair.science, pair.template, fit, rep)
    final = decorrelate.decorrelate(products, fit, pair.science, pair.template, rep).difference
    return pair, fit, products, final


def test_noise_ratio_measures_the_variance_plane() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(scale=2.0, size=(400, 400))
    image[100:110, 100:110] += 500.0  # a source: clipped away
    zeros = np.zeros(image.shape, dtype=np.int32)
    # 160k pixels: the robust std has a 0.3% standard error.
    assert diagnostics.noise_ratio(
        Exposure(image, np.full(image.shape, 4.0), zeros)
    ) == pytest.approx(1.0, abs=0.01)
    assert diagnostics.noise_ratio(
        Exposure(image, np.full(image.shape, 8.0), zeros)
    ) == pytest.approx(1 / np.sqrt(2), abs=0.01)
    detected = zeros.copy()
    detected[200:, :] = int(MaskPlane.DETECTED)
    image2 = image.copy()
    image2[200:, :] *= 10  # flagged pixels do not count
    assert diagnostics.noise_ratio(
        Exposure(image2, np.full(image.shape, 4.0), detected)
    ) == pytest.approx(1.0, abs=0.015)
    # a cutout its source fills: one sky pixel gave a ratio of 0 (the robust std of one
    # value), shown and written as measured; too few give none
    detected[:] = int(MaskPlane.DETECTED)
    detected.flat[: diagnostics.MIN_NOISE_PIXELS - 1] = 0
    few = Exposure(image, np.full(image.shape, 4.0), detected)
    assert np.isnan(diagnostics.noise_ratio(few))
    detected.flat[: diagnostics.MIN_NOISE_PIXELS] = 0
    enough = Exposure(image, np.full(image.shape, 4.0), detected)
    assert diagnostics.noise_ratio(enough) == pytest.approx(1.0, abs=0.15)


def test_residual_panels(run: Run) -> None:
    pair, fit, products, final = run
    raw = diagnostics.raw_residuals(
        pair.science, pair.template, fit, products.difference, null_reporter()
    )
    diag = diagnostics.compute_diagnostics(
        pair.science, pair.template, fit, raw, final, null_reporter()
    )
    n_par = fit.solution.basis.shape[0] + 1
    npix = (2 * fit.fit_half + 1) ** 2
    # A stamp's own fit absorbs n_par of its npix degrees of freedom.
    assert diagnostics.robust_std(diag.own_by_difference) == pytest.approx(
        np.sqrt(1 - n_par / npix), abs=0.03
    )
    for values in (
        diag.spatial_by_difference,
        diag.control_by_difference,
        diag.image_by_difference,
    ):
        assert values.dtype == np.float32 and values.size > 1000
        assert diagnostics.robust_std(values) == pytest.approx(1.0, abs=0.04)
    # The raw difference's per-pixel variance is below the input (white) level.
    assert diagnostics.robust_std(diag.spatial_by_input) < 0.97 * diagnostics.robust_std(
        diag.spatial_by_difference
    )
    # After decorrelation the difference's variance is the input level again.
    assert diagnostics.robust_std(diag.image_by_input) == pytest.approx(1.0, abs=0.04)
    assert diag.noise_ratio == pytest.approx(1.0, abs=0.03)
    assert diag.noise_ratio_raw == pytest.approx(1.0, abs=0.03)


def test_stamp_views_match_the_difference(run: Run) -> None:
    pair, fit, products, _ = run
    status = np.asarray(fit.candidates["status"]).astype(str)
    i = int(np.nonzero(status == "GOOD")[0][0])
    views = diagnostics.stamp_views(pair.science, pair.template, fit, i)
    h = fit.fit_half
    assert views.science.shape == views.difference_spatial.shape == (2 * h + 1, 2 * h + 1)
    x, y = round(views.x), round(views.y)
    cut = products.difference.image[y - h : y + h + 1, x - h : x + h + 1]
    # Constant kernel: the stamp view is the image's difference (float32 rounding only).
    np.testing.assert_allclose(
        views.difference_spatial, cut, atol=1e-3 * np.abs(views.science).max()
    )
    own = fit.own_coefficients[i, :-1] @ fit.stamp_basis.sum(axis=(1, 2))
    assert views.kernel_own.sum() == pytest.approx(float(own), rel=1e-6)
    assert np.std(views.residual_own[views.usable]) < 1.5


def test_kernel_mosaic(run: Run) -> None:
    _, fit, _, _ = run
    mosaic = diagnostics.kernel_mosaic(fit.solution, 5)
    size = fit.solution.size
    assert mosaic.kernels.shape == (5, 5, size, size) and mosaic.image.shape == (5 * size, 5 * size)
    np.testing.assert_allclose(
        mosaic.kernels[2, 2], fit.solution.evaluate(mosaic.x[2], mosaic.y[2])
    )
    np.testing.assert_allclose(mosaic.image[2 * size : 3 * size, 4 * size :], mosaic.kernels[2, 4])


def test_kernel_centroid_shift_map() -> None:
    # A Gaussian kernel displaced by (0.3, -0.7) px whose amplitude varies over the image
    # (spatial order 1): the centroid is the displacement everywhere, whatever the sum.
    size, shift = 15, (0.3, -0.7)
    r = np.arange(size) - size // 2
    g = np.exp(-0.5 * ((r[None, :] - shift[0]) ** 2 + (r[:, None] - shift[1]) ** 2) / 1.5**2)
    sol = kernel.KernelSolution(
        basis=(g / g.sum())[None],
        coefficients=np.array([[1.0, 0.2, 0.1]]),
        bg_coefficients=np.zeros(1),
        spatial_order=1,
        background_order=0,
        shape=(200, 300),
        sigmas=np.array([1.5]),
        degrees=(0,),
    )
    mosaic = diagnostics.kernel_mosaic(sol, 5)
    dx, dy = diagnostics.kernel_centroids(mosaic.kernels)
    assert dx.shape == dy.shape == (5, 5)
    # Cutting the displaced Gaussian at 7 px (4.2 sigma) trims its tails unevenly: the
    # first moment moves by ~4e-6 px; 1e-4 px is far below any shift a user would see.
    np.testing.assert_allclose(dx, shift[0], atol=1e-4)
    np.testing.assert_allclose(dy, shift[1], atol=1e-4)
    # A centred kernel does not move the image.
    centred = diagnostics.kernel_centroids(np.fliplr(np.flipud(g)) + g)
    assert abs(float(centred[0])) < 1e-12 and abs(float(centred[1])) < 1e-12


def test_a_kernel_derived_from_the_psfs_keeps_the_basis_its_stamps_were_fitted_on(
    tmp_path: Path,
) -> None:
    # Enough stars for the stamps' basis to carry the Moffat wing, but too few good stamps
    # asked for (kernel.min_stamps 1000): the kernel falls back to one derived from the
    # PSFs, whose basis has no wing and the degrees 4, 2, 2 (the stamps' 6, 4, 2: 49
    # functions and the wing). The stamps' own kernels are on the stamps' basis: the
    # residual panels, the stamp views and kernel.fits read them there (a shape-mismatch
    # crash before, found by a property-based run with a 1 px template PSF).
    pair = make_pair((384, 384), 250, seed=5, profile="moffat", sci_beta=2.5, tmpl_beta=3.5)
    files = [tmp_path / "science.fits", tmp_path / "template.fits"]
    for path, exposure in zip(files, (pair.science, pair.template), strict=True):
        write_exposure(path, exposure)
    science, template = (read_exposure(str(path)) for path in files)
    config = apply_overrides(SubtractionConfig(), ["kernel.min_stamps=1000"])
    result = run_subtraction(science, template, config)
    fit = result.kernel
    assert any("kernel.min_stamps = 1000" in note for note in fit.warnings)
    assert fit.solution.wing is None and fit.solution.basis.shape[0] == 15 + 6 + 6
    assert fit.stamp_basis.shape[0] == 28 + 15 + 6 + 1
    fitted = np.all(np.isfinite(fit.own_coefficients), axis=1)
    assert fitted.sum() >= 10 and fit.own_coefficients.shape[1] == fit.stamp_basis.shape[0] + 1
    # Each fitted stamp's own kernel leaves residuals of noise size (normalised by the
    # propagated noise): the median absolute residual of unit Gaussian noise is 0.67.
    own = result.diagnostics.own_by_difference
    assert own.size > 0 and 0.4 < float(np.median(np.abs(own))) < 1.2
    index = int(np.nonzero(fitted)[0][0])
    views = diagnostics.stamp_views(science, template, fit, index)
    assert np.isfinite(views.residual_own).all() and np.any(views.difference_own != 0)
    out = tmp_path / "run"
    write_outputs(result, out, files)
    saved = read_saved_run(out)
    np.testing.assert_array_equal(saved.kernel.stamp_basis, fit.stamp_basis)
    # the catalog's PSFs come back from kernel.fits CAT_PSF (the source profile draws them)
    assert saved.catalog_psf is not None
    for x, y in ((40.3, 51.7), (300.6, 322.2)):
        np.testing.assert_allclose(
            saved.catalog_psf.stamp(x, y)[0], result.catalog_psf.stamp(x, y)[0], atol=1e-12
        )


def test_stamp_views_take_a_kernel_larger_than_the_stamps_basis() -> None:
    # On a cutout narrower than twice the kernel the stamps are fitted on a basis cut to
    # half the cutout while a kernel derived from the PSFs is used whole: each kernel's
    # view reads the source as far as it reaches (a shape-mismatch crash before).
    pair = make_pair(
        (44, 44), 4, seed=1, sci_fwhm=5.0, tmpl_fwhm=2.5, profile="moffat", sci_beta=2.5,
        flux_range=(3e4, 3e5),
    )  # fmt: skip
    config = apply_overrides(SubtractionConfig(), ["kernel.min_stamps=1000"])
    fit = run_subtraction(pair.science, pair.template, config).kernel
    index = int(np.nonzero(np.all(np.isfinite(fit.own_coefficients), axis=1))[0][0])
    sol = fit.solution
    wider = sol.size + 10
    whole = dataclasses.replace(
        sol, basis=make_basis(sol.sigmas, sol.degrees, wider, sol.wing).astype(sol.basis.dtype)
    )
    views = diagnostics.stamp_views(
        pair.science, pair.template, dataclasses.replace(fit, solution=whole), index
    )
    assert views.kernel_spatial.shape == (wider, wider)
    assert views.kernel_own.shape == fit.stamp_basis.shape[1:]
    assert views.difference_own.shape == views.difference_spatial.shape
    assert np.isfinite(views.residual_own).all() and np.isfinite(views.residual_spatial).all()


def test_a_panel_of_many_stars_samples_every_kth_within_its_cap() -> None:
    # 1,000 stars of 45 x 45 px hold 2.0 million pixels: every 3rd star keeps 0.68 million,
    # every 2nd would keep 1.01 million, over the cap; few stars are all kept.
    side = 45
    rows = np.arange(1000)
    kept = diagnostics._sampled_stars(rows, side)
    np.testing.assert_array_equal(kept, rows[::3])
    assert len(kept) * side**2 <= diagnostics.MAX_STAMP_SAMPLES < len(rows[::2]) * side**2
    np.testing.assert_array_equal(diagnostics._sampled_stars(rows[:400], side), rows[:400])


def test_every_panel_by_the_difference_shares_the_renormalised_variance() -> None:
    # Both inputs' variance planes twice the truth: the one renormalisation halves the
    # difference's variance plane. The kernel stars' panels, made before it, read 0.71
    # of N(0, 1) where the whole image's read 1, under one caption naming the
    # renormalised plane (an audit of the Residuals tab: GOTO 0.76 against 1.04).
    from diffviewer.exposure import read_only

    pair = make_pair((256, 256), 150, seed=7)
    science, template = (
        e.replace(variance=read_only(e.variance * np.float32(2.0)))
        for e in (pair.science, pair.template)
    )
    result = run_subtraction(science, template)
    assert result.renormalisation.variance_factor == pytest.approx(0.5, rel=0.1)
    diag = result.diagnostics
    # ~10^4 stamp pixels and ~6 x 10^4 image pixels: robust widths to a few per cent
    for values in (diag.spatial_by_difference, diag.control_by_difference):
        assert diagnostics.robust_std(values) == pytest.approx(
            diagnostics.robust_std(diag.image_by_difference), rel=0.08
        )
