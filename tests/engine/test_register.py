"""Registration on stars: known transforms recovered, real unregistered frames, WCS checks.

The accuracy figure asked of a recovered transform is 0.05 px RMS over the part of the
science image the template covers (the grid of :func:`rms_against`): a tenth of the
0.5 px misregistration at which dipoles from a 5 px FWHM star stand out above the noise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.wcs import WCS
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from diffviewer.config import WarpConfig
from diffviewer.engine import (
    register,
    register_fit,
    register_guesses,
    register_stars,
    warp,
    warp_map,
)
from diffviewer.engine.register_fit import PolynomialTransform
from diffviewer.engine.warp import warp_template
from diffviewer.engine.warp_map import wcs_mapping
from diffviewer.errors import InputError
from diffviewer.exposure import Exposure
from diffviewer.io import read_exposure
from diffviewer.synthetic import make_pair
from tests.conftest import data_path

PYDIA = "pydia/AKB13475I0{}.fits"


def _affine(
    angle_deg: float,
    shift: tuple[float, float],
    centre: tuple[float, float],
    flip: bool = False,
    scale: float = 1.0,
) -> PolynomialTransform:
    """Science px -> template px: rotate about ``centre`` (x mirrored first if ``flip``) and
    scale, ``centre`` landing at ``scale * centre + shift``."""
    t = math.radians(angle_deg)
    rot = scale * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    if flip:
        rot = rot @ np.diag([-1.0, 1.0])
    c = np.asarray(centre)
    offset = scale * c + np.asarray(shift) - rot @ c
    return PolynomialTransform(1, np.column_stack([offset, rot]))


def _resampled(science: Exposure, truth: PolynomialTransform, noise: float, seed: int) -> Exposure:
    """The science frame seen through ``truth`` (template px p shows science px T^-1(p)),
    bicubic, with independent Gaussian noise of ``noise`` counts added."""
    m = np.vstack([truth.coefficients[:, [1, 2, 0]], [0.0, 0.0, 1.0]])
    inverse = PolynomialTransform.from_matrix(np.linalg.inv(m))
    ny, nx = science.shape
    gx, gy = np.meshgrid(np.arange(nx, dtype=float), np.arange(ny, dtype=float))
    sx, sy = inverse(gx, gy)
    image = ndimage.map_coordinates(
        np.asarray(science.image, float), [sy, sx], order=3, mode="constant", cval=np.nan
    )
    image += np.random.default_rng(seed).normal(0.0, noise, image.shape)
    outside = ~np.isfinite(image)
    image[outside] = np.median(image[~outside])
    mask = np.where(outside, 1, 0).astype(np.int32)  # NO_DATA
    return science.replace(image=image, mask=mask, source="resampled")


def rms_against(
    found: PolynomialTransform,
    truth: register_fit.Mapping,
    shape: tuple[int, int],
    template_shape: tuple[int, int] | None = None,
) -> float:
    """RMS distance (px) of the two transforms over science pixels that land in the template
    (of ``template_shape``, the science image's by default)."""
    ny, nx = shape
    ty_max, tx_max = template_shape or shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, 25), np.linspace(0, ny - 1, 25))
    tx, ty = truth(gx, gy)
    inside = (tx >= 0) & (tx <= tx_max - 1) & (ty >= 0) & (ty <= ty_max - 1)
    fx, fy = found(gx, gy)
    return float(np.sqrt(np.mean((fx - tx)[inside] ** 2 + (fy - ty)[inside] ** 2)))


@pytest.fixture(scope="module")
def pydia_0012() -> Exposure:
    return read_exposure(data_path(PYDIA.format("012")))


@pytest.mark.parametrize(
    ("angle", "shift", "flip"),
    [
        (0.0, (0.37, -0.62), False),  # sub-pixel
        (1.5, (37.3, -22.6), False),  # the pydia epochs' 20-40 px, a small rotation
        (-3.0, (200.0, 4.2), False),  # 200 px: 60 % overlap
        (0.7, (-12.4, 18.9), True),  # a mirrored template
    ],
)
def test_known_transform_of_a_real_crowded_frame_is_recovered(
    pydia_0012: Exposure, angle: float, shift: tuple[float, float], flip: bool
) -> None:
    ny, nx = pydia_0012.shape
    truth = _affine(angle, shift, ((nx - 1) / 2, (ny - 1) / 2), flip)
    sky_noise = float(np.sqrt(np.median(pydia_0012.variance)))
    template = _resampled(pydia_0012, truth, sky_noise, seed=3)
    reg = register.register_on_stars(pydia_0012, template, order=1)
    assert reg.method == "stars"
    assert reg.n_matched >= 100  # a crowded bulge field: hundreds of stars in common
    assert rms_against(reg.transform, truth, pydia_0012.shape) < 0.05


