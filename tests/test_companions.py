"""An input's mask, variance or weight in other files, and a survey mask's bits read
through a map (``diffviewer run --science-mask ... --mask-bits ...``): read, recorded,
and read again with the saved run."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import example, given, settings
from hypothesis import strategies as st

from diffviewer import cli
from diffviewer.batch import BatchOptions
from diffviewer.batch.runner import plan_batch
from diffviewer.companions import (
    MASK_BIT_PLANES,
    Companions,
    input_companions,
    parse_mask_bits,
    read_pairs_with_companions,
)
from diffviewer.config import SubtractionConfig
from diffviewer.errors import InputError
from diffviewer.exposure import MaskPlane
from diffviewer.fits_header import mask_from_planes
from diffviewer.io import read_exposure
from diffviewer.paths import read_pairs_csv
from diffviewer.results import incomplete_reason, read_saved_run, recorded_run
from diffviewer.synthetic import make_pair, with_defects

#: A ZTF-like bit mask's bits: cosmic ray, dead or hot pixel, and a bit set on the pixels
#: of detected sources (ZTF's ``mskimg`` marks them among its defects), which masks nothing.
CR_BIT, BAD_BIT, SOURCE_BIT = 7, 9, 1

#: Cosmic rays on 0.3 % of the science's pixels and two hot columns
#: (tests/engine/test_pixel_defects.py's spoilt science).
DEFECTS = 0.003, (100, 301)


@pytest.fixture(scope="module")
def spoilt_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 512^2 pair whose science has cosmic rays and hot columns, written as a plain
    science image with a separate survey-style bit mask (its bits :data:`CR_BIT`,
    :data:`BAD_BIT` and, on every pixel 5 sigma above the sky, :data:`SOURCE_BIT`), and the
    same pixels again with the planes in LSST's layout (a MASK HDU with MP_* cards)."""
    folder = tmp_path_factory.mktemp("spoilt")
    pair = make_pair((512, 512), 400, seed=3, sci_fwhm=4.0, tmpl_fwhm=2.5, photometric_scale=1.3)
    science, _ = with_defects(pair.science, DEFECTS[0], DEFECTS[1], seed=3)
    planes = science.mask.astype(np.int64)
    sky_sigma = float(np.sqrt(np.median(science.variance)))
    sources = science.image > np.median(science.image) + 5 * sky_sigma
    bits = (
        np.where(planes & int(MaskPlane.CR), 1 << CR_BIT, 0)
        | np.where(planes & int(MaskPlane.BAD), 1 << BAD_BIT, 0)
        | np.where(sources, 1 << SOURCE_BIT, 0)
    ).astype(np.int16)
    files = {
        "science": folder / "sci.fits",
        "mask": folder / "sci_msk.fits",
        "lsst": folder / "sci_lsst.fits",
        "template": folder / "tmpl.fits",
    }
    fits.PrimaryHDU(science.image).writeto(files["science"])
    fits.PrimaryHDU(bits).writeto(files["mask"])
    mask_header = fits.Header([("MP_CR", 3), ("MP_BAD", 0)])
    fits.HDUList(
        [
            fits.PrimaryHDU(science.image),
            fits.ImageHDU(planes.astype(np.int32), mask_header, name="MASK"),
        ]
    ).writeto(files["lsst"])
    fits.PrimaryHDU(pair.template.image).writeto(files["template"])
    # HST's and JWST's layout: the bit mask as DQ and the 1-sigma error as ERR beside SCI
    # (a second chip first, whose planes must not be read), and the same planes again in
    # LSST's layout with the variance the error gives.
    error = np.sqrt(science.variance).astype(np.float32)
    files["hst"] = folder / "sci_flt.fits"
    chip = [
        fits.ImageHDU(science.image, name="SCI", ver=2),
        fits.ImageHDU(np.ones_like(error), name="ERR", ver=2),
        fits.ImageHDU(np.zeros_like(bits), name="DQ", ver=2),
    ]
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            *chip,
            fits.ImageHDU(science.image, name="SCI", ver=1),
            fits.ImageHDU(error, name="ERR", ver=1),
            fits.ImageHDU(bits, name="DQ", ver=1),
        ]
    ).writeto(files["hst"])
    files["lsst_var"] = folder / "sci_lsst_var.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(science.image),
            fits.ImageHDU(planes.astype(np.int32), mask_header, name="MASK"),
            fits.ImageHDU(np.square(error.astype(np.float64)).astype(np.float32), name="VARIANCE"),
        ]
    ).writeto(files["lsst_var"])
    return files


