"""Reading exposures from every layout in ../shared/data, bad input, and atomic outputs."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import mad_std
from astropy.table import Table
from hypothesis import given, settings
from hypothesis import strategies as st

from diffviewer import io
from diffviewer.atomic import atomic_write_text, staged_output_dir
from diffviewer.companions import Companions
from diffviewer.errors import InputError, OutputError
from diffviewer.exposure import Exposure, MaskPlane
from diffviewer.fits_header import ZERO_POINT_KEYS, read_wcs
from diffviewer.fits_write import write_exposure, write_table
from diffviewer.io import demo_pair, estimate_variance, read_exposure
from diffviewer.paths import (
    NameVersion,
    check_output_dir,
    ensure_not_input,
    extension_text,
    hdu_index,
    parse_spec,
    resolved_spec,
)
from diffviewer.saturation import flat_top_level
from diffviewer.sky_stats import clipped_rows, robust_sky
from diffviewer.stats import MAD_TO_SIGMA, nanmedian_last
from diffviewer.synthetic import make_pair, tan_wcs
from tests.conftest import data_path

NO_DATA, SAT, BAD = int(MaskPlane.NO_DATA), int(MaskPlane.SAT), int(MaskPlane.BAD)
LEGACY_Z = "legacypipe/testcase3/decam/CP/V4.8.2a/CP20140818/c4d_140818_232043_{}_z_ls9.N12.fits"
LEGACY_HOLES = "legacypipe/testcase6/decam/CP/V4.8.2a/CP20181214/c4d_181215_051332_{}_r_ls9.S9.fits"


def _sky_image(shape=(128, 128), sky=1000.0, gain=2.0, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Poisson-like image: sky plus a few bright Gaussian blobs; returns image and true variance."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    model = np.full(shape, sky)
    for x0, y0 in rng.uniform(10, min(shape) - 10, (6, 2)):
        model += 2e4 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 2.0**2))
    var = model / gain
    return model + rng.normal(size=shape) * np.sqrt(var), var


def _write(path: Path, data: np.ndarray | None, header: fits.Header | None = None) -> Path:
    fits.PrimaryHDU(data, header=header).writeto(path)
    return path


# --------------------------------------------------------------------------- specs


def test_parse_spec_reads_names_and_indices(tmp_path: Path) -> None:
    assert parse_spec("a/b.fits") == (Path("a/b.fits"), None)
    assert parse_spec("b.fits[SCI]") == (Path("b.fits"), "SCI")
    assert parse_spec(Path("b.fits[3]")) == (Path("b.fits"), 3)
    odd = tmp_path / "odd[1].fits"
    odd.write_bytes(b"")
    assert parse_spec(odd) == (odd, None)
    with pytest.raises(InputError, match=r"empty extension"):
        parse_spec("b.fits[]")
    # EXTNAME and EXTVER (astropy's ("SCI", 2)); digits before the comma are a name
    assert parse_spec("b.fits[SCI,2]") == (Path("b.fits"), NameVersion("SCI", 2))
    assert parse_spec("b.fits[ sci , 2 ]") == (Path("b.fits"), NameVersion("sci", 2))
    assert parse_spec("b.fits[2,1]") == (Path("b.fits"), NameVersion("2", 1))
    assert parse_spec("b.fits[A,B]") == (Path("b.fits"), "A,B")
    assert resolved_spec(str(tmp_path / "b.fits[SCI, 2]")) == f"{tmp_path / 'b.fits'}[SCI,2]"


def test_a_name_repeated_with_versions_is_read_by_name_and_version(tmp_path: Path) -> None:
    # An HST-style file (SCI, EXTVER 1 and 2): file.fits[SCI,2] was refused, "has no
    # extension [SCI,2]"; astropy reads ("SCI", 2) as EXTNAME SCI, EXTVER 2.
    rng = np.random.default_rng(5)
    chips = [100.0 + rng.normal(size=(40, 40)), 500.0 + rng.normal(size=(40, 40))]
    path = tmp_path / "hst.fits"
    fits.HDUList(
        [fits.PrimaryHDU()]
        + [fits.ImageHDU(c, name="SCI", ver=v) for v, c in enumerate(chips, start=1)]
    ).writeto(path)
    for spec, chip in (("SCI,2", 1), ("sci, 2", 1), ("SCI,1", 0), ("SCI", 0), ("2", 1)):
        image = read_exposure(f"{path}[{spec}]").image
        np.testing.assert_array_equal(image, chips[chip].astype(np.float32))
    with pytest.raises(InputError, match=r"has no extension \[SCI,3\]; it has: 0 PRIMARY"):
        read_exposure(f"{path}[SCI,3]")


@pytest.mark.parametrize(
    ("hdus", "texts"),
    [
        (
            [("PRIMARY", 1), ("SCI", 1), ("SCI", 2), ("REF", 1)],
            ["PRIMARY", "SCI,1", "SCI,2", "REF"],
        ),
        # EXTNAMEs of digits: a spec's digits are an index, so they are named by theirs
        ([("PRIMARY", 1), ("2", 1), ("1", 1)], ["PRIMARY", "1", "2"]),
        # a name and version repeated; no name
        ([("PRIMARY", 1), ("A", 1), ("A", 1), ("", 1)], ["PRIMARY", "A,1", "2", "3"]),
        # names a spec would read otherwise
        ([("A,2", 1), ("A", 2), ("B]", 1), (" C", 1)], ["A,2,1", "A", "2", "3"]),
    ],
)
def test_extension_text_reads_back_its_own_hdu(
    hdus: list[tuple[str, int]], texts: list[str]
) -> None:
    assert [extension_text(hdus, i) for i in range(len(hdus))] == texts
    for index, text in enumerate(texts):
        ext = parse_spec(f"f.fits[{text}]")[1]
        assert ext is not None and hdu_index(hdus, ext) == index, text


# --------------------------------------------------------------------------- real layouts


def test_integer_bzero_image_reads_as_unsigned_values() -> None:
    path = data_path("properimage/aligned_eso085-030-004.fit")
    exp = read_exposure(path)
    raw = fits.getdata(path)  # astropy applies BZERO: uint16
    assert raw.dtype == np.uint16
    assert exp.image.dtype == np.float32 and exp.image.flags.c_contiguous
    np.testing.assert_array_equal(exp.image, raw.astype(np.float32))
    assert exp.image.max() == 65535.0  # would be -1 if BZERO were ignored
    assert exp.wcs is None and exp.variance_estimated


@pytest.mark.parametrize(("bzero", "blank"), [(32768, -32768), (32768, 7), (0, -999)])
def test_blank_integer_pixels_are_no_data(tmp_path: Path, bzero: int, blank: int) -> None:
    # astropy applies BLANK when it scales integers to floats, not to the unsigned
    # integers it reads with BZERO 32768: their blank pixels read as a physical value
    # (0 for BLANK -32768) and counted as data.
    rng = np.random.default_rng(1)
    physical = np.round(30.0 + rng.normal(0.0, 5.0, (64, 64))).clip(8, None)
    stored = (physical - bzero).astype(np.int16)
    stored[10:20, 10:20] = blank
    hdu = fits.PrimaryHDU(stored)
    if bzero:
        hdu.header["BZERO"], hdu.header["BSCALE"] = bzero, 1
    hdu.header["BLANK"] = blank
    hdu.writeto(tmp_path / "b.fits")
    exp = read_exposure(tmp_path / "b.fits")
    hole = np.zeros(stored.shape, bool)
    hole[10:20, 10:20] = True
    no_data = (exp.mask & NO_DATA) != 0
    np.testing.assert_array_equal(no_data, hole)
    np.testing.assert_array_equal(exp.image[~hole], physical[~hole].astype(np.float32))


def test_estimated_variance_matches_frame_to_frame_noise() -> None:
    # Two consecutive 60 s frames of the same field: their difference, divided by the
    # estimated noise of both, must have unit scatter on the sky. A whole-image MAD
    # (inflated by the galaxy and the sky gradient) gives 0.77 here; the blockwise
    # estimate 0.91; the bound 0.85-1.15 leaves room for the frames' misalignment.
    a = read_exposure(data_path("properimage/aligned_eso085-030-004.fit"))
    b = read_exposure(data_path("properimage/aligned_eso085-030-005.fit"))
    z = (a.image.astype(float) - b.image) / np.sqrt(a.variance.astype(float) + b.variance)
    sky = a.good_pixels() & (a.image < np.median(a.image) + 100)
    assert 0.85 < mad_std(z[sky]) < 1.15


def _clipped_rows_by_resorting(
    values: np.ndarray, rounds: int, clip: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The direct form of ``clipped_rows``: NaN out the clipped values, sort again each round."""
    rows = values.copy()
    level = sigma = np.full(rows.shape[0], np.nan)
    with np.errstate(invalid="ignore"):
        for _ in range(rounds):
            level = nanmedian_last(rows)
            sigma = MAD_TO_SIGMA * nanmedian_last(np.abs(rows - level[:, None]))
            rows[np.abs(rows - level[:, None]) > clip * sigma[:, None]] = np.nan
    return level, sigma, np.sum(np.isfinite(rows), axis=1)


