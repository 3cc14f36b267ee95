"""Kernel candidate selection on synthetic pairs with known stars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.table import Table
from scipy.spatial import cKDTree

from diffviewer.config import CandidatesConfig, KernelConfig
from diffviewer.engine import candidates, peaks
from diffviewer.engine.candidates import REASONS, CandidateSet, select_candidates
from diffviewer.engine.progress import null_reporter
from diffviewer.errors import InputError
from diffviewer.exposure import Exposure, MaskPlane, set_planes
from diffviewer.star_list import read_star_list
from diffviewer.synthetic import SyntheticPair, make_pair


@pytest.fixture(scope="module")
def pair() -> SyntheticPair:
    return make_pair((512, 512), 300, seed=21)


def select(
    science: Exposure, template: Exposure, config: CandidatesConfig, **kwargs: Any
) -> CandidateSet:
    """:func:`select_candidates` unreported, for the default kernel basis unless
    ``kernel_config`` is given."""
    return select_candidates(
        science, template, config, null_reporter(), **{"kernel_config": KernelConfig(), **kwargs}
    )


def nearest(pair: SyntheticPair, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to, and index of, the nearest true star."""
    dist, idx = cKDTree(np.column_stack([pair.star_x, pair.star_y])).query(np.column_stack([x, y]))
    return dist, idx


def test_candidates_are_true_stars_with_their_fluxes(pair: SyntheticPair) -> None:
    config = CandidatesConfig()
    cands = select(pair.science, pair.template, config)
    tab = cands.table
    assert len(tab) >= 30
    dist, idx = nearest(pair, np.asarray(tab["x"]), np.asarray(tab["y"]))
    # Log-parabola peak interpolation is exact for a sampled Gaussian; noise and faint
    # neighbours leave a median error of 0.05 px (measured), a few blends up to 0.5 px.
    assert np.median(dist) < 0.1 and np.percentile(dist, 90) < 0.2 and np.max(dist) < 1.0
    # A 1.5 FWHM aperture holds 99.8% of a Gaussian's flux; neighbours add a little.
    ratio = np.asarray(tab["flux_sci"]) / pair.star_flux[idx]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.02)
    assert np.median(np.asarray(tab["flux_tmpl"]) / pair.star_flux[idx]) == pytest.approx(
        1.0, abs=0.02
    )
    snr = np.asarray(tab["snr"])
    assert np.all((snr >= config.snr_min) & (snr <= config.snr_max))
    assert np.all(np.diff(snr) <= 0)
    control = np.asarray(tab["control"])
    np.testing.assert_array_equal(np.nonzero(control)[0], np.arange(4, len(tab), 5))
    assert set(cands.rejected) == set(REASONS) and cands.rejected["S/N window"] > 0
    assert cands.fwhm == pytest.approx(4.0, rel=0.03)


def test_cells_limit_the_candidates(pair: SyntheticPair) -> None:
    config = CandidatesConfig(cell_size=128, max_per_cell=1)
    tab = select(pair.science, pair.template, config).table
    cells = (np.asarray(tab["y"]).round().astype(int) // 128) * 4 + np.asarray(
        tab["x"]
    ).round().astype(int) // 128
    assert len(tab) <= 16 and len(np.unique(cells)) == len(tab)
    capped = select(pair.science, pair.template, CandidatesConfig(max_candidates=6)).table
    cells = (np.asarray(capped["y"]).round().astype(int) // 128) * 4 + np.asarray(
        capped["x"]
    ).round().astype(int) // 128
    # the cap keeps each cell's brightest first, so six candidates sit in six cells
    assert len(capped) == 6 and len(np.unique(cells)) == 6
    assert np.all(np.diff(np.asarray(capped["snr"])) <= 0)


