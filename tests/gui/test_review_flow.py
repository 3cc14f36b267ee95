"""A review that flows (issue 10): state per pair, the wheel, verdicts that follow the pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PyQt6.QtCore import QPoint, QPointF, QSettings, Qt
from PyQt6.QtGui import QWheelEvent
from PyQt6.QtWidgets import QApplication

from diffviewer.gui import verdicts
from diffviewer.gui.model import Pair
from diffviewer.gui.window import MainWindow
from diffviewer.synthetic import make_pair
from tests.gui.helpers import demo, finish, run


def _synthetic() -> Pair:
    """A small second pair with one transient."""
    pair = make_pair((160, 160), n_stars=40, seed=5, transients=[(80.0, 70.0, 3e4)])
    return Pair(pair.science, pair.template, "synthetic")


def test_everything_shown_belongs_to_the_pair_on_screen(qtbot, demo_window: MainWindow) -> None:
    win = demo_window
    dia = win.outcome.result.diasources
    win.select_source(int(dia["id"][0]))
    win.overlays._on_candidate_clicked(None, win.overlays.candidate_items["science"].points()[:1])
    win._on_hover(60.0, 181.0)
    assert win.review.cutouts.items["science"].image is not None
    assert win.review.stamp.items["science"].image is not None
    run(qtbot, win, _synthetic())
    # the next pair shows none of the first pair's selection, cutouts, stamp, readout or A/B
    assert win.review.selected is None
    assert all(item.image is None for item in win.review.cutouts.items.values())
    assert all(item.image is None for item in win.review.stamp.items.values())
    assert win.review.cutouts.info.text() == "Select a DIA source."
    assert win.readout.readout.text() == "Move the cursor over an image."
    assert not len(win.overlays.selection_items["difference"].points())
    assert win.tabs.ab_panel.b.data is None and win.previous is None
    assert win.review.catalog.model.rowCount() == len(win.outcome.result.diasources)


def test_a_rerun_keeps_the_selected_source_and_clears_the_stamp(
    qtbot, demo_window: MainWindow
) -> None:
    win = demo_window
    dia = win.outcome.result.diasources
    source = int(dia["id"][1])
    xy = (float(dia["x"][1]), float(dia["y"][1]))
    win.select_source(source)
    win.overlays._on_candidate_clicked(None, win.overlays.candidate_items["science"].points()[:1])
    run(qtbot, win)
    new = win.outcome.result.diasources
    row = int(np.flatnonzero(np.asarray(new["id"]) == win.review.selected)[0])
    assert np.hypot(float(new["x"][row]) - xy[0], float(new["y"][row]) - xy[1]) <= 1.5
    assert all(item.image is None for item in win.review.stamp.items.values())


def _wheel(widget, steps: int = -3) -> None:
    """Send a mouse-wheel turn (``steps`` notches) to ``widget``."""
    centre = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(
        centre,
        QPointF(widget.mapToGlobal(centre.toPoint())),
        QPoint(0, 0),
        QPoint(0, 120 * steps),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(widget, event)


def test_the_wheel_changes_an_editor_only_when_it_has_focus(qtbot, window: MainWindow) -> None:
    spin = window.params.editor("detection", "threshold")
    before = spin.value()
    _wheel(spin)
    assert spin.value() == before  # scrolling past it leaves the parameter alone
    combo = window.area.panels["science"].cmap_box
    choice = combo.currentText()
    _wheel(combo)
    assert combo.currentText() == choice
    spin.setFocus()
    qtbot.waitUntil(spin.hasFocus)
    _wheel(spin)
    assert spin.value() != before  # a focused editor takes the wheel


def test_verdicts_follow_the_pair_to_a_custom_output_folder(
    qtbot, demo_window: MainWindow, tmp_path: Path
) -> None:
    win = demo_window
    win.select_source(int(win.outcome.result.diasources["id"][0]))
    win.set_verdict("real")
    root = win.output_root
    custom = tmp_path / "elsewhere" / "my_review"
    finish(qtbot, win, "save", lambda: win.saver.save_outputs(custom))
    assert win.output_root == root and win.output_dir() == custom
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    second = MainWindow(settings=settings)
    qtbot.addWidget(second)
    second.output_root = root
    try:
        run(qtbot, second, demo())
        assert second.review.verdict_path() == custom / verdicts.VERDICTS_FILE
        assert [v.label for v in second.review.verdicts.values()] == ["real"]
    finally:
        second.jobs.shutdown()


def test_a_rerun_that_renumbers_sources_says_where_the_verdicts_went(
    qtbot, demo_window: MainWindow
) -> None:
    win = demo_window
    dia = win.outcome.result.diasources
    first = int(dia["id"][0])
    win.select_source(first)
    win.set_verdict("real")
    # a verdict on a source that the next run will not have, and one whose id will change
    x, y = float(dia["x"][0]), float(dia["y"][0])
    win.review.verdicts = {
        first + 1000: verdicts.Verdict("bogus", x, y),
        999_999: verdicts.Verdict("unsure", -50.0, -50.0),
    }
    win.review.save_verdicts()
    run(qtbot, win)
    text = win.log_view.toPlainText()
    assert f"{first + 1000}→{first}" in text and "1 have no source" in text
    saved = verdicts.load_verdicts(win.review.verdict_path())
    assert [v.label for v in saved.unmatched] == ["unsure"]  # kept, not dropped
    assert saved.verdicts[first].label == "bogus"


def test_rekeying_keeps_moves_and_sets_aside() -> None:
    from astropy.table import Table

    catalog = Table({"id": [1, 2], "x": [10.0, 50.0], "y": [10.0, 50.0]})
    saved = {
        1: verdicts.Verdict("real", 10.2, 10.0),  # same id, same place
        7: verdicts.Verdict("bogus", 50.5, 50.0),  # renumbered: moves to id 2
        8: verdicts.Verdict("unsure", 90.0, 90.0),  # no source there
    }
    out = verdicts.rekey_verdicts(saved, catalog)
    assert out.verdicts == {1: saved[1], 2: saved[7]}
    assert out.moved == ((7, 2),) and out.unmatched == (saved[8],)
    again = verdicts.rekey_verdicts({}, Table({"id": [3], "x": [90.0], "y": [90.5]}), out.unmatched)
    assert again.verdicts == {3: saved[8]} and not again.unmatched
