"""The main window end to end on the demo pair and on synthetic pairs (pytest-qt, offscreen)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from PyQt6.QtCore import QSettings, Qt
from PyQt6.QtWidgets import QHeaderView

from diffviewer import display
from diffviewer.config import load_toml
from diffviewer.exposure import UNUSABLE, MaskPlane
from diffviewer.gui import content, model
from diffviewer.gui.content import NOISE_FINAL, SKY_PULL_MEAN, SKY_PULL_STD, n_detections
from diffviewer.gui.model import Pair
from diffviewer.gui.window import MainWindow, isolated_window
from diffviewer.io import demo_pair
from diffviewer.synthetic import make_pair
from tests.gui.helpers import RUN_TIMEOUT_MS, demo, finish, run


def test_demo_run_shows_the_engine_arrays_overlays_and_catalog(
    qtbot, window: MainWindow, monkeypatch
) -> None:
    # every marker drawn here (the per-cell marker budget has its own test)
    monkeypatch.setattr("diffviewer.gui.overlays.MIN_MARKERS", 100_000)
    run(qtbot, window, demo())
    assert window.outcome is not None and not window.is_running()
    result = window.outcome.result
    # every view holds the engine's array (display copy: NaN-free float32 of the same values)
    for name, array in model.view_arrays(result).items():
        shown = window.area.panels[name].image.image
        assert shown is not None and shown.shape == array.shape
        np.testing.assert_array_equal(shown, display.display_array(array))
    # kernel-source overlay: off once the run has DIA sources (they are what is reviewed);
    # on demand, one marker per candidate, at its position
    cands = result.kernel.candidates
    assert not window.menus.cand_action.isChecked()
    assert all(not len(i.points()) for i in window.overlays.candidate_items.values())
    window.menus.cand_action.trigger()
    for item in window.overlays.candidate_items.values():
        x, y = item.getData()
        np.testing.assert_allclose(x, np.asarray(cands["x"], float))
        np.testing.assert_allclose(y, np.asarray(cands["y"], float))
    # DIA sources on the difference and the score; the sky sources (blank-sky forced
    # measurements, not detections) only when asked for, as grey crosses
    dia = result.diasources
    sky = np.asarray(dia["sky_source"], bool)
    assert np.sum(~sky) > 0 and np.sum(sky) > 0
    for item in window.overlays.dia_items.values():
        x, y = item.getData()
        np.testing.assert_allclose(x, np.asarray(dia["x"], float)[~sky])
        np.testing.assert_allclose(y, np.asarray(dia["y"], float)[~sky])
    window.review.catalog.sky_box.setChecked(True)
    item = window.overlays.dia_items["difference"]
    np.testing.assert_allclose(item.getData()[0], np.asarray(dia["x"], float))
    assert {p.symbol() for p in item.points() if p.data() in set(dia["id"][sky])} == {"x"}
    # kernel sources (squares) and DIA sources (circles, diamonds) never share a shape
    cand_symbols = {p.symbol() for p in window.overlays.candidate_items["difference"].points()}
    dia_symbols = {p.symbol() for p in item.points()}
    assert cand_symbols == {"s"} and not cand_symbols & dia_symbols
    assert window.review.catalog.proxy.rowCount() == len(dia)
    window.review.catalog.sky_box.setChecked(False)
    assert window.review.catalog.proxy.rowCount() == np.sum(~sky)
    n_det, n_sky = int(np.sum(~sky)), int(np.sum(sky))
    assert window.review.catalog.count.text() == (
        f"showing {n_det} of {len(dia)}: {n_det} detections, {n_sky} sky sources (hidden)"
    )
    # the table's rows are the catalog's
    cat = window.review.catalog.model
    assert cat.rowCount() == len(dia)
    assert [cat.source_id(r) for r in range(cat.rowCount())] == [int(i) for i in dia["id"]]
    # the parameter panel shows the config of what is on screen
    assert window.params.config() == result.config and not window.params.is_modified()
    # the diagnostics panels are filled from the result when their tab is opened
    tabs = window.tabs
    assert tabs.kernel_panel.mosaic.image is None and not tabs.residual_panel.plots
    tabs.setCurrentWidget(tabs.kernel_panel)
    tabs.setCurrentWidget(tabs.residual_panel)
    assert tabs.kernel_panel.mosaic.image is not None
    assert len(tabs.residual_panel.plots) == 4
    tabs.setCurrentWidget(window.area)
    assert window.readout.readout.text() == "Move the cursor over an image."
    window._on_hover(60.0, 181.0)
    assert (
        "x</b> 60" in window.readout.readout.text()
        and "(0-based; DS9 61, 182)" in window.readout.readout.text()
        and "Difference:" in window.readout.readout.text()
    )
    assert "RA" in window.readout.readout.text()  # the demo pair has a celestial WCS
    diff = result.difference
    d = float(diff.image[181, 60]) / np.sqrt(float(diff.variance[181, 60]))
    assert f"Difference / σ: {d:+.2f}" in window.readout.readout.text()
    # where the score is not defined (its own mask), the readout says so, not 0
    score = result.score
    iy, ix = (int(v[0]) for v in np.nonzero(score.mask & int(UNUSABLE)))
    window._on_hover(float(ix), float(iy))
    assert "Score: undefined" in window.readout.readout.text()


def test_selecting_a_row_centres_the_views_and_fills_the_cutouts(qtbot, window: MainWindow) -> None:
    run(qtbot, window, demo())
    dia = window.outcome.result.diasources
    window.area.centre_on(10.0, 10.0, half_width=20.0)
    proxy_row = window.review.catalog.proxy.mapFromSource(
        window.review.catalog.model.index(3, 0)
    ).row()
    window.review.catalog.view.selectRow(proxy_row)
    source_id = window.review.catalog.model.source_id(3)
    row = int(np.flatnonzero(np.asarray(dia["id"]) == source_id)[0])
    x, y = float(dia["x"][row]), float(dia["y"][row])
    assert window.review.selected == source_id
    for name in window.area.visible_views():  # linked: every panel shown is centred
        cx, cy = window.area.panels[name].view_centre()
        assert cx == pytest.approx(x, abs=0.5) and cy == pytest.approx(y, abs=0.5)
    sx, sy = window.overlays.selection_items["difference"].getData()
    assert (sx[0], sy[0]) == (pytest.approx(x), pytest.approx(y))
    cut = window.review.cutouts.items["difference"].image
    assert cut is not None and cut.shape == (2 * 15 + 1,) * 2
    # and the other way: clicking a marker selects its row
    window.review.catalog.view.clearSelection()
    spot = window.overlays.dia_items["difference"].points()[5]
    window.overlays._on_dia_clicked(window.overlays.dia_items["difference"], [spot])
    assert window.review.catalog.selected_source() == int(spot.data())


def test_verdicts_are_saved_with_the_digest_reloaded_and_exported(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    run(qtbot, window, demo())
    dia = window.outcome.result.diasources
    first, second = int(dia["id"][0]), int(dia["id"][1])
    window.select_source(first)
    window.review.comment.setText("clean point source")
    window.set_verdict("real")
    window.select_source(second)
    window.set_verdict("bogus")
    path = window.review.verdict_path()
    doc = json.loads(path.read_text())
    assert doc["config_digest"] == window.outcome.result.config.digest()
    assert {(v["id"], v["label"], v["comment"]) for v in doc["verdicts"]} == {
        (first, "real", "clean point source"),
        (second, "bogus", ""),
    }
    run(qtbot, window, demo())  # reopening the pair reloads them
    assert (
        window.review.verdicts[first].label == "real"
        and window.review.verdicts[second].label == "bogus"
    )
    out = tmp_path / "catalog.ecsv"
    window.review.export_catalog(out)
    table = Table.read(out, format="ascii.ecsv")
    labels = dict(zip(table["id"].tolist(), table["verdict"].tolist(), strict=True))
    assert labels[first] == "real" and labels[second] == "bogus"


def test_a_rerun_with_a_changed_parameter_shows_both_runs_in_ab(qtbot, window: MainWindow) -> None:
    run(qtbot, window, demo())
    before = window.outcome.result
    window.params.set_value("detection", "threshold", 8.0)
    assert window.params.is_modified()
    assert window.params.editor("detection", "threshold").styleSheet() != ""  # highlighted
    run(qtbot, window)
    after = window.outcome.result
    assert after.config.detection.threshold == 8.0 and window.previous.result is before
    assert window.params.config() == after.config and not window.params.is_modified()
    window.tabs.setCurrentWidget(window.tabs.ab_panel)
    # A is the previous run, B the one on screen
    a, b = window.tabs.ab_panel.metric_cells("DIA sources")
    # the detections, not the sky sources measured beside them
    assert (int(a), int(b)) == (n_detections(before.diasources), n_detections(after.diasources))
    assert int(b) < len(after.diasources)
    table = window.tabs.ab_panel.params  # the one parameter changed, with both values
    rows = [tuple(table.item(r, c).text() for c in range(3)) for r in range(table.rowCount())]
    assert rows == [("detection.threshold", str(before.config.detection.threshold), "8.0")]
    # a higher threshold cannot find more sources on the same difference
    assert len(after.diasources) <= len(before.diasources)
    window.tabs.setCurrentWidget(window.tabs.ab_panel)
    np.testing.assert_array_equal(
        window.tabs.ab_panel.a.data, display.display_array(before.difference.image)
    )
    np.testing.assert_array_equal(
        window.tabs.ab_panel.b.data, display.display_array(after.difference.image)
    )


def test_ab_parameters_that_differ_say_what_ran(qtbot, demo_window: MainWindow) -> None:
    # audit: "kernel.spatial_order | 0 | 2" where both runs ran at 0 (the engine lowered
    # it), "kernel.mode | science | auto" where auto chose science
    window = demo_window
    before = window.outcome.result
    chosen, order = before.kernel.convolved, before.kernel.solution.spatial_order
    assert before.config.kernel.mode == "auto" and order < before.config.kernel.spatial_order
    window.params.set_value("kernel", "mode", chosen)
    window.params.set_value("kernel", "spatial_order", order)
    run(qtbot, window)
    window.tabs.setCurrentWidget(window.tabs.ab_panel)
    table = window.tabs.ab_panel.params
    rows = [tuple(table.item(r, c).text() for c in range(3)) for r in range(table.rowCount())]
    assert rows == [
        ("kernel.mode", f"auto (ran as {chosen})", chosen),
        ("kernel.spatial_order", f"2 (ran as {order})", str(order)),
    ]
    # the kernel sum's order as run: both constant (0: -1 chooses, capped at order 0)
    ran = content.effective_values(before)
    assert ran["kernel.kernel_sum_order"] == 0
    # a review: the degrees the held-out stars chose and the wing left out (the demo has
    # too few stamps for it) were shown as requested: what metadata.json records
    choice = before.kernel.degree_choice
    assert choice is not None and ran["kernel.degrees"] == list(choice.chosen)
    assert before.config.kernel.wing and ran["kernel.wing"] is False
    assert ran["kernel.regularization"] == before.kernel.regularization  # not rounded


def test_ab_kernel_sum_order_as_run_is_capped_at_the_kernel_s_order(
    qtbot, demo_window: MainWindow
) -> None:
    # kernel_sum_order = 2 asked for, but the demo's few stamps lower the kernel's spatial
    # order to 0, and the spatial fit caps the sum's order at the kernel's
    # (kernel_spatial.fit_spatial's sum_terms): the sum ran constant, and the A/B table
    # says so rather than "2"
    window = demo_window
    window.params.set_value("kernel", "kernel_sum_order", 2)
    run(qtbot, window)
    after = window.outcome.result
    assert after.config.kernel.kernel_sum_order == 2
    assert after.kernel.solution.spatial_order == 0 and after.kernel.sum_order_choice is None
    assert content.effective_values(after)["kernel.kernel_sum_order"] == 0
    window.tabs.setCurrentWidget(window.tabs.ab_panel)
    table = window.tabs.ab_panel.params
    rows = [tuple(table.item(r, c).text() for c in range(3)) for r in range(table.rowCount())]
    assert ("kernel.kernel_sum_order", "-1 (ran as 0)", "2 (ran as 0)") in rows


def test_the_ab_tables_show_the_key_metrics_on_a_1280_by_720_screen(
    qtbot, demo_window: MainWindow
) -> None:
    # audit: the A/B metrics table showed 1.5 of its 16 rows at 1280 x 720 (5 at
    # 1920 x 1080), "DIA sources" off screen
    window = demo_window
    window.resize(1280, 720)
    window.params.set_value("detection", "threshold", 8.0)
    run(qtbot, window)
    ab = window.tabs.ab_panel
    window.tabs.setCurrentWidget(ab)
    qtbot.waitExposed(ab)
    qtbot.wait(100)
    table = ab.metrics
    keys = [table.item(row, 0).text() for row in range(table.rowCount())]
    assert keys[:5] == [NOISE_FINAL, "DIA sources", "dipoles", SKY_PULL_MEAN, SKY_PULL_STD]
    room = table.viewport().height()
    shown = [
        r for r in range(len(keys)) if table.rowViewportPosition(r) + table.rowHeight(r) <= room
    ]
    assert len(shown) >= 5, (len(shown), room)
    assert ab.a.height() >= 100  # and the images keep theirs
    # a review: the parameters' values sized to their text ("-1.0 (ran as 0.03162)") left
    # their names 26 px wide at 1280 x 720: the three columns share the width
    header = ab.params.horizontalHeader()
    assert {header.sectionResizeMode(c) for c in range(3)} == {QHeaderView.ResizeMode.Stretch}


def test_the_parameter_status_names_the_run_under_way(qtbot, demo_window: MainWindow) -> None:
    # audit: during a re-run the panel said "Edited (digest X); the views still show digest
    # Y: press Run to apply" while X was running
    window = demo_window
    shown = window.outcome.result.config.digest()
    window.params.set_value("detection", "threshold", 8.0)
    running = window.params.config().digest()
    said: list[str] = []

    def run_and_read() -> None:
        window.run()
        said.append(window.params.status.text())
        window.params.set_value("detection", "threshold", 9.0)  # an edit while it runs
        said.append(window.params.status.text())
        window.params.set_value("detection", "threshold", 8.0)

    finish(qtbot, window, "run", run_and_read)
    assert f"Running</b> digest {running}" in said[0] and f"show digest {shown}" in said[0]
    assert "press Run" not in said[0]
    assert f"digest {running} is running" in said[1] and "press Run to apply" in said[1]
    assert window.params.status.text() == f"Config on screen (digest {running})."


def test_edits_typed_during_a_run_survive_its_end(qtbot, window: MainWindow) -> None:
    run(qtbot, window, demo())
    window.params.set_value("kernel", "background_order", 0)

    def run_then_edit() -> None:
        window.run()
        window.params.set_value("detection", "threshold", 3.5)  # while the run goes on

    finish(qtbot, window, "run", run_then_edit)
    after = window.outcome.result.config
    assert after.kernel.background_order == 0 and after.detection.threshold != 3.5
    # the run's own change is now on screen; the edit typed during it is kept, still edited
    assert window.params.config().detection.threshold == 3.5
    assert window.params.config().kernel.background_order == 0
    assert window.params.is_modified() and "Edited" in window.params.status.text()
    # an edit typed back, during the run, to the value on screen before it: it was
    # overwritten by the run's value when the run ended, and the status said no edit
    before = window.params.config().kernel.background_order  # 0, run just now
    window.params.set_value("kernel", "background_order", 1)

    def run_then_undo() -> None:
        window.run()
        window.params.set_value("kernel", "background_order", before)

    finish(qtbot, window, "run", run_then_undo)
    assert window.outcome.result.config.kernel.background_order == 1
    assert window.params.config().kernel.background_order == before
    assert window.params.is_modified()


def test_the_warnings_banner_folds_with_a_cue_and_unfolds_every_warning(
    qtbot, demo_window: MainWindow
) -> None:
    notes = demo_window.outcome.result.warnings
    assert len(notes) >= 2  # the demo's run warns of its few kernel stamps and its noise
    banner = demo_window.warnings
    # folded: the first warning, and a cue naming how many more there are
    assert notes[0] in banner.text() and notes[1] not in banner.text()
    assert f"{len(notes) - 1} more" in banner.text()
    assert banner.textInteractionFlags() & Qt.TextInteractionFlag.LinksAccessibleByMouse
    banner.linkActivated.emit("unfold")
    assert all(note in banner.text() for note in notes)
    # nothing cut: the banner may grow to its text's height
    assert banner.heightForWidth(banner.width()) <= banner.maximumHeight()
    banner.linkActivated.emit("fold")
    assert notes[1] not in banner.text()


def test_cancelling_a_long_run_leaves_the_window_idle_with_no_output(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    big = make_pair((2048, 2048), n_stars=600, seed=3)
    steps: list[str] = []
    window.jobs.progress.connect(lambda lane, jid, step, frac: steps.append(step))
    with qtbot.waitSignal(
        window.jobs.progress,
        timeout=RUN_TIMEOUT_MS,
        check_params_cb=lambda lane, jid, step, frac: step not in ("read",),
    ):
        window.open_pair(Pair(big.science, big.template, "big"))
    assert window.is_running()
    window.cancel()
    # idle at once: no run, Run enabled, Cancel disabled, nothing on screen
    assert not window.is_running()
    assert window.menus.run_action.isEnabled() and not window.menus.cancel_action.isEnabled()
    assert window.outcome is None and window.area.panels["difference"].data is None
    assert window.step_label.text() == "cancelled"
    # the engine stops at its next check (Reporter.update runs at least every 0.5 s)
    qtbot.waitUntil(lambda: window.jobs.active_threads() == 0, timeout=10_000)
    assert window.outcome is None and not (tmp_path / "out").exists()


def test_an_engine_error_becomes_a_message(qtbot, window: MainWindow) -> None:
    # the template's grid lies 10000 px away: the warp covers nothing (NoWorkFound)
    far = make_pair((96, 96), n_stars=20, seed=1, tmpl_shift=(10_000.0, 0.0))
    with qtbot.waitSignal(window.jobs.failed, timeout=RUN_TIMEOUT_MS) as blocker:
        window.open_pair(Pair(far.science, far.template, "far"))
    report = blocker.args[2]
    assert report.expected and report.title == "NoWorkFound"
    assert window.error_box.isVisible() and "NoWorkFound" in window.error_label.text()
    assert not window.is_running() and window.menus.run_action.isEnabled()


def test_an_unexpected_error_becomes_a_message_with_details(qtbot, tmp_path: Path) -> None:
    def broken(science, template, config, progress=None, cancel=None):
        raise ValueError("boom in the engine")

    win = isolated_window(tmp_path)
    win.runner = broken
    qtbot.addWidget(win)
    pair = make_pair((64, 64), n_stars=5, seed=2)
    with qtbot.waitSignal(win.jobs.failed, timeout=RUN_TIMEOUT_MS):
        win.open_pair(Pair(pair.science, pair.template))
    assert "boom in the engine" in win.error_label.text()
    assert not win.last_error.expected and "Traceback" in win.last_error.details
    assert win.error_details.isVisibleTo(win)


def test_a_bad_file_gives_a_clear_message(qtbot, window: MainWindow, tmp_path: Path) -> None:
    bad = tmp_path / "not_fits.fits"
    bad.write_text("this is not FITS")
    with qtbot.waitSignal(window.jobs.failed, timeout=RUN_TIMEOUT_MS) as blocker:
        window.open_specs(str(bad), str(bad))
    assert blocker.args[2].expected and str(bad) in blocker.args[2].message
    missing = tmp_path / "missing.fits"
    with qtbot.waitSignal(window.jobs.failed, timeout=RUN_TIMEOUT_MS) as blocker:
        window.open_specs(str(missing), str(missing))
    assert "missing.fits" in window.error_label.text()


def test_config_saves_and_loads_as_toml(qtbot, window: MainWindow, tmp_path: Path) -> None:
    window.params.set_value("kernel", "spatial_order", 1)
    window.params.set_value("kernel", "degrees", (3, 2))
    path = tmp_path / "c.toml"
    window.saver.save_config(path)
    assert "(no run on screen)" in window.message.whole
    loaded = load_toml(path)
    assert loaded.kernel.spatial_order == 1 and loaded.kernel.degrees == (3, 2)
    window.params.reset()
    assert window.params.config().kernel.spatial_order == 2
    window.saver.load_config(path)
    assert window.params.config() == loaded
    bad = tmp_path / "bad.toml"
    bad.write_text("[kernel]\nspatial_order = 99\n")
    window.saver.load_config(bad)
    assert "spatial_order" in window.error_label.text()


def test_a_saved_config_says_whether_it_is_the_runs_on_screen(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    # Save config writes the panel's config: after an edit not run it is not the config
    # of what is on screen (threshold 5 found 10 sources, the file's 3 found 71), and
    # nothing said so
    run(qtbot, window, demo())
    on_screen = window.outcome.result.config.digest()
    window.saver.save_config(tmp_path / "run.toml")
    assert "the config of the run on screen" in window.message.whole
    assert load_toml(tmp_path / "run.toml").digest() == on_screen
    window.params.set_value("detection", "threshold", 3.0)
    window.saver.save_config(tmp_path / "edits.toml")
    said = window.message.whole
    assert "edits, not run" in said and f"the run on screen is {on_screen}" in said
    assert load_toml(tmp_path / "edits.toml").detection.threshold == 3.0


def test_loading_a_config_shows_every_field_and_names_those_it_cannot(
    qtbot, window: MainWindow, tmp_path: Path, monkeypatch
) -> None:
    path = tmp_path / "big.toml"
    path.write_text(
        "[measurement]\nexposure_id = 2024030100123\nexposure_bits = 42\n"
        "[detection]\nthreshold = 7.5\n"
    )
    window.saver.load_config(path)
    shown = window.params.config()
    assert (shown.measurement.exposure_id, shown.detection.threshold) == (2024030100123, 7.5)
    assert not window.error_box.isVisible() or "exposure" not in window.error_label.text()
    # a field whose editor cannot show its value is named; every other field is loaded
    window.params.reset()
    editor = window.params._editors[("measurement", "exposure_id")]

    def refuse(value: object) -> None:
        raise OverflowError("too large for this editor")

    monkeypatch.setattr(editor, "set_value", refuse)
    window.saver.load_config(path)
    assert window.params.config().detection.threshold == 7.5
    assert "measurement.exposure_id" in window.error_label.text()


def test_pairs_list_steps_with_next_and_previous(qtbot, window: MainWindow, tmp_path: Path) -> None:
    sci, tmpl = demo_pair()
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"science,template,name\n{sci},{tmpl},first\n{sci},{tmpl},second\n")
    finish(qtbot, window, "run", lambda: window.opener.open_pairs_file(str(csv)))
    assert window.pair.name == "first" and window.menus.next_action.isEnabled()
    assert not window.menus.prev_action.isEnabled()
    finish(qtbot, window, "run", window.next_pair)
    assert window.pair.name == "second" and window.menus.prev_action.isEnabled()
    assert window.windowTitle().endswith("second")
    assert len(window.opener.recent()) == 1  # the same two files: one recent entry


def test_a_pairs_lists_mask_column_is_read_with_its_pair(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    from astropy.io import fits

    sci, tmpl = demo_pair()
    shape = fits.getdata(sci).shape
    bits = np.zeros(shape, np.int16)
    bits[100:140, 200:260] = 1 << 3  # a bad region, bit 3
    bits[300:310, 300:310] = 1 << 5  # a bit the list's map leaves out
    fits.PrimaryHDU(bits).writeto(tmp_path / "sci_msk.fits")
    csv = tmp_path / "pairs.csv"
    csv.write_text(
        f"science,template,name,science_mask,mask_bits\n{sci},{tmpl},a,sci_msk.fits,BAD=3\n"
    )
    finish(qtbot, window, "run", lambda: window.opener.open_pairs_file(str(csv)))
    assert window.pair.companions[0].mask == str(tmp_path / "sci_msk.fits")
    mask = window.outcome.result.science.mask
    assert np.all(mask[100:140, 200:260] & int(MaskPlane.BAD))
    assert not np.any(mask[300:310, 300:310] & int(MaskPlane.BAD))


def _sci_and_ref(folder: Path) -> Path:
    """A file holding a 128^2 synthetic pair as its SCI and REF extensions."""
    from astropy.io import fits

    pair = make_pair((128, 128), n_stars=60, seed=4)
    path = folder / "triplet.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(np.asarray(pair.science.image), name="SCI"),
            fits.ImageHDU(np.asarray(pair.template.image), name="REF"),
        ]
    ).writeto(path)
    return path


def test_dropping_one_multi_extension_file_opens_its_sci_and_ref(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    path = _sci_and_ref(tmp_path)
    with qtbot.waitSignals([window.jobs.started], timeout=5000):
        window.opener.open_dropped([str(path)])
    assert window.pair.science == f"{path}[SCI]" and window.pair.template == f"{path}[REF]"
    window.cancel()
    window.opener.open_dropped([str(path)] * 3)
    assert "dropped 3 files" in window.error_label.text()


def test_what_reading_said_of_the_inputs_is_in_the_warnings_banner(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    # The reader's warnings (a saturation level taken from the data, which image of a
    # file was read) went to the log of the command line only: the window showed none.
    path = _sci_and_ref(tmp_path)
    finish(qtbot, window, "run", lambda: window.open_specs(str(path), f"{path}[REF]"))
    said = f"{path}: no extension named, so HDU 1 SCI (128x128), the first 2-D image, is read"
    assert window.outcome.read_notes[0].startswith(said)
    assert not any(said in note for note in window.outcome.result.warnings)
    # after the run's own warnings, which judge its result
    assert window.warnings.notes[-1] == window.outcome.read_notes[0]
    window.warnings.linkActivated.emit("unfold")
    assert said in window.warnings.text()


def test_verdict_keys_are_r_b_u(window: MainWindow) -> None:
    keys = {a.shortcut().toString(): a.text() for a in window.actions()}
    assert keys["R"].startswith("Real") and keys["B"].startswith("Bogus")
    assert keys["U"].startswith("Unsure")


def test_launch_reads_the_pair_with_the_mask_the_command_line_names(qtbot, tmp_path: Path) -> None:
    # diffviewer SCIENCE TEMPLATE --science-mask M --mask-bits BAD=3: the window's pair
    # carries them, and its run reads the science with that mask.
    from astropy.io import fits
    from PyQt6.QtCore import QTimer
    from PyQt6.QtWidgets import QApplication

    from diffviewer.cli import _build_gui_parser, _companions_of
    from diffviewer.config import SubtractionConfig
    from diffviewer.gui.app import launch

    sci, tmpl = demo_pair()
    bits = np.zeros(fits.getdata(sci).shape, np.int16)
    bits[100:140, 200:260] = 1 << 3
    fits.PrimaryHDU(bits).writeto(tmp_path / "m.fits")
    argv = [str(sci), str(tmpl), "--science-mask", str(tmp_path / "m.fits")]
    companions = _companions_of(
        _build_gui_parser("diffviewer").parse_args([*argv, "--mask-bits", "BAD=3"]), 1
    )
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path))
    seen: list[MainWindow] = []

    def hook() -> None:
        win = next(w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow))
        seen.append(win)
        win.jobs.finished.connect(lambda lane, *a: QApplication.exit(0 if lane == "run" else 1))
        win.jobs.failed.connect(lambda *a: QApplication.exit(2))

    QTimer.singleShot(0, hook)
    config = SubtractionConfig()
    assert launch(str(sci), str(tmpl), pairs=None, config=config, companions=companions) == 0
    win = seen[0]
    qtbot.addWidget(win)
    assert win.pair.companions == companions
    assert np.all(win.outcome.result.science.mask[100:140, 200:260] & int(MaskPlane.BAD))
    said = f"open: the science's planes read with mask {tmp_path / 'm.fits'}; mask bits BAD=3"
    assert said in win.log_view.toPlainText()
    assert "the template's planes read with mask bits BAD=3" in win.log_view.toPlainText()
    # File > Recent pairs reopens it with them; a damaged entry is not offered.
    win.jobs.shutdown()
    actions = win.opener.recent_menu.actions()
    assert len(actions) == 1
    opened: list[Pair] = []
    win.opener.w.open_pair = opened.append  # type: ignore[method-assign]
    actions[0].trigger()
    assert opened[0].companions == companions and opened[0].science == str(sci)
    win.settings.setValue("recent_pairs", [f"{sci}\t{tmpl}\t{{not json", f"{sci}\t{tmpl}"])
    win.opener.refresh_recent()
    assert len(win.opener.recent_menu.actions()) == 1


def test_launch_opens_the_demo_pair_and_runs_it(qtbot, tmp_path: Path) -> None:
    from PyQt6.QtCore import QTimer
    from PyQt6.QtWidgets import QApplication

    from diffviewer.config import SubtractionConfig
    from diffviewer.gui.app import launch

    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path))
    seen: list[MainWindow] = []

    def hook() -> None:  # runs inside launch's event loop, before its first run starts
        win = next(w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow))
        seen.append(win)
        win.jobs.finished.connect(lambda lane, *a: QApplication.exit(0 if lane == "run" else 1))
        win.jobs.failed.connect(lambda *a: QApplication.exit(2))

    QTimer.singleShot(0, hook)
    assert launch(None, None, pairs=None, config=SubtractionConfig()) == 0
    win = seen[0]
    qtbot.addWidget(win)  # closed and deleted at teardown, as every other test's window
    assert win.pair.name == "demo" and win.outcome is not None
    assert len(win.review.catalog.model.table) == len(win.outcome.result.diasources)
    win.jobs.shutdown()


def test_the_grid_has_no_empty_cell_variance_and_mask_on_demand(
    qtbot, demo_window: MainWindow
) -> None:
    area = demo_window.area
    result = demo_window.outcome.result
    # five main views and the spare cell: variance by default, its title box chooses
    assert area.visible_views() == [*model.MAIN_VIEWS, "variance"]
    assert area.grid.count() == 6 and area.spare_box.isVisibleTo(area)
    variance = area.panels["variance"]
    np.testing.assert_array_equal(variance.data, display.display_array(result.difference.variance))
    assert not variance.title.isVisibleTo(area)
    area.set_spare_view("mask")
    assert area.visible_views()[-1] == "mask" and area.grid.count() == 6
    assert area.panels["variance"].parent() is None and not area.panels["variance"].title.isHidden()
    # the mask view colours every plane, opaque, and is clear where no plane is set
    mask = result.difference.mask
    overlay = area.panels["mask"].mask_item.image
    assert overlay is not None
    planes = int(np.bitwise_or.reduce([int(p) for p in MaskPlane]))
    np.testing.assert_array_equal(overlay[..., 3] == 255, (mask & planes) != 0)
    # every view, including the on-demand ones, as tabs
    area.set_mode("tabs")
    assert area.tabs.count() == len(model.VIEW_TITLES)
    area.set_mode("grid")
    assert area.grid.count() == 6


def test_the_difference_planes_are_titled_as_such(window: MainWindow) -> None:
    area = window.area
    assert area.panels["variance"].title_text == "Difference variance"
    assert area.panels["mask"].title_text == "Difference mask"
    spare = [area.spare_box.itemText(i) for i in range(area.spare_box.count())]
    assert spare == ["Difference variance", "Difference mask"]


def test_file_dialogs_start_in_and_remember_their_folder(
    qtbot, window: MainWindow, tmp_path: Path, monkeypatch
) -> None:
    from PyQt6.QtWidgets import QFileDialog

    asked: list[str] = []
    chosen = tmp_path / "configs" / "mine.toml"

    def fake(parent, title, start, filters):
        asked.append(start)
        return str(chosen), filters

    monkeypatch.setattr(QFileDialog, "getSaveFileName", fake)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", fake)
    assert window.opener.ask_file(
        "Save", "last_config_folder", "TOML (*.toml)", "c.toml", save=True
    ) == (chosen)
    assert window.settings.value("last_config_folder") == str(chosen.parent)
    window.opener.ask_file("Load", "last_config_folder", "TOML (*.toml)")
    assert asked[-1] == str(chosen.parent)  # the next dialog opens where the last file was


def test_zoom_to_fit_one_to_one_and_by_factors(qtbot, demo_window: MainWindow) -> None:
    area = demo_window.area
    ny, nx = demo_window.outcome.result.science.shape
    area.set_zoom(1.0)  # one screen pixel per image pixel, centre kept
    centre = area.view_centre()
    assert area.zoom() == pytest.approx(1.0, rel=1e-3)
    area.set_zoom(2 * area.zoom())
    assert area.zoom() == pytest.approx(2.0, rel=1e-3)
    assert area.view_centre() == (pytest.approx(centre[0]), pytest.approx(centre[1]))
    area.zoom_fit()  # the whole image in view (the master keeps square pixels)
    (x0, x1), (y0, y1) = area.master.viewRange()
    assert x0 <= -0.5 + 1e-6 and x1 >= nx - 0.5 - 1e-6
    assert y0 <= -0.5 + 1e-6 and y1 >= ny - 0.5 - 1e-6
    # the cutouts follow a view's colour map
    demo_window.select_source(int(demo_window.outcome.result.diasources["id"][0]))
    demo_window.area.panels["difference"].cmap_box.setCurrentText("RdBu")
    lut = demo_window.review.cutouts.items["difference"].lut
    np.testing.assert_array_equal(
        lut,
        display.make_lut(
            demo_window.review.cutouts.stretch_box.currentText(), "RdBu", symmetric=True
        ),
    )


def test_a_verdict_advances_to_the_next_source_and_n_p_step(qtbot, demo_window: MainWindow) -> None:
    cat = demo_window.review.catalog

    def shown_id(row: int) -> int:
        return cat.model.source_id(cat.proxy.mapToSource(cat.proxy.index(row, 0)).row())

    assert cat.step(1) == shown_id(0)  # nothing selected: the first row
    assert demo_window.review.selected == shown_id(0)
    demo_window.set_verdict("real")
    assert demo_window.review.verdicts[shown_id(0)].label == "real"
    assert demo_window.review.selected == shown_id(1)  # advanced, views centred on it
    assert cat.step(1) == shown_id(2) and cat.step(-1) == shown_id(1)
    cat.view.selectRow(cat.proxy.rowCount() - 1)
    assert cat.step(1) is None and demo_window.review.selected == shown_id(cat.proxy.rowCount() - 1)
    demo_window.menus.advance_action.setChecked(False)
    demo_window.set_verdict("bogus")
    assert demo_window.review.selected == shown_id(cat.proxy.rowCount() - 1)  # stays


def test_the_marker_legend_names_every_overlay_shape(window: MainWindow) -> None:
    from diffviewer.legend import STATUS_COLOURS

    text = window.readout.legend.text()
    for word in ("□", "○", "◇", "×", "positive", "negative", "dipole", "flagged", "sky"):
        assert word in text
    for status in STATUS_COLOURS:
        assert status.lower() in text


def test_window_opens_inside_the_screen(qtbot, tmp_path: Path) -> None:
    """A geometry saved on a larger screen (or the 1600 x 1000 default) must not leave the
    window cut off on a smaller one (offscreen: 800 x 800 available)."""
    from PyQt6.QtGui import QGuiApplication

    from diffviewer.gui.window import isolated_window

    win = isolated_window(tmp_path)
    qtbot.addWidget(win)
    area = QGuiApplication.primaryScreen().availableGeometry()
    least = win.minimumSizeHint()  # the docks' own minimum (940 px wide) wins over 800
    assert win.width() <= max(area.width(), least.width()) < 1600
    assert win.height() <= max(area.height(), least.height()) < 1000
    win.jobs.shutdown()


def test_a_window_computes_with_one_blas_thread_however_its_app_was_made(
    qtbot, tmp_path: Path
) -> None:
    # pytest-qt's QApplication (or a script's) left OpenBLAS at its two threads, which
    # only diffviewer's own application() set to one: the windows of the tests measured
    # catalog fluxes 4e-4 off the command line's, and the user's path went untested
    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits(2, "blas"):
        win = isolated_window(tmp_path)
        qtbot.addWidget(win)
        threads = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
        assert threads and set(threads) == {1}, threads
    win.jobs.shutdown()