def _sky_rows(kind: str) -> np.ndarray:
    """Rows of sky samples of several kinds (all NaN, constant, quantised, outliers)."""
    rng = np.random.default_rng(7)
    rows = rng.normal(100.0, 5.0, (40, 301))
    if kind == "outliers":
        rows[:, :30] += rng.uniform(50, 5e4, (40, 30))  # sources on one side
        rows[::3, -20:] -= 1e3  # and dead pixels on the other
    elif kind == "quantised":
        rows = np.round(rows / 5.0)  # many ties
    elif kind == "masked":
        rows[rng.random(rows.shape) < 0.6] = np.nan
        rows[3] = np.nan  # a block without a good pixel
        rows[5] = 42.0  # a constant block: sigma 0
        rows[6, 1:] = np.nan  # one value
        rows[7, 2:] = np.nan  # two values
    elif kind == "real":
        with fits.open(data_path("goto/1.fits")) as hdul:
            rows = np.asarray(hdul[0].data[:400, :600], dtype=np.float64).reshape(40, -1)
    return rows


@pytest.mark.parametrize("kind", ["gaussian", "outliers", "quantised", "masked", "real"])
def test_clipped_rows_equal_resorting_after_every_clip(kind: str) -> None:
    # The one-sort form must give the very figures of sorting the kept values again each
    # round, to the bit: the estimated variance plane, and everything after it, depends
    # on them.
    rows = _sky_rows(kind)
    got = clipped_rows(rows, rounds=3, clip=3.0)
    want = _clipped_rows_by_resorting(rows, rounds=3, clip=3.0)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_sky_statistics_sample_every_kth_block_and_every_sth_pixel() -> None:
    # robust_sky gathers only the pixels it uses; the direct form cuts the whole image
    # into blocks and subsamples them. 2210 x 2000 px: 34 x 31 blocks of 65 x 64 px with
    # leftover rows and columns, more than 2 SKY_BLOCKS_MAX blocks (every 2nd is used)
    # holding more than 2 SKY_SAMPLES_MAX pixels (every 2nd pixel of each is used).
    rng = np.random.default_rng(3)
    image = rng.normal(50.0, 4.0, (2210, 2000)) + np.linspace(0.0, 30.0, 2000)
    image[400:700, 900:1300] += 500.0  # a large galaxy
    good = rng.random(image.shape) > 0.1
    good[:, :200] = False  # a masked edge: some blocks have no good pixel
    ny, nx = image.shape
    by, bx = ny // 64, nx // 64
    h, w = ny // by, nx // bx
    values = np.where(good, image, np.nan)[: by * h, : bx * w]
    blocks = values.reshape(by, h, bx, w).transpose(0, 2, 1, 3).reshape(by * bx, h * w)
    blocks = blocks[::2][:, ::2]
    level, sigma, kept = _clipped_rows_by_resorting(blocks, rounds=3, clip=3.0)
    filled = kept / blocks.shape[1] >= 0.25
    want = (np.nanmedian(level[filled]), np.nanmedian(sigma[filled]))
    assert robust_sky(image, good) == want
    assert want[1] == pytest.approx(4.0, rel=0.05)  # the noise, not the gradient


def test_big_endian_data_becomes_native_float32() -> None:
    path = data_path("goto/1.fits")
    raw = fits.getdata(path)
    assert raw.dtype.byteorder == ">"
    exp = read_exposure(path)
    assert exp.image.dtype == np.dtype("float32") and exp.image.dtype.isnative
    np.testing.assert_array_equal(exp.image, raw)
    assert exp.has_celestial_wcs


@pytest.mark.parametrize(
    ("stored", "held"),
    [
        (np.float32, np.float32),
        (np.int16, np.float32),
        (np.uint16, np.float32),
        (np.int32, np.float64),
        (np.float64, np.float64),
    ],
)
def test_an_image_is_read_in_the_narrowest_float_that_holds_it(
    tmp_path: Path, stored: type, held: type
) -> None:
    # A float32 (or 16-bit integer) image is not widened to float64 on read only to be
    # narrowed again by the Exposure (two image-sized planes of fresh memory at 4096^2);
    # the read's statistics (sky, saturation plateau, variance estimate) are those of the
    # same values held in float64, bit for bit.
    rng = np.random.default_rng(5)
    values = np.round(rng.normal(1000.0, 30.0, (96, 80)))
    values[40:43, 30:33] = 20_000.0  # a clipped core: a flat top taken as saturation
    values[10:13, 60:63] = 20_000.0
    values[70:73, 15:18] = 20_000.0
    if stored is np.int32:
        values[0, 0] = -(2**24 + 1)  # not a float32
    fits.PrimaryHDU(values.astype(stored)).writeto(tmp_path / "a.fits")
    fits.PrimaryHDU(values.astype(np.float64)).writeto(tmp_path / "b.fits")
    with fits.open(tmp_path / "a.fits") as hdul:
        assert io._image_data(hdul, 0, tmp_path / "a.fits", "image").dtype == held
    a, b = read_exposure(tmp_path / "a.fits"), read_exposure(tmp_path / "b.fits")
    assert a.saturation == b.saturation == ("flat top", 20_000.0)
    for plane in ("image", "variance", "mask"):
        np.testing.assert_array_equal(getattr(a, plane), getattr(b, plane))


