"""Templates in pieces: each registered and warped, combined, then checked for coverage."""

from __future__ import annotations

import itertools
import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffviewer import cli
from diffviewer.config import SubtractionConfig
from diffviewer.engine import warp, warp_map
from diffviewer.engine.mosaic import combine_pieces
from diffviewer.engine.pipeline import run_subtraction
from diffviewer.exposure import Exposure, MaskPlane
from diffviewer.io import read_exposure
from diffviewer.paths import read_pairs_csv, template_specs
from diffviewer.results import incomplete_reason
from diffviewer.stats import robust_std
from tests.conftest import data_path

PYDIA = "pydia/AKB13475I0{}.fits"


def _columns(exposure: Exposure, start: int, stop: int, name: str) -> Exposure:
    """Columns ``start:stop`` of an exposure as a piece of its own (no WCS)."""
    cut = np.s_[:, start:stop]
    return exposure.replace(
        image=exposure.image[cut],
        variance=exposure.variance[cut],
        mask=exposure.mask[cut],
        source=name,
    )


def _flat(value: float, variance: float, shape=(60, 60), seed: int = 0) -> Exposure:
    rng = np.random.default_rng(seed)
    image = value + rng.normal(0.0, np.sqrt(variance), shape)
    return Exposure(image, np.full(shape, variance), np.zeros(shape, np.int32), source=f"s{seed}")


def test_independent_pieces_are_inverse_variance_weighted() -> None:
    # Two independent measurements of one sky: the weighted mean has variance
    # 1 / (1/4 + 1/12) = 3, and its measured scatter agrees with that to its 1 % error.
    a, b = _flat(10.0, 4.0, (200, 200), 1), _flat(10.0, 12.0, (200, 200), 2)
    combination = combine_pieces([a, b])
    combined, notes = combination.exposure, combination.notes
    assert not notes
    np.testing.assert_allclose(combined.variance, 3.0, rtol=1e-6)
    assert np.std(combined.image) == pytest.approx(np.sqrt(3.0), rel=0.03)


def test_shared_pixels_keep_their_variance_and_masks_are_carried() -> None:
    a = _flat(10.0, 4.0)
    no_data, bad = int(MaskPlane.NO_DATA), int(MaskPlane.BAD)
    mask_a = np.zeros(a.shape, np.int32)
    mask_a[:, 40:] = no_data  # a covers columns 0-39
    mask_a[5, 30] = bad  # a bad pixel where b has good data
    mask_b = np.zeros(a.shape, np.int32)
    mask_b[:, :20] = no_data  # b covers columns 20-59: the same pixels as a on 20-39
    mask_b[50, 50] = bad  # only b covers it: stays BAD
    mask_b[:, 58:] = no_data  # and nobody covers 58-59
    left, right = a.replace(mask=mask_a), a.replace(mask=mask_b, source="b")
    combination = combine_pieces([left, right])
    combined, notes = combination.exposure, combination.notes
    assert any("same pixels" in note for note in notes)
    np.testing.assert_allclose(combined.variance[:, 20:40], 4.0, rtol=1e-6)
    np.testing.assert_allclose(combined.image[:, :58], a.image[:, :58], rtol=1e-6)
    assert combined.mask[5, 30] == 0 and combined.mask[50, 50] == bad
    assert (combined.mask[:, 58:] & no_data).all() and not (combined.mask[:, :58] & no_data).any()


@pytest.mark.slow
def test_two_overlapping_pieces_give_the_difference_of_the_whole() -> None:
    # pydia 0060 minus 0012 (20-40 px apart, no WCS), with 0012 whole and cut into
    # columns 0-299 and 220-511: each piece is registered on its own stars. The issue's
    # figures: correlation >= 0.98, noise within 3 %. Measured 0.9999 and 0.1 %.
    science = read_exposure(data_path(PYDIA.format("060")))
    template = read_exposure(data_path(PYDIA.format("012")))
    pieces = [_columns(template, 0, 300, "left"), _columns(template, 220, 512, "right")]
    whole = run_subtraction(science, template)
    split = run_subtraction(science, pieces)
    assert [p.registration.method for p in split.template.pieces] == ["stars", "stars"]
    # A piece has data only where the interpolation reads its own pixels: the mosaic's
    # outer edge keeps no half-pixel band, up to 0.5 px along its boundary (0.2 % here).
    assert split.template.coverage == pytest.approx(whole.template.coverage, abs=3e-3)
    good = whole.difference.good_pixels() & split.difference.good_pixels()
    d1, d2 = whole.difference.image[good], split.difference.image[good]
    assert np.corrcoef(d1, d2)[0, 1] >= 0.98
    assert robust_std(d2) == pytest.approx(robust_std(d1), rel=0.03)