def _run(files: dict[str, Path], out: Path, science: str, *options: str) -> dict:
    """``diffviewer run`` on the pair with ``science`` (a key of ``files``; "hst" reads its
    first chip's SCI); its metadata."""
    spec = f"{files[science]}[SCI,1]" if science == "hst" else str(files[science])
    argv = ["run", spec, str(files["template"]), "--out", str(out), "--quiet"]
    assert cli.main([*argv, *options]) == cli.EXIT_OK
    return json.loads((out / "metadata.json").read_text())


@pytest.fixture(scope="module")
def runs(spoilt_pair: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The pair run with its separate mask through the bit map, with the same planes in
    LSST's layout, and with the separate mask read as HOTPANTS reads one (every nonzero
    value masked): each run's folder and metadata."""
    base = tmp_path_factory.mktemp("runs")
    mapped = ["--science-mask", str(spoilt_pair["mask"])]
    mapped += ["--mask-bits", f"CR={CR_BIT}", "--mask-bits", f"BAD={BAD_BIT}"]
    options = {
        "mapped": ("science", *mapped),
        "lsst": ("lsst",),
        "nonzero": ("science", "--science-mask", str(spoilt_pair["mask"])),
        "hst": ("hst", *mapped[2:]),
        "lsst_var": ("lsst_var",),
    }
    return {
        name: (base / name, _run(spoilt_pair, base / name, *argv)) for name, argv in options.items()
    }


def test_a_survey_mask_read_through_its_bit_map_subtracts_as_lsst_planes_do(runs) -> None:
    # The same pixels, the same planes: the same difference, bit for bit, and the same
    # kernel stamps; the source bit masks nothing.
    mapped, lsst = runs["mapped"][0], runs["lsst"][0]
    with fits.open(mapped / "difference.fits") as a, fits.open(lsst / "difference.fits") as b:
        assert np.array_equal(a["IMAGE"].data, b["IMAGE"].data, equal_nan=True)
        assert np.array_equal(a["MASK"].data, b["MASK"].data)
    stamps = runs["mapped"][1]["kernel"]["candidates"]["good"]
    assert stamps == runs["lsst"][1]["kernel"]["candidates"]["good"] >= 20


def test_a_sci_hdus_err_and_dq_are_its_variance_and_mask(runs) -> None:
    # HST's and JWST's layout, the DQ bits through the map: as LSST's planes, bit for bit,
    # and not the other chip's (whose error of 1 everywhere would set another noise).
    hst, lsst = runs["hst"][0], runs["lsst_var"][0]
    with fits.open(hst / "difference.fits") as a, fits.open(lsst / "difference.fits") as b:
        assert np.array_equal(a["IMAGE"].data, b["IMAGE"].data, equal_nan=True)
        assert np.array_equal(a["VARIANCE"].data, b["VARIANCE"].data, equal_nan=True)
        assert np.array_equal(a["MASK"].data, b["MASK"].data)
    assert runs["hst"][1]["inputs"]["science"]["variance_estimated"] is False


def test_a_survey_mask_read_as_every_nonzero_value_masks_the_stars(runs) -> None:
    # Without the map every star's core carries the source bit and is BAD: the kernel
    # loses its stars, which is why a survey mask needs its bits named.
    mapped = runs["mapped"][1]["kernel"]["candidates"]["good"]
    assert runs["nonzero"][1]["kernel"]["candidates"]["good"] < mapped / 2


