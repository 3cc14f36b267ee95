"""A template in pieces in the window (issue 8): Open pair takes several template files,
the engine gets them as a sequence, the title says so and the registration is per piece."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from diffviewer import cli
from diffviewer.gui.model import Pair
from diffviewer.gui.window import MainWindow
from diffviewer.io import demo_pair
from tests.gui.helpers import finish


def _demo_template_in_pieces(folder: Path) -> list[Path]:
    """The demo template cut into two overlapping column ranges (0-149 and 110-255), each
    with its WCS moved with it (CRPIX1 shifted by the cut's first column)."""
    _, template = demo_pair()
    with fits.open(template) as hdul:
        data, header = np.asarray(hdul[0].data), hdul[0].header.copy()
    paths = []
    for k, (start, stop) in enumerate([(0, 150), (110, 256)]):
        piece = header.copy()
        if "CRPIX1" in piece:
            piece["CRPIX1"] = float(piece["CRPIX1"]) - start
        path = folder / f"piece{k + 1}.fits"
        fits.PrimaryHDU(data[:, start:stop], piece).writeto(path)
        paths.append(path)
    return paths


def test_open_pair_with_two_template_pieces_runs_them_as_a_sequence(
    qtbot, window: MainWindow, tmp_path: Path, monkeypatch
) -> None:
    science, _ = demo_pair()
    pieces = _demo_template_in_pieces(tmp_path)
    dialog = "diffviewer.gui.opening.QFileDialog"
    monkeypatch.setattr(f"{dialog}.getOpenFileName", lambda *a, **k: (str(science), ""))
    monkeypatch.setattr(
        f"{dialog}.getOpenFileNames", lambda *a, **k: ([str(p) for p in pieces], "")
    )
    seen: list[object] = []
    real_read = Pair.read_template

    def read_template(pair: Pair):  # what the run job hands the engine
        tmpl = real_read(pair)
        seen.append(tmpl)
        return tmpl

    monkeypatch.setattr(Pair, "read_template", read_template)
    finish(qtbot, window, "run", window.opener.open_pair_dialog)
    assert window.outcome is not None
    assert isinstance(seen[0], list) and [e.source for e in seen[0]] == [str(p) for p in pieces]
    assert window.windowTitle() == "diffviewer — science.fits - 2 template pieces"
    warp = window.outcome.result.template
    assert [p.source.split(" warped to ")[0] for p in warp.pieces] == [str(p) for p in pieces]
    # the registration line has the total then one line per piece, with its own coverage
    text, tip = window.registration.text(), window.registration.toolTip()
    assert f"2 template pieces, coverage {100.0 * warp.coverage:.1f} %" in text
    for i, piece in enumerate(warp.pieces):
        assert f"piece {i + 1}: " in text and f"piece {i + 1}: {piece.source}" in tip
        assert f"coverage {100.0 * piece.coverage:.1f} %" in text
    # the pair is remembered with both pieces, and File > Recent pairs says so
    recent = window.opener.recent_menu.actions()[0].text()
    assert recent == "science.fits — 2 template pieces"
    assert window.outcome.pair.files == [Path(str(science)), *pieces]


def test_gui_command_line_takes_several_templates(monkeypatch) -> None:
    opened: list[tuple[object, ...]] = []
    monkeypatch.setattr(cli, "has_display", lambda: True)
    monkeypatch.setattr(cli, "missing_xcb_packages", lambda: [])
    monkeypatch.setattr("diffviewer.gui.app.launch", lambda s, t, **k: opened.append((s, t)) or 0)
    assert cli.main(["sci.fits", "a.fits", "b.fits[1]"]) == 0
    assert opened == [("sci.fits", "a.fits;b.fits[1]")]
    assert cli.main(["sci.fits", "a.fits"]) == 0
    assert opened[-1] == ("sci.fits", "a.fits")