@settings(max_examples=40, deadline=None)
@given(
    ny=st.integers(24, 90),
    nx=st.integers(24, 90),
    dtype=st.sampled_from(["float32", "float64", "uint8", "int16", "uint16", "int32"]),
    flaws=st.sampled_from(["none", "nan", "blank", "flat_top", "floor"]),
    seed=st.integers(0, 2**16),
)
def test_any_stored_type_reads_as_its_values_held_in_float64(
    tmp_path_factory: pytest.TempPathFactory,
    ny: int,
    nx: int,
    dtype: str,
    flaws: str,
    seed: int,
) -> None:
    # Whatever its type, shape and flaws (NaN, blank fill, a clipped top, a floor of
    # fill), an image reads as the same values written as float64 read: its planes, its
    # NO_DATA and SAT pixels and its saturation level, bit for bit.
    rng = np.random.default_rng(seed)
    values = np.round(rng.normal(120.0, 8.0, (ny, nx)))
    kind = np.dtype(dtype)
    if flaws == "flat_top":
        values.flat[rng.choice(values.size, 12, replace=False)] = 250.0
    elif flaws == "floor":
        values.flat[rng.choice(values.size, 12, replace=False)] = 0.0
    elif flaws in ("nan", "blank") and kind.kind == "f":
        values.flat[rng.choice(values.size, 9, replace=False)] = np.nan if flaws == "nan" else -1e31
    folder = tmp_path_factory.mktemp("types")
    fits.PrimaryHDU(values.astype(kind)).writeto(folder / "a.fits")
    fits.PrimaryHDU(values.astype(kind).astype(np.float64)).writeto(folder / "b.fits")
    a, b = read_exposure(folder / "a.fits"), read_exposure(folder / "b.fits")
    assert a.saturation == b.saturation
    for plane in ("image", "variance", "mask"):
        np.testing.assert_array_equal(getattr(a, plane), getattr(b, plane))


def test_ztf_triplet_picks_named_hdus_and_primary_zero_point() -> None:
    path = data_path("ztf_triplets/ztf_ZTF17aabuxmr_697252845115010001.fits")
    first = read_exposure(path)  # no extension: the first HDU with 2-D data (SCI)
    with fits.open(path) as hdul:
        sci, ref = hdul["SCI"].data, hdul["REF"].data
    np.testing.assert_array_equal(first.image, np.nan_to_num(sci))
    np.testing.assert_array_equal(read_exposure(f"{path}[REF]").image, np.nan_to_num(ref))
    np.testing.assert_array_equal(read_exposure(f"{path}[2]").image, np.nan_to_num(ref))
    assert first.zero_point == pytest.approx(26.08788, abs=1e-4)  # MAGZPSCI of the primary
    assert first.wcs is None and first.variance_estimated


def test_rubin_triplet_takes_variance_and_psf_of_the_named_image() -> None:
    path = data_path("rubin_triplets/rubin_169298432605814947.fits")
    tmpl = read_exposure(f"{path}[TMPL]")
    with fits.open(path) as hdul:
        np.testing.assert_array_equal(tmpl.image, hdul["TMPL"].data)
        np.testing.assert_allclose(tmpl.variance, hdul["TMPL_VAR"].data)
        assert tmpl.psf is not None and tmpl.psf.shape == hdul["TMPL_PSF"].shape  # 47 x 47
        np.testing.assert_allclose(tmpl.psf, hdul["TMPL_PSF"].data / hdul["TMPL_PSF"].data.sum())
    assert not tmpl.variance_estimated
    assert tmpl.psf.sum() == pytest.approx(1.0)
    sci = read_exposure(path)
    assert sci.psf is not None and sci.psf.shape == (41, 41)
    # No CTYPE: the WCS is not celestial, but pixel coordinates still work.
    assert sci.wcs is not None and not sci.has_celestial_wcs
    x, y = sci.wcs.pixel_to_world_values(3.0, 4.0)
    assert np.isfinite([x, y]).all()
    assert sci.zero_point == pytest.approx(31.4)  # BUNIT = nJy


def test_legacypipe_siblings_give_variance_and_masks() -> None:
    image = data_path(LEGACY_HOLES.format("ooi"))
    exp = read_exposure(image)
    weight = fits.getdata(data_path(LEGACY_HOLES.format("oow")), 1)
    dq = fits.getdata(data_path(LEGACY_HOLES.format("ood")), 1)
    good = weight > 0
    assert (~good).any() and (dq != 0).any()
    np.testing.assert_allclose(exp.variance[good], 1.0 / weight[good], rtol=1e-6)
    np.testing.assert_array_equal((exp.mask & NO_DATA) != 0, ~good)
    np.testing.assert_array_equal((exp.mask & BAD) != 0, dq != 0)
    assert not exp.variance_estimated and exp.has_celestial_wcs
    # Given by name, the siblings read the same (and are recorded as given; found, they
    # are found again on every read).
    siblings = Companions(
        mask=str(data_path(LEGACY_HOLES.format("ood")).resolve()),
        weight=str(data_path(LEGACY_HOLES.format("oow")).resolve()),
    )
    assert exp.companions == Companions()
    explicit = read_exposure(image, companions=siblings)
    assert explicit.companions == siblings
    np.testing.assert_array_equal(explicit.mask, exp.mask)
    np.testing.assert_array_equal(explicit.variance, exp.variance)


def test_tile_compressed_file_with_nans() -> None:
    path = data_path("tess/sfft_diff4check.fits.fz")
    raw = fits.getdata(path, 1)
    exp = read_exposure(path)
    assert exp.shape == (2048, 2048) and exp.has_celestial_wcs
    nan = ~np.isfinite(raw)
    assert nan.sum() > 1000
    np.testing.assert_array_equal((exp.mask & NO_DATA) != 0, nan)
    assert np.all(exp.image[nan] == 0) and np.isfinite(exp.image).all()
    assert np.isfinite(exp.variance).all() and (exp.variance > 0).all()


def test_demo_pair_is_the_sfft_stacks_in_float32() -> None:
    science, template = demo_pair()
    sci, tmpl = read_exposure(science), read_exposure(template)
    assert sci.shape == tmpl.shape == (256, 256)
    assert sci.has_celestial_wcs and tmpl.has_celestial_wcs
    original = fits.getdata(data_path("decam_mini/peer_output_sfft/Stack-DEC-OBS04.fits"))
    np.testing.assert_allclose(sci.image, original, rtol=1e-6, atol=1e-3)
    assert fits.getheader(science)["CTYPE1"] == "RA---TPV"


# --------------------------------------------------------------------------- synthetic layouts