def test_saturated_and_masked_stars_are_rejected(pair: SyntheticPair) -> None:
    base = select(pair.science, pair.template, CandidatesConfig()).table
    x0, y0 = round(float(base["x"][0])), round(float(base["y"][0]))
    x1, y1 = round(float(base["x"][1])), round(float(base["y"][1]))
    sat = np.zeros(pair.science.shape, dtype=bool)
    sat[y0, x0] = True
    nodata = np.zeros(pair.science.shape, dtype=bool)
    nodata[y1 + 3, x1 - 3] = True
    template = pair.template.replace(mask=set_planes(pair.template.mask, sat, MaskPlane.SAT))
    science = pair.science.replace(mask=set_planes(pair.science.mask, nodata, MaskPlane.NO_DATA))
    cands = select(science, template, CandidatesConfig())
    kept = np.column_stack([np.asarray(cands.table["x"]), np.asarray(cands.table["y"])])
    assert np.min(np.hypot(*(kept - [x0, y0]).T)) > 1
    assert np.min(np.hypot(*(kept - [x1, y1]).T)) > 1
    assert cands.rejected["saturated"] >= 1 and cands.rejected["masked"] >= 1


def test_a_star_with_a_cosmic_ray_in_its_aperture_is_masked_not_deviant(
    pair: SyntheticPair,
) -> None:
    # A cosmic ray (5e4 counts, masked CR) 2 px from a kept star's centre, in its 1.5 FWHM
    # aperture: its fluxes hold the ray's counts, and it was rejected for its flux ratio
    # (or as saturated by value), a reason that points the user at a variable star. It is
    # masked, and nothing else changes.
    base = select(pair.science, pair.template, CandidatesConfig())
    x0, y0 = round(float(base.table["x"][0])), round(float(base.table["y"][0]))
    hit = np.zeros(pair.science.shape, dtype=bool)
    hit[y0 + 2, x0] = True
    science = pair.science.replace(
        image=np.where(hit, np.float32(5e4), pair.science.image),
        mask=set_planes(pair.science.mask, hit, MaskPlane.CR),
    )
    cands = select(science, pair.template, CandidatesConfig())
    kept = np.column_stack([np.asarray(cands.table["x"]), np.asarray(cands.table["y"])])
    assert np.min(np.hypot(*(kept - [x0, y0]).T)) > 1
    assert cands.rejected["masked"] == base.rejected.get("masked", 0) + 1
    for reason in ("flux ratio", "saturated"):
        assert cands.rejected.get(reason, 0) == base.rejected.get(reason, 0)


def test_saturation_level_from_the_config(pair: SyntheticPair) -> None:
    level = float(np.percentile(pair.science.image, 99.99))
    cands = select(pair.science, pair.template, CandidatesConfig(saturation_level=level))
    assert cands.rejected["saturated"] > 0
    assert len(cands.table) > 0


def test_saturation_level_found_when_reading(pair: SyntheticPair) -> None:
    """Without a configured level the candidates use the one the reader found (a coadd's
    clipped cores have no SATURATE card): the same stars are rejected as with the config."""
    level = float(np.percentile(pair.science.image, 99.99))
    config = CandidatesConfig(saturation_level=level)
    reference = select(pair.science, pair.template, config)
    read = select(
        pair.science.replace(saturation=("star plateau", level)),
        pair.template.replace(saturation=("star plateau", level)),
        CandidatesConfig(),
    )
    unknown = select(pair.science, pair.template, CandidatesConfig())
    assert read.rejected["saturated"] == reference.rejected["saturated"] > 0
    assert unknown.rejected["saturated"] < reference.rejected["saturated"]


