"""A corpus of malformed inputs: each gets its own reason, on one line, with no harm done.

Every case is generated here (nothing is committed as files) and run through
``diffviewer run`` in process. For each: the exit code, a one-line message naming the
real cause (a regular expression per case), no traceback, the inputs unchanged byte for
byte, and no output folder (nor a partial one) left behind by a refused run.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from diffviewer import cli
from diffviewer.stats import FWHM_PER_SIGMA
from diffviewer.synthetic import render_gaussians

SHAPE = (64, 64)


def _stars(
    seed: int = 0, shape: tuple[int, int] = SHAPE, shift: float = 0.0, field: int = 99
) -> np.ndarray:
    """A small star field (the same stars for one ``field``) over a sky of 1000 counts."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    gen = np.random.default_rng(field)
    n = max(3, ny * nx // 200)
    x, y = gen.uniform(8, nx - 9, n) + shift, gen.uniform(8, ny - 9, n)
    sigma = np.full(n, 3.0 / FWHM_PER_SIGMA)
    model = render_gaussians(shape, x, y, gen.uniform(3e3, 5e4, n), sigma, 12)
    return 1000.0 + model + rng.normal(size=shape) * np.sqrt(1000.0 + model)


def _write(path: Path, *hdus: fits.hdu.base.ExtensionHDU | fits.PrimaryHDU) -> Path:
    fits.HDUList(list(hdus)).writeto(path)
    return path


def _image(path: Path, data: np.ndarray, header: fits.Header | None = None) -> Path:
    return _write(path, fits.PrimaryHDU(data, header=header))


def _lsst(
    path: Path,
    image: np.ndarray,
    variance: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    mask_header: fits.Header | None = None,
) -> Path:
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(image.astype(np.float32), name="IMAGE")]
    if mask is not None:
        hdus.append(fits.ImageHDU(mask, header=mask_header, name="MASK"))
    if variance is not None:
        hdus.append(fits.ImageHDU(variance.astype(np.float32), name="VARIANCE"))
    return _write(path, *hdus)


def _wcs_header(
    cd: list[list[float]], ctype: tuple[str, str] = ("RA---TAN", "DEC--TAN")
) -> fits.Header:
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = ctype
    header["CRPIX1"], header["CRPIX2"] = 32.0, 32.0
    header["CRVAL1"], header["CRVAL2"] = 150.0, 2.0
    for i in range(2):
        for j in range(2):
            header[f"CD{i + 1}_{j + 1}"] = cd[i][j]
    return header


def _good(folder: Path, name: str = "template.fits") -> Path:
    return _image(folder / name, _stars(1).astype(np.float32))


# Each maker writes the files of one case into a folder and returns the arguments of
# `diffviewer run` after the subcommand: science and template specs, then any options.
Maker = Callable[[Path], tuple[str, ...]]


def _pair(science: Path | str, template: Path | str | None = None) -> tuple[str, str]:
    return str(science), str(template) if template is not None else str(science)


def _case_missing(d: Path) -> tuple[str, ...]:
    return _pair(d / "nothere.fits", _good(d))


def _case_folder(d: Path) -> tuple[str, ...]:
    (d / "afolder.fits").mkdir()
    return _pair(d / "afolder.fits", _good(d))


def _case_empty_file(d: Path) -> tuple[str, ...]:
    (d / "empty.fits").write_bytes(b"")
    return _pair(d / "empty.fits", _good(d))


def _case_text_file(d: Path) -> tuple[str, ...]:
    (d / "text.fits").write_text("SIMPLE = this is not FITS\n" * 50)
    return _pair(d / "text.fits", _good(d))


def _case_truncated(d: Path) -> tuple[str, ...]:
    full = _image(d / "full.fits", _stars().astype(np.float32)).read_bytes()
    (d / "cut.fits").write_bytes(full[: len(full) // 2])
    return _pair(d / "cut.fits", _good(d))


def _case_table_only(d: Path) -> tuple[str, ...]:
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.ones(3))])
    return _pair(_write(d / "table.fits", fits.PrimaryHDU(), table), _good(d))


def _case_one_d(d: Path) -> tuple[str, ...]:
    return _pair(_image(d / "line.fits", np.ones(500, dtype=np.float32)), _good(d))


def _case_cube(d: Path) -> tuple[str, ...]:
    return _pair(_image(d / "cube.fits", np.ones((3, 40, 40), dtype=np.float32)), _good(d))


