"""A coadd's saturation without a SATURATE card: the broad cores piled up below its maximum.

A coadd of frames that each clip at 65535 after their own sky is subtracted keeps no
exact flat top: its saturated cores peak within a few per cent of one another whatever
their fluxes. The GOTO coadds of ``../shared/data`` are such images (issue 12: their
unflagged saturated stars left 29 of diffviewer's 180 positive 5 sigma peaks, where
HOTPANTS is told the level by hand and masks them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from diffviewer import saturation
from diffviewer.exposure import MaskPlane
from diffviewer.io import read_exposure, read_templates
from diffviewer.saturation import flat_top_level, star_plateau_level
from tests.conftest import data_path

SAT = int(MaskPlane.SAT)
#: The converter's range and the three frames' skies: clip levels 64735, 63035, 61535
#: after each frame's sky is subtracted (2.4 % either side of their mean).
ADC_MAX = 65535.0
FRAME_SKIES = (800.0, 2500.0, 4000.0)
#: Gaussian stars of FWHM 3 px: the peak pixel holds 1 / (2 pi sigma^2) of the flux.
SIGMA = 3.0 / 2.3548
PEAK_SHARE = 1.0 / (2 * np.pi * SIGMA**2)


def _stars(fluxes: np.ndarray, xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Gaussian stars rendered in 31 x 31 px boxes (their peaks at integer pixels)."""
    image = np.zeros(shape)
    dy, dx = np.mgrid[-15:16, -15:16]
    profile = PEAK_SHARE * np.exp(-(dx**2 + dy**2) / (2 * SIGMA**2))
    for flux, (x, y) in zip(fluxes, xy, strict=True):
        image[y - 15 : y + 16, x - 15 : x + 16] += flux * profile
    return image


