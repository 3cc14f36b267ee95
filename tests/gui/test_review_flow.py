"""A review that flows (issue 10): state per pair, the wheel, verdicts that follow the pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
import pytest
from PyQt6.QtCore import QPoint, QPointF, QSettings, Qt
from PyQt6.QtGui import QWheelEvent
from PyQt6.QtWidgets import QApplication

from diffviewer.gui import columns, content, verdicts
from diffviewer.gui.model import Pair
from diffviewer.gui.window import MainWindow
from diffviewer.outputs import build_metadata
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
    win.review.show_candidate(0)
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
    assert win.tabs.ab_panel.a.data is None and win.previous is None
    assert win.review.catalog.model.rowCount() == len(win.outcome.result.diasources)


def test_a_rerun_keeps_the_selected_source_and_clears_the_stamp(
    qtbot, demo_window: MainWindow
) -> None:
    win = demo_window
    dia = win.outcome.result.diasources
    source = int(dia["id"][1])
    xy = (float(dia["x"][1]), float(dia["y"][1]))
    win.select_source(source)
    win.review.show_candidate(0)
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


def test_two_verdicts_on_one_source_are_both_kept() -> None:
    from astropy.table import Table

    # A re-run merged two sources 2 px apart into one: the verdict that keeps its id
    # keeps the source, the other is set aside (it overwrote the first, which was lost).
    catalog = Table({"id": [2], "x": [11.0], "y": [10.0]})
    saved = {
        11: verdicts.Verdict("real", 10.0, 10.0),  # nearest to the source: would move
        2: verdicts.Verdict("bogus", 12.0, 10.0),  # keeps its id
    }
    out = verdicts.rekey_verdicts(saved, catalog)
    assert out.verdicts == {2: saved[2]} and out.unmatched == (saved[11],) and not out.moved


def test_the_batch_export_follows_a_rerun_renumbering(tmp_path: Path) -> None:
    from astropy.table import Table

    from diffviewer.gui.batch_review import describe_export, verdicts_table

    # verdicts given on a run whose sources were 5, 6, 7; the batch re-ran the pair
    # with another threshold: source 6 is now 1, source 7 is gone, a new one is 2
    folder = tmp_path / "field1"
    folder.mkdir()
    given = {
        5: verdicts.Verdict("real", 40.0, 40.0),
        6: verdicts.Verdict("bogus", 80.0, 20.0),
        7: verdicts.Verdict("unsure", 10.0, 90.0),
    }
    verdicts.save_verdicts(
        folder / verdicts.VERDICTS_FILE, given, Pair("sci.fits", "tmpl.fits"), "digest-a"
    )
    Table({"id": [1, 2, 5], "x": [80.3, 60.0, 40.0], "y": [20.0, 60.0, 40.2]}).write(
        folder / "diasources.ecsv", format="ascii.ecsv"
    )
    row = {"name": "field1", "output": str(folder), "science": "sci.fits", "template": "tmpl.fits"}
    table = verdicts_table([row])
    rows = {(str(r["level"]), int(r["source_id"])): str(r["verdict"]) for r in table}
    assert rows == {("source", 5): "real", ("source", 1): "bogus", ("unmatched", -1): "unsure"}
    assert table.meta["moved"] == 1
    text = describe_export(table)
    assert "2 source verdicts (1 on sources the current runs renumbered)" in text
    assert "1 whose source the current runs do not have" in text
    # the folder now holds another night's pair of the same name: its verdicts, a
    # person's work on other images, are not given this catalog's ids (the inspector
    # ignores them too)
    other = verdicts_table([{**row, "science": "night2.fits"}])
    assert len(other) == 0 and other.meta["other_pairs"] == 1
    assert "1 verdicts files of another pair" in describe_export(other)
    # a metadata.json that cannot be read costs the export nothing: the row names the pair
    (folder / "metadata.json").write_text("{ not json")
    assert len(verdicts_table([row])) == 3


def test_science_and_template_show_while_the_run_goes_on(qtbot, window: MainWindow) -> None:
    seen: list[tuple[str, bool, bool]] = []

    def record(lane: str, job_id: int, views: object) -> None:  # runs after the window's slot
        panels = window.area.panels
        for name in views:  # type: ignore[attr-defined]
            seen.append((name, panels[name].data is not None, window.outcome is None))

    window.jobs.partial.connect(record)
    run(qtbot, window, demo())
    names = [name for name, _, _ in seen]
    # each image on screen as soon as its step ended, all before the run's result
    assert names[:2] == ["science", "template"] and {"matched", "difference", "score"} <= set(names)
    assert all(shown and running for _, shown, running in seen)


def test_ab_metrics_are_named_and_valued_as_the_warnings_say(demo_window: MainWindow) -> None:

    result = demo_window.outcome.result
    metrics = content.metrics(result)
    assert metrics[content.NOISE_FINAL] == result.diagnostics.noise_ratio
    # The kernel's flux ratio beside its error over the kernel stars: whether two runs'
    # scales differ beyond which stars fitted them.
    assert metrics["photometric scale"] == result.kernel.photometric_scale
    assert metrics["kernel sum error"] == result.kernel.kernel_sum_error > 0
    # The one renormalisation's value is always a metric when it was applied, and the
    # banner, which names it when far from 1, gives the same figure.
    assert (content.NOISE_BEFORE_SCALING in metrics) == result.renormalisation.applied
    if result.renormalisation.applied:  # with the error the sky gives it
        assert metrics[content.NOISE_SCALE_ERROR] == result.renormalisation.noise_scale_error
    scaled = [w for w in result.warnings if "noise at PSF scale is" in w]
    if scaled:
        figure = metrics[content.NOISE_BEFORE_SCALING]
        assert f"noise at PSF scale is {figure:.3g} times" in scaled[0]


def test_residual_titles_give_robust_and_plain_sigma_or_why_empty(qtbot) -> None:
    from diffviewer.gui.diagnostic_panels import ResidualPanel

    rng = np.random.default_rng(1)
    # a core of width 0.6 with 5 % wide tails: the plain std is dragged far above the core
    core = np.concatenate([rng.normal(0, 0.6, 9500), rng.normal(0, 6.0, 500)])
    panel = ResidualPanel()
    qtbot.addWidget(panel)
    panel.set_data([("own", {"difference variance": core}), ("control", {})])
    own = panel.stats["own"]
    assert abs(own.robust_sigma - 0.6) < 0.05 < own.std - 1.0  # MAD: core; std: > 1.6
    titles = [p.titleLabel.text for p in panel.plots]
    assert "σ robust 0.6" in titles[0] and f"std {own.std:.3f}" in titles[0]
    assert "empty:" in titles[1] and "nan" not in titles[1]


def test_markers_follow_the_catalog_filter_and_the_view(qtbot, demo_window: MainWindow) -> None:
    win = demo_window
    dia = win.outcome.result.diasources
    catalog = win.review.catalog
    catalog.snr_box.setValue(8.0)  # |S/N| >= 8: the table and the markers alike
    shown = set(np.asarray(dia["id"])[catalog.shown_rows()])
    assert 0 < len(shown) < catalog.model.rowCount()
    drawn = {int(p.data()) for p in win.overlays.dia_items["difference"].points()}
    assert drawn == shown
    # at most the budget of markers, the highest |S/N| first, and the selection always
    from diffviewer.gui.overlays import marker_rows

    rows = np.arange(len(dia))
    snr = np.abs(np.nan_to_num(np.asarray(dia["snr"], float)))
    chosen, inside = marker_rows(dia, rows, (-1e9, -1e9, 1e9, 1e9), budget=3, keep=int(rows[-1]))
    assert inside == len(dia) and len(chosen) == 4 and rows[-1] in chosen
    assert set(np.argsort(-snr, kind="stable")[:3]) <= set(chosen)


def test_the_marker_budget_counts_the_image_on_screen_not_the_cell() -> None:
    from diffviewer.gui.overlays import MARKER_AREA, MIN_MARKERS, marker_budget

    # a 900 x 300 px cell showing a 300 x 300 image whole (aspect locked: the view spans
    # x -300.5 to 599.5): the image is a third of the cell, so is the budget
    whole = marker_budget(900, 300, (-300.5, -0.5, 599.5, 299.5), (300, 300))
    assert whole == int(300 * 300 / MARKER_AREA)
    # the image filling the cell: the cell's area
    assert marker_budget(900, 300, (-0.5, -0.5, 899.5, 299.5), (300, 900)) == int(
        900 * 300 / MARKER_AREA
    )
    # zoomed into a corner: the part of the view beyond the image's edges counts for none
    corner = marker_budget(900, 900, (149.5, 149.5, 449.5, 449.5), (300, 300))
    assert corner == int(900 * 900 / 4 / MARKER_AREA)
    # a view off the image, or a small cell: at least MIN_MARKERS
    assert marker_budget(900, 900, (1000.0, 1000.0, 1100.0, 1100.0), (300, 300)) == MIN_MARKERS
    assert marker_budget(50, 50, (-0.5, -0.5, 299.5, 299.5), (300, 300)) == MIN_MARKERS


def test_blink_carries_markers_and_the_mask(qtbot, demo_window: MainWindow) -> None:
    from diffviewer.exposure import MaskPlane

    win = demo_window
    win.area.set_mode("blink")
    win.menus._blink_step()
    assert len(win.overlays.dia_items["blink"].points()) > 0
    win.readout.plane_boxes[MaskPlane.DETECTED].setChecked(True)
    assert win.area.blink.mask_item.image is not None


def test_texts_never_show_missing_values() -> None:
    import dataclasses

    from astropy.table import Table

    from diffviewer.config import DetectionConfig
    from diffviewer.gui.params import _tooltip

    catalog = Table({"id": [1], "x": [3.0], "y": [4.0], "ra": [np.nan], "dec": [np.nan]})
    catalog["ra"].unit = catalog["dec"].unit = "deg"
    text = content.source_summary(catalog, 1, {})
    assert "ra" not in text and "deg" not in text and "x 3.00" in text
    # units as the table's headers give them: a position 0-based, a peak in sigma
    catalog["x"].unit = "pix"
    catalog["score_peak"] = [27.14]
    text = content.source_summary(catalog, 1, {})
    assert "x 3.00 pix, 0-based" in text and "score_peak 27.1 σ" in text, text
    fields = {f.name: f for f in dataclasses.fields(DetectionConfig)}
    tips = [_tooltip(f) for f in fields.values()]
    assert all("None" not in tip.split("Default:")[0] for tip in tips)


def test_a_bad_stamp_says_its_chi2_was_not_measured(demo_window: MainWindow) -> None:
    import dataclasses

    result = demo_window.outcome.result
    cands = result.kernel.candidates.copy()
    cands["chi2"][0] = np.nan
    fake = dataclasses.replace(result, kernel=dataclasses.replace(result.kernel, candidates=cands))
    text = content.candidate_summary(fake, 0)
    assert "chi2 = — (not measured" in text and "chi2 = \n" not in text + "\n"
    # the star's kernel sum comes with its error (kernel_candidates.ecsv's kernel_sum_err)
    assert (
        f"kernel_sum_err = {columns.format_value('kernel_sum_err', cands['kernel_sum_err'][0])}"
        in text
    )
    # a good star's residual against the kernel fitted without it (the BAD one has none)
    assert "held_out_chi2 = — (not measured" in text
    good = int(np.nonzero(np.asarray(cands["status"]) == "GOOD")[0][0])
    value = columns.format_value("held_out_chi2", cands["held_out_chi2"][good])
    assert value and f"held_out_chi2 = {value}" in content.candidate_summary(fake, good)


def test_a_file_that_is_not_fits_is_named_without_astropy_advice(tmp_path: Path) -> None:
    from diffviewer.errors import InputError
    from diffviewer.gui.opening import image_extensions

    bad = tmp_path / "notes.fits"
    bad.write_text("not a FITS file at all " * 200)
    with pytest.raises(InputError) as info:
        image_extensions(bad)
    assert str(bad) in str(info.value) and "=True" not in str(info.value)


def test_review_by_keyboard_alone(qtbot, demo_window: MainWindow) -> None:
    win = demo_window
    keys = dict(win.menus.key_rows())
    for key in ("N", "P", "R", "B", "U", "Z", "Ctrl+Right", "Ctrl+Left", "F1"):
        assert key in keys, key
    win.activateWindow()
    win.tabs.setFocus()
    qtbot.keyClick(win.tabs, Qt.Key.Key_N)
    first = win.review.selected
    assert first is not None
    qtbot.keyClick(win.tabs, Qt.Key.Key_R)
    assert win.review.verdicts[first].label == "real" and win.review.selected != first
    qtbot.keyClick(win.tabs, Qt.Key.Key_Z)
    (x0, x1), (y0, y1) = win.area.master.viewRange()
    assert min(x1 - x0, y1 - y0) <= 8.5 * 15  # about four cutouts across (31 px each)


def test_keys_needing_a_source_say_so_and_ctrl_plus_zooms_in(
    qtbot, demo_window: MainWindow
) -> None:
    win = demo_window
    keys = dict(win.menus.key_rows())
    assert keys["Ctrl+Q"] == "Quit" and keys["Ctrl+=, Ctrl++"] == "Zoom in"
    win.activateWindow()
    win.tabs.setFocus()
    assert win.review.selected is None
    for key in (Qt.Key.Key_R, Qt.Key.Key_B, Qt.Key.Key_U, Qt.Key.Key_Z):
        win.message.say("")
        qtbot.keyClick(win.tabs, key)
        assert "select a DIA source first" in win.message.whole, key
    assert not win.review.verdicts
    zoom = win.area.zoom()
    qtbot.keyClick(win.tabs, Qt.Key.Key_Plus, Qt.KeyboardModifier.ControlModifier)
    assert win.area.zoom() == pytest.approx(2 * zoom)


def test_the_readme_key_table_is_the_applications(window: MainWindow) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    for key, text in window.menus.key_rows():
        assert f"| {key} | {text} |" in readme, (key, text)
    from diffviewer.legend import legend_markdown

    assert legend_markdown() in readme  # one legend: the GUI's, the README's, the regions'


def test_kernel_tab_zooms_and_has_colour_bars_with_units(demo_window: MainWindow) -> None:
    panel = demo_window.tabs.kernel_panel
    demo_window.tabs.setCurrentWidget(panel)
    result = demo_window.outcome.result
    for box in (panel.mosaic_box, panel.sum_box, panel.shift_box, panel.background_box):
        assert all(box.state["mouseEnabled"])
    sums = result.subtraction.kernel_sum_map
    lo, hi = panel.bars["sum"].levels()
    assert lo == pytest.approx(float(np.nanmin(sums))) and hi >= float(np.nanmax(sums))
    labels = [panel.bars["shift"].getAxis(side).labelText for side in ("left", "right")]
    assert "px" in labels  # the unit; the map's title says what it is
    labels = [panel.bars["background"].getAxis(side).labelText for side in ("left", "right")]
    assert "ct" in labels  # the difference's unit (the demo has no BUNIT)
    assert not [i for i in panel.mosaic_box.addedItems if isinstance(i, pg.TextItem)]
    cell = panel._cell
    centre = panel.mosaic_box.mapViewToScene(QPointF(2 * cell + cell / 2, 1 * cell + cell / 2))
    panel._on_mosaic_hover(centre)
    x, y = panel._grid[1 * panel._n + 2, :2]
    assert f"kernel at ({x:.0f}, {y:.0f}) px: sum" in panel.cell_info.text()
    # the background there, as the engine evaluates the one it subtracted
    from diffviewer.engine.subtract import background_at

    there = float(background_at(result.kernel, np.array(x), np.array(y)))
    assert panel.cell_info.text().endswith(f"background {there:.3f} ct")
    # the info line's kernel-sum figures are metadata.json's (the sum map's samples; the
    # 7 x 7 mosaic's corners gave another range beside the map's, and no mean)
    meta = build_metadata(result)["kernel"]["kernel_sum"]
    said = f"sum mean {meta['mean']:.4f}"
    assert said in panel.info.text(), panel.info.text()
    assert f"{meta['min']:.4f} to {meta['max']:.4f} over the sum map's samples" in panel.info.text()


def test_a_small_screen_leaves_the_stamps_and_the_catalog_room(qtbot, tmp_path: Path) -> None:
    from diffviewer.gui.window import isolated_window

    win = isolated_window(tmp_path, (1280, 720))
    qtbot.addWidget(win)
    try:
        run(qtbot, win, demo())
        win.review.show_candidate(0)
        qtbot.wait(50)
        stamp = win.review.stamp
        # the stamp's 13 lines of QA scroll: the seven images keep the dock (19 px before)
        assert min(box.height() for box in stamp.boxes.values()) >= 40
        # three catalog rows at least (two before), the window still inside the screen
        view = win.review.catalog.view
        rows = view.verticalHeader().defaultSectionSize()
        assert view.viewport().height() >= 3 * rows
        assert win.height() <= 720
        # and fits a 720 px screen less a taskbar of 70 px (it needed 674 px before)
        assert win.minimumSizeHint().height() <= 650
    finally:
        win.jobs.shutdown()


def test_images_fill_their_cells_and_a_small_screen_keeps_titles_and_parameters(
    qtbot, tmp_path: Path
) -> None:
    from diffviewer.gui.window import isolated_window

    win = isolated_window(tmp_path, (1280, 720))
    qtbot.addWidget(win)
    try:
        run(qtbot, win, demo())
        qtbot.waitUntil(lambda: win.docks["Parameters"].width() < 300)
        panel = win.area.panels["template"]
        assert not panel.hist.isVisible()  # the histogram is on demand
        view_width = panel.view.sceneBoundingRect().width()
        assert view_width > 0.95 * panel.canvas.width()
        for p in win.area.panels.values():  # whole titles: no "Templat"
            if p.isVisible():
                assert p.title.width() >= p.title.sizeHint().width(), p.title_text
        assert win.tabifiedDockWidgets(win.docks["Parameters"]) == [win.docks["Readout"]]
        assert win.docks["Parameters"].height() > 300  # the parameter list, not one field
        assert win.review.cutout_page.width() >= 220
        panel.hist_box.setChecked(True)
        assert panel.hist.isVisible()
    finally:
        win.jobs.shutdown()


def test_the_selected_source_has_a_profile_against_its_psf_model(demo_window: MainWindow) -> None:
    from diffviewer.gui.content import PROFILE_RADIUS

    win = demo_window
    dia = win.outcome.result.diasources
    d = np.hypot(np.asarray(dia["x"], float) - 60.0, np.asarray(dia["y"], float) - 181.0)
    row = int(np.argmin(d))  # the demo's transient (resources/demo/README.md)
    win.select_source(int(dia["id"][row]))
    r, _ = win.review.cutouts.profile_points.getData()
    mr, model = win.review.cutouts.profile_model.getData()
    assert len(r) > 250 and r.max() <= PROFILE_RADIUS and len(mr) > 0
    # the model is the difference's PSF scaled to the source's forced PSF flux: within
    # 10 px it holds that flux within 10 % (a PSF of FWHM ~4 px; the decorrelated PSF has
    # small negative wings beyond, so the partial sum may exceed the whole slightly)
    flux = float(dia["psf_flux"][row])
    assert abs(model.sum() / flux - 1) < 0.1
    win.open_pair(demo(), run=False)
    cleared = win.review.cutouts.profile_points.getData()[0]
    assert cleared is None or len(cleared) == 0


def test_the_readme_shows_every_screenshot_the_script_makes() -> None:
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text(encoding="utf-8")
    script = (root / "scripts" / "make_screenshots.py").read_text(encoding="utf-8")
    import re

    made = set(re.findall(r'"(\w+\.png)"', script))
    # the states a screenshot once missed: a run under way, a small screen, a chosen PSF
    # cell, a saved run kept as A, a --products minimal pair in the review
    assert {
        "mid_run.png",
        "main_window_1280x720.png",
        "kernel_psfs_cell.png",
        "ab_saved_run_1280x720.png",
        "batch_review_minimal.png",
    } <= made
    for name in made:
        assert f"(screenshots/{name})" in readme, name
