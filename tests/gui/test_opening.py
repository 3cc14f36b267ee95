"""Opening one multi-extension file in the window (drop, File > Open multi-extension
file): every image offered reads the HDU it is offered as, whatever its EXTNAME."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st
from PyQt6.QtWidgets import QToolButton

from diffviewer.errors import InputError
from diffviewer.gui.opening import default_extensions, image_extensions
from diffviewer.gui.window import MainWindow
from diffviewer.io import demo_pair, read_exposure

DEMO_SCIENCE = demo_pair()[0]


def _sky(level: float, shape: tuple[int, ...] = (64, 64)) -> np.ndarray:
    """A noisy sky of ``level`` (readable: its noise can be measured)."""
    return (level + np.random.default_rng(int(level)).normal(0, 10, shape)).astype(np.float32)


def _write(path: Path, *hdus: fits.ImageHDU) -> Path:
    fits.HDUList([fits.PrimaryHDU(), *hdus]).writeto(path)
    return path


def _opened(window: MainWindow, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The specs the window is asked to open (recorded instead of run)."""
    opened: list[tuple[str, str]] = []
    monkeypatch.setattr(window, "open_specs", lambda s, t: opened.append((s, t)))
    return opened


def _level(spec: str) -> float:
    """The sky level of the image a spec reads (the HDU's identity in these files)."""
    return float(np.round(np.median(read_exposure(spec).image), -2))