def test_sparse_field_with_different_psfs() -> None:
    # A dozen stars, science FWHM 4.5 px against 2.5 px, 2 degrees and (40, -25) px apart.
    pair = make_pair(
        (300, 300),
        14,
        seed=5,
        sci_fwhm=4.5,
        tmpl_fwhm=2.5,
        tmpl_rotation_deg=2.0,
        tmpl_shift=(40.0, -25.0),
        flux_range=(2e4, 3e5),
    )
    truth = _affine(2.0, (40.0, -25.0), (149.5, 149.5))
    science, template = pair.science.replace(wcs=None), pair.template.replace(wcs=None)
    reg = register.register_on_stars(science, template, order=1)
    assert 6 <= reg.n_matched <= 14
    assert rms_against(reg.transform, truth, science.shape) < 0.05


def test_unrelated_fields_are_refused_with_the_star_counts() -> None:
    a = make_pair((200, 200), 60, seed=1).science.replace(wcs=None)
    b = make_pair((200, 200), 60, seed=2).science.replace(wcs=None)
    with pytest.raises(InputError, match=r"star patterns do not match; \d+ stars .* \d+ on"):
        warp_template(b, a, WarpConfig())


def test_pydia_epochs_are_registered_and_warped() -> None:
    science = read_exposure(data_path(PYDIA.format("060")))
    template = read_exposure(data_path(PYDIA.format("012")))
    result = warp_template(template, science, WarpConfig())
    reg = result.registration
    assert reg.method == "stars" and result.warped
    # 0060 is 20-40 px from 0012 (data README); the fit leaves centroid noise only
    shift = reg.transform(np.array([255.5]), np.array([255.5]))
    offset = math.hypot(shift[0][0] - 255.5, shift[1][0] - 255.5)
    assert 20 < offset < 45
    assert reg.n_matched > 200 and reg.rms < 0.3
    assert 0.85 < result.coverage < 0.97  # ~(512-22)(512-25)/512^2 = 0.91


def test_wrong_wcs_is_refined_on_stars_and_said() -> None:
    # The template's WCS is shifted by 3 px from the truth: the stars disagree, so the
    # star fit replaces the WCS mapping and a note says by how much.
    pair = make_pair((256, 256), 150, seed=4, tmpl_shift=(10.0, 5.0))
    wrong = pair.template.wcs.deepcopy()
    wrong.wcs.crpix = wrong.wcs.crpix + np.array([3.0, 0.0])
    wrong.wcs.set()
    result = warp_template(pair.template.replace(wcs=wrong), pair.science, WarpConfig())
    reg = result.registration
    assert reg.method == "wcs refined on stars"
    assert any("disagree" in note and "3.0" in note for note in result.warnings)
    truth = _affine(0.0, (10.0, 5.0), (127.5, 127.5))
    assert rms_against(reg.transform, truth, pair.science.shape) < 0.05
    # a right WCS is kept, and confirmed by the stars to well within the tolerance
    right = warp_template(pair.template, pair.science, WarpConfig())
    assert right.registration.method == "wcs" and right.registration.rms < 0.2
    assert right.registration.n_matched > 50


@pytest.mark.parametrize("shape", [(24, 1200), (1200, 24)])
def test_a_right_wcs_on_a_strip_with_its_stars_on_one_row_is_kept(
    shape: tuple[int, int],
) -> None:
    # A strip two centroid stamps across: every star found lies on its middle row, so
    # the fit's terms across the strip rest on sub-pixel centroid scatter. Judged at the
    # strip's edges, that fit said the right WCS was 11.5 px off and replaced it; judged
    # by the WCS corrected along the line, the WCS is kept. A WCS 3 px off along the row is
    # still caught and corrected along the line: the stars' fit, applied across the strip,
    # was 11.5 px off at its edges.
    pair = make_pair(shape, 40, seed=3)
    right = warp_template(pair.template, pair.science, WarpConfig())
    assert right.registration.method == "wcs" and right.registration.n_matched >= 20
    assert not any("disagree" in note for note in right.warnings)
    along_row = (3.0, 0.0) if shape[0] < shape[1] else (0.0, 3.0)
    caught = warp_template(_wcs_shifted(pair.template, *along_row), pair.science, WarpConfig())
    reg = caught.registration
    assert reg.method == "wcs refined on stars" and reg.transform is not None
    assert any("disagree" in note and "on a line" in note for note in caught.warnings)
    truth = _affine(0.0, (0.0, 0.0), (0.0, 0.0))  # the pair's template is on its grid
    assert rms_against(reg.transform, truth, pair.science.shape) < 0.05