def test_a_primary_image_takes_its_files_mask_and_variance_hdus(tmp_path: Path) -> None:
    # One image in the primary HDU and its MASK and VARIANCE beside it (as a pipeline that
    # is not LSST's may write): the planes were read only beside an IMAGE HDU, and this
    # file's masked cosmic ray was silently dropped.
    image = np.full((20, 20), 100.0, dtype=np.float32)
    planes = np.zeros((20, 20), dtype=np.int16)
    planes[3, 4] = 1 << 3
    path = tmp_path / "frame.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(image),
            fits.ImageHDU(planes, header=fits.Header({"MP_CR": 3}), name="MASK"),
            fits.ImageHDU(np.full((20, 20), 9.0, np.float32), name="VARIANCE"),
        ]
    ).writeto(path)
    exp = read_exposure(path)
    assert exp.mask[3, 4] == int(MaskPlane.CR) and np.count_nonzero(exp.mask) == 1
    np.testing.assert_array_equal(exp.variance, 9.0)
    assert not exp.variance_estimated


def test_lsst_layout_maps_mask_planes_by_name(tmp_path: Path) -> None:
    image = np.arange(400, dtype=np.float32).reshape(20, 20)
    raw_mask = np.zeros((20, 20), dtype=np.int32)
    raw_mask[0, 0] = 1 << 3  # SAT in this file's numbering
    raw_mask[1, 1] = 1 << 12  # NO_DATA
    raw_mask[2, 2] = 1 << 9  # CROSSTALK: a plane we do not have, dropped
    mask_header = fits.Header()
    for name, bit in (("SAT", 3), ("NO_DATA", 12), ("CROSSTALK", 9), ("BAD", 0)):
        mask_header[f"HIERARCH MP_{name}"] = bit
    path = tmp_path / "calexp.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(header=fits.Header([("PHOTZP", 27.5)])),
            fits.ImageHDU(image, name="IMAGE"),
            fits.ImageHDU(raw_mask, header=mask_header, name="MASK"),
            fits.ImageHDU(np.full((20, 20), 4.0, np.float32), name="VARIANCE"),
        ]
    ).writeto(path)
    exp = read_exposure(path)
    assert exp.mask[0, 0] == SAT and exp.mask[1, 1] == NO_DATA and exp.mask[2, 2] == 0
    assert np.count_nonzero(exp.mask) == 2
    np.testing.assert_array_equal(exp.variance, 4.0)
    assert exp.zero_point == 27.5 and not exp.variance_estimated


def test_nan_inf_saturation_and_zero_point_keywords(tmp_path: Path) -> None:
    image, _ = _sky_image()
    image[5, 5], image[6, 6] = np.nan, np.inf
    image[7, 7] = 70000.0
    header = fits.Header([("SATURATE", 60000.0), ("MAGZP", 25.1), ("GAIN", 2.0)])
    exp = read_exposure(_write(tmp_path / "a.fits", image, header))
    assert exp.mask[5, 5] & NO_DATA and exp.mask[6, 6] & NO_DATA
    assert exp.image[5, 5] == 0 and exp.image[6, 6] == 0
    assert np.isfinite(exp.image).all() and np.isfinite(exp.variance).all()
    assert exp.mask[7, 7] & SAT and np.count_nonzero(exp.mask & SAT) == 1
    assert exp.zero_point == 25.1


@pytest.mark.parametrize("key", ZERO_POINT_KEYS)
def test_every_zero_point_keyword_is_read_and_kept(tmp_path: Path, key: str) -> None:
    # ZP, ZPT and ZEROPT once matched the pattern of the tile-compression cards and were
    # dropped from the header before the zero point was looked for.
    image, _ = _sky_image((32, 32))
    primary = fits.PrimaryHDU(header=fits.Header([(key, 27.5)]))
    fits.HDUList([primary, fits.ImageHDU(image, name="SCI")]).writeto(tmp_path / "z.fits")
    for spec in (
        _write(tmp_path / "p.fits", image, fits.Header([(key, 27.5)])),
        f"{tmp_path / 'z.fits'}[SCI]",
    ):
        exp = read_exposure(spec)
        assert exp.zero_point == 27.5 and exp.header[key] == 27.5


def test_flat_top_without_saturate_card_is_flagged_saturated(tmp_path: Path) -> None:
    # Blobs peaking at 2e4 above a sky of 1000 +- 22, clipped at 15000 as a detector
    # would: the clipped cores (tens of pixels, all exactly 15000) become SAT, and
    # metadata can say the level came from the flat top.
    image, _ = _sky_image()
    clipped = np.minimum(image, 15000.0)
    n_clipped = int(np.count_nonzero(image >= 15000.0))
    assert n_clipped >= 10
    exp = read_exposure(_write(tmp_path / "clip.fits", clipped))
    assert exp.saturation == ("flat top", 15000.0)
    assert np.count_nonzero(exp.mask & SAT) == n_clipped
    # the same image unclipped: its peaks are all different, nothing is saturated
    free = read_exposure(_write(tmp_path / "free.fits", image))
    assert free.saturation is None and not (free.mask & SAT).any()
    # a SATURATE card wins over the flat top
    header = fits.Header([("SATURATE", 12000.0)])
    carded = read_exposure(_write(tmp_path / "card.fits", clipped, header))
    assert carded.saturation == ("SATURATE", 12000.0)


def test_a_saturate_card_that_is_not_positive_is_ignored_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # SATURATE = -5 on an image whose sky is 1000 was recorded as the level: no pixel
    # became SAT (levels must be positive), but the kernel stars took every star above
    # -5 for saturated, and metadata reported the level as used.
    image, _ = _sky_image()
    header = fits.Header([("SATURATE", -5.0)])
    with caplog.at_level("WARNING"):
        exp = read_exposure(_write(tmp_path / "neg.fits", image, header))
    assert exp.saturation is None and not (exp.mask & SAT).any()
    assert any("SATURATE = -5 is not a positive" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "image",
    [
        np.full((64, 64), 7.0),  # constant: its maximum is everywhere
        np.random.default_rng(1).integers(0, 4, (64, 64)).astype(float),  # quantised
        np.random.default_rng(2).poisson(3.0, (64, 64)).astype(float),  # faint counts
    ],
    ids=["constant", "quantised", "faint-counts"],
)
def test_repeated_maximum_of_low_or_quantised_data_is_no_clip_level(image: np.ndarray) -> None:
    # The maximum of these repeats, but on many pixels or a few sigma above the median:
    # no detector clip, so nothing may be flagged.
    assert flat_top_level(image, np.ones(image.shape, bool)) is None


def test_pydia_frames_clip_at_65300_adu() -> None:
    # data README: raw SAAO frames, no SATURATE card; 16 pixels of 0012 sit at 65300 ADU
    exp = read_exposure(data_path("pydia/AKB13475I0012.fits"))
    assert exp.saturation == ("flat top", 65300.0)
    assert np.count_nonzero(exp.mask & SAT) == 16


def test_pydia_frames_have_no_wcs() -> None:
    # data README: no WCS; the only card of the kind is EPOCH (the equinox of RA, Dec),
    # which once made an empty linear WCS, has_wcs true and made-up WCS cards written out.
    assert read_exposure(data_path("pydia/AKB13475I0012.fits")).wcs is None