def _small(shape: tuple[int, int]) -> Maker:
    def make(d: Path) -> tuple[str, ...]:
        rng = np.random.default_rng(0)
        data = (100 + rng.normal(size=shape)).astype(np.float32)
        return _pair(_image(d / "small.fits", data), _image(d / "small_t.fits", data))

    return make


def _case_all_nan(d: Path) -> tuple[str, ...]:
    return _pair(_image(d / "nan.fits", np.full(SHAPE, np.nan, dtype=np.float32)), _good(d))


def _case_all_inf(d: Path) -> tuple[str, ...]:
    return _pair(_image(d / "inf.fits", np.full(SHAPE, np.inf, dtype=np.float32)), _good(d))


def _case_no_such_extension(d: Path) -> tuple[str, ...]:
    return _pair(f"{_good(d, 'sci.fits')}[FOO]", _good(d))


def _case_empty_brackets(d: Path) -> tuple[str, ...]:
    return _pair(f"{_good(d, 'sci.fits')}[]", _good(d))


def _variance(value: float) -> Maker:
    def make(d: Path) -> tuple[str, ...]:
        image = _stars()
        path = _lsst(d / "var.fits", image, variance=np.full(SHAPE, value))
        return _pair(path, _good(d))

    return make


def _case_variance_shape(d: Path) -> tuple[str, ...]:
    return _pair(_lsst(d / "v.fits", _stars(), variance=np.ones((30, 30))), _good(d))


def _case_mask_every_bit(d: Path) -> tuple[str, ...]:
    mask = np.full(SHAPE, -1, dtype=np.int32)
    return _pair(_lsst(d / "m.fits", _stars(), mask=mask), _good(d))


def _case_named_mask_all_bad(d: Path) -> tuple[str, ...]:
    # MP_* cards name the planes: the advice to give them does not apply
    mask = np.ones(SHAPE, dtype=np.int32)
    header = fits.Header({"MP_BAD": 0, "MP_SAT": 1})
    return _pair(_lsst(d / "m.fits", _stars(), mask=mask, mask_header=header), _good(d))


def _case_unknown_mask_plane(d: Path) -> tuple[str, ...]:
    # LSST's CROSSTALK has no plane here: its pixels count as good, and that is said.
    mask = np.zeros(SHAPE, dtype=np.int32)
    mask[10:14] = 1 << 9
    header = fits.Header([("MP_BAD", 0), fits.Card("HIERARCH MP_CROSSTALK", 9)])
    return _pair(_lsst(d / "m.fits", _stars(), mask=mask, mask_header=header), _good(d))


def _card(key: str, value: object) -> Maker:
    def make(d: Path) -> tuple[str, ...]:
        header = fits.Header({key: value})
        return _pair(_image(d / "s.fits", _stars().astype(np.float32), header), _good(d))

    return make


def _case_saturated_with_keyword(d: Path) -> tuple[str, ...]:
    header = fits.Header({"SATURATE": 65000.0})
    return _pair(_image(d / "sat.fits", np.full(SHAPE, 65535, dtype=np.uint16), header), _good(d))


def _case_constant(d: Path) -> tuple[str, ...]:
    return _pair(_image(d / "flat.fits", np.full(SHAPE, 65535, dtype=np.uint16)), _good(d))


def _case_clipped_at_zero(d: Path) -> tuple[str, ...]:
    data = np.clip(_stars() - 1010.0, 0, None).astype(np.uint16)
    return _pair(_image(d / "clip.fits", data), _good(d))


def _case_all_blank_fill(d: Path) -> tuple[str, ...]:
    return _pair(_image(d / "blank.fits", np.full(SHAPE, 3e38, dtype=np.float32)), _good(d))


def _case_some_blank_fill(d: Path) -> tuple[str, ...]:
    data = _stars().astype(np.float32)
    data[:, :6] = -3.4e38
    data[:4] = 1e30
    return _pair(_image(d / "pad.fits", data), _good(d))


def _case_tiny_units(d: Path) -> tuple[str, ...]:
    sci = _image(d / "s.fits", (_stars() * 1e-20).astype(np.float32))
    return _pair(sci, _image(d / "t.fits", (_stars(1) * 1e-20).astype(np.float32)))