def test_user_source_list(pair: SyntheticPair, tmp_path: Path) -> None:
    bright = np.argsort(-pair.star_flux)[10:40]
    path = tmp_path / "stars.ecsv"
    Table({"x": pair.star_x[bright], "y": pair.star_y[bright]}).write(path)
    cands = select(pair.science, pair.template, CandidatesConfig(source_list=str(path)))
    assert cands.n_detected == 30 and len(cands.table) > 10
    assert cands.warnings == ()  # enough of the list is kept: nothing to say of it
    dist, idx = nearest(pair, np.asarray(cands.table["x"]), np.asarray(cands.table["y"]))
    assert np.max(dist) < 0.5 and set(idx) <= set(bright)
    radec = tmp_path / "radec.csv"
    Table({"ra": [185.0], "dec": [12.0]}).write(radec, format="ascii.csv")
    no_wcs = pair.science.replace(wcs=None)
    with pytest.raises(InputError, match="no celestial WCS"):
        select(no_wcs, pair.template, CandidatesConfig(source_list=str(radec)))
    with pytest.raises(InputError, match="x,y"):
        bad = tmp_path / "bad.csv"
        Table({"a": [1.0], "b": [2.0]}).write(bad, format="ascii.csv")
        select(pair.science, pair.template, CandidatesConfig(source_list=str(bad)))
    words = tmp_path / "words.csv"
    words.write_text("x,y\nleft,top\n")
    with pytest.raises(InputError, match=r"column 'x' is not numeric"):
        select(pair.science, pair.template, CandidatesConfig(source_list=str(words)))
    with pytest.raises(InputError, match=r"is a folder, not a file") as info:
        select(
            pair.science,
            pair.template,
            CandidatesConfig(source_list=str(tmp_path)),
        )
    assert "\n" not in str(info.value)


def test_a_source_list_with_no_star_on_the_image_is_refused(
    pair: SyntheticPair, tmp_path: Path
) -> None:
    """No star of the list on the science image: refused, naming the list and the counts
    (the kernel fell back to a delta, a plain difference, blaming an unmeasured PSF)."""
    ny, nx = pair.science.shape
    off = tmp_path / "off.csv"
    Table({"x": [-5.0, nx + 3.0, np.nan], "y": [10.0, 10.0, 10.0]}).write(off, format="ascii.csv")
    with pytest.raises(
        InputError, match=r"off\.csv: 0 of 3 stars on the image \(2 outside"
    ) as info:
        select(pair.science, pair.template, CandidatesConfig(source_list=str(off)))
    assert "1 with no finite position" in str(info.value)
    assert f"{nx} x {ny} px" in str(info.value)
    far = tmp_path / "far.ecsv"
    Table({"ra": [10.0, 11.0], "dec": [-40.0, -41.0]}).write(far)  # not this field
    with pytest.raises(InputError, match=r"far\.ecsv: 0 of 2 stars on the image.*ra,dec"):
        select(pair.science, pair.template, CandidatesConfig(source_list=str(far)))
    one = tmp_path / "one.csv"  # one star on the image is enough not to be refused
    Table({"x": [-5.0, float(pair.star_x[0])], "y": [10.0, float(pair.star_y[0])]}).write(
        one, format="ascii.csv"
    )
    assert (
        select(pair.science, pair.template, CandidatesConfig(source_list=str(one))).n_detected == 2
    )


def test_blank_and_tiny_images_give_an_empty_set() -> None:
    tiny = make_pair((31, 31), 1, seed=3, flux_range=(1.0, 1.0))
    cands = select(tiny.science, tiny.template, CandidatesConfig())
    assert len(cands.table) == 0
    assert {"id", "x", "y", "flux_sci", "flux_tmpl", "snr", "control"} <= set(cands.table.colnames)


def test_sources_missing_from_the_template_are_not_kernel_stars() -> None:
    transients = [(100.0 + 60 * i, 120.0 + 45 * i, 1e5) for i in range(6)]
    pair = make_pair((512, 512), 200, seed=23, transients=transients)
    cands = select(pair.science, pair.template, CandidatesConfig())
    kept = np.column_stack([np.asarray(cands.table["x"]), np.asarray(cands.table["y"])])
    for x, y, _ in transients:
        assert np.min(np.hypot(kept[:, 0] - x, kept[:, 1] - y)) > 2
    assert cands.rejected["flux ratio"] >= 5  # S/N ~150 each: all bright enough to be chosen


