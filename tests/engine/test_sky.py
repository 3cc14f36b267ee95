"""The sky map's filters against scipy's; the inputs' sources and backgrounds (on their sky)."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from diffviewer import exposure
from diffviewer.config import ScoreConfig
from diffviewer.engine import lent, pipeline, sky, zogy
from diffviewer.engine.progress import null_reporter
from diffviewer.engine.score_psfs import PsfGrid
from diffviewer.engine.sky import box_mean, grown_along, input_backgrounds, input_sources
from diffviewer.exposure import MaskPlane
from diffviewer.synthetic import make_pair
from tests.engine.helpers import gaussian_psf


@pytest.mark.parametrize(
    ("shape", "size"), [((7, 9), 5), ((2, 30), 5), ((101, 37), 3), ((64, 80), 1)]
)
@pytest.mark.parametrize("block", [None, 23])
def test_box_mean_is_scipys_uniform_filter(
    shape: tuple[int, int], size: int, block: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if block is not None:  # blocks of one or a few rows, each with its mirrored halo
        monkeypatch.setattr(exposure, "ROW_BLOCK_PIXELS", block)
    image = np.random.default_rng(1).normal(100.0, 5.0, shape).astype(np.float32)
    got = box_mean(image, size)
    assert got.dtype == np.float32
    # float32 sums in another order: equal to a few units of float32 rounding of the values
    np.testing.assert_allclose(got, ndimage.uniform_filter(image, size), rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("shape", "size"),
    [((7, 9), 3), ((50, 37), 41), ((100, 100), 1), ((100, 130), 13), ((64, 64), 129)],
)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("block", [None, 37])
def test_grown_along_is_scipys_maximum_filter(
    shape: tuple[int, int], size: int, axis: int, block: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if block is not None:  # blocks of one or a few rows, each with its halo along y
        monkeypatch.setattr(exposure, "ROW_BLOCK_PIXELS", block)
    hit = np.random.default_rng(size).random(shape) < 0.02
    want = ndimage.maximum_filter1d(hit.view(np.uint8), size, axis=axis, mode="constant") > 0
    np.testing.assert_array_equal(grown_along(hit, size, axis), want)


@pytest.mark.parametrize("axis", [0, 1])
def test_a_map_grown_along_either_axis_keeps_the_inputs_layout(axis: int) -> None:
    # Combined with C-ordered maps, a transposed one made each boolean operation of
    # the kernel fit's sky map 0.1 s at 2048 x 4096.
    hit = np.random.default_rng(axis).random((40, 30)) < 0.02
    assert grown_along(hit, 5, axis).flags.c_contiguous


def test_the_score_uses_the_backgrounds_it_is_given() -> None:
    # The run estimates each input's background once and passes it on: the score made
    # with them is the score that estimates them itself, and a background moved by 0.5
    # sky sigma moves every empty-sky score (it is subtracted, not estimated again).
    pair = make_pair((256, 256), 60, seed=3)
    config = ScoreConfig()
    grid = PsfGrid.constant(gaussian_psf(2.0), gaussian_psf(2.0), 1.0, pair.science.shape)
    backgrounds = input_backgrounds(pair.science, pair.template, config.background_mesh)
    own = zogy.zogy_score_grid(pair.science, pair.template, grid, config, null_reporter())
    given = zogy.zogy_score_grid(
        pair.science, pair.template, grid, config, null_reporter(), backgrounds
    )
    np.testing.assert_array_equal(given.image, own.image)
    sci, tmpl = backgrounds
    lifted = dataclasses.replace(sci, columns=sci.columns + np.float32(0.5 * sci.sigma))
    moved = zogy.zogy_score_grid(
        pair.science, pair.template, grid, config, null_reporter(), (lifted, tmpl)
    )
    inner = np.s_[40:-40, 40:-40]
    assert float(np.median(moved.image[inner] - own.image[inner])) < -1.0


def test_the_background_is_measured_on_the_sky_beyond_the_sources() -> None:
    # A 40 px cutout (one mesh cell) whose science holds a host-like source (FWHM 12 px,
    # 20 sky sigma) over 100 counts of sky: clipping leaves its wings in the first
    # estimate (3.75 counts high); on the pixels one PSF FWHM (5 px) from every source,
    # ~500 of them, the background is the sky's to 1.25 x 10 / sqrt(500) ~ 0.6 counts
    # (tolerance 1.5). With fewer than MIN_BACKGROUND_SKY such pixels the first estimate
    # stays.
    rng = np.random.default_rng(11)
    shape = (40, 40)
    yy, xx = np.indices(shape)
    sigma = 12.0 / 2.3548
    host = 200.0 * np.exp(-0.5 * ((yy - 19.5) ** 2 + (xx - 19.5) ** 2) / sigma**2)
    variance = np.full(shape, 100.0)
    zeros = np.zeros(shape, dtype=np.int16)
    science = exposure.Exposure(100.0 + host + rng.normal(0.0, 10.0, shape), variance, zeros)
    template = exposure.Exposure(100.0 + rng.normal(0.0, 10.0, shape), variance, zeros)
    first = input_backgrounds(science, template, 128)
    found = input_sources(science, template, first)
    assert np.count_nonzero(found.beyond_psfs(5.0, 4.0)) >= sky.MIN_BACKGROUND_SKY
    final = sky.sky_backgrounds(science, template, 128, found, (5.0, 4.0))
    assert float(np.median(first[0].image())) > 102.5
    assert float(np.median(final[0].image())) == pytest.approx(100.0, abs=1.5)
    assert float(np.median(final[1].image())) == pytest.approx(100.0, abs=1.5)
    assert np.count_nonzero(found.beyond_psfs(30.0, 4.0)) < sky.MIN_BACKGROUND_SKY
    kept = sky.sky_backgrounds(science, template, 128, found, (30.0, 4.0))
    np.testing.assert_array_equal(kept[0].image(), first[0].image())


def test_the_two_backgrounds_on_lent_threads_are_those_made_in_turn() -> None:
    pair = make_pair((150, 170), 30, seed=6)
    alone = input_backgrounds(pair.science, pair.template, 64)
    with ThreadPoolExecutor(2) as pool, lent.lend(pool):
        lent_out = input_backgrounds(pair.science, pair.template, 64)
    for a, b in zip(alone, lent_out, strict=True):
        np.testing.assert_array_equal(a.image(), b.image())
        assert a.sigma == b.sigma
    # each image's own, in order: the science's sky is not the template's
    assert not np.array_equal(lent_out[0].image(), lent_out[1].image())


def test_sky_is_the_usable_pixels_beyond_a_distance_from_every_source() -> None:
    pair = make_pair((200, 220), 40, seed=4)
    mask = pair.science.mask.copy()
    mask[:, :10] |= int(MaskPlane.NO_DATA)
    science = pair.science.replace(mask=mask)
    found = input_sources(science, pair.template)
    assert not found.usable[:, :10].any() and found.usable[:, 10:].all()
    assert found.sources.any() and not (found.sources & ~found.usable).any()
    near = ndimage.maximum_filter(found.sources.view(np.uint8), 2 * 4 + 1, mode="constant") > 0
    np.testing.assert_array_equal(found.sky(3.2), found.usable & ~near)
    within = np.zeros(found.usable.shape, dtype=bool)
    within[50:150] = True
    np.testing.assert_array_equal(found.sky(3.2, within), found.usable & ~near & within)


def test_seen_sky_keeps_the_distance_from_where_a_source_could_hide() -> None:
    # Ten NO_DATA columns and a band of rows outside ``within`` can hide a source, as can
    # the world beyond the array: the sky keeps 4 px (3.2 rounded up) from them as from
    # every source. A one-pixel bad column and 2 x 2 cosmic rays cannot hide a star of
    # FWHM 3 (the hiding square): grown by the whole distance, 60 of them left too little
    # sky for the renormalisation on 3 of 6 256^2 draws.
    pair = make_pair((200, 220), 40, seed=4)
    mask = pair.science.mask.copy()
    mask[:, :10] |= int(MaskPlane.NO_DATA)
    mask[:, 150] |= int(MaskPlane.BAD)
    mask[60:62, 100:102] |= int(MaskPlane.CR)
    found = input_sources(pair.science.replace(mask=mask), pair.template)
    within = np.ones(found.usable.shape, dtype=bool)
    within[100:105] = False
    wide = ~(found.usable & within)
    wide[:, 150] = wide[60:62, 100:102] = False
    hidden = found.sources | wide
    near = ndimage.maximum_filter(hidden.view(np.uint8), 2 * 4 + 1, mode="constant") > 0
    near[:4], near[-4:], near[:, :4], near[:, -4:] = True, True, True, True
    seen = found.sky(3.2, within, hiding=3)
    np.testing.assert_array_equal(seen, found.usable & within & ~near)
    assert not seen[:, 10:14].any() and not seen[96:109].any()
    assert (found.sky(3.2, within) & ~seen)[:, 10:14].any()
    # With no source at all, the distance from the unseen pixels still holds.
    empty = dataclasses.replace(found, sources=np.zeros_like(found.sources))
    alone = empty.sky(3.2, hiding=3)
    assert not alone[:, :14].any()
    inner = (slice(4, -4), slice(14, -4))
    np.testing.assert_array_equal(alone[inner], found.usable[inner])
    assert alone[4:-4, 149].all() and alone[4:-4, 151].all() and alone[59:63, 99:103].sum() == 12


@pytest.mark.parametrize("width", [1, 3, 5])
def test_unseen_is_the_opening_of_the_unusable_map(width: int) -> None:
    # Against scipy's binary opening with the array's outside counted as unusable.
    rng = np.random.default_rng(width)
    good = rng.random((60, 70)) > 0.3
    good[20:40, 10:50] = True
    good[5:15, 30:45] = False
    padded = np.pad(~good, width, constant_values=True)
    square = np.ones((width, width), dtype=bool)
    expected = ndimage.binary_opening(padded, square)[width:-width, width:-width] & ~good
    np.testing.assert_array_equal(sky.unseen(good, width), expected)


def test_a_run_finds_each_inputs_sources_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel fit's noise terms and the renormalisation share one map of each input's
    # sources (each was 0.2-0.4 s at 4096^2).
    calls = []
    found = sky.source_map

    def counted(*args: object, **kwargs: object) -> np.ndarray:
        calls.append(1)
        return found(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sky, "source_map", counted)
    pair = make_pair((256, 256), 150, seed=7)
    result = pipeline.run_subtraction(pair.science, pair.template)
    assert result.kernel.shared_noise is not None and result.renormalisation.n_sky_pixels > 0
    assert len(calls) == 2


def test_a_sky_levels_error_holds_the_noises_correlation() -> None:
    """White noise smoothed by a Gaussian of sigma 2 px (a convolved image's noise): the
    level of 200 realisations of 256^2 px, 40 % of it sky, scatters by the cells' error
    to within 15 % (a scatter from 200 draws is known to 5 %), where the pixels' own
    error is 4.1 times too small (each sky pixel correlated with 40 % of the ``4 pi
    sigma^2`` = 50 px a Gaussian's correlation spans), and their mean is the true level
    0."""
    rng = np.random.default_rng(7)
    sky_map = rng.random((256, 256)) < 0.4
    levels, errors = [], []
    for _ in range(200):
        noise = ndimage.gaussian_filter(rng.normal(size=(256, 256)), 2.0, mode="wrap")
        level = sky.sky_level(noise.astype(np.float32), sky_map)
        levels.append(level.level)
        errors.append(level.error)
    assert level.n_pixels > 0.39 * 256**2
    assert np.std(levels) == pytest.approx(np.median(errors), rel=0.15)
    assert abs(np.mean(levels)) < 4 * np.std(levels) / np.sqrt(200)


@pytest.mark.parametrize("shape", [(20, 1000), (1000, 20), (31, 600)])
def test_a_strip_narrower_than_a_cell_has_a_sky_level_and_error(shape: tuple[int, int]) -> None:
    # 16 cells or more, none of them whole: the correlation factor of the error takes
    # the strip's width as the cells' (it found no cell and raised IndexError).
    noise = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    level = sky.sky_level(noise, np.ones(shape, bool))
    assert np.isfinite(level.level) and 0 < level.error < 3.0 / np.sqrt(noise.size)


@pytest.mark.parametrize("smoothing", [3.4, 6.0])
def test_a_sky_levels_error_holds_adjacent_cells_covariance(smoothing: float) -> None:
    """Noise correlated over several px links each 32 px cell's edge to its neighbours':
    counted as independent, the cells' scatter gave pulls (level / error) of std 1.12
    and 1.26 here, and the 3-error decision fired 2.5-8 times too often. The cells'
    variance is now scaled by what a Gaussian correlation of the measured lag-1
    correlation adds between cells: the pulls of 300 realisations of 256^2 px have a
    std within 0.1 of 1 (a std from 300 draws is known to 0.04; the cells' own error,
    from 64 cells, puts 1.03 on white noise)."""
    rng = np.random.default_rng(11)
    every = np.ones((256, 256), bool)
    pulls = []
    for _ in range(300):
        noise = ndimage.gaussian_filter(rng.normal(size=(256, 256)), smoothing, mode="wrap")
        level = sky.sky_level(noise.astype(np.float32), every)
        pulls.append(level.level / level.error)
    assert abs(np.std(pulls) - 1) < 0.1


@settings(max_examples=40, deadline=None)
@given(
    ny=st.integers(1, 80),
    nx=st.integers(1, 1200),
    transpose=st.booleans(),
    nan_fraction=st.floats(0.0, 1.0),
    sky_fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_a_sky_level_is_finite_or_says_it_has_no_sky(
    ny: int, nx: int, transpose: bool, nan_fraction: float, sky_fraction: float, seed: int
) -> None:
    """Any shape, NaN pattern and sky map: a finite level and error from the finite sky
    pixels, NaN from none, and a level taken out only with enough of them. Strips
    narrower than a 32 px cell but long enough for 16 cells included (the error's
    correlation factor found no whole cell in them: IndexError)."""
    rng = np.random.default_rng(seed)
    shape = (nx, ny) if transpose else (ny, nx)
    ny, nx = shape
    image = rng.normal(3.0, 1.0, (ny, nx)).astype(np.float32)
    image[rng.random((ny, nx)) < nan_fraction] = np.nan
    sky_map = rng.random((ny, nx)) < sky_fraction
    level = sky.sky_level(image, sky_map)
    finite = int(np.sum(sky_map & np.isfinite(image)))
    assert level.n_pixels <= finite
    if finite == 0:
        assert level.n_pixels == 0 and np.isnan(level.level) and not level.applied
    else:
        assert np.isfinite(level.level) and np.isfinite(level.error) and level.error >= 0
    assert level.applied <= (level.n_pixels >= sky.MIN_BACKGROUND_SKY)
    assert sky.SkyLevel.from_dict(level.as_dict()) == level or np.isnan(level.level)