def _case_huge_units(d: Path) -> tuple[str, ...]:
    # Below the blank-fill magnitude, but the variance overflows single precision: it was
    # "NO_DATA on every pixel" after a numpy overflow warning.
    sci = _image(d / "s.fits", (_stars() * 1e25).astype(np.float32))
    return _pair(sci, _image(d / "t.fits", (_stars(1) * 1e25).astype(np.float32)))


def _degenerate(cd: list[list[float]]) -> Maker:
    def make(d: Path) -> tuple[str, ...]:
        header = _wcs_header(cd)
        sci = _image(d / "s.fits", _stars().astype(np.float32), header)
        return _pair(sci, _image(d / "t.fits", _stars(1).astype(np.float32), header))

    return make


def _case_unreadable_wcs(d: Path) -> tuple[str, ...]:
    header = _wcs_header([[-1e-4, 0], [0, 1e-4]], ("RA---XYZ", "DEC--XYZ"))
    sci = _image(d / "s.fits", _stars().astype(np.float32), header)
    return _pair(sci, _image(d / "t.fits", _stars(1).astype(np.float32), header))


def _nan_card(key: str) -> Maker:
    # FITS has no NaN: astropy cannot parse the card (a NaN CD1_1 was a VerifyError that
    # ended the run; a NaN CRVAL1 or PC1_1 was read as 0 or 1 without a word).
    def make(d: Path) -> tuple[str, ...]:
        header = _wcs_header([[-1e-4, 0], [0, 1e-4]])
        if key.startswith("PC"):
            del header["CD1_1"], header["CD1_2"], header["CD2_1"], header["CD2_2"]
            header.update({"CDELT1": -1e-4, "CDELT2": 1e-4, "PC1_1": 1.0, "PC2_2": 1.0})
        sci = _image(d / "s.fits", _stars().astype(np.float32), header)
        raw = bytearray(sci.read_bytes())
        at = raw.find(key.ljust(8).encode() + b"=")
        raw[at : at + 80] = (key.ljust(8) + "=                  NaN").ljust(80).encode()
        sci.write_bytes(bytes(raw))
        return _pair(sci, _good(d))

    return make


def _case_no_crval(d: Path) -> tuple[str, ...]:
    # wcslib reads the missing cards as 0: the science was placed at RA 0, Dec 0 and the
    # run refused for a coverage of 0 %.
    header = _wcs_header([[-1e-4, 0], [0, 1e-4]])
    del header["CRVAL1"], header["CRVAL2"]
    sci = _image(d / "s.fits", _stars().astype(np.float32), header)
    tmpl = _image(d / "t.fits", _stars(1).astype(np.float32), _wcs_header([[-1e-4, 0], [0, 1e-4]]))
    return _pair(sci, tmpl)


def _case_sip_without_suffix(d: Path) -> tuple[str, ...]:
    # What Cutout2D's WCS header leaves: astropy printed 100 lines of INFO about it.
    header = _wcs_header([[-1e-4, 0], [0, 1e-4]])
    header.update({"A_ORDER": 2, "A_2_0": 1e-7, "B_ORDER": 2, "B_0_2": 1e-7})
    sci = _image(d / "s.fits", _stars().astype(np.float32), header)
    return _pair(sci, _image(d / "t.fits", _stars(1).astype(np.float32), header))


def _case_no_overlap(d: Path) -> tuple[str, ...]:
    sci = _image(d / "s.fits", _stars().astype(np.float32), _wcs_header([[-1e-4, 0], [0, 1e-4]]))
    far = _wcs_header([[-1e-4, 0], [0, 1e-4]])
    far["CRVAL1"] = 151.0
    other_field = _stars(1, field=7).astype(np.float32)  # stars do not override the WCSs
    return _pair(sci, _image(d / "t.fits", other_field, far))


def _case_unregistered_no_stars(d: Path) -> tuple[str, ...]:
    rng = np.random.default_rng(3)
    sci = _image(d / "s.fits", (100 + rng.normal(size=SHAPE)).astype(np.float32))
    return _pair(sci, _image(d / "t.fits", (100 + rng.normal(size=(60, 70))).astype(np.float32)))


def _case_index_out_of_range(d: Path) -> tuple[str, ...]:
    return _pair(f"{_good(d, 'sci.fits')}[7]", _good(d))