def test_run_and_pairs_list_take_template_pieces(tmp_path: Path, capsys) -> None:
    from diffviewer.synthetic import make_pair

    pair = make_pair((128, 128), 80, seed=3)
    paths = {}
    for name, exposure in (("science", pair.science), ("template", pair.template)):
        header = exposure.wcs.to_header()
        paths[name] = tmp_path / f"{name}.fits"
        fits.writeto(paths[name], np.asarray(exposure.image), header)
    header = pair.template.wcs.to_header()
    for name, cut in (("left", np.s_[:, :80]), ("right", np.s_[:, 50:])):
        piece = header.copy()
        if cut[1].start:
            piece["CRPIX1"] = header["CRPIX1"] - cut[1].start
        fits.writeto(tmp_path / f"{name}.fits", np.asarray(pair.template.image)[cut], piece)
    out = tmp_path / "out"
    left, right = str(tmp_path / "left.fits"), str(tmp_path / "right.fits")
    code = cli.main(["run", str(paths["science"]), left, right, "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "metadata.json").read_text())
    assert [p["registration"]["method"] for p in meta["warp"]["pieces"]] == ["wcs", "wcs"]
    assert meta["warp"]["coverage_fraction"] == pytest.approx(1.0)
    listing = tmp_path / "pairs.csv"
    listing.write_text("science,template,name\nscience.fits,left.fits; right.fits,p\n")
    [(sci, tmpl, name)] = read_pairs_csv(listing)
    assert sci == str(paths["science"])
    assert template_specs(tmpl) == (left, right) and name == "p"
    # the saved run names its pieces' inputs, not the warped exposures, so a batch rerun
    # finds the folder complete (it said "made from another template (left.fits warped
    # to ...)" and ran every warped pair again)
    assert [p["source"] for p in meta["warp"]["pieces"]] == [left, right]
    # and records how each entered the template
    assert [(p["warped"], p["flux_scale"], p["zero_point"]) for p in meta["warp"]["pieces"]] == [
        (True, 1.0, None),
        (True, 1.0, None),
    ]
    digest = SubtractionConfig().digest()
    assert incomplete_reason(out, str(paths["science"]), tmpl, digest) is None


def test_pieces_on_the_science_grid_are_combined_not_taken_as_the_input() -> None:
    from diffviewer.config import WarpConfig
    from diffviewer.engine.warp import warp_template

    science = _flat(10.0, 4.0, seed=5)
    no_data = int(MaskPlane.NO_DATA)
    left = np.zeros(science.shape, np.int32)
    left[:, 30:] = no_data
    right = np.zeros(science.shape, np.int32)
    right[:, :30] = no_data
    pieces = [_flat(10.0, 4.0, seed=6).replace(mask=m) for m in (left, right)]
    result = warp_template(pieces, science, WarpConfig(register="none"))
    assert not result.warped and not result.is_input  # so warped_template.fits is written
    assert result.coverage == 1.0 and len(result.pieces) == 2
    assert [p.coverage for p in result.pieces] == [0.5, 0.5]


def test_pieces_agree_with_the_whole_and_leave_no_data_where_they_cannot_interpolate() -> None:
    # A template in pieces along x, each with its WCS, warped (rotated 3 degrees): a piece
    # among several has data only where the bilinear interpolation reads its own pixels.
    # Overlapping by 4 px (as a survey's patches do), the middle one 12 px wide (below
    # the least image side, 22 px, which refused it): the difference is the whole
    # template's to 1 % of a pixel's sigma in every column (0.37 sigma at the seams when
    # each piece's edge was interpolated against its own border). Abutting: the seam has
    # no data (it had values off by up to 5.5 sigma in the warped template).
    from diffviewer.synthetic import make_pair

    pair = make_pair((160, 200), 120, seed=9, tmpl_rotation_deg=3.0, tmpl_shift=(2.3, -1.4))
    template = pair.template
    assert template.wcs is not None

    def piece(start: int, stop: int) -> Exposure:
        cut = _columns(template, start, stop, f"columns {start}-{stop}")
        return cut.replace(wcs=template.wcs.slice((slice(None), slice(start, stop))))

    whole = run_subtraction(pair.science, template)
    split = run_subtraction(pair.science, [piece(0, 100), piece(96, 108), piece(104, 200)])
    narrow = split.template.pieces[1]
    assert narrow.source.startswith("columns 96-108") and narrow.registration.method == "wcs"
    good = whole.difference.good_pixels() & split.difference.good_pixels()
    assert good.sum() >= 0.99 * whole.difference.good_pixels().sum()
    z = (split.difference.image - whole.difference.image) / np.sqrt(whole.difference.variance)
    columns = good.any(axis=0)  # those with a pixel of data in both
    worst_column = np.sqrt(
        (np.where(good, z, 0.0) ** 2)[:, columns].sum(axis=0) / good[:, columns].sum(axis=0)
    )
    assert worst_column.max() < 0.01

    assert not any("between pixels with data" in note for note in split.warnings)
    abutting = run_subtraction(pair.science, [piece(0, 112), piece(112, 200)])
    # the run says so, and what to do
    assert any("overlap by 1 px or more" in note for note in abutting.warnings)
    warped = abutting.template.exposure
    # the science pixels whose sky lies between the two pieces' outermost columns
    tx, _ = warp_map.wcs_mapping(pair.science.wcs, template.wcs)(
        *np.meshgrid(np.arange(200.0), np.arange(160.0))
    )
    seam = (tx > 111.0) & (tx < 112.0)
    assert seam.any() and np.all(warped.mask[seam] & int(MaskPlane.NO_DATA))
    has_data = (warped.mask & int(MaskPlane.NO_DATA)) == 0
    expected = whole.template.exposure.image[has_data & ~seam]
    np.testing.assert_allclose(
        warped.image[has_data & ~seam], expected, rtol=0, atol=1e-3 * np.std(expected)
    )


def test_seams_are_gaps_between_data_along_a_row_or_column() -> None:
    data = np.ones((20, 30), dtype=bool)
    data[:, 12] = False  # a one-column seam: 20 px
    data[5:7, 20:23] = False  # a hole of 2 x 3 px, within the width along both axes
    data[:, 27:] = False  # the edge: data on one side only
    assert warp.seam_pixels(data, 3) == 20 + 6
    assert warp.seam_pixels(data, 2) == 20 + 6  # the hole is 2 rows tall
    data[10:14, 5] = False  # 4 rows tall and 1 column wide: a seam along x
    assert warp.seam_pixels(data, 2) == 20 + 6 + 4
    # the overlap each interpolation needs at a seam: none for the nearest neighbour, the
    # pixel centre for bilinear, 2 x 3 + 1 for bicubic
    assert [warp.overlap_needed(name) for name in ("nearest-neighbor", "bilinear", "bicubic")] == [
        0,
        1,
        7,
    ]


def _in_pieces(template: Exposure, edges: np.ndarray, overlap: int) -> list[Exposure]:
    """``template`` cut along x at ``edges``, each piece reaching ``overlap`` px into the one
    before, each with its own WCS."""
    pieces = []
    for first, stop in itertools.pairwise(edges):
        start = max(int(first) - overlap, 0)
        cut = _columns(template, start, int(stop), f"columns {start}-{stop}")
        pieces.append(cut.replace(wcs=template.wcs.slice((slice(None), slice(start, int(stop))))))
    return pieces


def _z_rms(whole: Any, split: Any) -> float:
    """RMS over the pixels good in both of the two differences' gap over its noise."""
    good = whole.difference.good_pixels() & split.difference.good_pixels()
    z = (split.difference.image - whole.difference.image) / np.sqrt(whole.difference.variance)
    return float(np.sqrt(np.mean(z[good] ** 2)))


def test_a_narrow_pieces_wcs_is_judged_where_the_piece_lies() -> None:
    # A 221 x 64 px template in two pieces 32 and 33 px wide, on the science grid. The
    # left piece's 7 matched stars fit an affine map that, extrapolated across the whole
    # science image, strayed 1.81 px from the (exact) WCS against a formal error of
    # 0.35 px: the WCS was replaced by that fit, and the difference was off the whole
    # template's by 1.03 sigma (rms). The fit is judged where the piece lies: 0.83 px
    # against the tolerance 0.3 px plus 3 x 0.24 px, its error with its degrees of freedom
    # counted. The WCS stays, and the difference is the whole template's.
    from diffviewer.synthetic import make_pair

    pair = make_pair((221, 64), 35, seed=0, tmpl_fwhm=1.5)
    pieces = _in_pieces(pair.template, np.array([0, 32, 64]), 1)
    whole = run_subtraction(pair.science, pair.template)
    split = run_subtraction(pair.science, pieces)
    assert [p.registration.method for p in split.template.pieces] == ["wcs", "wcs"]
    assert _z_rms(whole, split) < 0.01


def _kernel_stars(result: Any) -> set[tuple[float, float]]:
    """Positions of the stamps the run's kernel was fitted on."""
    cands = result.kernel.candidates
    good = np.asarray(cands["status"]) == "GOOD"
    return set(zip(np.asarray(cands["x"])[good], np.asarray(cands["y"])[good], strict=True))


# The draws are fixed (derandomize) so that CI is reproducible: the WCS check on stars is
# statistical. 200 random draws of this test's space in scratch: every piece kept its
# WCS, the templates agreed to 3e-5 of their noise, and with the same kernel stars the
# differences to 0.063 (rms).
@settings(
    max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    ny=st.integers(64, 260),
    nx=st.integers(64, 260),
    rotation=st.floats(-30.0, 30.0),
    dx=st.floats(-20.0, 20.0),
    dy=st.floats(-20.0, 20.0),
    template_fwhm=st.floats(1.5, 7.0),
    n_pieces=st.integers(2, 4),
    overlap=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_overlapping_pieces_give_the_whole_templates_difference(
    ny: int,
    nx: int,
    rotation: float,
    dx: float,
    dy: float,
    template_fwhm: float,
    n_pieces: int,
    overlap: int,
    seed: int,
) -> None:
    # Any template with an exact WCS on a grid rotated and shifted from the science's,
    # cut along x into pieces that overlap by the bilinear interpolation's reach or more:
    # - where the whole template is subtracted, so are its pieces, each keeping its WCS
    #   (a narrow piece's star fit replaced it, test above);
    # - the combined template is the whole one's wherever both have data, and has data
    #   wherever the whole one has, but for the outer half-pixel band a lone template
    #   keeps (at most a column and a row of pixels on each side);
    # - fitted on the same kernel stars, the differences agree to 0.1 of the noise (rms):
    #   the template PSF measured without that band moves the kernel's basis (at 3 kernel
    #   stars the most). Other stars (the band drops one near the edge) or a kernel
    #   derived from PSFs measured on other pixels need not agree.
    from diffviewer.errors import DiffviewerError
    from diffviewer.synthetic import make_pair

    pair = make_pair(
        (ny, nx),
        max(3, ny * nx // 400),
        seed=seed,
        tmpl_rotation_deg=rotation,
        tmpl_shift=(dx, dy),
        tmpl_fwhm=template_fwhm,
    )
    try:
        whole = run_subtraction(pair.science, pair.template)
    except DiffviewerError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    edges = np.linspace(0, nx, n_pieces + 1).astype(int)
    split = run_subtraction(pair.science, _in_pieces(pair.template, edges, overlap))
    assert {p.registration.method for p in split.template.pieces} == {"wcs"}
    no_data = int(MaskPlane.NO_DATA)
    a, b = whole.template.exposure, split.template.exposure
    in_a, in_b = (a.mask & no_data) == 0, (b.mask & no_data) == 0
    both = in_a & in_b
    gap = np.abs(b.image - a.image)[both] / np.sqrt(a.variance[both])
    assert gap.max() < 1e-3
    assert np.count_nonzero(in_a & ~in_b) <= 2 * (ny + nx)
    stars = _kernel_stars(whole)
    if len(stars) >= whole.config.kernel.min_stamps and _kernel_stars(split) == stars:
        assert _z_rms(whole, split) < 0.1


def _turned_in_thirds() -> tuple[Exposure, Exposure, list[Exposure]]:
    """A 293 x 148 px science field without WCS, its template turned 7.8 degrees and
    shifted 6.6 px, and that template in three pieces of 49-57 columns (7 shared)."""
    from diffviewer.synthetic import make_pair

    pair = make_pair(
        (293, 148), 293 * 148 // 400, seed=2588, tmpl_rotation_deg=7.8, tmpl_shift=(0.0, -6.6),
        tmpl_fwhm=5.0,
    )  # fmt: skip
    science, template = pair.science.replace(wcs=None), pair.template.replace(wcs=None)
    edges = np.linspace(0, 148, 4).astype(int)
    pieces = [
        _columns(template, max(int(a) - 7, 0), int(b), f"columns {a}-{b}")
        for a, b in itertools.pairwise(edges)
    ]
    return science, template, pieces


def test_a_piece_whose_patterns_do_not_match_takes_its_siblings_rotation() -> None:
    # A 293 x 148 px template without WCS, rotated 7.8 degrees and shifted 6.6 px, in
    # three pieces of 49-57 columns. The right piece's 20 stars matched no pattern among
    # the science's 89 (it covers a third of the field): the pair was refused. Pieces
    # cut from one template share its rotation and scale: with its sibling's, only the
    # piece's translation is left, which its stars agree on (register_guesses.shift_guess). All
    # three register, and the difference is the whole template's to 0.21 sigma (rms;
    # each piece's fit on 17-19 stars, RMS 0.04-0.10 px).
    science, template, pieces = _turned_in_thirds()
    whole = run_subtraction(science, template)
    split = run_subtraction(science, pieces)
    assert [p.registration.method for p in split.template.pieces] == ["stars"] * 3
    assert _z_rms(whole, split) < 0.5


def test_pieces_registered_on_lent_threads_are_placed_as_on_one() -> None:
    # The science image's star peaks and each piece's are found on the lent threads at
    # once (warp.warp_template). Three pieces of a turned template without WCS, one
    # needing its siblings' rotation: the same registrations and the same combined
    # template to the bit as on the calling thread alone, and in their places.
    from concurrent.futures import ThreadPoolExecutor

    from diffviewer.engine.lent import lend

    science, template, pieces = _turned_in_thirds()
    config = SubtractionConfig().warp
    alone = warp.warp_template(pieces, science, config)
    with ThreadPoolExecutor(2) as pool, lend(pool):
        lent = warp.warp_template(pieces, science, config)
    assert [p.registration.n_matched for p in lent.pieces] == [
        p.registration.n_matched for p in alone.pieces
    ]
    np.testing.assert_array_equal(lent.exposure.image, alone.exposure.image)
    np.testing.assert_array_equal(lent.exposure.mask, alone.exposure.mask)
    # In their places: the combined pieces are the whole template warped (the
    # interpolations of fits 0.04-0.10 px apart differ by a few per cent at star cores).
    whole = warp.warp_template(template, science, config).exposure
    both = (lent.exposure.good_pixels() & whole.good_pixels()).ravel()
    assert both.mean() > 0.8
    r = np.corrcoef(lent.exposure.image.ravel()[both], whole.image.ravel()[both])[0, 1]
    assert r > 0.99


def _stars_piece(
    x: np.ndarray, y: np.ndarray, flux: np.ndarray, fwhm: float, sky_sigma: float, seed: int
) -> Exposure:
    """A 200 x 200 px exposure of Gaussian stars of one FWHM (px) whose variance plane holds
    the stars' Poisson noise (gain 4), as an LSST variance plane does."""
    from diffviewer.synthetic import render_gaussians

    shape = (200, 200)
    sigma = np.full(x.size, fwhm / 2.3548)
    model = render_gaussians(shape, x, y, flux, sigma, 15)
    variance = sky_sigma**2 + model / 4.0
    image = model + np.random.default_rng(seed).normal(size=shape) * np.sqrt(variance)
    return Exposure(image, variance, np.zeros(shape, np.int32), source=f"fwhm {fwhm}")


def _aperture_flux(image: np.ndarray, x: float, y: float, radius: float) -> float:
    yy, xx = np.indices(image.shape)
    return float(image[np.hypot(xx - x, yy - y) < radius].sum())


def test_independent_pieces_of_other_psfs_keep_every_stars_flux() -> None:
    # Two exposures of one sky with FWHM 2.5 and 4.5 px, variance planes with the stars'
    # Poisson noise. Weighted per pixel by their variance, a star's core came from the
    # broad piece and its wings from both: the combination's aperture fluxes were 0.85 of
    # the truth at 1e5 counts (0.96 at 3e3), each piece alone 1.000. With one weight per
    # piece the combination is a linear mix of two flux-conserving images: 1 within 4
    # sigmas of each aperture's noise (from the combined variance plane: 2.3 % at 3e3
    # counts, 0.06 % at 3e5).
    grid = np.arange(30.0, 171.0, 35.0)
    x, y = (g.ravel() + 0.3 for g in np.meshgrid(grid, grid))
    flux = np.geomspace(3e3, 3e5, x.size)
    a = _stars_piece(x, y, flux, 2.5, 5.0, 1)
    b = _stars_piece(x, y, flux, 4.5, 5.0, 2).replace(source="b")
    combined = combine_pieces([a, b]).exposure
    ratios, errors = np.array(
        [
            (
                _aperture_flux(combined.image, xi, yi, 11.0) / fi,
                np.sqrt(_aperture_flux(combined.variance, xi, yi, 11.0)) / fi,
            )
            for xi, yi, fi in zip(x, y, flux, strict=True)
        ]
    ).T
    assert np.all(np.abs(ratios - 1.0) < 4.0 * errors)
    # the weights are the inverse sky variances, equal here: the variance is the mean's
    sky = combined.variance[0:10, 0:10]
    np.testing.assert_allclose(sky, 25.0 / 2, rtol=1e-6)


def _halves(value: float = 10.0) -> tuple[Exposure, Exposure, Exposure]:
    """A flat exposure and its two halves on its grid (columns 0-39 and 20-59, NO_DATA
    elsewhere), the same pixels where they overlap."""
    whole = _flat(value, 4.0, seed=3)
    no_data = int(MaskPlane.NO_DATA)
    left, right = np.zeros(whole.shape, np.int32), np.zeros(whole.shape, np.int32)
    left[:, 40:], right[:, :20] = no_data, no_data
    return (
        whole,
        whole.replace(mask=left, source="a.fits"),
        whole.replace(mask=right, source="b.fits"),
    )


def test_pieces_of_other_zero_points_are_put_on_one_flux_scale() -> None:
    # The right half in units 1 mag fainter (pixels x 10**0.4, zero point 26 against 25)
    # was averaged raw with the left: the DIA sources of the review's 300 px pair went
    # from 11 to 119, of a DECam pair from 3 to 19. Each piece is now scaled onto the
    # first zero point: the combination is the whole image to float32 precision.
    whole, left, right = _halves()
    f = 10**0.4
    right = right.replace(image=right.image * f, variance=right.variance * f * f, zero_point=26.0)
    combination = combine_pieces([left.replace(zero_point=25.0), right])
    combined = combination.exposure
    np.testing.assert_allclose(combined.image, whole.image, rtol=1e-5)
    np.testing.assert_allclose(combined.variance, whole.variance, rtol=1e-5)
    assert combined.zero_point == 25.0
    assert [(p.zero_point, p.scale) for p in combination.pieces] == [
        (25.0, 1.0),
        (26.0, pytest.approx(1 / f)),
    ]


def test_pieces_with_and_without_zero_points_are_named_and_order_does_not_matter() -> None:
    # (None, 27) gave the combination no zero point and (27, None) gave it 27, silently.
    _, left, right = _halves()
    for pieces in ([left, right.replace(zero_point=27.0)], [left.replace(zero_point=27.0), right]):
        combination = combine_pieces(pieces)
        assert combination.exposure.zero_point == 27.0
        [note] = [n for n in combination.notes if "zero point" in n]
        without = next(i for i, p in enumerate(pieces) if p.zero_point is None)
        assert f"template piece {without + 1} ({pieces[without].source}): no zero point" in note


def _noise_piece(centre_x: float, scale: float, seed: int, size: int) -> Exposure:
    """Gaussian noise (sigma 4) on a grid of ``scale`` arcsec/px, 150 science px wide,
    whose centre falls on science column ``centre_x`` (science: 1 arcsec/px)."""
    from diffviewer.synthetic import tan_wcs

    ny, nx = int(np.ceil(1.1 * size / scale)), int(150 / scale)
    wcs = tan_wcs((ny, nx), scale)
    wcs.wcs.crpix = [(nx - 1) / 2 + 1 + ((size - 1) / 2 - centre_x) / scale, (ny - 1) / 2 + 1]
    image = np.random.default_rng(seed).normal(0.0, 4.0, (ny, nx))
    shape = (ny, nx)
    return Exposure(
        image, np.full(shape, 16.0), np.zeros(shape, np.int32), wcs=wcs, source=f"p{seed}"
    )


def test_independent_pieces_coarser_than_the_science_grid_are_not_the_same_pixels() -> None:
    # Two exposures of noise on a 2.5 arcsec/px grid, warped onto a 1 arcsec/px science
    # grid, overlapping over 110 columns. Their variance planes are at PSF scale (times
    # the covariance factor, 14), so their difference over that was 0.27 of its noise and
    # they were judged the same pixels: the combination's variance plane was each piece's
    # in the overlap where its noise, over 9 x 9 px sums, has half their variance. The
    # pixels are now compared with their per-pixel noise: the plane's ratio is the
    # measured one to 15 % (about 450 independent 9 x 9 sums: 7 % error on a variance).
    from scipy import ndimage

    from diffviewer.config import WarpConfig
    from diffviewer.synthetic import tan_wcs

    size = 300
    shape = (size, size)
    science = Exposure(
        np.zeros(shape), np.ones(shape), np.zeros(shape, np.int32), wcs=tan_wcs(shape), source="s"
    )
    a, b = _noise_piece(130.0, 2.5, 1, size), _noise_piece(170.0, 2.5, 2, size)
    config = WarpConfig(register="wcs")
    alone = warp.warp_template(a, science, config).exposure
    result = warp.warp_template([a, b], science, config)
    assert not any("same pixels" in note for note in result.warnings)
    combined = result.exposure

    def box_sums(image: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(image, 9) * 81

    overlap = ndimage.binary_erosion(combined.good_pixels() & alone.good_pixels(), iterations=9)
    overlap[:, :100] = overlap[:, 200:] = False  # b's side of the overlap is a's alone
    measured = np.var(box_sums(combined.image)[overlap]) / np.var(box_sums(alone.image)[overlap])
    assert measured == pytest.approx(0.5, rel=0.15)
    planes = np.median(combined.variance[overlap] / alone.variance[overlap])
    assert planes == pytest.approx(measured, rel=0.15)


def test_a_piece_off_the_science_image_is_said_unused_and_changes_nothing() -> None:
    # A second piece of another field whose WCS puts it a degree away was kept silently,
    # with a note that its WCS "was used unchecked" (no star pattern could match). It is
    # now named as not used, without that note, and the combination is the first
    # piece's warped alone, to float32 precision.
    from diffviewer.config import WarpConfig
    from diffviewer.synthetic import make_pair

    pair = make_pair((120, 120), 60, seed=4, tmpl_rotation_deg=2.0, tmpl_shift=(1.3, -0.7))
    other = make_pair((120, 120), 60, seed=77).template
    far_wcs = other.wcs.deepcopy()
    far_wcs.wcs.crval = [186.0, 12.0]
    far = other.replace(wcs=far_wcs, source="far.fits", saturation=("SATURATE", 2e4))
    config = WarpConfig()
    used = pair.template.replace(saturation=("SATURATE", 6e4))
    both = warp.warp_template([used, far], pair.science, config)
    # the piece not used gives the template no saturation level (it set 20000 before)
    assert both.exposure.saturation == ("SATURATE", 6e4)
    assert both.pieces[1].coverage == 0.0
    unused = [n for n in both.warnings if n.startswith("template piece 2 (far.fits) has no data")]
    assert len(unused) == 1 and not any("template piece 2:" in note for note in both.warnings)
    # one note, saying what placed it there and what to do should its WCS be wrong (a
    # GOTO piece whose CRVAL was 5 deg off was said to have no data, blaming the overlap,
    # where warp.register = stars places it: coverage 54.1 -> 78.8 %)
    assert "its WCS places it there" in unused[0] and "warp.register = stars" in unused[0]
    assert "stars paired none of the science's beyond what chance gives" in unused[0]
    # placed by the WCSs alone, no star was looked at: said so, not a failed pairing
    alone_wcs = warp.warp_template([used, far], pair.science, WarpConfig(register="wcs"))
    said = [n for n in alone_wcs.warnings if n.startswith("template piece 2 (far.fits)")]
    assert len(said) == 1 and "its WCS places it there (not checked on stars)" in said[0]
    alone = warp.warp_template([pair.template, pair.template], pair.science, config).exposure
    has_data = both.exposure.good_pixels()
    np.testing.assert_array_equal(has_data, alone.good_pixels())
    np.testing.assert_allclose(both.exposure.image[has_data], alone.image[has_data], rtol=1e-5)


def test_pieces_none_of_which_lands_on_the_science_are_said_as_a_whole_template() -> None:
    # Two pieces of a template whose WCS is a degree off were refused with "no template
    # piece has data on the science image", naming no cause or remedy; the whole
    # template is refused with its coverage, the required fraction and how far it lies.
    from diffviewer.config import WarpConfig
    from diffviewer.errors import NoWorkFound
    from diffviewer.synthetic import make_pair

    pair = make_pair((128, 128), 60, seed=1)
    moved = pair.template.wcs.deepcopy()
    moved.wcs.crval = [moved.wcs.crval[0] + 1.0, moved.wcs.crval[1]]
    pieces = []
    for start in (0, 64):
        wcs = moved.deepcopy()
        wcs.wcs.crpix = [wcs.wcs.crpix[0] - start, wcs.wcs.crpix[1]]
        pieces.append(_columns(pair.template, start, start + 64, f"p{start}").replace(wcs=wcs))
    config = WarpConfig(register="wcs")
    with pytest.raises(NoWorkFound, match=r"covers 0\.0%.*required_template_fraction") as whole:
        warp.warp_template(pair.template.replace(wcs=moved), pair.science, config)
    with pytest.raises(NoWorkFound, match=r"covers 0\.0%.*required_template_fraction") as split:
        warp.warp_template(pieces, pair.science, config)
    far = re.search(r"lies ([\d.]+) deg", str(whole.value))
    near = re.search(r"nearest template piece's centre lies ([\d.]+) deg", str(split.value))
    assert far and near and 0.9 < float(near[1]) < float(far[1]) < 1.0  # cos(dec) of 1 deg RA


def test_a_sky_step_between_pieces_is_measured_and_removed() -> None:
    # The right half of one image with its sky 2 sigma higher (a tile sky-subtracted on
    # its own): it was averaged in as it was, and the median-free RMS of the overlap's
    # difference hid the step ('0.00 of its noise'): a DECam pair went from 3 DIA sources
    # to 634 (review bg_real.py). The offset is the median difference over the overlap's
    # sky; the same pixels give it exactly, and the combination is the whole image.
    whole, left, right = _halves()
    combination = combine_pieces([left, right.replace(image=right.image + 4.0)])
    np.testing.assert_allclose(combination.exposure.image, whole.image, rtol=1e-5)
    assert combination.pieces[1].sky_offset == pytest.approx(4.0, rel=1e-5)
    assert combination.pieces[0].sky_offset == 0.0
    assert any("piece 2 +4 " in note for note in combination.notes)


def test_sky_offsets_of_independent_pieces_are_solved_over_the_overlaps() -> None:
    # Three independent exposures of a flat sky (sigma 2), overlapping in a chain, the
    # second 1.0 and the third 0.5 higher: each offset is found within 4 of its errors
    # (0.05 and 0.06: a median over 6000 sky pixels of a difference of sigma 2.8, the
    # third's through the second's), the
    # combination's sky is 10 to its noise, and pieces without an offset give no note.
    no_data = int(MaskPlane.NO_DATA)
    pieces = []
    for k, (start, stop, step) in enumerate([(0, 40, 0.0), (20, 60, 1.0), (40, 60, 0.5)]):
        mask = np.full((300, 60), no_data, np.int32)
        mask[:, start:stop] = 0
        pieces.append(_flat(10.0 + step, 4.0, (300, 60), k).replace(mask=mask))
    combination = combine_pieces(pieces)
    found = np.array([p.sky_offset for p in combination.pieces])
    errors = np.array([p.sky_offset_error for p in combination.pieces])
    assert found[0] == 0.0 and np.all(errors[1:] < 0.07)
    assert np.all(np.abs(found[1:] - [1.0, 0.5]) < 4 * errors[1:])
    image = combination.exposure.image
    assert np.mean(image) == pytest.approx(10.0, abs=4 * 2.0 / np.sqrt(image.size))
    assert not combine_pieces([pieces[0], pieces[1].replace(image=pieces[1].image - 1.0)]).notes


def test_pieces_on_the_science_grid_but_for_whole_pixels_are_pasted_not_resampled() -> None:
    # A template on the science grid cut into two abutting pieces: each maps onto the
    # science grid by a whole-pixel shift. They were resampled, and with bicubic
    # interpolation a piece has data only 2-3 px inside its edge: a DECam pair's
    # coverage fell from 1.000 to 0.93 and its good kernel stamps from 4 to 1 (review
    # grid_pieces_bicubic.py). Pasted, the combination is the whole template, pixel for
    # pixel, with uncorrelated noise.
    from diffviewer.config import WarpConfig
    from diffviewer.synthetic import make_pair

    pair = make_pair((120, 160), 60, seed=5, tmpl_rotation_deg=0.0, tmpl_shift=(0.0, 0.0))
    template = pair.template
    assert template.wcs is not None
    pieces = [
        _columns(template, start, stop, f"columns {start}-{stop}").replace(
            wcs=template.wcs.slice((slice(None), slice(start, stop)))
        )
        for start, stop in ((0, 100), (100, 160))
    ]
    for interpolation in ("bicubic", "bilinear"):
        config = WarpConfig(register="wcs", interpolation=interpolation)
        result = warp.warp_template(pieces, pair.science, config)
        assert result.coverage == 1.0 and result.covariance_factor == 1.0
        np.testing.assert_array_equal(result.exposure.image, template.image)
        np.testing.assert_array_equal(result.exposure.variance, template.variance)


def test_the_combined_templates_header_names_every_piece_and_no_ones_own_cards(
    tmp_path: Path,
) -> None:
    # warped_template.fits of two pieces said SOURCE '...' cut to its last 68
    # characters, and the first piece's MAGZP 30, FWHM and DATE-OBS (warped_header.py).
    # It now names each piece in a PIECEn card, keeps the cards the pieces agree on, and
    # its MAGZP is the zero point its pixels are on.
    from diffviewer.fits_write import write_exposure

    whole, left, right = _halves()
    right = right.replace(image=right.image * 10**0.4, variance=right.variance * 10**0.8)
    names = ["/data/a long folder name/template-piece-left.fits", "/data/b/right.fits"]
    pieces = []
    for piece, name, zp, fwhm in ((left, names[0], 30.0, 3.1), (right, names[1], 31.0, 4.2)):
        header = fits.Header()
        header["FWHM"], header["DATE-OBS"], header["FILTER"] = fwhm, f"2016-0{int(zp) - 29}", "r"
        header["HIERARCH SEXTRACTOR SATUR_LEVEL"] = 50000.0  # as GOTO's coadds carry
        pieces.append(piece.replace(header=header, zero_point=zp, source=name))
    # a long keyword the pieces agree on is kept as the HIERARCH card it was, unsaid: set
    # by its name it was re-made with a VerifyWarning each (90 lines on GOTO's pieces)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fits.verify.VerifyWarning)
        combination = combine_pieces(pieces)
        path = write_exposure(tmp_path / "warped_template.fits", combination.exposure)
    header = fits.getheader(path)
    assert [header["PIECE1"], header["PIECE2"]] == names
    assert header["FILTER"] == "r" and header["MAGZP"] == 30.0
    assert header["HIERARCH SEXTRACTOR SATUR_LEVEL"] == 50000.0
    # the combination's header is its own: the pieces' are not changed through it
    combination.exposure.header["FILTER"] = "g"
    assert [p.header["FILTER"] for p in pieces] == ["r", "r"]
    assert "FWHM" not in header and "DATE-OBS" not in header
    # the right piece's pixels, in units 1 mag fainter, are on zero point 30
    np.testing.assert_allclose(combination.exposure.image, whole.image, rtol=1e-5)


def test_tiles_of_one_image_keep_its_variance_where_diagonal_tiles_meet() -> None:
    # One image (sigma 2) cut into 2 x 2 tiles overlapping by 4 px, as a coadd's patches
    # are. The diagonal tiles share only a 4 x 4 px corner, too small to judge, and were
    # taken as independent there: the combined variance was 0.75 of the image's on those
    # 16 pixels. Tiles linked by overlaps judged the same pixels share them there too:
    # the variance is the image's everywhere, and so is the image.
    n = 200
    rng = np.random.default_rng(0)
    image, variance = rng.normal(0.0, 2.0, (n, n)), np.full((n, n), 4.0)
    tiles = []
    for y0, y1 in ((0, 102), (98, n)):
        for x0, x1 in ((0, 102), (98, n)):
            mask = np.full((n, n), int(MaskPlane.NO_DATA), np.int32)
            mask[y0:y1, x0:x1] = 0
            tiles.append(Exposure(np.where(mask == 0, image, 0.0), variance, mask, source="t"))
    combined = combine_pieces(tiles).exposure
    np.testing.assert_allclose(combined.variance, variance, rtol=1e-6)
    np.testing.assert_allclose(combined.image, image, rtol=1e-5, atol=1e-9)


def test_combining_many_pieces_holds_no_plane_per_piece() -> None:
    # Nine 3 x 3 tiles (overlapping by 8 px) of one 512 x 512 image: combining stacked
    # each piece's weights, image and sigma as float64 planes, 350 B per science pixel
    # at its peak (367 MB more than its inputs at 1024 x 1024, mosaic_memory.py). It now
    # accumulates piece by piece: 68 B per pixel measured, a few float64 planes however
    # many pieces. The bound, 100 B, is below one float64 plane per piece (72 B).
    import tracemalloc

    n, edges = 512, (0, 171, 342, 512)
    image = np.random.default_rng(0).normal(0.0, 1.0, (n, n)).astype(np.float32)
    variance = np.ones((n, n), np.float32)
    pieces = []
    for y0, y1 in itertools.pairwise(edges):
        for x0, x1 in itertools.pairwise(edges):
            mask = np.full((n, n), int(MaskPlane.NO_DATA), np.int32)
            mask[max(y0 - 8, 0) : y1, max(x0 - 8, 0) : x1] = 0
            pieces.append(Exposure(image, variance, mask, source=f"tile {y0} {x0}"))
    tracemalloc.start()
    try:
        combined = combine_pieces(pieces).exposure
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak / n**2 < 100
    # and the tiles of one image give that image, with its variance
    np.testing.assert_allclose(combined.image, image, rtol=1e-6)
    np.testing.assert_allclose(combined.variance, variance, rtol=1e-6)


def test_pieces_of_other_seeing_are_said_with_their_psf_widths() -> None:
    # One field's template in two pieces of FWHM 2.5 and 3.8 px (independent exposures):
    # one spatially smooth kernel cannot follow the step at their seam, which left 111
    # spurious DIA sources along it in the review's pair (psf_step.py), and nothing said
    # why. Each warped piece's stellar-locus FWHM is measured (the warp broadens a
    # 2.5 px PSF to 2.78 px, 3.8 px to 3.98 px: within 12 %), and a spread beyond 10 %
    # is said, naming the pieces; pieces of one seeing (2.5 | 2.5 px) are not.
    from diffviewer.config import WarpConfig
    from diffviewer.synthetic import make_pair

    def piece(fwhm: float, start: int, stop: int, name: str) -> tuple[Exposure, Exposure]:
        pair = make_pair(
            (200, 200), 200, seed=6, tmpl_rotation_deg=2.0, tmpl_shift=(1.3, -0.7), tmpl_fwhm=fwhm
        )
        cut = _columns(pair.template, start, stop, name)
        assert pair.template.wcs is not None
        return pair.science, cut.replace(
            wcs=pair.template.wcs.slice((slice(None), slice(start, stop)))
        )

    science, left = piece(2.5, 0, 110, "left.fits")
    for fwhm, said in ((3.8, True), (2.5, False)):
        _, right = piece(fwhm, 100, 200, "right.fits")
        result = warp.warp_template([left, right], science, WarpConfig())
        measured = [p.fwhm for p in result.pieces]
        assert measured == pytest.approx([2.5, fwhm], rel=0.12)
        notes = [n for n in result.warnings if "PSFs differ" in n]
        assert bool(notes) == said
        if said:
            assert "(piece 1, left.fits)" in notes[0] and "(piece 2, right.fits)" in notes[0]
            # the single kernel's compromise is not confined to the seam (piece_psfs)
            assert "residuals at stars across the pieces" in notes[0]


def test_sky_offsets_between_pieces_of_other_seeing_are_measured_on_one_psf() -> None:
    # Two exposures of one crowded sky (600 stars of 200-1e5+ counts, most too faint to
    # pick out) with FWHM 2.5 and 4.5 px and the same sky: the broader PSF spreads the
    # faint stars' light over more pixels, so the median sky of their difference was
    # off by 2.6-2.7 counts (half a pixel's sigma; 0.45 in the review's psf_weights.py,
    # which took 1.7 % off its faint stars' fluxes), subtracted as a sky offset. Measured
    # with the narrower piece smoothed to the broader's PSF, the offset is 0.04-0.14:
    # below 0.05 of the sky sigma (5) in every draw.
    rng = np.random.default_rng(8)
    x, y = rng.uniform(0.0, 200.0, 600), rng.uniform(0.0, 200.0, 600)
    flux = 200.0 * rng.pareto(1.0, 600) + 200.0
    for seed in (1, 3, 5):
        a = _stars_piece(x, y, flux, 2.5, 5.0, seed)
        b = _stars_piece(x, y, flux, 4.5, 5.0, seed + 1).replace(source="b")
        combination = combine_pieces([a, b], fwhm=[2.5, 4.5])
        assert abs(combination.pieces[1].sky_offset) < 0.05 * 5.0


def test_pieces_that_hold_the_same_pixels_get_no_sky_offset_whatever_their_seeing() -> None:
    # Two overlapping cuts of one crowded image whose halves were measured at different
    # FWHMs (a PSF that grows across the field): in their overlap they hold the same
    # pixels, of one PSF. Smoothing one copy to the other's whole-piece FWHM made their
    # sky differ by 0.16 +- 0.05 counts, subtracted from every pixel (audit: GOTO's
    # template in three pieces, 474.91 read where the input holds 474.756).
    rng = np.random.default_rng(8)
    x, y = rng.uniform(0.0, 200.0, 600), rng.uniform(0.0, 200.0, 600)
    flux = 200.0 * rng.pareto(1.0, 600) + 200.0
    whole = _stars_piece(x, y, flux, 3.0, 5.0, 1)
    pieces = []
    for keep in (np.s_[:120], np.s_[80:]):
        outside = np.ones(whole.shape[1], bool)
        outside[keep] = False
        image, mask = whole.image.copy(), whole.mask.copy()
        image[:, outside] = 0.0
        mask[:, outside] |= int(MaskPlane.NO_DATA)
        pieces.append(whole.replace(image=image, mask=mask))
    combination = combine_pieces(pieces, fwhm=[3.4, 4.3])
    assert [p.sky_offset for p in combination.pieces] == [0.0, 0.0]
    np.testing.assert_allclose(combination.exposure.image, whole.image, rtol=1e-6)