def test_the_run_records_its_companions_and_reads_them_again(
    runs, spoilt_pair: dict[str, Path]
) -> None:
    folder, meta = runs["mapped"]
    recorded = meta["inputs"]["science"]["companions"]
    assert recorded == {
        "mask": str(spoilt_pair["mask"].resolve()),
        "mask_bits": {"BAD": [BAD_BIT], "CR": [CR_BIT]},
    }
    assert str(spoilt_pair["mask"].resolve()) in meta["inputs"]["files"]
    # The saved run shows the science with its planes, as the run read it.
    saved = read_saved_run(folder)
    with fits.open(spoilt_pair["lsst"]) as hdul:
        planes = hdul["MASK"].data
    assert np.array_equal((saved.science.mask & int(MaskPlane.CR)) != 0, (planes & 8) != 0)
    assert np.array_equal((saved.science.mask & int(MaskPlane.BAD)) != 0, (planes & 1) != 0)
    # The bit map is the command's, for every input's mask: the template's too.
    bits = ((CR_BIT, "CR"), (BAD_BIT, "BAD"))
    again = recorded_run(folder)
    assert again.companions[0] == Companions(
        mask=str(spoilt_pair["mask"].resolve()), mask_bits=bits
    )
    assert again.companions[1] == (Companions(mask_bits=bits),)


def test_a_companion_gone_or_replaced_is_named_before_the_pair_runs_again(
    runs, spoilt_pair: dict[str, Path], tmp_path: Path
) -> None:
    folder = runs["mapped"][0]
    mask = spoilt_pair["mask"]
    moved = tmp_path / mask.name
    os.replace(mask, moved)
    try:
        with pytest.raises(InputError, match=r"science image's mask .*sci_msk\.fits"):
            recorded_run(folder)
    finally:
        os.replace(moved, mask)
    stat = mask.stat()
    os.utime(mask, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        assert recorded_run(folder).changed == str(mask.resolve())
    finally:
        os.utime(mask, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_unmapped_bits_are_good_pixels_and_said(spoilt_pair: dict[str, Path], caplog) -> None:
    bits = ((CR_BIT, "CR"), (BAD_BIT, "BAD"))
    with caplog.at_level(logging.WARNING, logger="diffviewer"):
        exposure = read_exposure(
            str(spoilt_pair["science"]),
            companions=Companions(mask=str(spoilt_pair["mask"]), mask_bits=bits),
        )
    with fits.open(spoilt_pair["mask"]) as hdul:
        raw = hdul[0].data.astype(np.int64)
    assert f"unmapped (bit {SOURCE_BIT}, {np.count_nonzero(raw & 2)} px)" in caplog.text
    assert not np.any(exposure.mask[(raw == 1 << SOURCE_BIT)] & int(MaskPlane.BAD))


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--template-mask", "a.fits", "--template-mask", "b.fits"], "names 2 file(s)"),
        (["--mask-bits", "SATT=8"], "'SATT', which a mask cannot set"),
        (["--mask-bits", "SAT=eight"], "is not PLANE=BIT"),
        (
            ["--mask-bits", "SAT=8", "--mask-bits", "BAD=8"],
            "mask bit 8 is given 2 times (SAT, BAD)",
        ),
        (["--mask-bits", "BAD=63"], "outside 0-62"),
        (["--science-variance", "v.fits", "--science-weight", "w.fits"], "give one of them"),
        (["--science-mask", "nowhere_msk.fits"], "science mask file nowhere_msk.fits does not"),
    ],
)
def test_bad_companion_options_are_one_line_errors(
    spoilt_pair: dict[str, Path], tmp_path: Path, capsys, argv, needle
) -> None:
    sci, tmpl = str(spoilt_pair["science"]), str(spoilt_pair["template"])
    code = cli.main(["run", sci, tmpl, "--out", str(tmp_path / "out"), "--quiet", *argv])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv", [["--science-mask", "m.fits"], ["--template-mask", "m.fits"], ["--mask-bits", "BAD=1"]]
)
def test_the_guis_companions_need_a_pair(capsys, argv: list[str]) -> None:
    code = cli.main(argv)
    assert code == cli.EXIT_ERROR
    assert "belong to a pair: give SCIENCE and TEMPLATE" in capsys.readouterr().err