def test_peaks_found_once_serve_every_higher_threshold(pair: SyntheticPair) -> None:
    # The registration finds the science peaks at 7 sigma; the candidates take theirs
    # from them: the same peaks, in the same order, as finding them again.
    low = peaks.find_peaks(pair.science, 7.0, null_reporter())
    assert len(low.above(50.0).x) < len(low.x)  # a higher threshold leaves some out
    for threshold in (7.0, 10.0, 50.0):
        again = peaks.find_peaks(pair.science, threshold, null_reporter())
        taken = low.above(threshold)
        for name in ("x", "y", "value", "peak"):
            np.testing.assert_array_equal(getattr(taken, name), getattr(again, name))
    with pytest.raises(ValueError, match="found above 7"):
        low.above(5.0)
    reused = select(pair.science, pair.template, CandidatesConfig(), peaks=low)
    alone = select(pair.science, pair.template, CandidatesConfig())
    assert reused.n_detected == alone.n_detected
    for name in alone.table.colnames:
        np.testing.assert_array_equal(reused.table[name], alone.table[name])


def test_the_stamps_checked_are_those_of_the_runs_kernel_basis(pair: SyntheticPair) -> None:
    # The stamp each candidate must hold (edges, masks, isolation) is the one the run's
    # kernel fit reads: a wider basis asks for wider stamps and rejects more stars at the
    # edges (the default basis was used whatever the run's, before).
    default = select(pair.science, pair.template, CandidatesConfig())
    wide = select(
        pair.science,
        pair.template,
        CandidatesConfig(),
        kernel_config=KernelConfig(min_sigma=2.0),
    )
    assert wide.stamp_half_width > default.stamp_half_width
    assert wide.rejected["edge"] > default.rejected["edge"]