def _field(seed: int, capped: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Star light, fluxes and positions of a 512^2 field.

    Fluxes follow star counts N(>F) ~ 1/F from 2e4 to 6e6 (about 13 stars bright enough
    to clip); with ``capped`` none exceeds 5e5 (peak 39,000, unclipped) and ten stars
    lie within 10 % of that cap, as a synthetic field with a flux cap has them.
    """
    rng = np.random.default_rng(seed)
    n = 400
    fluxes = 2e4 / rng.uniform(2e4 / 6e6, 1.0, n)
    if capped:
        fluxes = np.minimum(fluxes, 4e5)
        fluxes[:10] = rng.uniform(4.5e5, 5e5, 10)
    xy = rng.integers(20, 492, (n, 2))
    return _stars(fluxes, xy, (512, 512)), fluxes, xy


def _coadd(light: np.ndarray, seed: int, clip: bool = True) -> np.ndarray:
    """Mean of three frames, each with its sky, noise and a flat field (1 % from pixel to
    pixel), clipped at the converter's range (when ``clip``), flat-fielded and
    sky-subtracted: a clipped pixel reads 65535 / flat - sky, so no two cores agree."""
    rng = np.random.default_rng(seed)
    frames = []
    for sky in FRAME_SKIES:
        flat = rng.normal(1.0, 0.01, light.shape)
        counts = flat * (sky + light + rng.normal(0.0, np.sqrt(sky + light)))
        frames.append((np.minimum(counts, ADC_MAX) if clip else counts) / flat - sky)
    return np.mean(frames, axis=0) + 500.0


def test_a_clipped_coadd_has_its_saturated_cores_found() -> None:
    light, fluxes, xy = _field(3)
    image = _coadd(light, 4)
    usable = np.ones(image.shape, bool)
    assert flat_top_level(image, usable) is None  # no exact flat top to find
    level = star_plateau_level(image, usable)
    assert level is not None
    true_peak = fluxes * PEAK_SHARE
    lowest_clip = 0.97 * (ADC_MAX - max(FRAME_SKIES))  # 3 sigma of the flat below
    core = np.array([image[y - 1 : y + 2, x - 1 : x + 2].max() for x, y in xy])
    # every star clipped in all three frames has its core at or above the level
    assert np.all(core[true_peak > 1.03 * (ADC_MAX - min(FRAME_SKIES))] >= level)
    # no star far below the lowest clip is taken as saturated
    assert np.all(core[true_peak < 0.85 * lowest_clip] < level)


def test_the_same_stars_unclipped_are_not_saturated() -> None:
    light, _, _ = _field(3)
    assert star_plateau_level(_coadd(light, 4, clip=False), np.ones(light.shape, bool)) is None


def test_stars_of_similar_flux_near_the_top_are_not_a_clip_level() -> None:
    # Ten unclipped stars within 10 % of the top (a flux cap, as synthetic fields have)
    # pile up as clipped cores would, but their cores are as narrow as the PSF.
    light, _, _ = _field(5, capped=True)
    image = _coadd(light, 6, clip=False)
    assert star_plateau_level(image, np.ones(image.shape, bool)) is None


def test_reading_a_clipped_coadd_flags_its_cores_sat(tmp_path: Path) -> None:
    light, _, _ = _field(3)
    image = _coadd(light, 4).astype(np.float32)
    path = tmp_path / "coadd.fits"
    fits.PrimaryHDU(image).writeto(path)
    exposure = read_exposure(str(path))
    assert exposure.saturation is not None
    how, level = exposure.saturation
    assert how == "star plateau"
    np.testing.assert_array_equal((exposure.mask & SAT) != 0, image >= level)


def test_masked_pixel_defects_of_one_value_are_no_flat_top(tmp_path: Path) -> None:
    # Cosmic rays and a hot column, masked CR and BAD in the file's own mask, all holding
    # one value above the stars' (a fill, or a synthetic frame's): 5129 such pixels of a
    # synthetic frame were taken for a flat top at their value and made SAT, a plane
    # grown over every star beside them, and no kernel star was left. A defect's value
    # tells nothing of the clip level: no saturation level, no SAT.
    light, _, _ = _field(3)
    image = _coadd(light, 4, clip=False).astype(np.float32)
    hit = np.random.default_rng(1).random(image.shape) < 0.003
    planes = np.where(hit, 1 << 3, 0).astype(np.int16)
    planes[:, 100] = 1
    hit[:, 100] = True
    image[hit] = 1.5 * image.max()
    path = tmp_path / "frame.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(image, name="IMAGE"),
            fits.ImageHDU(planes, fits.Header({"MP_BAD": 0, "MP_CR": 3}), name="MASK"),
        ]
    ).writeto(path)
    exposure = read_exposure(str(path))
    assert exposure.saturation is None
    assert not np.any((exposure.mask & SAT) != 0)
    assert np.all((exposure.mask[hit] & int(MaskPlane.CR | MaskPlane.BAD)) != 0)


#: Four quadrants of a 512^2 field overlapping by 20 px: each holds too few clipped
#: cores to show the clip level alone (issue-12 audit: GOTO's template cut in four kept
#: 2-6 clipped stars a piece, and lost its 2,289 SAT_TEMPLATE pixels).
QUADRANTS = [
    (rows, cols)
    for rows in (slice(0, 266), slice(246, 512))
    for cols in (slice(0, 266), slice(246, 512))
]


def _pieces(image: np.ndarray, folder: Path, brighter: float = 1.0) -> list[str]:
    """The image's :data:`QUADRANTS` written as FITS files without a SATURATE card, with
    MAGZP 27; the last ``brighter`` times brighter, its MAGZP raised to match."""
    paths = []
    for k, box in enumerate(QUADRANTS):
        path = folder / f"piece{k}.fits"
        scale = brighter if k == len(QUADRANTS) - 1 else 1.0
        header = fits.Header([("MAGZP", 27.0 + 2.5 * np.log10(scale))])
        fits.PrimaryHDU((image[box] * scale).astype(np.float32), header).writeto(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("brighter", [1.0, 10**0.2])
def test_a_clipped_coadd_in_pieces_has_its_one_level_found_over_them(
    tmp_path: Path, brighter: float
) -> None:
    # A piece of another zero point clips at other counts (x 10^0.2: 96,836 for GOTO's
    # 61,095): compared in raw counts, its cores hid the others' and no piece was flagged.
    light, _, _ = _field(3)
    image = _coadd(light, 4).astype(np.float32)
    whole = star_plateau_level(image, np.ones(image.shape, bool))
    assert whole is not None
    paths = _pieces(image, tmp_path, brighter)
    assert all(read_exposure(path).saturation is None for path in paths)  # alone: too few
    pieces = read_templates(paths)
    for k, (piece, box) in enumerate(zip(pieces, QUADRANTS, strict=True)):
        scale = brighter if k == len(QUADRANTS) - 1 else 1.0
        # the same stars, the same lowest peak in the band: the whole coadd's level
        assert piece.saturation == ("star plateau", pytest.approx(whole * scale, rel=1e-5))
        saturated = (image[box] * scale).astype(np.float32) >= piece.saturation[1]
        np.testing.assert_array_equal((piece.mask & SAT) != 0, saturated)


def test_a_core_two_pieces_share_is_one_star() -> None:
    # Two clipped stars in the overlap of two pieces: counted in each piece, they made
    # four "clipped cores" where the whole image has two (too few for a clip level).
    rng = np.random.default_rng(5)
    fluxes, xy = rng.uniform(2e4, 4e5, 300), rng.integers(20, 236, (300, 2))
    fluxes[:2], xy[:2] = [3e6, 4e6], [[120, 120], [130, 124]]
    image = _coadd(_stars(fluxes, xy, (256, 256)), 4).astype(np.float32)
    assert star_plateau_level(image, np.ones(image.shape, bool)) is None
    halves = [image[:, :156], image[:, 100:]]
    assert saturation.pieces_plateau_level(halves, [np.ones(h.shape, bool) for h in halves]) is None


def test_a_piece_too_poor_alone_takes_the_level_a_siblings_cores_show(tmp_path: Path) -> None:
    # One piece holds most of the clipped stars and finds the level by itself; a small
    # one holds one or two: pooled alone it had too few, and its cores went unflagged.
    light, _, _ = _field(3)
    image = _coadd(light, 4).astype(np.float32)
    whole = star_plateau_level(image, np.ones(image.shape, bool))
    ys, xs = np.nonzero(image >= whole)  # a box of 160 px around one clipped core
    y0, x0 = (int(np.clip(v[0] - 80, 0, 512 - 160)) for v in (ys, xs))
    small_box = np.s_[y0 : y0 + 160, x0 : x0 + 160]
    paths = []
    for name, box in (("big", np.s_[:, :]), ("small", small_box)):
        paths.append(str(tmp_path / f"{name}.fits"))
        fits.PrimaryHDU(image[box]).writeto(paths[-1])
    big, small = (read_exposure(path) for path in paths)
    assert big.saturation == ("star plateau", whole) and small.saturation is None
    pooled = read_templates(paths)
    assert pooled[0].saturation == big.saturation
    assert pooled[1].saturation == ("star plateau", pytest.approx(whole, rel=1e-6))
    flagged = (pooled[1].mask & SAT) != 0
    assert flagged.any()
    np.testing.assert_array_equal(flagged, image[small_box] >= whole)


def test_unclipped_pieces_are_not_given_a_level(tmp_path: Path) -> None:
    light, _, _ = _field(3)
    image = _coadd(light, 4, clip=False).astype(np.float32)
    pieces = read_templates(_pieces(image, tmp_path))
    assert all(piece.saturation is None for piece in pieces)
    assert not any(np.any(piece.mask & SAT) for piece in pieces)


@pytest.mark.parametrize("name", ["goto/1.fits", "goto/2.fits"])
def test_goto_coadds_have_their_saturated_stars_flagged(name: str) -> None:
    # The benchmark hands HOTPANTS 60000 as these coadds' valid upper limit: every star
    # reaching it must have a SAT core, and the flag stays on the cores (well under
    # 0.1 % of the image). A core above 60000 may split where the (double) PSF dips: the
    # pixels within 3 px are one star.
    exposure = read_exposure(str(data_path(name)))
    assert exposure.saturation is not None and exposure.saturation[0] == "star plateau"
    sat = (exposure.mask & SAT) != 0
    labels, n_stars = ndimage.label(
        ndimage.binary_dilation(exposure.image >= 60000.0, iterations=3)
    )
    assert n_stars >= 10
    flagged = ndimage.maximum(sat, labels, np.arange(1, n_stars + 1))
    assert np.all(flagged)
    assert np.count_nonzero(sat) < 1e-3 * sat.size


def _plateau_by_whole_image_labels(image: np.ndarray, usable: np.ndarray) -> float | None:
    """Brute-force reference of :func:`star_plateau_level`: the islands labelled on
    image-sized maps (the near-top band grown by ``SAME_SOURCE_PX``, then labelled)."""
    values = image[usable]
    top = float(values.max())
    sky = saturation._sky_far_below(values, top)
    if sky is None:
        return None
    height = top - sky
    near_top = usable & (image >= top - saturation.PLATEAU_WIDTH * height)
    if np.count_nonzero(near_top) > saturation.MAX_PLATEAU_FRACTION * values.size:
        return None

    def peaks_of(mask: np.ndarray, pixels: np.ndarray) -> tuple[np.ndarray, list]:
        labels, n = ndimage.label(mask)
        index = np.arange(1, n + 1)
        where = ndimage.maximum_position(np.where(pixels, image, -np.inf), labels, index)
        return np.array([image[p] for p in where], dtype=np.float64), where

    grown = ndimage.binary_dilation(near_top, iterations=saturation.SAME_SOURCE_PX)
    peaks, where = peaks_of(grown, near_top)
    if peaks.size < saturation.MIN_PLATEAU_STARS:
        return None
    low, high = (sky + f * height for f in saturation.REFERENCE_BAND)
    band = usable & (image >= low)
    ref_peaks, ref_where = peaks_of(band, band)
    chosen = np.nonzero(ref_peaks < high)[0]
    chosen = chosen[np.argsort(-ref_peaks[chosen])][: saturation.REFERENCE_STARS]
    if chosen.size == 0:
        return None
    light_of = saturation._light_above_half_peak
    psf_light = np.median([light_of(image, *ref_where[k], ref_peaks[k], sky) for k in chosen])
    light = np.array([light_of(image, *where[k], peaks[k], sky) for k in range(peaks.size)])
    if np.count_nonzero(light >= saturation.CLIPPED_CORE_RATIO * psf_light) < 4:
        return None
    return float(np.min(peaks))


@pytest.mark.parametrize("reach", [1, 2 * saturation.SAME_SOURCE_PX + 1])
def test_islands_on_flat_indices_are_the_labels_of_image_sized_maps(reach: int) -> None:
    # Sparse random pixels, some in clumps and on the edges: the islands are
    # ndimage.label's, of the pixels grown by SAME_SOURCE_PX for the wider reach (whose
    # order follows the grown pixels: the same partition there, numbered otherwise).
    rng = np.random.default_rng(11)
    mask = rng.uniform(size=(97, 131)) > 0.97
    mask[40:44, 0:5] = mask[0:3, 125:] = True
    grown = mask if reach == 1 else ndimage.binary_dilation(mask, iterations=(reach - 1) // 2)
    labels = ndimage.label(grown)[0][mask] - 1
    ours = saturation._islands(np.flatnonzero(mask), mask.shape[1], reach)
    if reach == 1:
        np.testing.assert_array_equal(ours, labels)
    pairs = np.unique(np.column_stack([ours, labels]), axis=0)
    assert len(pairs) == ours.max() + 1 == labels.max() + 1 < ours.size


@pytest.mark.parametrize(
    "case", ["clipped", "unclipped", "capped", "masked", "goto/1.fits", "goto/2.fits"]
)
def test_the_plateau_is_the_brute_force_labels_one(case: str) -> None:
    if case.startswith("goto"):
        image = fits.getdata(data_path(case)).astype(np.float32)
    else:
        light, _, _ = _field(5 if case == "capped" else 3, capped=case == "capped")
        image = _coadd(light, 4, clip=case in ("clipped", "masked"))
    usable = np.isfinite(image)
    if case == "masked":  # a blank band through stars, and NaN in it
        usable[200:215, :] = False
        image[200:208, :] = np.nan
    level = star_plateau_level(image, usable)
    assert level == _plateau_by_whole_image_labels(image, usable)
    assert (level is None) == (case in ("unclipped", "capped"))


def test_a_floor_of_fill_far_below_the_sky_is_found_and_noise_is_not() -> None:
    # An integer frame over a sky of 1000 +- 32 counts whose unread half holds 0 (NaN
    # cannot be written as an integer): 0 is 31 sigma below the rest. The same frame
    # without the fill, its noise floor alone, and a constant image have no such floor;
    # nor has a sky-subtracted image filled at its own sky, which this cannot tell.
    rng = np.random.default_rng(3)
    frame = np.rint(rng.normal(1000.0, 32.0, (120, 120))).astype(np.int32)
    filled = frame.copy()
    filled[:, :60] = 0
    usable = np.ones(frame.shape, bool)
    level, depth = saturation.floor_fill_level(filled, usable)
    assert level == 0 and depth == pytest.approx(31, abs=2)
    assert saturation.floor_fill_level(frame, usable) is None
    assert saturation.floor_fill_level(np.full((50, 50), 7.0), np.ones((50, 50), bool)) is None
    at_sky = np.where(filled == 0, 0.0, filled - 1000.0)
    assert saturation.floor_fill_level(at_sky, usable) is None


def test_a_cutout_centred_on_a_clipped_star_finds_its_clip_level() -> None:
    # A 32 x 32 cutout (sky 1000, noise 30) of a star of peak 1e6 clipped at 65300: its
    # core (within 4.7 px) puts ~70 px, 7 % of the cutout, on the clip level, more than
    # the 1 % a whole frame allows (10 px here), and the level was missed.
    rng = np.random.default_rng(4)
    dy, dx = np.mgrid[-16:16, -16:16]
    star = 1e6 * np.exp(-((dx - 0.3) ** 2 + (dy + 0.2) ** 2) / (2 * 2.0**2))
    image = np.minimum(1000 + rng.normal(size=dy.shape) * 30 + star, 65300.0)
    usable = np.ones(image.shape, bool)
    assert 0.01 * image.size < np.count_nonzero(image == 65300) <= saturation.MAX_CORE_PIXELS
    assert flat_top_level(image, usable) == 65300
    # Quantised or constant cutouts of that size still have no clip level: their repeated
    # maximum lies a few sigma above the median, or their spread is nil.
    for low in (
        rng.integers(0, 4, dy.shape).astype(float),
        rng.poisson(3.0, dy.shape).astype(float),
        np.full(dy.shape, 7.0),
    ):
        assert flat_top_level(low, usable) is None


def test_real_cutouts_centred_on_clipped_cores_find_the_clip_level() -> None:
    # pyDIA frames clip at 65300 ADU; 48 x 48 cutouts centred on each frame's largest
    # clipped core (14-40 px, 0.6-1.7 % of the cutout) missed it in 4 of 6 frames. The
    # 32 px cutout of 0016 is still missed: the star's wings lift the cutout's robust
    # spread to 1490 ADU, and the clip lies only 42 of them above its median.
    for name in ("0012", "0016", "0018", "0060", "0120", "0150"):
        image = fits.getdata(data_path(f"pydia/AKB13475I{name}.fits")).astype(np.float32)
        labels, n = ndimage.label(image >= 65300)
        sizes = ndimage.sum(np.ones(image.shape), labels, range(1, n + 1))
        core = labels == int(np.argmax(sizes)) + 1
        cy, cx = (round(float(v)) for v in ndimage.center_of_mass(core))
        cut = image[max(cy - 24, 0) : cy + 24, max(cx - 24, 0) : cx + 24]
        assert flat_top_level(cut, np.ones(cut.shape, bool)) == 65300, name


@st.composite
def _pieces_of_a_coadd(draw: st.DrawFn) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One to four pieces of any size (1-48 px a side) and dtype, star-like peaks and
    clipped plateaus on a noisy sky, some pixels without data (NaN, not usable) or none."""
    n = draw(st.integers(1, 4))
    images, usables = [], []
    for _ in range(n):
        ny, nx = draw(st.integers(1, 48)), draw(st.integers(1, 48))
        dtype = draw(st.sampled_from([np.float32, np.float64, np.int16]))
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        image = rng.normal(100.0, 5.0, (ny, nx))
        for _ in range(draw(st.integers(0, 6))):
            y, x = rng.integers(0, ny), rng.integers(0, nx)
            image[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] += rng.uniform(1e2, 3e4)
        image = np.minimum(image, draw(st.sampled_from([3e4, 1e9])))
        usable = rng.uniform(size=(ny, nx)) > draw(st.sampled_from([0.0, 0.3, 1.0]))
        image = image.astype(dtype)
        if dtype != np.int16:
            image[~usable] = np.nan
        images.append(image)
        usables.append(usable)
    return images, usables


@settings(max_examples=60, deadline=None)
@given(_pieces_of_a_coadd())
def test_a_level_over_any_pieces_is_none_or_one_of_their_values(
    drawn: tuple[list[np.ndarray], list[np.ndarray]],
) -> None:
    images, usables = drawn
    level = saturation.pieces_plateau_level(images, usables)
    values = np.concatenate(
        [im[us].astype(np.float64) for im, us in zip(images, usables, strict=True)]
    )
    if level is None:
        return
    # a level is the peak of a source near the top: a usable value, not above the top
    assert np.isfinite(level) and level in values and level <= values.max()