def _case_extension_is_a_table(d: Path) -> tuple[str, ...]:
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="a", format="E", array=np.ones(3))], name="CAT"
    )
    image = fits.ImageHDU(_stars().astype(np.float32), name="SCI")
    return _pair(f"{_write(d / 'mixed.fits', fits.PrimaryHDU(), image, table)}[CAT]", _good(d))


def _case_zero_weight(d: Path) -> tuple[str, ...]:
    image = _image(d / "c4d_x_ooi_z.fits", _stars().astype(np.float32))
    _image(d / "c4d_x_oow_z.fits", np.zeros(SHAPE, dtype=np.float32))
    return _pair(image, _good(d))


def _case_mask_shape(d: Path) -> tuple[str, ...]:
    return _pair(_lsst(d / "m.fits", _stars(), mask=np.zeros((10, 10), np.int32)), _good(d))


def _case_header_only(d: Path) -> tuple[str, ...]:
    return _pair(_write(d / "hdr.fits", fits.PrimaryHDU()), _good(d))


def _case_empty_psf(d: Path) -> tuple[str, ...]:
    path = _write(
        d / "psf.fits",
        fits.PrimaryHDU(),
        fits.ImageHDU(_stars().astype(np.float32), name="SCI"),
        fits.ImageHDU(np.zeros((15, 15), np.float32), name="SCI_PSF"),
    )
    return _pair(f"{path}[SCI]", _good(d))


def _case_template_missing(d: Path) -> tuple[str, ...]:
    return _pair(_good(d, "sci.fits"), d / "gone.fits")


def _case_template_piece_missing(d: Path) -> tuple[str, ...]:
    return (*_pair(_good(d, "sci.fits"), _good(d)), str(d / "gone.fits"))


def _case_out_is_a_file(d: Path) -> tuple[str, ...]:
    target = d.parent / "afile"
    target.write_text("not a folder")
    return (*_pair(_good(d, "sci.fits"), _good(d)), "--out", str(target))


def _case_out_holds_the_inputs(d: Path) -> tuple[str, ...]:
    return (*_pair(_good(d, "sci.fits"), _good(d)), "--out", str(d))


def _case_out_not_empty(d: Path) -> tuple[str, ...]:
    full = d.parent / "full"
    full.mkdir()
    (full / "kept.txt").write_text("earlier results")
    return (*_pair(_good(d, "sci.fits"), _good(d)), "--out", str(full))


def _case_bad_register_choice(d: Path) -> tuple[str, ...]:
    return (*_pair(_good(d, "sci.fits"), _good(d)), "--set", "warp.register=magic")


def _case_wcs_asked_without_wcs(d: Path) -> tuple[str, ...]:
    return (*_pair(_good(d, "sci.fits"), _good(d)), "--set", "warp.register=wcs")


def _case_different_shapes_said_aligned(d: Path) -> tuple[str, ...]:
    other = _image(d / "t.fits", _stars(1, shape=(60, 64)).astype(np.float32))
    return (*_pair(_good(d, "sci.fits"), other), "--set", "warp.register=none")


def _star_list(content: str | None, name: str = "stars.csv") -> Maker:
    """A good pair whose config names a star list holding ``content`` (None: a folder)."""

    def make(d: Path) -> tuple[str, ...]:
        stars = d / name
        if content is None:
            stars.mkdir()
        else:
            stars.write_text(content)
        pair = _pair(_good(d, "sci.fits"), _good(d))
        return (*pair, "--set", f'candidates.source_list="{stars}"')

    return make


def _case_star_list_missing(d: Path) -> tuple[str, ...]:
    pair = _pair(_good(d, "sci.fits"), _good(d))
    return (*pair, "--set", f'candidates.source_list="{d / "gone.csv"}"')


def _case_star_list_binary(d: Path) -> tuple[str, ...]:
    (d / "stars.dat").write_bytes(bytes(range(256)) * 4)
    pair = _pair(_good(d, "sci.fits"), _good(d))
    return (*pair, "--set", f'candidates.source_list="{d / "stars.dat"}"')


