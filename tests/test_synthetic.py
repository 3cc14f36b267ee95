"""The synthetic pairs' Moffat stars hold their flux and have the width and shape asked for."""

from __future__ import annotations

import numpy as np
import pytest

from diffviewer.synthetic import make_pair, render_gaussians, render_moffats


def _moments(image: np.ndarray) -> tuple[float, float, float]:
    """Second moments (xx, yy, xy) about the light centroid."""
    yy, xx = np.indices(image.shape)
    w = image / image.sum()
    cx, cy = (w * xx).sum(), (w * yy).sum()
    return (
        float((w * (xx - cx) ** 2).sum()),
        float((w * (yy - cy) ** 2).sum()),
        float((w * (xx - cx) * (yy - cy)).sum()),
    )


def test_moffat_star_holds_its_flux_and_half_maximum_at_its_fwhm() -> None:
    img = render_moffats(
        (61, 61), np.array([30.0]), np.array([30.0]), np.array([1e4]), np.array([4.0]),
        2.5, np.array([0.0]), np.array([0.0]), 30, oversample=9,
    )  # fmt: skip
    assert abs(img.sum() - 1e4) < 1e-6  # renormalised in its box: exact
    # pixel-integrated profile: half of the (integrated) peak falls at r = FWHM/2 = 2 px
    # within the pixel-integration blur of the 1-px samples (~5 %)
    row = img[30]
    assert 0.45 < row[32] / row[30] < 0.55


def test_elliptical_moffat_axis_follows_the_position_angle() -> None:
    img = render_moffats(
        (81, 81), np.array([40.0]), np.array([40.0]), np.array([1.0]), np.array([5.0]),
        3.5, np.array([0.3]), np.array([30.0]), 40,
    )  # fmt: skip
    mxx, myy, mxy = _moments(img)
    angle = 0.5 * np.degrees(np.arctan2(2 * mxy, mxx - myy))
    assert abs(angle - 30.0) < 1.0
    lam = np.linalg.eigvalsh([[mxx, mxy], [mxy, myy]])
    # the moments' axis ratio is b/a = 1 - e = 0.7 up to the box truncation of the wings
    assert 0.65 < np.sqrt(lam[0] / lam[1]) < 0.75


def test_moffat_pair_fluxes_differ_by_the_photometric_scale() -> None:
    pair = make_pair(
        (256, 256), 30, seed=4, profile="moffat", sci_fwhm=4.0, tmpl_fwhm=3.0,
        sci_beta=2.5, photometric_scale=1.3, sky=1e-6, tmpl_sky=1e-6,
    )  # fmt: skip
    # with (almost) no noise the image totals are the star totals: ratio exactly 1.3
    ratio = pair.science.image.sum(dtype=np.float64) / pair.template.image.sum(dtype=np.float64)
    assert abs(ratio - 1.3) < 1e-3


@pytest.mark.parametrize(
    ("x", "y"), [(-3.2, 10.0), (20.4, 10.0), (10.0, -0.6), (7.0, 22.5), (-5.9, -5.9), (25.1, 23.0)]
)
def test_a_star_beyond_the_edge_lights_what_its_box_reaches(x: float, y: float) -> None:
    # The same star in a 20 x 24 image and in one 8 px larger on every side, cropped:
    # the pixels must agree (centres beyond the edge crashed, or wrapped to the far side).
    half, pad = 6, 8
    xs, ys, flux = np.array([x]), np.array([y]), np.array([1000.0])
    small = render_gaussians((22, 24), xs, ys, flux, np.array([1.5]), half)
    large = render_gaussians(
        (22 + 2 * pad, 24 + 2 * pad), xs + pad, ys + pad, flux, np.array([1.5]), half
    )
    np.testing.assert_allclose(small, large[pad:-pad, pad:-pad], rtol=0, atol=1e-9)
    args = (np.array([2.2]), 2.5, np.array([0.2]), np.array([30.0]), half)
    small = render_moffats((22, 24), xs, ys, flux, *args)
    large = render_moffats((22 + 2 * pad, 24 + 2 * pad), xs + pad, ys + pad, flux, *args)
    np.testing.assert_allclose(small, large[pad:-pad, pad:-pad], rtol=0, atol=1e-9)
    assert small.sum() > 0.0  # each box reaches into the image


def test_a_cutout_narrower_than_six_fwhm_holds_its_stars_at_the_centre() -> None:
    # Stars keep 3 FWHM from the edges; a 36 px cutout of FWHM 8 px has no such room
    # (this raised from numpy's uniform draw) and centres them.
    pair = make_pair((36, 36), 3, seed=0, sci_fwhm=8.0, tmpl_fwhm=5.0)
    assert np.allclose(pair.star_x, 17.5) and np.allclose(pair.star_y, 17.5)


@pytest.mark.parametrize("profile", ["gaussian", "moffat"])
def test_the_science_psf_is_a_transient_as_rendered(profile: str) -> None:
    # The pair's true science PSF is its sources' own rendering: a transient on a pixel
    # centre, less the same pair without it, is that image times its flux (noise made
    # negligible by a gain of 1e12 electrons per count).
    kwargs = {"profile": profile, "gain": 1e12, "seed": 4}
    without = make_pair((96, 96), 1, flux_range=(1.0, 1.0), **kwargs)
    lit = make_pair((96, 96), 1, flux_range=(1.0, 1.0), transients=[(48.0, 48.0, 1e7)], **kwargs)
    psf = lit.sci_psf
    h = psf.shape[0] // 2
    assert psf.shape == (2 * h + 1, 2 * h + 1) and psf.sum() == pytest.approx(1.0)
    added = (lit.science.image - without.science.image)[48 - h : 49 + h, 48 - h : 49 + h] / 1e7
    np.testing.assert_allclose(added, psf, rtol=1e-6, atol=1e-9)