def test_a_mask_of_another_shape_is_named(spoilt_pair: dict[str, Path], tmp_path: Path) -> None:
    small = tmp_path / "small_msk.fits"
    fits.PrimaryHDU(np.zeros((100, 512), np.int16)).writeto(small)
    with pytest.raises(InputError, match=r"mask .*small_msk\.fits has shape \(100, 512\)"):
        read_exposure(str(spoilt_pair["science"]), companions=Companions(mask=str(small)))


def test_each_template_piece_takes_its_own_companions() -> None:
    science, pieces = input_companions(
        {"mask": "s_msk.fits", "variance": None, "weight": None},
        {"mask": ["a_msk.fits", "b_msk.fits"], "variance": None, "weight": ["a_w.fits", "b_w"]},
        ["SAT=8"],
        2,
    )
    assert science == Companions(mask="s_msk.fits", mask_bits=((8, "SAT"),))
    assert pieces == (
        Companions(mask="a_msk.fits", weight="a_w.fits", mask_bits=((8, "SAT"),)),
        Companions(mask="b_msk.fits", weight="b_w", mask_bits=((8, "SAT"),)),
    )


def _pairs_list(files: dict[str, Path], folder: Path, bits: str) -> Path:
    """A pairs list beside ``folder`` naming the spoilt pair, its mask and ``bits``, by
    paths relative to the list's folder."""
    rel = {k: os.path.relpath(v, folder) for k, v in files.items()}
    path = folder / "pairs.csv"
    path.write_text(
        "science,template,name,science_mask,mask_bits\n"
        f"{rel['science']},{rel['template']},a,{rel['mask']},{bits}\n"
    )
    return path


@pytest.mark.slow
def test_a_batch_reads_each_pairs_companions_from_its_list(
    runs, spoilt_pair: dict[str, Path], tmp_path: Path
) -> None:
    pairs = _pairs_list(spoilt_pair, tmp_path, f"CR={CR_BIT} BAD={BAD_BIT}")
    out = tmp_path / "night"
    code = cli.main(["batch", str(pairs), "--out", str(out), "--workers", "1", "--quiet"])
    assert code == cli.EXIT_OK
    # The worker read the mask through the row's bit map: the run's difference, bit for bit.
    with (
        fits.open(out / "a" / "difference.fits") as a,
        fits.open(runs["mapped"][0] / "difference.fits") as b,
    ):
        assert np.array_equal(a["IMAGE"].data, b["IMAGE"].data, equal_nan=True)
    meta = json.loads((out / "a" / "metadata.json").read_text())
    assert (
        meta["inputs"]["science"]["companions"]
        == runs["mapped"][1]["inputs"]["science"]["companions"]
    )
    # The same list again finds the pair complete; another bit map (the batch's
    # --mask-bits where the row gives none) is another run.
    same = BatchOptions(
        out=out, config=SubtractionConfig(), companions=read_pairs_with_companions(pairs)[1]
    )
    assert plan_batch(read_pairs_csv(pairs), same).kept["a"]["status"] == "skipped"
    _pairs_list(spoilt_pair, tmp_path, "")
    given = read_pairs_with_companions(pairs, ["BAD=0"])[1]["a"]
    assert given[0].mask_bits == ((0, "BAD"),)
    options = BatchOptions(out=out, config=SubtractionConfig(), companions={"a": given})
    reason = incomplete_reason(out / "a", *read_pairs_csv(pairs)[0][:2], "", None, given)
    assert reason == "made with other mask, variance or weight files, or another mask bit map"
    assert [job.name for job in plan_batch(read_pairs_csv(pairs), options).jobs] == []
    assert plan_batch(read_pairs_csv(pairs), options).kept["a"]["status"] == "refused"