def test_noise_peaks_on_a_bright_stars_halo_are_not_kernel_stars(
    pair: SyntheticPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bright star's halo (a Moffat wing, index 1.5, 119 counts 22 px out where the sky
    # noise is 32) on both images: the coarse background (64 px boxes) lies under it, so
    # positions on it with no star of their own pass the S/N window with the halo's light,
    # as two of GOTO's GOOD kernel "stars" did. Measured above their own annulus they
    # hold no source; 30 true stars in the same list stay.
    yy, xx = np.mgrid[0:512, 0:512]
    halo = (3000.0 * (1 + ((xx - 300.0) ** 2 + (yy - 300.0) ** 2) / 64.0) ** -1.5).astype(
        np.float32
    )
    science = pair.science.replace(image=pair.science.image + halo)
    template = pair.template.replace(image=pair.template.image + halo)
    angle = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    hx, hy = 300.0 + 22.0 * np.cos(angle), 300.0 + 22.0 * np.sin(angle)
    starless = nearest(pair, hx, hy)[0] > 15.0
    hx, hy = hx[starless], hy[starless]
    stars = np.argsort(-pair.star_flux)[10:40]
    path = tmp_path / "stars.ecsv"
    Table({"x": np.r_[pair.star_x[stars], hx], "y": np.r_[pair.star_y[stars], hy]}).write(path)
    config = CandidatesConfig(source_list=str(path), max_per_cell=20)

    def on_halo(cands: CandidateSet) -> int:
        x, y = np.asarray(cands.table["x"]), np.asarray(cands.table["y"])
        return int(np.sum(np.hypot(x - 300.0, y - 300.0) < 40.0))

    cands = select(science, template, config)
    assert on_halo(cands) == 0 and cands.rejected["no local source"] == len(hx) >= 4
    assert len(cands.table) == len(stars)
    with monkeypatch.context() as m:
        m.setattr(candidates, "LOCAL_SNR_MIN", -np.inf)
        assert on_halo(select(science, template, config)) == len(hx)


def test_a_star_list_whose_stars_are_all_rejected_is_named_with_the_reasons(
    pair: SyntheticPair, tmp_path: Path
) -> None:
    """Every star of the list on the image, none kept: the note names the list, its count
    and the reasons (the run went on with the kernel's warnings alone, which blamed the
    stamps' fits and the PSFs); with one kept, fewer than kernel.min_stamps, the same."""
    base = select(pair.science, pair.template, CandidatesConfig()).table
    (x0, y0), (x1, y1), (x2, y2) = ((float(base["x"][i]), float(base["y"][i])) for i in range(3))
    sat = np.zeros(pair.science.shape, dtype=bool)
    sat[round(y0), round(x0)] = True
    nodata = np.zeros(pair.science.shape, dtype=bool)
    nodata[round(y1) + 3, round(x1) - 3] = True
    template = pair.template.replace(mask=set_planes(pair.template.mask, sat, MaskPlane.SAT))
    science = pair.science.replace(mask=set_planes(pair.science.mask, nodata, MaskPlane.NO_DATA))
    blank_x, blank_y = np.array([310.1, 408.9, 322.6]), np.array([392.5, 224.9, 418.4])
    assert np.min(nearest(pair, blank_x, blank_y)[0]) > 25  # no star there
    xs = [2.0, 509.0, x0, x1, *blank_x, -40.0]  # two at the edges, one off the image
    ys = [100.0, 300.0, y0, y1, *blank_y, 50.0]
    path = tmp_path / "mine.csv"
    Table({"x": xs, "y": ys}).write(path, format="ascii.csv")
    cands = select(science, template, CandidatesConfig(source_list=str(path)))
    assert len(cands.table) == 0
    [note] = cands.warnings
    assert note.startswith(
        f"candidates.source_list {path}: all 7 of its stars on the science image (1 more off "
        "it or with no position) were rejected as kernel stars (edge: 2, saturated: 1, "
        "S/N window: 3, masked: 1), so the kernel is not fitted on its stars: list stars"
    ), note
    side = 2 * cands.stamp_half_width + 1
    assert f"{side} x {side} px stamps" in note and "candidates.snr_min = 10.0" in note
    assert note.endswith('or set candidates.source_list = "" to find the kernel stars on the image')
    Table({"x": [*xs, x2], "y": [*ys, y2]}).write(path, format="ascii.csv", overwrite=True)
    cands = select(science, template, CandidatesConfig(source_list=str(path)))
    assert len(cands.table) == 1
    [note] = cands.warnings
    assert "7 of its 8 stars on the science image (1 more off" in note
    assert "leaving 1 to fit, fewer than kernel.min_stamps = 3, so the kernel is not" in note


def test_a_star_list_read_already_is_not_read_again(pair: SyntheticPair, tmp_path: Path) -> None:
    """``diffviewer run`` reads the list before the images and hands it on: the selection
    takes it as read (the file gone since changes nothing) and refuses another file's."""
    bright = np.argsort(-pair.star_flux)[10:40]
    path = tmp_path / "stars.csv"
    Table({"x": pair.star_x[bright], "y": pair.star_y[bright]}).write(path, format="ascii.csv")
    config = CandidatesConfig(source_list=str(path))
    read_here = select(pair.science, pair.template, config)
    stars = read_star_list(path)
    path.unlink()
    handed = select(pair.science, pair.template, config, star_list=stars)
    assert handed.n_detected == read_here.n_detected == 30
    for name in read_here.table.colnames:
        np.testing.assert_array_equal(handed.table[name], read_here.table[name])
    other = CandidatesConfig(source_list=str(tmp_path / "other.csv"))
    with pytest.raises(ValueError, match=r"stars\.csv, is not the one candidates\.source_list"):
        select(pair.science, pair.template, other, star_list=stars)
    with pytest.raises(ValueError, match="is not the one"):
        select(pair.science, pair.template, CandidatesConfig(), star_list=stars)