@pytest.mark.parametrize("inherit", [True, False])
def test_an_extension_takes_the_primary_wcs_only_when_it_says_inherit(
    tmp_path: Path, inherit: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # The INHERIT convention (NOAO, STScI): an extension without WCS cards of its own
    # that says INHERIT = T is on the primary header's WCS; without it the primary's WCS
    # may describe another area (a mosaic's focal plane) and is not taken, but said.
    image, _ = _sky_image((64, 80))
    wcs = tan_wcs((64, 80), rotation_deg=20.0)
    own = fits.Header([("INHERIT", inherit), ("GAIN", 2.0)])
    path = tmp_path / "inherit.fits"
    fits.HDUList(
        [fits.PrimaryHDU(header=wcs.to_header()), fits.ImageHDU(image, header=own, name="SCI")]
    ).writeto(path)
    exp = read_exposure(f"{path}[SCI]")
    if inherit:
        assert exp.wcs is not None
        sky = exp.wcs.pixel_to_world_values([3.0, 70.0], [5.0, 60.0])
        assert np.allclose(sky, wcs.pixel_to_world_values([3.0, 70.0], [5.0, 60.0]), atol=1e-12)
        assert "INHERIT" not in caplog.text
    else:
        assert exp.wcs is None
        assert "does not say INHERIT = T" in caplog.text and "inherit.fits" in caplog.text


@pytest.mark.parametrize(
    "cards",
    [
        [("EPOCH", 2000.0)],
        [("EQUINOX", 2000.0), ("RADESYS", "FK5")],
        [("LTV1", 10.0)],
        [("CROTA2", 0.0)],
        [("CRPIX1", 10.0), ("CRPIX2", 5.0)],
    ],
)
def test_cards_that_only_qualify_a_wcs_make_none(cards: list[tuple[str, object]]) -> None:
    assert read_wcs(fits.Header(cards), "frame.fits") is None


@pytest.mark.parametrize("with_gain", [True, False])
def test_estimated_variance_recovers_poisson_truth(tmp_path: Path, with_gain: bool) -> None:
    # With GAIN the source term is max(image - sky, 0) / gain; without it, the unsubtracted
    # sky (1000 counts, 31 sigma) gives the effective gain sky / sky_variance = 2.
    image, truth = _sky_image(shape=(256, 256), gain=2.0)
    header = fits.Header([("GAIN", 2.0)]) if with_gain else None
    exp = read_exposure(_write(tmp_path / "p.fits", image, header))
    assert exp.variance_estimated
    sky = truth < 510
    bright = truth > 2000
    # Sky: 65k pixels, a robust sigma to ~1 %; sources: the noise of the image itself
    # enters the Poisson term, a few % per pixel, averaging out over the pixels.
    assert np.median(exp.variance[sky] / truth[sky]) == pytest.approx(1.0, abs=0.03)
    assert np.median(exp.variance[bright] / truth[bright]) == pytest.approx(1.0, abs=0.05)


def test_estimated_variance_is_the_double_precision_formula_rounded_once() -> None:
    # 700 rows of 600 px are a block of VARIANCE_BLOCK_PIXELS (436 rows) and a part: each is
    # sky_var + max(image - sky, 0) / gain in float64, rounded to float32 once.
    image = _sky_image(shape=(700, 600), gain=2.0)[0]
    mask = np.zeros(image.shape, dtype=np.int16)
    variance = estimate_variance(image, mask, 2.0)
    level, sigma = robust_sky(image, mask == 0)
    expected = (np.maximum(image - level, 0.0) / 2.0 + sigma**2).astype(np.float32)
    assert variance.dtype == np.float32
    np.testing.assert_array_equal(variance, expected)


def test_sky_subtracted_image_without_gain_gets_flat_sky_variance(tmp_path: Path) -> None:
    image = _sky_image(shape=(128, 128), gain=2.0)[0]
    exp = read_exposure(_write(tmp_path / "s.fits", image - 1000.0))
    np.testing.assert_allclose(exp.variance, np.median(exp.variance))
    assert float(exp.variance[0, 0]) == pytest.approx(500.0, rel=0.05)


# --------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"does not exist"):
        read_exposure(tmp_path / "nope.fits")


def test_not_fits(tmp_path: Path) -> None:
    path = tmp_path / "text.fits"
    path.write_text("hello " * 1000)
    with pytest.raises(InputError, match=r"text\.fits is not a readable FITS file"):
        read_exposure(path)


@pytest.mark.parametrize("keep", [0.5, 0.001])
def test_truncated_file(tmp_path: Path, keep: float) -> None:
    full = _write(tmp_path / "full.fits", np.ones((100, 100), np.float32)).read_bytes()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(full[: int(len(full) * keep)])
    with pytest.raises(InputError, match=r"cut\.fits") as info:
        read_exposure(cut)
    assert "truncated" in str(info.value) or "not a readable FITS" in str(info.value)


def test_no_image_data(tmp_path: Path) -> None:
    path = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table({"a": [1, 2]}))]).writeto(path)
    with pytest.raises(InputError, match=r"table\.fits holds no image data") as info:
        read_exposure(path)
    # each HDU named with what it holds (the table was listed as "no data")
    assert "0 PRIMARY (no data), 1 (unnamed) (a table of 2 rows)" in str(info.value)


@pytest.mark.parametrize("shape", [(50,), (3, 20, 20)])
def test_wrong_dimensions(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = _write(tmp_path / "cube.fits", np.ones(shape, np.float32))
    with pytest.raises(InputError, match=rf"{len(shape)}-D array.*2-D image"):
        read_exposure(path)


def test_missing_extension_lists_the_existing_ones(tmp_path: Path) -> None:
    path = tmp_path / "mef.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((4, 5)), name="SCI")]).writeto(path)
    with pytest.raises(InputError, match=r"no extension \[REF\].*1 SCI \(5x4\)"):
        read_exposure(f"{path}[REF]")
    with pytest.raises(InputError, match=r"no extension \[7\]"):
        read_exposure(f"{path}[7]")


@pytest.mark.parametrize("role", ["variance", "weight", "mask"])
def test_companion_of_other_shape(tmp_path: Path, role: str) -> None:
    image = _write(tmp_path / "img.fits", _sky_image((32, 32))[0])
    other = _write(tmp_path / "other.fits", np.ones((31, 32), np.float32))
    with pytest.raises(InputError, match=rf"{role} .*other\.fits has shape \(31, 32\).*\(32, 32\)"):
        read_exposure(image, companions=Companions(**{role: str(other)}))


def test_variance_hdu_of_other_shape(tmp_path: Path) -> None:
    path = tmp_path / "trip.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(np.ones((8, 8)), name="SCI"),
            fits.ImageHDU(np.ones((9, 8)), name="SCI_VAR"),
        ]
    ).writeto(path)
    with pytest.raises(InputError, match=r"variance HDU has shape \(9, 8\)"):
        read_exposure(path)


def test_all_nan_image(tmp_path: Path) -> None:
    path = _write(tmp_path / "nan.fits", np.full((10, 10), np.nan, np.float32))
    with pytest.raises(InputError, match=r"nan\.fits has no finite pixel"):
        read_exposure(path)