def _rotated(wcs: WCS, degrees: float) -> WCS:
    """A copy of a WCS turned by ``degrees`` about its reference pixel."""
    turned = wcs.deepcopy()
    t = math.radians(degrees)
    turned.wcs.cd = turned.wcs.cd @ np.array(
        [[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]]
    )
    turned.wcs.set()
    return turned


def _error_of_used(result: warp.WarpResult, science: Exposure, truth: WCS) -> float:
    """Largest distance (px) of the mapping used from the true one, over the science image."""
    reg = result.registration
    assert reg.method == "wcs refined on stars" and reg.transform is not None
    ny, nx = science.shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, 15), np.linspace(0, ny - 1, 15))
    assert science.wcs is not None
    tx, ty = warp_map.wcs_mapping(science.wcs, truth)(gx, gy)
    fx, fy = reg.transform(gx, gy)
    return float(np.hypot(fx - tx, fy - ty).max())


@pytest.mark.parametrize("shape", [(24, 1200), (1200, 24)])
def test_a_wcs_turned_on_a_strip_is_corrected_along_the_line(shape: tuple[int, int]) -> None:
    # A WCS turned by 0.1 degree (2 px at the strip's ends): stars on a line fix the
    # rotation along it; a shift alone left 1.1-1.4 px, the stars' fit 10-12 px.
    pair = make_pair(shape, 40, seed=4)
    assert pair.template.wcs is not None
    turned = pair.template.replace(wcs=_rotated(pair.template.wcs, 0.1))
    result = warp_template(turned, pair.science, WarpConfig())
    assert _error_of_used(result, pair.science, pair.template.wcs) < 0.15