def test_two_hdus_named_sci_open_as_sci_1_and_sci_2(
    qtbot, window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An HST-style file (two SCI HDUs, EXTVER 1 and 2): dropping it raised StopIteration
    # out of default_extensions, as image_extensions listed ['SCI', 'SCI'] (repro r4).
    path = _write(
        tmp_path / "hst.fits",
        fits.ImageHDU(_sky(100), name="SCI", ver=1),
        fits.ImageHDU(_sky(500), name="SCI", ver=2),
    )
    opened = _opened(window, monkeypatch)
    window.opener.open_dropped([str(path)])
    assert opened == [(f"{path}[SCI,1]", f"{path}[SCI,2]")]
    assert [_level(spec) for spec in opened[0]] == [100.0, 500.0]
    assert [image.label for image in image_extensions(path)] == [
        "SCI,1: HDU 1, EXTNAME SCI, EXTVER 1, 64 x 64",
        "SCI,2: HDU 2, EXTNAME SCI, EXTVER 2, 64 x 64",
    ]


def test_extnames_of_digits_open_the_hdu_shown(
    qtbot, window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # EXTNAMEs '2' (HDU 1) and '1' (HDU 2) were offered as ['2', '1'] and opened as
    # file[2] and file[1], which read HDUs 2 and 1: science and template swapped (repro r5).
    path = _write(
        tmp_path / "digits.fits",
        fits.ImageHDU(_sky(100), name="2"),
        fits.ImageHDU(_sky(500), name="1"),
    )
    opened = _opened(window, monkeypatch)
    window.opener.open_dropped([str(path)])
    assert [_level(spec) for spec in opened[0]] == [100.0, 500.0]  # HDU 1, then HDU 2
    assert [image.label for image in image_extensions(path)] == [
        "1: HDU 1, EXTNAME 2, 64 x 64",
        "2: HDU 2, EXTNAME 1, 64 x 64",
    ]


@pytest.mark.parametrize(
    "names", [[("SCI", 1), ("SCI", 2)], [("2", 1), ("1", 1)], [("A", 1), ("A", 1)], [("", 1)] * 2]
)
def test_each_image_picked_in_the_dialog_is_the_one_read(
    qtbot,
    window: MainWindow,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    names: list[tuple[str, int]],
) -> None:
    # File > Open multi-extension file, the science and the template picked by their labels
    # (the second image as science, the first as template: against the proposal).
    levels = [100.0, 500.0]
    path = _write(
        tmp_path / "mef.fits",
        *(
            fits.ImageHDU(_sky(level), name=name or None, ver=ver)
            for (name, ver), level in zip(names, levels, strict=True)
        ),
    )
    picks = iter([1, 0])
    monkeypatch.setattr(window.opener, "ask_file", lambda *args, **kwargs: path)
    monkeypatch.setattr(
        "diffviewer.gui.opening.QInputDialog.getItem",
        lambda parent, title, label, items, current, editable: (items[next(picks)], True),
    )
    opened = _opened(window, monkeypatch)
    window.opener.open_mef_dialog()
    assert [_level(spec) for spec in opened[0]] == levels[::-1]


def test_default_extensions_prefer_sci_and_ref_then_the_file_order(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "triplet.fits",
        fits.ImageHDU(_sky(100), name="DIFF"),
        fits.ImageHDU(_sky(200), name="REF"),
        fits.ImageHDU(_sky(300), name="SCI"),
    )
    sci, tmpl = default_extensions(image_extensions(path))
    assert (sci.extension, tmpl.extension) == ("SCI", "REF")
    plain = _write(tmp_path / "plain.fits", *(fits.ImageHDU(_sky(v)) for v in (100, 200)))
    assert [i.extension for i in default_extensions(image_extensions(plain))] == ["1", "2"]


def test_a_cube_of_one_plane_is_offered_as_the_reader_reads_it(tmp_path: Path) -> None:
    # NAXIS3 = 1 cubes, which `diffviewer run` reads, were refused by the window: "holds 0
    # 2-D image(s)". The planes of an image (a variance, a mask) are not offered.
    path = _write(
        tmp_path / "cubes.fits",
        fits.ImageHDU(_sky(100, (1, 64, 64)), name="SCI"),
        fits.ImageHDU(_sky(1, (1, 64, 64)), name="SCI_VAR"),
        fits.ImageHDU(_sky(500, (1, 64, 64)), name="REF"),
    )
    images = image_extensions(path)
    assert [image.label for image in images] == [
        "SCI: HDU 1, EXTNAME SCI, 64 x 64",
        "REF: HDU 3, EXTNAME REF, 64 x 64",
    ]
    assert _level(f"{path}[{images[1].extension}]") == 500.0


@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
def test_a_file_that_cannot_be_opened_is_said_so_with_its_cause(tmp_path: Path) -> None:
    # A truncated file was "holds 1 2-D image(s)"; a missing file and a folder "cannot be
    # read (...); check its permissions" (repro r9).
    full = _write(tmp_path / "full.fits", *(fits.ImageHDU(_sky(v)) for v in (100, 200)))
    cut = tmp_path / "cut.fits"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size - 5000])
    folder = tmp_path / "night.fits"
    folder.mkdir()
    missing = tmp_path / "gone.fits"
    expected = {
        cut: rf"multi-extension file {cut} is truncated \(.*\); copy or download it again",
        missing: f"multi-extension file {missing} does not exist; check the path",
        folder: f"multi-extension {folder} is a folder, not a file; give a FITS file",
    }
    for path, message in expected.items():
        with pytest.raises(InputError) as info:
            image_extensions(path)
        assert re.fullmatch(message, str(info.value)), str(info.value)