def test_a_pairs_lists_companion_columns_are_checked_and_resolved(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text(
        "science,template,name,template_mask,template_weight,science_variance\n"
        "s.fits,t1.fits;t2.fits,a,m1.fits;m2.fits,,/abs/v.fits\n"
        "s.fits,t.fits,b,,,\n"
    )
    given = read_pairs_with_companions(path, ["SAT=8"])[1]
    bits = ((8, "SAT"),)
    assert given["a"] == (
        Companions(variance="/abs/v.fits", mask_bits=bits),
        (
            Companions(mask=str(tmp_path / "m1.fits"), mask_bits=bits),
            Companions(mask=str(tmp_path / "m2.fits"), mask_bits=bits),
        ),
    )
    assert given["b"] == (Companions(mask_bits=bits), (Companions(mask_bits=bits),))


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        (
            "name,template_mask\ns.fits,t1.fits;t2.fits,a,m1.fits",
            r"pair a: the template_mask column names 1 file",
        ),
        ("science_mask\ns.fits,t.fits,m1.fits;m2.fits", r"science_mask column names 2 files"),
        ("name,mask_bits\ns.fits,t.fits,a,CR=7 SAT", r"pair a: --mask-bits 'SAT' is not PLANE"),
        # ~user names a home folder only for a user the machine knows
        ("name\n~nosuchuser0/s.fits,t.fits,a", r"line 2: ~nosuchuser0/s\.fits: ~nosuchuser0 is no"),
    ],
)
def test_a_pairs_lists_bad_companion_columns_are_named(
    tmp_path: Path, rows: str, needle: str
) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text(f"science,template,{rows}\n")
    with pytest.raises(InputError, match=needle):
        read_pairs_with_companions(path)


_cell = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters='\x00\r\n"')
)


@settings(max_examples=80, deadline=None)
@given(mask=_cell, pieces=_cell, bits=_cell)
@example(mask="", pieces="~0", bits="")  # no user "0": expanduser raised RuntimeError
def test_any_companion_columns_give_companions_or_a_named_refusal(
    tmp_path_factory: pytest.TempPathFactory, mask: str, pieces: str, bits: str
) -> None:
    # Whatever a spreadsheet holds in the columns: the pairs' companions, or an InputError
    # naming the list and the pair, never another exception.
    path = tmp_path_factory.mktemp("list") / "pairs.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(
            [
                ["science", "template", "name", "science_mask", "template_mask", "mask_bits"],
                ["s.fits", "t1.fits;t2.fits", "a", mask, pieces, bits],
            ]
        )
    try:
        given = read_pairs_with_companions(path)[1]
    except InputError as exc:
        assert str(path) in str(exc) and ("pair a" in str(exc) or "line" in str(exc))
        return
    science, per_piece = given["a"]
    assert len(per_piece) == 2
    assert (science.mask is None) == (not mask.strip())


_bit_maps = st.dictionaries(
    st.integers(0, 62), st.sampled_from(MASK_BIT_PLANES), min_size=1, max_size=8
)


@settings(max_examples=60, deadline=None)
@given(
    bit_map=_bit_maps,
    values=st.lists(st.integers(0, 2**62 - 1) | st.sampled_from([0, 1, 256]), min_size=1),
)
def test_each_pixel_gets_the_planes_of_its_mapped_bits_alone(
    bit_map: dict[int, str], values: list[int]
) -> None:
    raw = np.array(values, dtype=np.int64)
    out = mask_from_planes(raw, fits.Header(), "m.fits", tuple(bit_map.items()))
    for value, planes in zip(values, out, strict=True):
        expected = 0
        for bit, plane in bit_map.items():
            if value >> bit & 1:
                expected |= int(MaskPlane[plane])
        assert int(planes) == expected


@settings(max_examples=60, deadline=None)
@given(bit_map=_bit_maps)
def test_a_bit_map_is_recorded_and_read_back_whole(bit_map: dict[int, str]) -> None:
    texts = [
        f"{plane}={','.join(str(b) for b, p in bit_map.items() if p == plane)}"
        for plane in set(bit_map.values())
    ]
    given_bits = parse_mask_bits(texts)
    companions = Companions(mask="m.fits", weight="w.fits", mask_bits=given_bits)
    assert dict(given_bits) == bit_map
    assert Companions.from_dict(json.loads(json.dumps(companions.as_dict()))) == companions


def test_planes_the_mask_names_win_over_a_bit_map() -> None:
    # A file that names its planes says what its bits are; the map is for those that do not.
    header = fits.Header([("MP_SAT", 1)])
    out = mask_from_planes(np.array([2, 4]), header, "m.fits", ((2, "BAD"),))
    assert list(out) == [int(MaskPlane.SAT), 0]