def test_each_chips_sci_reads_the_err_and_dq_of_its_own_version(tmp_path: Path) -> None:
    # An HST two-chip file (SCI, ERR, DQ per chip; JWST's has one): each SCI's variance is
    # its ERR squared and its mask its DQ (every nonzero value BAD, or through a bit map),
    # and the planes are no images of their own.
    image, _ = _sky_image((40, 48))
    hdus: list = [fits.PrimaryHDU()]
    for chip in (1, 2):
        dq = np.zeros(image.shape, np.int16)
        dq[chip, :] = 256 if chip == 1 else 16  # full well (HST ACS), hot pixel
        hdus += [
            fits.ImageHDU(image.astype(np.float32), name="SCI", ver=chip),
            fits.ImageHDU(np.full(image.shape, 3.0 * chip, np.float32), name="ERR", ver=chip),
            fits.ImageHDU(dq, name="DQ", ver=chip),
        ]
    path = tmp_path / "j_flt.fits"
    fits.HDUList(hdus).writeto(path)
    with fits.open(path) as hdul:
        assert [(hdul[i].name, hdul[i].ver) for i in io.image_hdus(hdul)] == [
            ("SCI", 1),
            ("SCI", 2),
        ]
    for chip in (1, 2):
        exposure = read_exposure(f"{path}[SCI,{chip}]")
        assert not exposure.variance_estimated
        assert np.all(exposure.variance == (3.0 * chip) ** 2)
        bad = (exposure.mask & int(MaskPlane.BAD)) != 0
        assert np.array_equal(np.flatnonzero(bad.any(axis=1)), [chip])
    mapped = read_exposure(f"{path}[SCI,1]", companions=Companions(mask_bits=((8, "SAT"),)))
    assert np.all(mapped.mask[1] & int(MaskPlane.SAT)) and not np.any(mapped.mask[2])


def test_variance_and_weight_together(tmp_path: Path) -> None:
    image = _write(tmp_path / "i.fits", np.ones((4, 4), np.float32))
    with pytest.raises(InputError, match=r"both a variance \(.*i\.fits\) and a weight"):
        read_exposure(image, companions=Companions(variance=str(image), weight=str(image)))


# --------------------------------------------------------------------------- writing


def _exposure_with_everything() -> Exposure:
    pair = make_pair((64, 80), 20, seed=2)
    mask = np.zeros((64, 80), np.int32)
    for i, plane in enumerate(MaskPlane):
        mask[i, i] = int(plane)
    mask[30, 30] = int(MaskPlane.DETECTED | MaskPlane.DETECTED_NEGATIVE | MaskPlane.SAT)
    psf = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16.0
    return pair.science.replace(
        mask=mask,
        psf=psf,
        zero_point=27.25,
        wcs=tan_wcs((64, 80), rotation_deg=10.0, shift=(2.5, -1.5)),
    )


def _assert_same(a: Exposure, b: Exposure) -> None:
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.variance, b.variance)
    np.testing.assert_array_equal(a.mask, b.mask)
    x, y = np.array([0.0, 79.0, 13.5]), np.array([0.0, 63.0, 40.25])
    np.testing.assert_allclose(
        a.wcs.all_pix2world(x, y, 0), b.wcs.all_pix2world(x, y, 0), rtol=0, atol=1e-10
    )


def test_written_exposure_reads_back_equal(tmp_path: Path) -> None:
    exp = _exposure_with_everything()
    path = write_exposure(tmp_path / "out.fits", exp)
    back = read_exposure(path)
    # Pixels without data are NaN in the file (as LSST writes them: a tool weighting by
    # the variance without the mask read measured zeros there) and read back as the
    # reader makes any such pixel: 0, with the median variance.
    no_data = (exp.mask & NO_DATA) != 0
    assert no_data.sum() == 1
    with fits.open(path) as hdul:
        for name in ("IMAGE", "VARIANCE"):
            assert np.array_equal(np.isnan(hdul[name].data), no_data), name
    assert np.all(back.image[no_data] == 0)
    assert np.all(back.variance[no_data] == np.median(exp.variance[~no_data]))
    exp = exp.replace(
        image=np.where(no_data, 0, exp.image).astype(exp.image.dtype),
        variance=np.where(no_data, back.variance, exp.variance).astype(exp.variance.dtype),
    )
    _assert_same(exp, back)
    np.testing.assert_allclose(back.psf, exp.psf)
    assert back.zero_point == 27.25 and not back.variance_estimated
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "IMAGE", "MASK", "VARIANCE", "PSF"]
        assert hdul["MASK"].header["MP_DETECTED_NEGATIVE"] == 6
        assert hdul["VARIANCE"].header["CTYPE1"] == "RA---TAN"
    assert [p.name for p in tmp_path.iterdir()] == ["out.fits"]  # no temporary left


def test_distorted_wcs_survives_writing(tmp_path: Path) -> None:
    science, _ = demo_pair()  # TPV distortion
    exp = read_exposure(science)
    _assert_same(exp, read_exposure(write_exposure(tmp_path / "tpv.fits", exp)))


def test_tables_round_trip_by_suffix(tmp_path: Path) -> None:
    # the catalog's sign is int8, which astropy writes to FITS as a logical (T / F)
    sign = np.array([-1, 0, 1], dtype=np.int8)
    table = Table({"x": [1.5, 2.5, 3.5], "id": np.array([1, 2, 3], dtype=np.int64), "sign": sign})
    for name in ("cat.ecsv", "cat.fits"):
        back = Table.read(write_table(tmp_path / name, table))
        for column in ("x", "id", "sign"):
            np.testing.assert_array_equal(back[column], table[column])
    assert table["sign"].dtype == np.int8  # the table written is left as it was
    with pytest.raises(OutputError, match=r"\.ecsv or \.fits"):
        write_table(tmp_path / "cat.txt", table)


def test_failed_write_keeps_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = atomic_write_text(tmp_path / "meta.json", "old")

    def broken_replace(src: str, dst: str) -> None:
        # astropy's disk-full error says its first sentence twice
        raise OSError(28, "No space left: 28531 wanted. No space left: 28531 wanted. 0 written")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(
        OutputError, match=r"meta\.json \(No space left: 28531 wanted\. 0 written\)"
    ):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]