def test_a_pairs_planes_files_are_given_from_the_file_menu(
    qtbot, window: MainWindow, tmp_path: Path, monkeypatch
) -> None:
    # File > Planes files of this pair…: the science's mask (chosen with its row's button)
    # and variance, the template's weight, the bits that mask; the pair is read again
    # with them and its run starts. What cannot be read is said in the dialog, which stays
    # open, and the pair stays as it was.
    from diffviewer.companions import Companions
    from diffviewer.exposure import MaskPlane
    from diffviewer.gui.model import Pair
    from diffviewer.io import demo_pair
    from tests.gui.helpers import finish

    sci, tmpl = demo_pair()
    shape = fits.getdata(sci).shape
    bits = np.zeros(shape, np.int16)
    bits[100:140, 200:260] = 1 << 3
    bits[300:310, 300:310] = 1 << 5
    mask = tmp_path / "sci_msk.fits"
    fits.PrimaryHDU(bits).writeto(mask)
    variance = tmp_path / "sci_var.fits"
    fits.PrimaryHDU(np.full(shape, 400.0, np.float32)).writeto(variance)
    weight = tmp_path / "tmpl_wht.fits"
    weights = np.full(fits.getdata(tmpl).shape, 1 / 25.0, np.float32)
    weights[:50] = 0.0
    fits.PrimaryHDU(weights).writeto(weight)
    window.open_pair(Pair(str(sci), str(tmpl), "demo"), run=False)
    monkeypatch.setattr(window.opener, "ask_file", lambda *args, **kwargs: mask)

    window.opener.planes_dialog()
    dialog = window.opener.planes
    assert dialog is not None and dialog.isVisible()
    assert [f.label for f in dialog.fields()] == ["Science", "Template"]
    dialog.masks[0].findChild(QToolButton).click()
    assert dialog.masks[0].line.text() == str(mask)
    monkeypatch.setenv("HOME", str(tmp_path))
    dialog.noises[0].line.setText("~/sci_var.fits")  # expanded, as a shell would
    dialog.kinds[1].setCurrentText("weight")
    dialog.noises[1].line.setText(str(tmp_path / "gone.fits"))
    dialog.bits.setText("BAD=3")
    dialog.accept()
    assert dialog.isVisible()
    assert dialog.problem.text() == (
        f"template weight file {tmp_path / 'gone.fits'} does not exist; check the path"
    )
    dialog.noises[1].line.setText(str(weight))
    finish(qtbot, window, "run", dialog.accept)
    assert not dialog.isVisible()
    assert window.pair.companions == (
        Companions(mask=str(mask), variance=str(variance), mask_bits=((3, "BAD"),)),
        (Companions(weight=str(weight), mask_bits=((3, "BAD"),)),),
    )
    result = window.outcome.result
    planes = result.science.mask
    assert np.all(planes[100:140, 200:260] & int(MaskPlane.BAD))
    assert not np.any(planes[300:310, 300:310] & int(MaskPlane.BAD))
    assert not result.science.variance_estimated
    assert np.all(result.science.variance[200:300, 200:300] == 400.0)
    template = result.template.exposure
    assert not result.template.warped  # the demo's grids agree: the template read as given
    assert np.all(template.mask[:50] & int(MaskPlane.NO_DATA))
    assert np.allclose(template.variance[100:200, 100:200], 25.0)

    # The next dialog starts from what the pair has; bits it cannot read are said.
    window.opener.planes_dialog()
    dialog = window.opener.planes
    assert dialog.fields()[1].noise_kind == "weight"
    assert dialog.fields()[1].noise == str(weight)
    dialog.bits.setText("BAD=3 SAT")
    dialog.accept()
    assert "is not PLANE=BIT" in dialog.problem.text()
    assert dialog.isVisible()
    dialog.reject()
    assert window.pair.companions[0].mask_bits == ((3, "BAD"),)


#: What a planes field may hold: any text, or a file that is there (the demo's science,
#: whole or one HDU, with the spaces a paste leaves).
_FIELD = st.one_of(
    st.text(max_size=30),
    st.sampled_from([str(DEMO_SCIENCE), f"{DEMO_SCIENCE}[0]", f"  {DEMO_SCIENCE} "]),
)


@settings(max_examples=80, deadline=None)
@given(
    texts=st.lists(
        st.tuples(_FIELD, st.sampled_from(["variance", "weight"]), _FIELD),
        min_size=1,
        max_size=3,
    ),
    bits=st.one_of(st.text(max_size=30), st.sampled_from(["", "BAD=0,9 CR=7", "SAT=8"])),
)
def test_any_text_in_the_planes_dialogs_fields_is_read_or_refused_saying_why(
    texts: list[tuple[str, str, str]], bits: str
) -> None:
    # Whatever is typed (brackets, ~user, control characters, folders, empty), the
    # fields give companions or an InputError naming what is wrong: never another error.
    from diffviewer.gui.planes_dialog import PlaneFields, companions_from_fields

    rows = [PlaneFields(f"Piece {i}", m, k, n) for i, (m, k, n) in enumerate(texts)]
    try:
        out = companions_from_fields(rows, bits)
    except InputError as exc:
        assert str(exc)
        return
    assert len(out) == len(rows)
    for row, companions in zip(rows, out, strict=True):
        assert companions.mask == (row.mask.strip() or None)
        noise = row.noise.strip() or None
        expected = (noise, None) if row.noise_kind == "variance" else (None, noise)
        assert (companions.variance, companions.weight) == expected