#: (case, maker, exit code, what the message must say: its real cause)
CORPUS: list[tuple[str, Maker, int, str]] = [
    ("missing file", _case_missing, 2, r"does not exist"),
    ("folder", _case_folder, 2, r"is a folder, not a file"),
    ("empty file", _case_empty_file, 2, r"not a readable FITS"),
    ("text file", _case_text_file, 2, r"not a readable FITS"),
    ("truncated", _case_truncated, 2, r"truncated"),
    ("table only", _case_table_only, 2, r"no image data"),
    ("1-D array", _case_one_d, 2, r"1-D array"),
    ("3-D cube", _case_cube, 2, r"3-D array"),
    ("1 x 400", _small((1, 400)), 2, r"1 px high.*at least 22 x 22 px|at least 22 x 22 px"),
    ("2 x 5000", _small((2, 5000)), 2, r"at least 22 x 22 px"),
    ("5 x 5", _small((5, 5)), 2, r"at least 22 x 22 px"),
    ("all NaN", _case_all_nan, 2, r"no finite pixel"),
    ("all Inf", _case_all_inf, 2, r"no finite pixel"),
    ("no such extension", _case_no_such_extension, 2, r"no extension \[FOO\]"),
    ("empty brackets", _case_empty_brackets, 2, r"empty extension"),
    ("zero variance", _variance(0.0), 2, r"variance plane .*no positive value"),
    ("negative variance", _variance(-4.0), 2, r"variance plane .*no positive value"),
    ("NaN variance", _variance(np.nan), 2, r"variance plane .*no positive value"),
    ("variance shape", _case_variance_shape, 2, r"variance HDU has shape"),
    ("mask every bit", _case_mask_every_bit, 2, r"every pixel is masked.*no MP_"),
    ("named mask all BAD", _case_named_mask_all_bad, 2, r"masked \(BAD on all of them\); check"),
    ("saturated", _case_saturated_with_keyword, 2, r"every pixel is masked.*SAT"),
    ("constant", _case_constant, 2, r"100% of .* the one value 65535"),
    ("clipped at 0", _case_clipped_at_zero, 2, r"the one value 0\b.*clipped"),
    ("all blank fill", _case_all_blank_fill, 2, r"blank fill"),
    ("tiny units", _case_tiny_units, 2, r"units too small"),
    ("huge units", _case_huge_units, 2, r"s\.fits: its sky variance is .* units too large"),
    ("unknown mask plane", _case_unknown_mask_plane, 0, r"not used.*CROSSTALK \(bit 9, 256 px\)"),
    ("GAIN not a number", _card("GAIN", "fast"), 0, r"GAIN = 'fast' is not a positive number"),
    ("GAIN zero", _card("GAIN", 0.0), 0, r"GAIN = 0\.0 is not a positive number"),
    ("GAIN not the image's", _card("GAIN", 1e-30), 0, r"GAIN = 1e-30 makes the Poisson noise"),
    ("GAIN overflows", _card("GAIN", 1e-36), 2, r"by GAIN = 1e-36 .* not this image's electrons"),
    ("SATURATE not a number", _card("SATURATE", "high"), 0, r"SATURATE = 'high' is not a number"),
    ("zero CD", _degenerate([[0, 0], [0, 0]]), 0, r"degenerate"),
    ("singular CD", _degenerate([[1e-4, 1e-4], [2e-4, 2e-4]]), 0, r"degenerate"),
    ("unreadable WCS", _case_unreadable_wcs, 0, r"WCS cannot be read"),
    ("NaN CD card", _nan_card("CD1_1"), 0, r"WCS cannot be read \(CD1_1 is not a finite"),
    ("NaN CRVAL card", _nan_card("CRVAL1"), 0, r"WCS cannot be read \(CRVAL1 is not a finite"),
    ("NaN PC card", _nan_card("PC1_1"), 0, r"WCS cannot be read \(PC1_1 is not a finite"),
    ("SIP, no -SIP", _case_sip_without_suffix, 0, r"s\.fits: the WCS has SIP .* lacks the -SIP"),
    ("no CRVAL", _case_no_crval, 0, r"s\.fits: the WCS has no CRVAL1 and CRVAL2"),
    ("no overlap", _case_no_overlap, 3, r"covers 0\.0%"),
    ("unregistered, no stars", _case_unregistered_no_stars, 2, r"0 stars were found"),
    ("some blank fill", _case_some_blank_fill, 0, r"blank fill"),
    ("extension index out of range", _case_index_out_of_range, 2, r"no extension \[7\]"),
    ("extension is a table", _case_extension_is_a_table, 2, r"is a table, not an image"),
    ("zero weight everywhere", _case_zero_weight, 2, r"no usable pixel \(zero weight"),
    ("mask shape", _case_mask_shape, 2, r"mask HDU has shape"),
    ("header only", _case_header_only, 2, r"holds no image data"),
    ("empty PSF", _case_empty_psf, 2, r"PSF .* does not sum to a positive value"),
    ("template missing", _case_template_missing, 2, r"template file .* does not exist"),
    ("template piece missing", _case_template_piece_missing, 2, r"gone\.fits does not exist"),
    ("output is a file", _case_out_is_a_file, 2, r"is a file, not a folder"),
    ("output holds the inputs", _case_out_holds_the_inputs, 2, r"holds the input file"),
    ("output not empty", _case_out_not_empty, 2, r"not empty; pass --overwrite"),
    ("register choice", _case_bad_register_choice, 2, r"warp\.register.*magic"),
    ("wcs asked, none there", _case_wcs_asked_without_wcs, 2, r"register = wcs but neither"),
    ("shapes differ, said aligned", _case_different_shapes_said_aligned, 2, r"pre-aligned"),
    # A star list that gives no star ran a plain difference, exit 0, its warnings blaming
    # an "unmeasured PSF" and never naming the list (audit); a folder or a file that is
    # not a table got astropy's "please provide a 'format' argument".
    (
        "star list, header only",
        _star_list("x,y\n"),
        2,
        r"^error: candidates\.source_list \S*stars\.csv: 0 stars \(columns x, y, no rows\)",
    ),
    (
        "star list, off the image or NaN",
        _star_list("x,y\n5000,5000\n-3,nan\n"),
        2,
        r"source_list \S*stars\.csv: 0 of 2 stars on the image \(1 outside the science "
        r"image \S*sci\.fits of 64 x 64 px, 1 with no finite position\).*the pair was not run",
    ),
    (
        "star list, all NaN",
        _star_list("x,y\nnan,nan\n,\n"),
        2,
        r"source_list \S*stars\.csv: 0 of 2 stars have a finite position",
    ),
    ("star list, a folder", _star_list(None), 2, r"source_list \S*stars\.csv is a folder, not a"),
    ("star list, missing", _case_star_list_missing, 2, r"source_list \S*gone\.csv does not exist"),
    (
        "star list, not a table",
        _case_star_list_binary,
        2,
        r"source_list \S*stars\.dat is neither a FITS table nor text",
    ),
    ("star list, no x,y", _star_list("a,b\n1,2\n"), 2, r"has columns \['a', 'b'\]; it needs x,y"),
]


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    ("name", "make", "code", "cause"), CORPUS, ids=[case[0] for case in CORPUS]
)
def test_each_malformed_input_gets_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name, make, code, cause
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    args = list(make(inputs))
    before = _digest(inputs)
    out = tmp_path / "out"
    if "--out" not in args:
        args += ["--out", str(out)]
    exit_code = cli.main(["run", *args, "--quiet"])
    err = capsys.readouterr().err
    assert exit_code == code, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    said = [line for line in lines if line.startswith(("error:", "warning:"))]
    assert len(said) == len(lines), f"a line that is neither an error nor a warning: {err!r}"
    assert any(re.search(cause, line) for line in said), err
    if code != 0:
        assert len(lines) == 1, err
        assert not out.exists(), "a refused run left an output folder"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "partial output left"
    assert _digest(inputs) == before, "an input was written over"


@pytest.mark.parametrize(
    ("content", "cause"),
    [(None, r"gone\.csv does not exist"), ("x,y\n", r"stars\.csv: 0 stars")],
    ids=["missing", "header only"],
)
def test_the_star_list_is_checked_before_the_images_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, cause: str
) -> None:
    """A star list that cannot serve is named before any image is read: with an unreadable
    science image beside it, the list's problem is the one said (a missing list was found
    only after both images were read, as "cannot read it as a table ([Errno 2]...)")."""
    science = tmp_path / "text.fits"
    science.write_text("SIMPLE = this is not FITS\n" * 50)
    stars = tmp_path / ("gone.csv" if content is None else "stars.csv")
    if content is not None:
        stars.write_text(content)
    args = ["run", str(science), str(_good(tmp_path)), "--out", str(tmp_path / "out")]
    code = cli.main([*args, "--quiet", "--set", f'candidates.source_list="{stars}"'])
    err = capsys.readouterr().err
    assert code == 2
    assert re.search(rf"^error: candidates\.source_list \S*{cause}", err), err
    assert "not a readable FITS" not in err
    assert not (tmp_path / "out").exists()