def test_output_folder_rules(tmp_path: Path) -> None:
    inputs = [tmp_path / "in" / "sci.fits", tmp_path / "in" / "tmpl.fits"]
    inputs[0].parent.mkdir()
    for path in inputs:
        path.write_bytes(b"x")
    out = check_output_dir(tmp_path / "out", inputs, overwrite=False)
    assert not out.exists(), "checking creates nothing"
    out.mkdir()
    (out / "old.txt").write_text("x")
    with pytest.raises(OutputError, match=r"out already exists and is not empty.*--overwrite"):
        check_output_dir(out, inputs, overwrite=False)
    assert check_output_dir(out, inputs, overwrite=True) == out
    for folder in (tmp_path / "in", tmp_path):
        with pytest.raises(OutputError, match=r"holds the input file .*sci\.fits"):
            check_output_dir(folder, [f"{inputs[0]}[1]", inputs[1]], overwrite=True)
    with pytest.raises(OutputError, match=r"is an input file, not a folder"):
        check_output_dir(inputs[0], inputs, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"], "no trial folder left"


def test_a_mount_point_is_refused_as_an_output_folder_before_anything_runs() -> None:
    # An empty USB drive's top folder as --out: the whole subtraction ran, then the
    # staged folder could not replace it ("Device or resource busy"; with --overwrite an
    # internal error). /proc is a mount point on every Linux machine.
    mount = Path("/proc")
    if not os.path.ismount(mount):
        pytest.skip("no /proc mount point on this system")
    with pytest.raises(OutputError, match=r"/proc is a mount point.*/proc/run1"):
        check_output_dir(mount, [], overwrite=True)


def test_the_working_folder_and_those_above_it_are_refused_as_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run replaces its output folder whole: `--out .` renamed the working folder aside,
    # put the outputs in its place, removed the user's folder, and then failed to find
    # its own outputs from the vanished working folder.
    here = tmp_path / "work"
    here.mkdir()
    monkeypatch.chdir(here)
    for out in (".", "", str(here), str(tmp_path)):
        with pytest.raises(OutputError, match=r"is the working folder or holds it"):
            check_output_dir(out, [], overwrite=True)
    assert check_output_dir("run1", [], overwrite=False) == here / "run1"
    # The working folder removed: a relative folder cannot be found (an internal error
    # before), an absolute one still can.
    here.rmdir()
    with pytest.raises(OutputError, match=r"run1 is relative to the working folder, which no"):
        check_output_dir("run1", [], overwrite=False)
    assert check_output_dir(tmp_path / "run2", [], overwrite=False) == tmp_path / "run2"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_output_folder_that_cannot_be_created_is_refused_before_the_run() -> None:
    # /proc takes no new folder, even from root, whom permission bits do not stop: the
    # access check passed there, and the run failed only when its outputs were written.
    with pytest.raises(OutputError, match=r"cannot create a folder in /proc \(.*\).*/proc/dv"):
        check_output_dir("/proc/dv", [], overwrite=False)


def test_staged_outputs_appear_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "er" / "out"
    with pytest.raises(RuntimeError), staged_output_dir(out, [], overwrite=False) as stage:
        atomic_write_text(stage / "a.txt", "a")
        raise RuntimeError("the run failed half-way")
    assert list(tmp_path.iterdir()) == [], "no partial output, no created parents, no staging"
    with staged_output_dir(out, [], overwrite=False) as stage:
        atomic_write_text(stage / "a.txt", "a")
        atomic_write_text(stage / "b.txt", "b")
        assert not out.exists()
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt"]
    # A second run into the same folder replaces its files and drops its own stale ones,
    # but never files it does not know.
    (out / "notes.txt").write_text("mine")
    with staged_output_dir(out, [], overwrite=True, replaced_names=["a.txt", "b.txt"]) as stage:
        atomic_write_text(stage / "a.txt", "A")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "notes.txt"]
    assert (out / "a.txt").read_text() == "A"
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


def test_a_folder_that_appears_during_a_run_is_not_replaced_without_overwrite(
    tmp_path: Path,
) -> None:
    # The folder was checked before the run, but another run made it while the outputs
    # were written: it was replaced, a file of its own carried into it.
    out = tmp_path / "out"
    with pytest.raises(OutputError, match=r"appeared .* holds a\.txt of another run") as raised:
        with staged_output_dir(out, [], overwrite=False, replaced_names=["a.txt"]) as stage:
            atomic_write_text(stage / "a.txt", "mine")
            out.mkdir()
            (out / "a.txt").write_text("theirs")
    assert [p.name for p in out.iterdir()] == ["a.txt"] and (out / "a.txt").read_text() == "theirs"
    kept = [p for p in tmp_path.iterdir() if p != out]
    assert len(kept) == 1 and str(kept[0]) in str(raised.value)
    assert (kept[0] / "a.txt").read_text() == "mine"
    # A folder made meanwhile holding no output (the window saves its verdicts into the
    # folder it saves to) takes the outputs, its own files carried over; an empty one too.
    for name, theirs in (("verdicts", ["verdicts.json"]), ("empty", [])):
        other = tmp_path / name
        with staged_output_dir(other, [], overwrite=False, replaced_names=["b.txt"]) as stage:
            atomic_write_text(stage / "b.txt", "b")
            other.mkdir()
            for file in theirs:
                (other / file).write_text("{}")
        assert sorted(p.name for p in other.iterdir()) == sorted(["b.txt", *theirs])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_staged_files_are_on_disk_before_the_folder_moves_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The flushes of a staging folder's files run in the background, but every one has
    # finished when the folder is renamed into place.
    synced: set[int] = set()
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.add(os.fstat(fd).st_ino)

    def rename(src: Path, dst: Path) -> None:
        files = {p.stat().st_ino for p in Path(src).iterdir()}
        assert files and files <= synced, "a file was not on disk before the move"
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    out = tmp_path / "out"
    with staged_output_dir(out, [], overwrite=False) as stage:
        write_exposure(stage / "x.fits", make_pair(shape=(64, 64), seed=1).science)
        atomic_write_text(stage / "a.txt", "a")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "x.fits"]


def test_a_failed_background_flush_is_a_write_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "out"
    with (
        pytest.raises(OutputError, match=r"cannot write .*a\.txt \(Input/output error\)") as raised,
        staged_output_dir(out, [], overwrite=False) as stage,
    ):
        atomic_write_text(stage / "a.txt", "a")
    assert list(tmp_path.iterdir()) == []
    # named as the folder asked for, not the hidden one the run wrote first
    assert f"cannot write {out / 'a.txt'} " in str(raised.value)


def test_inputs_and_their_siblings_are_never_overwritten(tmp_path: Path) -> None:
    image = tmp_path / "c4d_1_ooi_z.fits"
    weight = tmp_path / "c4d_1_oow_z.fits"
    for path in (image, weight):
        path.write_bytes(b"x")
    with pytest.raises(OutputError, match=r"it is the input file"):
        ensure_not_input(tmp_path / "." / image.name, [f"{image}[ccd2]"])
    with pytest.raises(OutputError, match=r"c4d_1_oow_z\.fits"):
        atomic_write_text(weight, "oops", protect=[image])
    assert weight.read_bytes() == b"x"
    ensure_not_input(tmp_path / "other.fits", [image])