def test_a_wcs_turned_on_a_sparse_field_is_replaced_by_the_stars_fit() -> None:
    # Eight stars on 512^2, the WCS turned by 0.3 degree: their fit is uncertain by 0.4 px
    # at the corners but right (0.2 px); a WCS moved by their shift alone, tried when the
    # fit's error exceeded the tolerance, was 2.2 px off (the review of 2989709).
    pair = make_pair((512, 512), 8, seed=4)
    assert pair.template.wcs is not None
    turned = pair.template.replace(wcs=_rotated(pair.template.wcs, 0.3))
    result = warp_template(turned, pair.science, WarpConfig())
    assert _error_of_used(result, pair.science, pair.template.wcs) < 0.5


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    across=st.integers(14, 80),
    along=st.integers(150, 900),
    tall=st.booleans(),
    seed=st.integers(0, 999),
)
def test_a_right_wcs_on_a_strip_of_any_size_is_kept(
    across: int, along: int, tall: bool, seed: int
) -> None:
    # Strips 14-80 px across and 150-900 px along, a star per 400 px^2: the stars checking
    # a right WCS never replace it (40 random strips by scratch before this test: all kept;
    # with the WCS 3 px off, all replaced, within 0.36 px of the truth at the corners).
    shape = (along, across) if tall else (across, along)
    pair = make_pair(shape, max(5, across * along // 400), seed=seed)
    assert warp_template(pair.template, pair.science, WarpConfig()).registration.method == "wcs"


@pytest.mark.parametrize(
    ("shape", "degrees", "seed"),
    [((24, 1200), 0.5, 1), ((1200, 24), 180.0, 2), ((24, 1500), 0.0, 5)],
)
def test_a_strip_without_a_wcs_registers_along_its_line_of_stars(
    shape: tuple[int, int], degrees: float, seed: int
) -> None:
    # Strips of 24 px, no WCS: the stars found lie on a line, and the affine fit's terms
    # across it followed the centroids' scatter, 7-8 px off over the strip (a review's
    # finding). The similarity through the pairs is used, within the bound of the tests
    # above.
    pair = make_pair(shape, 150, seed=seed, tmpl_rotation_deg=degrees, tmpl_shift=(5.0, 0.3))
    truth = wcs_mapping(pair.science.wcs, pair.template.wcs)
    science, template = pair.science.replace(wcs=None), pair.template.replace(wcs=None)
    reg = warp_template(template, science, WarpConfig()).registration
    assert reg.applied and rms_against(reg.transform, truth, shape) < 0.1


def test_a_strip_on_one_grid_without_a_wcs_is_not_resampled() -> None:
    # The same strip unshifted: its line of stars' fit maps them no better than one grid
    # does (an F-test, as off the line), and the template is used as it is, with a note.
    pair = make_pair((24, 1200), 150, seed=1)
    science, template = pair.science.replace(wcs=None), pair.template.replace(wcs=None)
    result = warp_template(template, science, WarpConfig())
    assert not result.warped and not result.registration.applied
    assert "lie on a line" in result.registration.notes[0]


@pytest.mark.parametrize("shape", [(30, 1200), (1200, 28)])
def test_a_mirrored_strip_is_told_from_its_spread_across_the_line(
    shape: tuple[int, int],
) -> None:
    # The template strip mirrored (its x reversed): a similarity cannot mirror, and on a
    # line the mirror became a turn of 180 degrees, 15-16 px off across 28-30 px strips
    # (a review's finding). Both parities are fitted; the mirror fits the stars'
    # spread across the line 20-30 times better in RMS and is taken (F-test).
    pair = make_pair(shape, 200, seed=3, tmpl_rotation_deg=0.5, tmpl_shift=(3.0, 0.3))
    seen = wcs_mapping(pair.science.wcs, pair.template.wcs)
    width = pair.template.shape[1]

    def truth(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tx, ty = seen(x, y)
        return width - 1 - tx, ty

    flipped = pair.template.replace(
        image=pair.template.image[:, ::-1].copy(),
        variance=pair.template.variance[:, ::-1].copy(),
        mask=pair.template.mask[:, ::-1].copy(),
        wcs=None,
    )
    reg = register.register_on_stars(pair.science.replace(wcs=None), flipped, order=1)
    assert rms_against(reg.transform, truth, shape) < 0.1 and not reg.notes


def test_a_bent_strip_keeps_its_bend_along_the_line_at_order_2() -> None:
    # An 18 x 1200 strip of a field seen through a bend along it (y' = y + k (x - cx)^2,
    # 2 px at its ends), warp.transform_order = 2: the correction along the line was a
    # straight line, 1.4 px off at the ends (a review's finding); it is now a polynomial
    # of the order asked for.
    field = make_pair((218, 1400), 218 * 1400 // 300, seed=1, flux_range=(2e3, 3e5))
    template = field.template.replace(wcs=None)
    k, centre = 5.6e-6, 600.0

    def bent(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = np.asarray(x, float), np.asarray(y, float)
        return x + 100.3, y + 100.0 + k * (x - centre) ** 2

    grid = Exposure(np.zeros((18, 1200)), np.ones((18, 1200)), np.zeros((18, 1200), np.int32))
    seen, _ = warp.warp_exposure(template, grid, "bicubic", mapping=bent)
    noise = np.random.default_rng(1).normal(0.0, 3.0, seen.shape)
    science = Exposure(
        np.nan_to_num(seen.image) + noise, np.full(seen.shape, 9.0), np.zeros(seen.shape, np.int32)
    )
    reg = register.register_on_stars(science, template, order=2)
    assert rms_against(reg.transform, bent, science.shape, template.shape) < 0.1


def test_a_strip_shifted_by_a_fraction_of_a_pixel_is_resampled() -> None:
    # A 1000 x 32 strip and its template 0.15 px apart along it: the shift was judged
    # against three times its error at the line's ends, and kept off (0.15 px left in
    # where the fit was within 0.04 px); the F-test of the fit against one grid (as off
    # the line) applies it.
    pair = make_pair((1000, 32), 200, seed=2, flux_range=(1e3, 1e5), tmpl_shift=(0.0, 0.15))
    truth = wcs_mapping(pair.science.wcs, pair.template.wcs)
    science, template = pair.science.replace(wcs=None), pair.template.replace(wcs=None)
    reg = warp_template(template, science, WarpConfig()).registration
    assert reg.applied and rms_against(reg.transform, truth, science.shape) < 0.05


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    across=st.integers(24, 60),
    along=st.integers(500, 1500),
    tall=st.booleans(),
    degrees=st.floats(-1.0, 1.0),
    seed=st.integers(0, 999),
)
# found by this test on a with-data suite run: the identity paired 22 of 49 stars at
# 0.33 px into a fit 0.94 px off, kept as trusted before the translation was tried
@example(across=41, along=513, tall=True, degrees=0.125, seed=1)
def test_a_turned_strip_of_any_size_registers_without_a_wcs(
    across: int, along: int, tall: bool, degrees: float, seed: int
) -> None:
    # Strips 24-60 px across, turned up to a degree and shifted, a star per 250 px^2, no
    # WCS: within half a pixel (where a misregistration's dipoles stand out) over the
    # part the template covers. Scratch, 100 such strips: at most 0.19 px (24a51c5: 25 of
    # 100 beyond 0.3 px, up to 119 px).
    shape = (along, across) if tall else (across, along)
    pair = make_pair(
        shape, across * along // 250, seed=seed, tmpl_rotation_deg=degrees, tmpl_shift=(3.0, 0.5)
    )
    truth = wcs_mapping(pair.science.wcs, pair.template.wcs)
    science, template = pair.science.replace(wcs=None), pair.template.replace(wcs=None)
    reg = warp_template(template, science, WarpConfig()).registration
    assert reg.applied and rms_against(reg.transform, truth, shape) < 0.5


def test_a_star_fits_position_error_counts_its_degrees_of_freedom() -> None:
    # 4,000 affine fits of 12 stars each, 0.1 px of centroid noise per axis: the error
    # the fit predicts at a corner of the image, squared, averages to the mean square of
    # the positions it maps there, to within the few per cent the clipping at 3 robust
    # sigma takes off the residuals (measured 0.95; 4,000 draws know it to 2 %). The
    # residual RMS alone (9 degrees of freedom of 12 pairs per axis) predicted 0.72.
    rng = np.random.default_rng(5)
    truth = _affine(2.0, (1.5, -0.7), (50.0, 100.0))
    corner = (np.array([0.0]), np.array([0.0]))
    predicted, mapped = [], []
    for _ in range(4000):
        source = rng.uniform((5.0, 20.0), (30.0, 200.0), size=(12, 2))
        target = np.column_stack(truth(source[:, 0], source[:, 1]))
        fit = register_fit.fit_transform(source, target + rng.normal(0.0, 0.1, (12, 2)), 1)
        predicted.append(fit.position_error(corner))
        mapped.append(np.concatenate(fit.transform(*corner)) - np.concatenate(truth(*corner)))
    ratio = np.mean(np.square(predicted)) / np.mean(np.sum(np.square(mapped), axis=1))
    assert 0.9 < ratio < 1.05


def test_a_fit_bending_to_blends_does_not_improve_on_the_right_mapping() -> None:
    # 11 stars in a strip 10 px wide (a narrow template piece), centroids to 0.05 px, the
    # two rightmost blends pulled 0.4 and 0.7 px. The affine fit keeps and bends to both
    # across the strip: an F-test on its 11 pairs finds it better than the true mapping
    # (p = 1e-4). With the blends set aside as the true mapping's outliers, the fit is
    # no better; a mapping off by 0.3 px is still found wanting by the same stars.
    rng = np.random.default_rng(36)
    truth = _affine(0.0, (0.0, 0.0), (0.0, 0.0))
    source = np.column_stack([rng.uniform(15.0, 25.0, 11), rng.uniform(20.0, 210.0, 11)])
    target = source + rng.normal(0.0, 0.05, source.shape)
    target[np.argsort(source[:, 0])[-2:], 0] += [0.4, 0.7]
    fit = register_fit.fit_transform(source, target, 1)
    assert fit.n_matched == 11
    assert not register_fit.improves_on(fit, truth)
    assert register_fit.improves_on(fit, _affine(0.0, (0.3, 0.0), (0.0, 0.0)))


def test_a_fit_without_degrees_of_freedom_has_an_unknown_error_and_keeps_a_wcs() -> None:
    # 3 pairs fit an affine map exactly: its residuals say nothing of its error, which
    # is NaN (it was infinite, and a science-template offset of any size then fell within
    # "three times the fit's error": the template was not warped). A WCS is not replaced
    # by such a fit.
    source = np.array([[10.0, 10.0], [50.0, 12.0], [30.0, 60.0]])
    fit = register_fit.fit_transform(source, source + np.array([2.0, 0.0]), 1)
    assert fit.n_matched == 3 and math.isnan(fit.position_error(register_fit.image_grid((64, 64))))
    assert not register_fit.improves_on(fit, register_fit.identity)


def test_the_shift_most_star_pairs_agree_on_is_found_among_unpaired_stars() -> None:
    # 12 stars seen on both images, shifted (17.3, -8.6) px with 0.1 px centroid noise,
    # and 8 more on each image alone (the frames overlap in part): the translation is
    # the offsets' cluster, within the centroid noise; the other 388 of the 400 offsets
    # scatter over the 200 px field.
    rng = np.random.default_rng(3)
    shared = rng.uniform(0, 200, (12, 2))
    science = np.vstack([shared, rng.uniform(0, 200, (8, 2))])
    moved = shared + np.array([17.3, -8.6]) + rng.normal(0, 0.1, (12, 2))
    template = np.vstack([moved, rng.uniform(0, 200, (8, 2))])
    order = rng.permutation(20)
    guess = register_guesses.shift_guess(science, template[order])
    tx, ty = guess(np.array([100.0]), np.array([100.0]))
    assert np.hypot(tx[0] - 117.3, ty[0] - 91.4) < 0.1


def _cut(exposure: Exposure, y0: int, x0: int, side: int) -> Exposure:
    """A ``side`` x ``side`` cutout at (y0, x0), its WCS cut with it."""
    box = (slice(y0, y0 + side), slice(x0, x0 + side))
    return exposure.replace(
        image=exposure.image[box],
        variance=exposure.variance[box],
        mask=exposure.mask[box],
        wcs=exposure.wcs.slice(box),
    )


def _wcs_shifted(exposure: Exposure, dx: float, dy: float) -> Exposure:
    """The exposure with its WCS's reference pixel moved by (dx, dy) px (a wrong WCS)."""
    wrong = exposure.wcs.deepcopy()
    wrong.wcs.crpix = wrong.wcs.crpix + np.array([dx, dy])
    wrong.wcs.set()
    return exposure.replace(wcs=wrong)


def test_a_wcs_far_off_on_a_much_larger_template_is_found_by_the_stars_translation() -> None:
    # A 128 px science cutout of a crowded field (a star per 150 px^2) against the whole
    # 512 px template, whose WCS is 8 px off. The WCS pairs stars at random, and the 60
    # brightest stars of the template, which star patterns are matched among, lie mostly
    # outside the cutout: the chance fit was kept ('wcs', 8 px off, no note) or replaced
    # the WCS. The translation the stars agree on after the WCS's rotation and scale,
    # among the template's stars near the cutout's footprint, finds the truth (within
    # 0.1 px RMS: a fifth of the misregistration at which dipoles stand out, from the
    # few dozen stars of a 128 px cutout).
    pair = make_pair((512, 512), 1750, seed=7, tmpl_shift=(3.0, -2.0), flux_range=(2e3, 3e5))
    science = _cut(pair.science, 200, 180, 128)
    template = _wcs_shifted(pair.template, 8.0, 0.0)
    result = warp_template(template, science, WarpConfig())
    reg = result.registration
    assert reg.method == "wcs refined on stars" and reg.n_matched > 20
    truth = _affine(0.0, (183.0, 198.0), (0.0, 0.0))
    gx, gy = register_fit.image_grid(science.shape)
    fx, fy = reg.transform(gx, gy)
    tx, ty = truth(gx, gy)
    assert float(np.sqrt(np.mean((fx - tx) ** 2 + (fy - ty) ** 2))) < 0.1


def test_a_small_cutout_of_a_much_larger_template_is_found_without_a_wcs() -> None:
    # A 96 px science cutout of a field against the whole 768 px template (64 times its
    # area), neither with a WCS: the brightest 200 stars of the template, among which
    # the translation was voted for, held about three of the cutout's, and its 60
    # brightest, among which star patterns are matched, about one, so the registration
    # failed ('the star patterns do not match'). The template's stars in proportion to
    # its area (the cutout's density) find the translation, to the bound of the test
    # above.
    pair = make_pair((768, 768), 2500, seed=7, flux_range=(2e3, 3e5))
    science = _cut(pair.science, 300, 420, 96).replace(wcs=None)
    result = warp_template(pair.template.replace(wcs=None), science, WarpConfig())
    reg = result.registration
    assert reg.method == "stars" and reg.n_matched > 10
    truth = _affine(0.0, (420.0, 300.0), (0.0, 0.0))
    assert rms_against(reg.transform, truth, science.shape, pair.template.shape) < 0.1


def test_a_turned_cutout_of_a_much_larger_template_is_found_without_a_wcs() -> None:
    # As above, the template's grid turned by 30 degrees: no translation is shared, and
    # star patterns were sought among each image's 60 brightest stars, about one of the
    # template's inside the cutout ('the star patterns do not match'). Triangles of each
    # image's stars in proportion to its area (about 3840 of the template's) vote for the
    # similarity, which the star fit then refines.
    pair = make_pair((768, 768), 2500, seed=7, flux_range=(2e3, 3e5), tmpl_rotation_deg=30.0)
    science = _cut(pair.science, 336, 256, 96)
    truth = wcs_mapping(science.wcs, pair.template.wcs)
    result = warp_template(pair.template.replace(wcs=None), science.replace(wcs=None), WarpConfig())
    reg = result.registration
    assert reg.method == "stars" and reg.n_matched > 10
    assert rms_against(reg.transform, truth, science.shape, pair.template.shape) < 0.1


def test_a_third_of_a_turned_field_registers_on_its_own() -> None:
    # A template piece of a third of the science field's columns, its grid turned by 4.2
    # degrees, no WCS. The translation the stars agree on paired 19 stars in a band at
    # 1.2 px RMS, a fit 6 px off elsewhere, trusted for its pairs' number; star patterns
    # among the science's 60 brightest stars (two thirds of them beyond the piece) found
    # nothing better. With each image's stars in proportion to its area, the patterns
    # pair 39 at 0.13 px, and the fit on more pairs is kept.
    pair = make_pair((312, 236), 312 * 236 // 400, seed=130, tmpl_rotation_deg=-4.2,
                     tmpl_shift=(7.46, 1.0))  # fmt: skip
    truth = wcs_mapping(pair.science.wcs, pair.template.wcs)
    piece = pair.template.replace(
        image=pair.template.image[:, :78],
        variance=pair.template.variance[:, :78],
        mask=pair.template.mask[:, :78],
        wcs=None,
    )
    reg = register.register_on_stars(pair.science.replace(wcs=None), piece, order=1)
    assert reg.n_matched > 30
    assert rms_against(reg.transform, truth, pair.science.shape, piece.shape) < 0.1


@pytest.mark.parametrize(
    ("scale", "degrees", "n_stars", "seed"), [(0.5, -128.1, 577, 201), (2.0, -61.3, 353, 208)]
)
def test_one_field_at_another_pixel_scale_registers_without_a_wcs(
    scale: float, degrees: float, n_stars: int, seed: int
) -> None:
    # A 300 px field and the same field on a grid of twice or half its pixel scale (a
    # quarter or 4 times its pixels, as 2 x 2 binning), turned, no WCS: each image's
    # stars in proportion to its area made the lists 4 times as dense on one side, their
    # nearest neighbours differed, and the pair was refused (as 4 of 24 such draws in a
    # review). Equal lists are tried next, as for one field at another scale, and the
    # fit is within the bound of the tests above.
    pair = make_pair((300, 300), n_stars, seed=seed, flux_range=(2e3, 3e5))
    truth = _affine(degrees, (3.3, -2.1), (149.5, 149.5), scale=scale)
    side = round(300 * scale)
    gx, gy = np.meshgrid(np.arange(side, dtype=float), np.arange(side, dtype=float))
    sx, sy = truth.inverse()(gx, gy)
    image = ndimage.map_coordinates(pair.template.image, [sy, sx], order=3, cval=0.0)
    image += np.random.default_rng(seed).normal(0.0, 2.0, image.shape)
    template = Exposure(image, np.full(image.shape, 4.0), np.zeros(image.shape, np.int32))
    reg = register.register_on_stars(pair.science.replace(wcs=None), template, order=1)
    assert rms_against(reg.transform, truth, pair.science.shape, template.shape) < 0.1


def test_a_shift_vote_takes_the_template_stars_in_proportion_to_its_area() -> None:
    # 40 stars of a 200 px science field among 4000 stars over a template of 100 times
    # its area, brightest first in random order: the template's 200 brightest hold about
    # two of the science stars, its 4000 all of them. The vote need only come within the
    # match radius (2.5 px) for the fit that follows; random offsets in the winning bin
    # move its median by about a tenth of a pixel.
    rng = np.random.default_rng(5)
    template = rng.uniform(0, 2000, (4000, 2))
    inside = np.flatnonzero(((template >= 700) & (template < 900)).all(axis=1))[:40]
    science = template[inside] - 700.0 + rng.normal(0, 0.1, (len(inside), 2))
    guess = register_guesses.shift_guess(science, template, area_ratio=100.0)
    tx, ty = guess(np.array([100.0]), np.array([100.0]))
    assert np.hypot(tx[0] - 800.0, ty[0] - 800.0) < 0.5


def test_a_star_fit_chance_can_give_neither_confirms_nor_replaces_a_wcs() -> None:
    # Two unrelated crowded fields whose WCSs say they are one: every star pairing is
    # chance. The WCS was kept with the chance pairs' count and RMS (or replaced by
    # them); now it is used and said to be unchecked, and the line turns warning-coloured.
    a = make_pair((256, 256), 500, seed=1).science
    b = make_pair((256, 256), 500, seed=2).template.replace(wcs=a.wcs)
    result = warp_template(b, a, WarpConfig())
    reg = result.registration
    assert reg.method == "wcs" and reg.transform is None and reg.n_matched == 0
    assert any("used unchecked" in note for note in result.warnings)


def test_the_rms_of_a_wcs_kept_is_that_of_the_pairs_it_counts() -> None:
    # A right WCS, checked by the stars: its RMS is over the n_matched pairs the star fit
    # kept (it was over every pair within the match radius, blends and all: five
    # times the fit's own RMS).
    pair = make_pair((256, 256), 400, seed=3)
    reg = warp_template(pair.template, pair.science, WarpConfig()).registration
    assert reg.method == "wcs" and not reg.applied and reg.n_matched > 100
    sci, tmpl = register_stars.find_stars(pair.science), register_stars.find_stars(pair.template)
    fit = register_fit.refine(sci, tmpl, register_fit.identity, 1)
    assert fit is not None and reg.n_matched == fit.n_matched
    assert reg.rms == pytest.approx(register_fit.rms_about(fit, register_fit.identity))
    assert reg.rms < 1.2 * fit.rms


def test_the_clip_keeps_the_real_pairs_of_faint_and_bright_stars() -> None:
    # 300 real pairs whose centroid errors run from 0.01 to 0.2 px (bright to faint) and
    # 15 chance pairs 1-2.5 px off. A clip scaled by the pairs it kept fell with each
    # pass and cut the faint stars' real pairs (about a third); scaled by all of them,
    # it keeps at least 90 % of the real pairs and none of the chance ones.
    rng = np.random.default_rng(11)
    source = rng.uniform(0, 500, (315, 2))
    error = np.exp(rng.uniform(np.log(0.01), np.log(0.2), 300))
    offset = np.vstack(
        [
            rng.normal(0.0, 1.0, (300, 2)) * error[:, None],
            rng.uniform(1.0, 2.5, (15, 1)) * np.array([[0.6, 0.8]]),
        ]
    )
    fit = register_fit.fit_transform(source, source + offset, 1)
    kept = {tuple(p) for p in fit.source}
    assert sum(tuple(p) in kept for p in source[:300]) >= 270
    assert not any(tuple(p) in kept for p in source[300:])


@pytest.mark.parametrize(("shift", "least", "most"), [((0.45, -0.30), 10, 16), ((0.0, 0.0), 0, 0)])
def test_a_sub_pixel_shift_the_stars_measure_is_applied(
    shift: tuple[float, float], least: int, most: int
) -> None:
    # 128 px frames without a WCS, 14 faint stars of FWHM 5 and 4 px: the warp was skipped
    # when the largest offset over the image (rotation and scale terms, mostly noise,
    # included) was within three times the largest error (at a corner): a 0.54 px shift
    # was applied in 5 of 16 draws. Now the fit is applied when it fits its stars
    # significantly better than one pixel grid (an F-test at 3 sigma): 10 of 16, none
    # of 16 frames on one grid; where it is not, the stars put the shift within three
    # errors of zero (7-8 stars at 0.56-0.90 px RMS), and a note says so.
    found = 0
    for seed in range(16):
        pair = make_pair(
            (128, 128),
            14,
            seed=seed,
            tmpl_shift=shift,
            flux_range=(1500, 3e4),
            sci_fwhm=5.0,
            tmpl_fwhm=4.0,
        )
        science, template = pair.science.replace(wcs=None), pair.template.replace(wcs=None)
        result = warp_template(template, science, WarpConfig())
        reg = result.registration
        found += int(result.warped)
        if reg.method == "stars" and not reg.applied:
            assert not result.warped
            assert any("not resampled" in note for note in result.warnings)
            tx, ty = reg.transform(np.array([63.5]), np.array([63.5]))
            assert math.hypot(tx[0] - 63.5, ty[0] - 63.5) < 3.0 * reg.position_error
    assert least <= found <= most


@pytest.mark.parametrize(("n_template", "said"), [(600, "same field"), (5000, "covers 114 times")])
def test_a_failed_registration_on_a_much_larger_template_says_so(
    n_template: int, said: str
) -> None:
    # Unrelated fields: the template's area is said where its star list was cut at
    # register_stars.MAX_STARS (the science image's stars may be among those left out).
    science = make_pair((96, 96), 30, seed=1).science.replace(wcs=None)
    template = make_pair((1024, 1024), n_template, seed=2).template.replace(wcs=None)
    with pytest.raises(InputError, match=said):
        warp_template(template, science, WarpConfig())