def test_a_file_of_several_images_read_without_an_extension_says_which(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An alert's triplet (SCI, REF, DIFF) given without [REF] was read at its first
    # image, silently: given twice, it ran the science minus itself.
    rng = np.random.default_rng(3)
    images = {name: 100.0 + rng.normal(size=(40, 40)) for name in ("SCI", "REF", "DIFF")}
    path = tmp_path / "triplet.fits"
    fits.HDUList(
        [fits.PrimaryHDU()] + [fits.ImageHDU(v, name=k) for k, v in images.items()]
    ).writeto(path)
    with caplog.at_level("WARNING", logger="diffviewer"):
        first = read_exposure(path)
    np.testing.assert_array_equal(first.image, images["SCI"].astype(np.float32))
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: no extension named, so HDU 1 SCI (40x40), the first 2-D image, is read; the "
        f"file also holds 2 REF (40x40), 3 DIFF (40x40): name the one to read, e.g. {path}[REF]"
    ]
    caplog.clear()
    # Two CCDs of one name: [SCI] would read the first again; the second is named by index.
    chips = tmp_path / "chips.fits"
    fits.HDUList(
        [fits.PrimaryHDU(), *(fits.ImageHDU(images[k], name="SCI") for k in ("SCI", "REF"))]
    ).writeto(chips)
    with caplog.at_level("WARNING", logger="diffviewer"):
        read_exposure(chips)
    assert caplog.records[0].getMessage().endswith(f"e.g. {chips}[2]")
    caplog.clear()
    # Named, or one image with its planes (LSST's layout): nothing to say.
    lsst = tmp_path / "calexp.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(images["SCI"], name="IMAGE"),
            fits.ImageHDU(np.zeros((40, 40), np.int32), name="MASK"),
            fits.ImageHDU(np.ones((40, 40)), name="VARIANCE"),
        ]
    ).writeto(lsst)
    with caplog.at_level("WARNING", logger="diffviewer"):
        read_exposure(f"{path}[REF]")
        read_exposure(lsst)
    assert caplog.records == []


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_no_data_is_flagged_in_any_float_precision(dtype: type[np.floating]) -> None:
    # A float16 image compared with the blank-fill limit of 1e30 cast that limit to
    # float16: 'overflow encountered in cast', whatever the pixels (a fuzz campaign).
    image = np.ones((8, 8), dtype=dtype)
    image[1, 2], image[3, 3] = np.nan, np.inf
    no_data = np.zeros((8, 8), dtype=bool)
    no_data[1, 2] = no_data[3, 3] = True
    if float(np.finfo(dtype).max) > io.BLANK_MAGNITUDE:
        image[4, 4] = -1e31  # blank fill (float16 cannot hold it: it is inf there)
        no_data[4, 4] = True
    out, _, mask = io.fill_no_data(image, np.ones((8, 8), dtype), np.zeros((8, 8), "i4"))
    np.testing.assert_array_equal((mask & int(MaskPlane.NO_DATA)) != 0, no_data)
    assert np.all(out[no_data] == 0) and np.all(out[~no_data] == 1)


def test_a_zero_variance_is_no_data_unless_a_plane_explains_it() -> None:
    # A zero variance is an infinite weight, as a zero weight is none (NO_DATA): a patch of
    # zeros in a VARIANCE plane was taken as perfect pixels. A SAT pixel of variance 0 (a
    # pipeline's fill there) keeps its own plane.
    variance = np.full((8, 8), 4.0, dtype=np.float32)
    variance[2:4, 2:5] = 0.0
    variance[6, 6] = 0.0
    mask = np.zeros((8, 8), dtype="i4")
    mask[6, 6] = int(MaskPlane.SAT)
    filled, out = io.fill_bad_variance(variance, mask)
    no_data = (out & int(MaskPlane.NO_DATA)) != 0
    expected = np.zeros((8, 8), dtype=bool)
    expected[2:4, 2:5] = True
    np.testing.assert_array_equal(no_data, expected)
    assert np.all(filled[2:4, 2:5] == 4.0) and filled[6, 6] == 0.0
    assert out[6, 6] == int(MaskPlane.SAT)


@settings(max_examples=25, deadline=None)
@given(length=st.integers(1, 120))
def test_a_sources_path_of_any_length_is_written_whole_without_a_warning(
    tmp_path_factory: pytest.TempPathFactory, length: int
) -> None:
    # An input header ending in blank cards (IRAF's, the GOTO frames'): astropy formats a
    # card appended there at once, and a path of 21-68 characters and DVSOURCE's comment
    # overflowed it: the comment was truncated and a VerifyWarning printed to the user.
    source = ("/data/o'night/" + "x" * length)[:length]
    image = np.ones((4, 4), dtype=np.float32)
    header = fits.Header([("OBJECT", "field")])
    header.append(fits.Card(), bottom=True)
    exposure = Exposure(image, image, np.zeros((4, 4), "i4"), source=source, header=header)
    path = tmp_path_factory.mktemp("w") / "e.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_exposure(path, exposure)
        assert fits.getheader(path)["DVSOURCE"] == source


def test_the_image_suggested_beside_the_one_read_is_the_one_it_names(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # EXTNAMEs of digits: HDU 1 is named "2" and HDU 2 "1". Read without an extension,
    # HDU 1 is read and the other image suggested: the suggestion was file[1], which
    # reads HDU 1 again (digits are an index), not the other image.
    path = tmp_path / "digits.fits"
    first, second = np.full((30, 30), 1.0, np.float32), np.full((30, 30), 2.0, np.float32)
    fits.HDUList(
        [fits.PrimaryHDU(), fits.ImageHDU(first, name="2"), fits.ImageHDU(second, name="1")]
    ).writeto(path)
    with fits.open(path) as hdul, caplog.at_level("WARNING", logger="diffviewer.io"):
        io._say_which_image(hdul, 1, path)
    suggested = caplog.records[-1].getMessage().rsplit("e.g. ", 1)[1]
    spec_path, ext = parse_spec(suggested)
    assert spec_path == path
    with fits.open(path) as hdul:
        assert hdul[io._find_hdu(hdul, ext, path, "image")].data[0, 0] == 2.0


def test_a_gain_that_looks_wrong_against_a_pedestal_is_said_and_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A sky-subtracted frame with a +1000 pedestal and its right GAIN = 2: the level's
    # Poisson noise by that gain (22 counts) is over twice the measured (10): said. A review
    # of the first version, which replaced the gain by the sky's (20), found a star pixel's
    # variance 300 where it is 2,550: the card is used.
    rng = np.random.default_rng(3)
    image = 1000.0 + rng.normal(0.0, 10.0, (200, 200))
    image[100, 100] += 5000.0
    mask = np.zeros(image.shape, dtype=np.int16)
    with caplog.at_level("WARNING", logger="diffviewer.io"):
        variance = estimate_variance(image, mask, ("GAIN", 2.0), "pedestal.fits")
    assert any("GAIN = 2 makes the Poisson noise" in r.getMessage() for r in caplog.records)
    level, sigma = robust_sky(image, mask == 0)
    assert variance[100, 100] == np.float32((image[100, 100] - level) / 2.0 + sigma**2)


def test_a_variance_beyond_single_precision_at_the_brightest_pixel_is_refused() -> None:
    # Without a gain card, an unsubtracted sky gives its own gain: a review found the check
    # made only for a card's gain, and a star of 1e28 on a sky of 1e19 +- 1e17 overflowed
    # the float32 variance (a numpy warning, then NO_DATA) where it was refused before.
    rng = np.random.default_rng(4)
    image = (1000.0 + rng.normal(0.0, 10.0, (100, 100))) * 1e16
    image[50, 50] = 1e28
    with pytest.raises(
        InputError,
        match=r"big\.fits: the variance of its brightest pixel is .* "
        r"units too large",
    ):
        estimate_variance(image, np.zeros(image.shape, dtype=np.int16), None, "big.fits")
