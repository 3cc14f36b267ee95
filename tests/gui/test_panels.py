"""Parameter panel, linked views, blink, levels, overlays and diagnostic panels."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path

import numpy as np
import pyqtgraph as pg
import pytest
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QValidator
from PyQt6.QtWidgets import QAbstractSpinBox, QCheckBox, QComboBox, QLineEdit, QScrollArea

from diffviewer import display
from diffviewer.config import (
    SECTION_TYPES,
    SubtractionConfig,
    field_specs,
    from_dict,
    override_tables,
)
from diffviewer.errors import ConfigError
from diffviewer.exposure import MaskPlane
from diffviewer.gui.params import ParameterPanel
from diffviewer.gui.spin_boxes import FloatSpinBox, LongSpinBox
from diffviewer.gui.views import ImageArea
from diffviewer.gui.window import MainWindow
from tests.gui.helpers import Click, finish, run


def test_parameter_panel_has_an_editor_per_field_with_doc_limits_and_choices(qtbot) -> None:
    panel = ParameterPanel()
    qtbot.addWidget(panel)
    for section in SECTION_TYPES:
        for field in field_specs(section):
            editor = panel.editor(section, field.name)
            assert field.metadata["doc"] in editor.toolTip()
            if field.metadata.get("choices"):
                assert isinstance(editor, QComboBox)
                items = [editor.itemText(i) for i in range(editor.count())]
                assert tuple(items) == field.metadata["choices"]
            elif isinstance(field.default, bool):
                assert isinstance(editor, QCheckBox)
            elif isinstance(field.default, int):
                assert isinstance(editor, LongSpinBox)
                if field.metadata.get("max") is not None:
                    assert editor.maximum() == field.metadata["max"]
            elif isinstance(field.default, float):
                assert isinstance(editor, FloatSpinBox)
                if field.metadata.get("min") is not None:
                    assert editor.minimum() == pytest.approx(field.metadata["min"])
            else:
                assert isinstance(editor, QLineEdit)
    assert panel.config() == SubtractionConfig()


def test_parameter_panel_highlights_changes_resets_and_reports_invalid_values(qtbot) -> None:
    panel = ParameterPanel()
    qtbot.addWidget(panel)
    with qtbot.waitSignal(panel.edited, timeout=1000):
        panel.set_value("score", "method", "al")
    assert panel.config().score.method == "al"
    assert panel.editor("score", "method").styleSheet() != ""
    assert panel.editor("kernel", "mode").styleSheet() == ""
    assert panel.is_modified() and "Edited" in panel.status.text()
    # a cross-field rule of the config is reported, naming the fields
    panel.set_value("kernel", "min_size", 81)  # above kernel.max_size (71)
    assert "Invalid" in panel.status.text() and "min_size" in panel.status.text()
    panel.reset()
    assert panel.config() == SubtractionConfig() and not panel.is_modified()
    shown = dataclasses.replace(
        SubtractionConfig(),
        detection=dataclasses.replace(SubtractionConfig().detection, threshold=7.5),
    )
    panel.set_config(shown)  # the config of a run on screen
    assert panel.config() == shown and not panel.is_modified()
    assert panel.editor("detection", "threshold").styleSheet() != ""  # differs from default


def test_a_list_that_is_not_numbers_is_named_as_toml_writes_it(qtbot) -> None:
    # As every config message names a value (config.toml_text); it was a Python repr.
    panel = ParameterPanel()
    qtbot.addWidget(panel)
    panel.editor("kernel", "degrees").setText("4, x, 2")
    with pytest.raises(ConfigError) as err:
        panel.config()
    assert str(err.value).startswith('kernel.degrees = "4, x, 2": expected numbers')


#: What a config file and a --set say of a float literal that no float holds.
_NO_FLOAT_HOLDS = {
    "1e-400": "underflows a float (below about 2.2e-308 a float loses digits, and below "
    "about 4.9e-324 it is 0.0); give 0, or a number of magnitude at least 2.2e-308",
    "1e400": "overflows a float (the largest is about 1.8e308); give a finite number",
}


@pytest.mark.parametrize("typed", list(_NO_FLOAT_HOLDS))
def test_a_number_no_float_holds_is_refused_as_typed_as_a_config_files(
    qtbot, demo_window: MainWindow, typed: str
) -> None:
    # A review: the panel read numbers with float(), so 1e-400 typed ran as 0.0 (for
    # saturation_level: no saturation level) and 1e400 was cut to 1e40 as it was typed,
    # while a config file and a --set refuse both by name.
    panel = demo_window.params
    saturation = panel.editor("candidates", "saturation_level")
    saturation.setFocus()
    saturation.lineEdit().selectAll()
    qtbot.keyClicks(saturation, typed)
    qtbot.keyClick(saturation, Qt.Key.Key_Return)  # editing finished: still as typed
    assert saturation.text() == typed and saturation.styleSheet() != ""
    refusal = f"candidates.saturation_level = {typed} {_NO_FLOAT_HOLDS[typed]}"
    assert panel.status.text() == f"<b>Invalid:</b> {refusal}"
    with pytest.raises(ConfigError, match="^" + re.escape(refusal) + "$"):
        from_dict(override_tables([f"candidates.saturation_level={typed}"]))  # as --set
    demo_window.runner = lambda *args, **kwargs: pytest.fail(f"ran {args[2]}")
    demo_window.run()  # refused, as the status says: no run of 0.0 (or of 1e40)
    assert not demo_window.jobs.is_busy("run")
    assert refusal in demo_window.error_label.text()
    saturation.setValue(0.0)  # a number set replaces it
    assert saturation.text() == "0.0" and panel.config() == SubtractionConfig()
    radii = panel.editor("measurement", "aperture_radii")  # a list of floats
    radii.setText(f"3, {typed}")
    radii.editingFinished.emit()
    assert panel.status.text() == (
        f"<b>Invalid:</b> measurement.aperture_radii = [3.0, {typed}]: item {typed} "
        f"{_NO_FLOAT_HOLDS[typed]}"
    )


def test_integer_editors_hold_64_bit_exposure_ids(qtbot) -> None:
    panel = ParameterPanel()
    qtbot.addWidget(panel)
    big = dataclasses.replace(
        SubtractionConfig().measurement, exposure_id=2024030100123, exposure_bits=42
    )
    config = dataclasses.replace(SubtractionConfig(), measurement=big)
    panel.set_config(config)  # a 32-bit spin box overflowed here
    assert panel.config() == config and not panel.is_modified()
    editor = panel.editor("measurement", "exposure_id")
    editor.lineEdit().selectAll()
    qtbot.keyClicks(editor, "2199023255551")  # 2**41 - 1, typed: 42 bits, the top one 0
    assert panel.config().measurement.exposure_id == 2**41 - 1
    editor.stepBy(1)  # past 2**41 - 1: the config rule names the fields
    assert "exposure_bits" in panel.status.text()


def test_a_panel_as_narrow_as_at_1280_x_720_shows_every_editor_whole(qtbot) -> None:
    # The exposure id's 64-bit spin box asked for 19 digits' width as its minimum: the
    # form grew wider than the dock at 1280 x 720 and every editor lost its right edge
    # (spin arrows, combo arrows) behind a horizontal scroll bar.
    panel = ParameterPanel()
    qtbot.addWidget(panel)
    panel.resize(270, 600)  # the dock's width in the 1280 x 720 window
    panel.show()
    qtbot.waitExposed(panel)
    area = panel.findChild(QScrollArea)
    assert area is not None and area.horizontalScrollBar().maximum() == 0
    viewport = area.viewport()
    for section, name in panel._editors:
        editor = panel.editor(section, name)
        right = editor.mapTo(viewport, editor.rect().topRight()).x()
        assert right < viewport.width(), (section, name)


def test_an_exposure_id_derived_from_the_pair_reads_so_and_is_typed_so(qtbot) -> None:
    # measurement.exposure_id -1 (the default) derives the id from the pair: shown as "-1"
    # it read as a number like any other
    panel = ParameterPanel()
    qtbot.addWidget(panel)
    editor = panel.editor("measurement", "exposure_id")
    assert isinstance(editor, LongSpinBox)
    assert (editor.text(), editor.value()) == ("from the pair", -1)
    assert panel.config() == SubtractionConfig() and not panel.is_modified()
    editor.stepBy(1)  # an id of its own
    assert editor.text() == "0" and panel.config().measurement.exposure_id == 0
    assert panel.is_modified()
    editor.stepBy(-1)
    assert editor.text() == "from the pair" and not panel.is_modified()
    for typed in ("7", "from the pair", "7", "-1"):  # the text, or -1, typed is the minimum
        editor.lineEdit().selectAll()
        qtbot.keyClicks(editor, typed)
        expected = 7 if typed == "7" else -1
        assert panel.config().measurement.exposure_id == expected, typed
    assert editor.text() == "from the pair" and not panel.is_modified()
    assert editor.validate("from", 4)[0] == QValidator.State.Intermediate  # being typed
    assert editor.validate("from the pear", 13)[0] == QValidator.State.Invalid


def test_float_editors_keep_every_digit_of_a_config(qtbot) -> None:
    # QDoubleSpinBox rounded to 4 decimals: a config's 0.03125 ran as 0.0313 and 5e-05
    # as 0.0001 in the window, whose digest no command-line run of that file gave
    panel = ParameterPanel()
    qtbot.addWidget(panel)
    base = SubtractionConfig()
    config = dataclasses.replace(
        base,
        warp=dataclasses.replace(base.warp, grid_tolerance=5e-05),
        score=dataclasses.replace(base.score, astrometric_noise=0.03125),
    )
    panel.set_config(config)
    assert panel.config() == config and not panel.is_modified()
    assert panel.config().digest() == config.digest()
    editor = panel.editor("warp", "grid_tolerance")
    assert editor.text() == "5e-05"
    editor.lineEdit().selectAll()
    qtbot.keyClicks(editor, "0.000123456789")  # typed: kept whole
    assert panel.config().warp.grid_tolerance == 0.000123456789


def test_spin_arrows_step_in_decimal_and_odd_fields_by_two(qtbot) -> None:
    # audit: warp.required_template_fraction up, up, down, down gave 0.10000000000000003
    # (marked edited, a new digest, written to config.toml); dipole_flux_ratio 0.2 up gave
    # 0.30000000000000004; kernel.min_size stepped by 1 to 12, which is invalid
    panel = ParameterPanel()
    qtbot.addWidget(panel)
    digest = panel.config().digest()
    fraction = panel.editor("warp", "required_template_fraction")
    for steps in (1, 1, -1, -1):
        fraction.stepBy(steps)
    assert fraction.text() == "0.1" and not panel.is_modified()
    assert panel.config().digest() == digest
    ratio = panel.editor("measurement", "dipole_flux_ratio")
    ratio.setFocus()
    qtbot.keyClick(ratio, Qt.Key.Key_Up)
    assert ratio.text() == "0.3" and panel.config().measurement.dipole_flux_ratio == 0.3
    size = panel.editor("kernel", "min_size")
    size.stepBy(1)
    assert panel.config().kernel.min_size == 13 and "Invalid" not in panel.status.text()
    size.stepBy(-100)  # as far as the range goes, in whole steps: still odd
    assert panel.config().kernel.min_size == 3
    panel.reset()
    for section in SECTION_TYPES:  # every float field: up then down is where it was
        for field in field_specs(section):
            editor = panel.editor(section, field.name)
            if isinstance(editor, FloatSpinBox) and editor.value() < editor.maximum():
                editor.stepBy(1)
                editor.stepBy(-1)
    assert panel.config() == SubtractionConfig() and not panel.is_modified()


@pytest.mark.parametrize(
    ("value", "step", "maximum"),
    [(0.12345678901234568, 0.1, 10.0), (2**0.5, 1.0, 10.0), (1e-20, 1e-3, 1.0), (0.95, 0.1, 1.0)],
)
def test_spin_arrows_up_then_down_give_any_value_back(qtbot, value, step, maximum) -> None:
    # A review: the decimal sum of a value of 17 digits was rounded (0.12345678901234568
    # up and down was ...566; sqrt(2) lost its last digit; 1e-20 by 1e-3 came back 0.0,
    # another regularisation), and at a limit the step was clamped (0.95 up was 1.0, then
    # down 0.9). The arrows step from where they started, whole steps within the range.
    box = FloatSpinBox(0.0, maximum)
    qtbot.addWidget(box)
    box.setSingleStep(step)
    box.setValue(value)
    room = value + 2 * step <= maximum
    for steps in (1, 1, -1, -1, 2, -2) if room else (-1, -1, 1, 1, -2, 2):
        box.stepBy(steps)
    assert box.value() == value
    box.stepBy(1)
    if value + step > maximum:  # no whole step fits: the value stays, the arrow is off
        assert box.value() == value
        assert not box.stepEnabled() & QAbstractSpinBox.StepEnabledFlag.StepUpEnabled
    else:
        assert box.value() == pytest.approx(value + step, rel=1e-12)


def _record_number(box: FloatSpinBox, said: list[float]) -> None:
    """Note the number ``box`` holds when it says it changed."""
    said.append(box.number())


@pytest.mark.parametrize("replacement", [3.0, 0.0])
def test_a_number_no_float_holds_replaced_says_so_once(qtbot, replacement: float) -> None:
    # The last note's finding: a number no float holds, replaced by a value, emitted
    # numberChanged twice (once as the typed number went, once as the value changed);
    # replaced by the value the box already held, once. Set or typed, it is said once.
    box = FloatSpinBox(0.0, 10.0)
    qtbot.addWidget(box)
    for commit in ("set", "typed"):
        box.lineEdit().setText("1e-400")
        box.interpretText()
        assert box.text() == "1e-400" and box.value() == 0.0
        said: list[float] = []
        box.numberChanged.connect(functools.partial(_record_number, box, said))
        if commit == "set":
            box.setValue(replacement)
        else:
            box.lineEdit().setText(repr(replacement))
            box.interpretText()
        box.numberChanged.disconnect()
        assert said == [replacement] and box.text() == repr(replacement), commit
        box.setValue(0.0)


def test_an_odd_only_field_takes_no_even_value_typed(qtbot) -> None:
    # A review: kernel.min_size typed 12 was taken, and the arrows then kept it even.
    panel = ParameterPanel()
    qtbot.addWidget(panel)
    size = panel.editor("kernel", "min_size")
    assert size.validate("12", 2)[0] == QValidator.State.Intermediate
    assert size.validate("13", 2)[0] == QValidator.State.Acceptable


def test_views_share_pan_zoom_and_crosshair_and_blink_cycles(qtbot) -> None:
    area = ImageArea([("science", "S"), ("matched", "M"), ("difference", "D")])
    qtbot.addWidget(area)
    area.resize(900, 500)
    area.show()
    rng = np.random.default_rng(0)
    images = {n: rng.normal(size=(128, 160)).astype(np.float32) for n in area.panels}
    for name, panel in area.panels.items():
        panel.set_image(images[name], (-1.0, 1.0))
    area.panels["difference"].view.setRange(xRange=(40, 60), yRange=(30, 50), padding=0)
    for panel in area.panels.values():
        cx, cy = panel.view_centre()
        assert (cx, cy) == (pytest.approx(50, abs=0.5), pytest.approx(40, abs=0.5))
    area.panels["matched"].hovered.emit(12.0, 34.0)
    for panel in [*area.panels.values(), area.blink]:
        assert (panel.vline.value(), panel.hline.value()) == (12.0, 34.0)
    area.set_mode("blink")
    seen = []
    for _ in range(3):
        seen.append(area.blink_frame())
        assert area.blink.data is area.panels[area.blink_frame()].data
        area.step_blink()
    assert seen == ["science", "matched", "difference"] and area.blink_frame() == "science"
    with qtbot.waitSignal(area.blink_timer.timeout, timeout=5000):
        area.toggle_blink()
    area.toggle_blink()
    assert not area.blink_timer.isActive()
    area.set_mode("tabs")
    assert area.tabs.count() == 3


def test_stretch_and_colour_map_change_the_lut_only(qtbot) -> None:
    area = ImageArea([("difference", "D")])
    qtbot.addWidget(area)
    panel = area.panels["difference"]
    data = np.linspace(-5, 5, 100, dtype=np.float32).reshape(10, 10)
    panel.set_image(data, (-5.0, 5.0))
    panel.stretch_box.setCurrentText("asinh")
    panel.cmap_box.setCurrentText("RdBu")
    expected = display.make_lut("asinh", "RdBu", symmetric=True, n=display.VIEW_LUT_SIZE)
    np.testing.assert_array_equal(panel.image.lut, expected)
    assert panel.levels() == (-5.0, 5.0)  # levels are kept: only the LUT changed


def test_level_modes_are_computed_in_the_worker(qtbot, demo_window: MainWindow) -> None:
    panel = demo_window.area.panels["science"]
    finish(qtbot, demo_window, "levels:science", lambda: panel.levels_box.setCurrentText("minmax"))
    assert panel.levels() == (
        pytest.approx(float(panel.data.min())),
        pytest.approx(float(panel.data.max())),
    )


def test_clicking_a_kernel_source_fills_the_stamp_panel(qtbot, demo_window: MainWindow) -> None:
    demo_window.menus.cand_action.trigger()  # kernel squares are off once sources are found
    item = demo_window.overlays.candidate_items["science"]
    spot = item.points()[0]
    demo_window.overlays._on_candidate_clicked(item, [spot])
    stamp = demo_window.review.stamp
    assert stamp.items["science"].image is not None
    assert stamp.items["spatial kernel"].image is not None
    row = demo_window.outcome.result.kernel.candidates[int(spot.data())]
    assert str(row["status"]) in stamp.info.text() and "chi2" in stamp.info.text()


def test_a_held_out_star_shows_no_own_kernel(qtbot, demo_window: MainWindow) -> None:
    # A CONTROL star has no own fit: its "own kernel" and "diff (own kernel)" were drawn
    # as exact zeros, a flawless subtraction beside the spatial model's rms 9-28 (audit).
    status = np.asarray(demo_window.outcome.result.kernel.candidates["status"]).astype(str)
    held_out = int(np.flatnonzero(status == "CONTROL")[0])
    demo_window.review.show_candidate(held_out)
    stamp = demo_window.review.stamp
    assert stamp.items["own kernel"].image is None
    assert stamp.items["diff (own kernel)"].image is None
    assert stamp.items["diff (spatial)"].image is not None
    assert "held out of the fit: no kernel of its own" in stamp.info.text()


def test_the_kernel_source_in_the_stamp_panel_is_marked_on_the_images(
    qtbot, demo_window: MainWindow
) -> None:
    demo_window.menus.cand_action.trigger()
    item = demo_window.overlays.candidate_items["science"]
    spot = item.points()[3]
    demo_window.overlays._on_candidate_clicked(item, [spot])
    for name in ("science", "template", "matched", "difference"):
        marks = demo_window.area.panels[name].view.addedItems
        points = {
            (round(p.pos().x(), 3), round(p.pos().y(), 3))
            for m in marks
            if isinstance(m, pg.ScatterPlotItem) and m is not item and m.opts["size"] > 13
            for p in m.points()
        }
        assert points == {(round(spot.pos().x(), 3), round(spot.pos().y(), 3))}, name
    run(qtbot, demo_window)  # a new run: its stamp panel is empty, and so is the mark
    assert not [
        p
        for m in demo_window.area.panels["science"].view.addedItems
        if isinstance(m, pg.ScatterPlotItem) and m.opts["size"] > 13 and m.opts["symbol"] == "s"
        for p in m.points()
    ]


def test_residual_normalisation_switches_the_histograms(qtbot, demo_window: MainWindow) -> None:
    panel = demo_window.tabs.residual_panel
    demo_window.tabs.setCurrentWidget(panel)
    diag = demo_window.outcome.result.diagnostics
    panel.norm_box.setCurrentText("difference variance")
    by_diff = dict(panel.stats)
    panel.norm_box.setCurrentText("input variances")
    by_input = dict(panel.stats)
    title = "full image (subsampled)"
    v = diag.image_by_input[np.isfinite(diag.image_by_input)]
    assert by_input[title].std == pytest.approx(float(np.std(v)))
    assert by_diff[title] != by_input[title]


def test_mask_overlay_shows_the_chosen_planes(qtbot, demo_window: MainWindow) -> None:
    demo_window.readout.plane_boxes[MaskPlane.DETECTED].setChecked(True)
    overlay = demo_window.area.panels["difference"].mask_item.image
    mask = demo_window.outcome.result.difference.mask
    assert overlay is not None
    np.testing.assert_array_equal(overlay[..., 3] > 0, (mask & int(MaskPlane.DETECTED)) != 0)
    demo_window.readout.plane_boxes[MaskPlane.DETECTED].setChecked(False)
    assert demo_window.area.panels["difference"].mask_item.image is None


def test_save_all_outputs_writes_the_run_files_and_verdicts(
    qtbot, demo_window: MainWindow, tmp_path: Path
) -> None:
    out = tmp_path / "saved"
    finish(qtbot, demo_window, "save", lambda: demo_window.saver.save_outputs(out))
    names = {p.name for p in out.iterdir()}
    assert {"difference.fits", "diasources.ecsv", "config.toml", "verdicts.json"} <= names
    # the warnings the window showed, the reader's among them, are the metadata's
    outcome = demo_window.outcome
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["warnings"] == [*outcome.result.warnings, *outcome.read_notes]
    png = tmp_path / "view.png"
    demo_window.saver.save_png(png)
    assert png.stat().st_size > 1000
    kernel = demo_window.tabs.kernel_panel  # its tab never opened: drawn for the file
    demo_window.saver.save_png(tmp_path / "kernel.png", kernel)
    assert kernel.mosaic.image is not None


def test_cutouts_share_levels_mark_the_centre_and_label_their_range(qtbot) -> None:
    from diffviewer.gui.panels import CutoutPanel

    panel = CutoutPanel()
    qtbot.addWidget(panel)
    yy, xx = np.mgrid[:31, :31]
    star = np.exp(-((xx - 15.3) ** 2 + (yy - 14.8) ** 2) / 4.5)
    cutouts = {
        "science": (100.0 + 5000.0 * star).astype(np.float32),
        "template": (100.0 + 3000.0 * star).astype(np.float32),
        "difference": (2000.0 * star).astype(np.float32),
    }
    cmaps = {"science": "gray", "template": "gray", "difference": "coolwarm"}
    panel.set_data(cutouts, cmaps, (15.3, 14.8), "a source")
    # science and template share levels up to the brighter peak: the star is not clipped
    assert panel.levels["science"] == panel.levels["template"]
    assert panel.levels["science"][1] == pytest.approx(float(cutouts["science"].max()))
    lo, hi = panel.levels["difference"]
    assert lo == -hi and hi == pytest.approx(float(cutouts["difference"].max()))
    assert panel.items["score"].image is None  # no score: cleared
    assert panel.items["science"].levels == pytest.approx(panel.levels["science"])
    # ticks frame the source position without covering it
    x, y = panel.ticks["difference"].getData()
    assert np.mean(x) == pytest.approx(15.3) and np.mean(y) == pytest.approx(14.8)
    assert np.min(np.hypot(x - 15.3, y - 14.8)) > 2.0
    assert f"{hi:.3g}" in panel.labels["difference"].text
    # one stretch for all four; changing it redraws with the same levels
    panel.stretch_box.setCurrentText("linear")
    np.testing.assert_array_equal(
        panel.items["difference"].lut, display.make_lut("linear", "coolwarm", symmetric=True)
    )
    assert panel.levels["difference"] == (lo, hi)


def test_ab_blink_alternates_the_two_differences(qtbot) -> None:
    from diffviewer.gui.diagnostic_panels import ABPanel, RunView

    panel = ABPanel()
    qtbot.addWidget(panel)
    a, b = np.zeros((8, 8), np.float32), np.ones((8, 8), np.float32)
    panel.set_runs(
        RunView(a, (-1.0, 1.0), "A", {"noise ratio": 1.0}),
        RunView(b, (-2.0, 2.0), "B", {"noise ratio": 1.5}),
    )
    assert panel.metric_cells("noise ratio") == ("1", "1.5")
    panel.blink_timer.setInterval(10)
    with qtbot.waitSignal(panel.blink_timer.timeout, timeout=5000):
        panel.blink_button.setChecked(True)
    assert panel.shown() == "B" and panel.a.data is b
    assert panel.a.levels() == (-1.0, 1.0)  # B in A's levels
    assert panel.a.title_text == "B: B (blinking)"
    panel.blink_button.setChecked(False)
    assert panel.shown() == "A" and panel.a.data is a
    # the titles as before the blink (audit: A's stayed "A: current run (blink)", its
    # digest lost)
    assert (panel.a.title_text, panel.b.title_text) == ("A: A", "B: B")


def test_dipole_segments_join_the_lobes_of_dipoles_only() -> None:
    from astropy.table import Table

    from diffviewer.gui.content import dipole_segments

    cat = Table(
        {
            "is_dipole": [True, False, True],
            "pos_x": [1.0, np.nan, 5.0],
            "pos_y": [2.0, np.nan, 6.0],
            "neg_x": [3.0, np.nan, np.nan],
            "neg_y": [4.0, np.nan, 8.0],
        }
    )
    seg = dipole_segments(cat)  # the third has a missing lobe: no segment
    np.testing.assert_array_equal(seg, [[1.0, 2.0], [3.0, 4.0]])


def test_a_chosen_level_mode_survives_a_rerun(qtbot, demo_window: MainWindow) -> None:
    panel = demo_window.area.panels["science"]
    finish(qtbot, demo_window, "levels:science", lambda: panel.levels_box.setCurrentText("minmax"))
    finish(qtbot, demo_window, "levels:science", demo_window.run)
    assert panel.settings.levels == "minmax"
    assert panel.levels()[1] == pytest.approx(float(panel.data.max()))


def test_the_ab_display_menu_shows_both_runs_at_as_display(qtbot, demo_window: MainWindow) -> None:
    # audit: A's levels stayed at +-53.47 whatever mode was chosen (data -303..1256): the
    # A/B views' settings were connected to nothing; and B had a menu of its own
    window = demo_window
    window.params.set_value("detection", "threshold", 8.0)
    run(qtbot, window)
    ab = window.tabs.ab_panel
    window.tabs.setCurrentWidget(ab)
    assert ab.b.data is not None and ab.b.display_button.isHidden()
    zscale = ab.a.levels()
    finish(qtbot, window, "levels:A/B", lambda: ab.a.levels_box.setCurrentText("minmax"))
    data = ab.a.data
    top = float(np.nanmax(np.abs(data)))  # symmetric, as the difference is by default
    assert ab.a.levels() == (pytest.approx(-top), pytest.approx(top)) and top > zscale[1]
    assert ab.b.levels() == ab.a.levels()  # one level computation, for both
    ab.a.stretch_box.setCurrentText("asinh")
    assert ab.b.settings == ab.a.settings
    np.testing.assert_array_equal(ab.b.image.lut, ab.a.image.lut)
    # the mode chosen for A is kept for the next run's A
    window.params.set_value("detection", "threshold", 9.0)
    finish(qtbot, window, "levels:A/B", window.run)
    assert ab.a.data is not data and ab.a.settings.levels == "minmax"
    assert ab.a.levels()[1] == pytest.approx(float(np.nanmax(np.abs(ab.a.data))))
    assert ab.b.levels() == ab.a.levels()


def test_catalog_filters_by_sign_snr_flags_and_sky(qtbot, demo_window: MainWindow) -> None:
    cat = demo_window.review.catalog
    dia = demo_window.outcome.result.diasources
    detected = ~np.asarray(dia["sky_source"], bool)  # sky sources are hidden by default
    snr, flagged = np.asarray(dia["snr"]), np.asarray(dia["flagged"], bool)
    assert cat.proxy.rowCount() == int(np.sum(detected))
    cat.sign_box.setCurrentText("positive")
    assert cat.proxy.rowCount() == int(np.sum((np.asarray(dia["sign"]) > 0) & detected))
    # with the sky sources shown, "negative" lists the negative detections only: the
    # sky sources' sign is 0 (they were all listed as negative: 102 rows for 2)
    cat.sky_box.setChecked(True)
    cat.sign_box.setCurrentText("negative")
    assert cat.proxy.rowCount() == int(np.sum(np.asarray(dia["sign"]) < 0))
    cat.sky_box.setChecked(False)
    cat.sign_box.setCurrentText("all")
    cat.snr_box.setValue(8.0)
    assert cat.proxy.rowCount() == int(np.sum((np.abs(snr) >= 8.0) & detected))
    cat.snr_box.setValue(0.0)
    cat.flag_box.setChecked(True)
    assert cat.proxy.rowCount() == int(np.sum(~flagged & detected))
    # sorting by S/N puts the largest first when descending (sorted on values, not text)
    col = cat.model.columns.index("snr")
    cat.view.sortByColumn(col, Qt.SortOrder.DescendingOrder)
    first = cat.proxy.index(0, col).data(Qt.ItemDataRole.UserRole)
    assert first == pytest.approx(float(np.max(snr[~flagged & detected])))
    shown = [cat.proxy.index(r, col).data(Qt.ItemDataRole.UserRole) for r in range(5)]
    assert shown == sorted(shown, reverse=True)


def test_a_filter_hiding_the_selected_source_selects_none(qtbot, demo_window: MainWindow) -> None:
    cat, review, area = demo_window.review.catalog, demo_window.review, demo_window.area
    dia = demo_window.outcome.result.diasources
    detected = ~np.asarray(dia["sky_source"], bool)
    positive = int(dia["id"][np.flatnonzero((np.asarray(dia["sign"]) > 0) & detected)[0]])
    demo_window.select_source(positive)
    centre = area.view_centre()
    cat.sign_box.setCurrentText("positive")  # still shown: still selected, nothing moves
    assert review.selected == positive and cat.selected_source() == positive
    cat.sign_box.setCurrentText("negative")  # hidden: no other source takes its place
    assert cat.selected_source() is None and review.selected is None
    assert area.view_centre() == centre
    assert review.cutouts.items["difference"].image is None
    assert "hidden by the catalog filter" in demo_window.message.whole


def test_mosaic_click_maps_the_cell_to_its_image_position(qtbot, demo_window: MainWindow) -> None:
    panel = demo_window.tabs.kernel_panel
    demo_window.tabs.setCurrentWidget(panel)
    cell = panel._cell
    with qtbot.waitSignal(panel.centre_requested, timeout=1000) as blocker:
        panel._on_mosaic_click(Click(2 * cell + cell / 2, 5 * cell + cell / 2))  # column 2, row 5
    grid = panel._grid
    assert blocker.args == [pytest.approx(grid[5 * 7 + 2, 0]), pytest.approx(grid[5 * 7 + 2, 1])]
    cx, cy = demo_window.area.view_centre()
    assert (cx, cy) == (
        pytest.approx(blocker.args[0], abs=0.5),
        pytest.approx(blocker.args[1], abs=0.5),
    )


def test_the_histogram_spans_the_levels_so_the_sky_is_readable(qtbot) -> None:
    area = ImageArea([("science", "S")])
    qtbot.addWidget(area)
    panel = area.panels["science"]
    rng = np.random.default_rng(0)
    data = rng.normal(500.0, 20.0, (300, 300)).astype(np.float32)
    data[100:103, 100:103] = 60_000.0  # a saturated star sets the data's maximum
    panel.set_image(data, (440.0, 560.0))
    assert not len(panel.hist.plot.getData()[0])  # on demand: not computed while hidden
    panel.hist_box.setChecked(True)
    x, counts = panel.hist.plot.getData()
    # bins from 440 - 60 to 560 + 60 (margin: half the level width each side), not to 60000
    assert x[0] == pytest.approx(380.0) and x[-1] < 620.0
    # every sky pixel is within 380-620 (+-6 sigma); only the 9 star pixels fall outside
    assert counts.sum() == 300 * 300 - 9
    assert panel.hist.getLevels() == pytest.approx((440.0, 560.0))
    panel.set_levels((0.0, 1000.0))
    x, _ = panel.hist.plot.getData()
    assert x[0] == pytest.approx(-500.0)


def test_the_kernel_maps_keep_their_height_and_the_description_scrolls(qtbot) -> None:
    # audit, GOTO at 1280 x 720: the Kernel tab is ~725 x 330 px, and the description's
    # 11 wrapped lines squeezed the mosaic, kernel-sum and centroid maps to ~10 px (their
    # colour bars' labels on top of each other) while the description was cut
    from diffviewer.gui.diagnostic_panels import MAPS_MIN_HEIGHT, KernelPanel

    panel = KernelPanel()
    qtbot.addWidget(panel)
    panel.resize(725, 330)
    rng = np.random.default_rng(2)
    panel.set_data(
        mosaic=rng.normal(0.0, 1.0, (35, 35)),
        grid=np.zeros((49, 6)),
        n_grid=7,
        cell=5,
        sum_map=1.0 + 0.01 * rng.random((16, 16)),
        shift_map=0.1 * rng.random((16, 16)),
        background_map=rng.normal(0.0, 1.0, (16, 16)),
        unit="ct",
        basis=rng.normal(0.0, 1.0, (50, 9, 9)),
        info=" ".join(["kernel sum mean 1.0114 +- 0.0022 over the kernel stars;"] * 24),
    )
    panel.show()
    qtbot.waitExposed(panel)
    qtbot.wait(50)
    assert panel.canvas.height() >= MAPS_MIN_HEIGHT
    for box in (panel.mosaic_box, panel.sum_box, panel.shift_box, panel.background_box):
        assert box.height() >= 0.6 * MAPS_MIN_HEIGHT
    for bar in panel.bars.values():
        assert bar.height() >= 0.6 * MAPS_MIN_HEIGHT
    # the whole description is there to read, by scrolling
    assert panel.details.verticalScrollBar().maximum() > 0
    assert panel.info.height() >= panel.info.heightForWidth(panel.info.width())


def test_the_residual_normalisation_box_holds_its_longest_name(qtbot) -> None:
    # audit: at 1280 x 720 the box read "differenc": sized when first shown, before a run
    from diffviewer.gui.diagnostic_panels import ResidualPanel

    panel = ResidualPanel()
    qtbot.addWidget(panel)
    panel.show()  # the tab opened before any run: no names yet
    qtbot.waitExposed(panel)
    qtbot.wait(50)  # laid out, the box sized
    values = np.random.default_rng(3).normal(0.0, 1.0, 100)
    panel.set_data([("own", {"difference variance": values, "input variances": values})])
    qtbot.wait(10)
    box = panel.norm_box
    assert box.width() > box.fontMetrics().horizontalAdvance("difference variance")


def test_filters_mask_planes_and_reset_say_what_they_do(qtbot, demo_window: MainWindow) -> None:
    # audit: no tooltip on the mask-plane boxes, the catalog's sign and dipoles boxes,
    # its |S/N| box, "hide flagged", "Reset to defaults"
    from diffviewer.exposure import PLANE_MEANINGS

    boxes = demo_window.readout.plane_boxes
    assert set(boxes) == set(MaskPlane)
    for plane, box in boxes.items():
        assert box.toolTip() == f"{plane.name}: {PLANE_MEANINGS[plane]}"
    cat = demo_window.review.catalog
    assert "template" in cat.sign_box.toolTip() and "lobe" in cat.dipole_box.toolTip()
    assert "S/N" in cat.snr_box.toolTip() and "saturated" in cat.flag_box.toolTip()
    assert "Run" in demo_window.params.reset_button.toolTip()


def test_the_profile_axis_says_its_unit(qtbot, demo_window: MainWindow) -> None:
    # audit: the profile plot's y axis had no unit
    dia = demo_window.outcome.result.diasources
    source = int(dia["id"][int(np.argmax(np.asarray(dia["snr"], float)))])
    demo_window.select_source(source)
    unit = str(dia["psf_flux"].unit)  # the catalog's fluxes' unit: the difference's
    axis = demo_window.review.cutouts.profile.getAxis("left")
    assert axis.labelText == f"difference [{unit}]"


def test_residual_histograms_switch_to_a_log_density_axis(qtbot) -> None:
    from diffviewer.gui.diagnostic_panels import ResidualPanel

    panel = ResidualPanel()
    qtbot.addWidget(panel)
    values = np.random.default_rng(1).normal(0.0, 1.0, 4000)
    panel.set_data([("own", {"difference variance": values})])
    assert not panel.plots[0].ctrl.logYCheck.isChecked()
    panel.log_box.setChecked(True)
    plot = panel.plots[0]  # redrawn: new plots
    assert plot.ctrl.logYCheck.isChecked()
    # the axis runs from half a count per bin (bin 0.125 wide) to twice the peak density
    lo, hi = plot.viewRange()[1]
    assert lo == pytest.approx(np.log10(0.5 / (4000 * 0.125)))
    assert hi == pytest.approx(np.log10(2 * 0.4), abs=0.05)  # N(0, 1) peaks at 0.399
    assert panel.stats["own"].std == pytest.approx(1.0, abs=0.05)  # stats unchanged


def test_kernel_sum_title_says_constant_when_the_sum_does_not_vary(qtbot) -> None:
    from diffviewer.gui.diagnostic_panels import KernelPanel

    panel = KernelPanel()
    qtbot.addWidget(panel)
    grid = np.zeros((4, 6))
    grid[:, 2] = 0.9934
    args = dict(
        mosaic=np.zeros((10, 10)),
        grid=grid,
        n_grid=2,
        cell=5,
        shift_map=np.zeros((4, 4)),
        background_map=np.zeros((4, 4)),
        unit="ct",
        basis=np.zeros((1, 3, 3)),
        info="",
    )
    panel.set_data(sum_map=np.full((4, 4), 0.9934), **args)
    assert panel.sum_title.text.endswith("constant, 0.9934")
    panel.set_data(sum_map=np.linspace(0.98, 1.01, 16).reshape(4, 4), **args)
    assert "0.9800 to 1.0100" in panel.sum_title.text


def test_the_stamp_differences_share_symmetric_levels(qtbot) -> None:
    from diffviewer.gui.panels import StampPanel

    panel = StampPanel()
    qtbot.addWidget(panel)
    rng = np.random.default_rng(1)
    own = rng.normal(scale=1.0, size=(21, 21)).astype(np.float32)
    spatial = (5.0 * own).astype(np.float32)  # the worse subtraction: five times the residual
    kernel = rng.normal(size=(11, 11)).astype(np.float32)
    images = {
        "diff (own kernel)": own,
        "diff (spatial)": spatial,
        "own kernel": kernel,
        "spatial kernel": kernel,
    }
    panel.set_data(images, "a stamp")
    lo, hi = panel.items["diff (own kernel)"].levels
    # one stretch for both: the own kernel's difference is not drawn at its own min/max
    assert panel.items["diff (spatial)"].levels == pytest.approx((lo, hi))
    assert lo == pytest.approx(-hi) and hi > float(np.abs(own).max())


def _shown_area(qtbot) -> ImageArea:
    """A shown image area of science, matched and difference (noise, 128 x 160 px)."""
    area = ImageArea([("science", "S"), ("matched", "M"), ("difference", "D")])
    qtbot.addWidget(area)
    area.resize(900, 500)
    area.show()
    qtbot.waitExposed(area)
    rng = np.random.default_rng(0)
    for k, panel in enumerate(area.panels.values()):
        panel.set_image(rng.normal(size=(128, 160)).astype(np.float32), (-1.0 - k, 1.0 + k))
    return area


def _zoom(view) -> float:
    """Screen pixels per image pixel of a view box."""
    (x0, x1), _ = view.viewRange()
    return float(view.width()) / (x1 - x0)


def test_grid_blink_round_trips_keep_the_zoom_and_centre(qtbot) -> None:
    area = _shown_area(qtbot)
    area.set_zoom(3.0)
    area.centre_on(60.0, 70.0)
    for _ in range(3):
        area.set_mode("blink")
        qtbot.wait(20)
        assert _zoom(area.blink.view) == pytest.approx(3.0, rel=0.02)
        assert area.blink.view_centre() == (pytest.approx(60, abs=0.5), pytest.approx(70, abs=0.5))
        area.set_mode("grid")
        qtbot.wait(20)
        assert area.zoom() == pytest.approx(3.0, rel=0.02)
        assert area.view_centre() == (pytest.approx(60, abs=0.5), pytest.approx(70, abs=0.5))


def test_blinked_frames_share_levels_and_the_blink_panel_keeps_its_display(qtbot) -> None:
    area = _shown_area(qtbot)
    area.set_mode("blink")
    blink = area.blink
    blink.cmap_box.setCurrentText("inferno")
    blink.stretch_box.setCurrentText("asinh")
    lut = blink.image.lut.copy()
    for _ in range(3):
        # DS9's lock scale: every frame at the first frame's (the science view's) levels
        assert blink.levels() == area.panels["science"].levels()
        assert (blink.settings.cmap, blink.settings.stretch) == ("inferno", "asinh")
        np.testing.assert_array_equal(blink.image.lut, lut)
        area.step_blink()
    blink.hist.setLevels(-5.0, 5.0)  # levels dragged on the blink panel's histogram
    blink.hist.sigLevelChangeFinished.emit(blink.hist)
    area.step_blink()
    assert blink.levels() == pytest.approx((-5.0, 5.0))


def test_leaving_blink_mode_stops_the_blink_and_unchecks_its_button(
    qtbot, demo_window: MainWindow
) -> None:
    demo_window.menus.blink_action.trigger()
    area = demo_window.area
    assert area.mode == "blink" and area.blink_timer.isActive()
    assert demo_window.menus.blink_action.isChecked()
    area.set_mode("grid")
    assert not area.blink_timer.isActive() and not demo_window.menus.blink_action.isChecked()


def test_the_softening_row_shows_only_with_the_asinh_stretch(qtbot) -> None:
    area = _shown_area(qtbot)
    panel = area.panels["science"]
    label = panel.soft_box.parentWidget().layout().labelForField(panel.soft_box)
    panel.stretch_box.setCurrentText("linear")
    assert panel.soft_box.isHidden() and label.isHidden()  # the whole row, label too
    panel.stretch_box.setCurrentText("asinh")
    assert not panel.soft_box.isHidden() and not label.isHidden()


def _fits_in(canvas: pg.GraphicsLayoutWidget, item: pg.GraphicsObject) -> bool:
    """Whether a graphics item lies within its canvas's visible width."""
    rect = item.sceneBoundingRect()
    return rect.left() >= -1 and rect.right() <= canvas.viewport().width() + 1


def test_kernel_and_residual_tabs_fit_a_1280_px_screen(qtbot, demo_window: MainWindow) -> None:
    demo_window.resize(1280, 720)
    kernel, residuals = demo_window.tabs.kernel_panel, demo_window.tabs.residual_panel
    for panel in (kernel, residuals):
        demo_window.tabs.setCurrentWidget(panel)
        qtbot.waitExposed(panel)
        qtbot.wait(100)
    # each title within its own column: none runs into its neighbour
    boxes = (kernel.mosaic_box, kernel.sum_box, kernel.shift_box, kernel.background_box)
    layout = kernel.canvas.ci.layout
    for col, box in zip((0, 2, 4, 6), boxes, strict=True):
        title = layout.itemAt(0, col)
        text = title.item.boundingRect().width()
        assert text <= title.geometry().width() + 1, title.text
        assert _fits_in(kernel.canvas, box)
    # both columns of histograms, their titles too, inside the canvas
    assert len(residuals.plots) == 4
    for plot in residuals.plots:
        assert _fits_in(residuals.canvas, plot)
        assert plot.titleLabel.item.boundingRect().width() <= plot.width() + 1


def test_the_kernel_mosaics_colour_bar_reads_the_weight_its_colour_shows(
    qtbot, demo_window: MainWindow
) -> None:
    # The mosaic is drawn asinh; its bar was drawn linear, so the colour of 0.1 of the
    # top weight was labelled 0.29 of it (audit, GOTO: x2.0-3.8 over the weights).
    panel = demo_window.tabs.kernel_panel
    demo_window.tabs.setCurrentWidget(panel)
    lo, hi = panel.mosaic.levels
    lut = np.asarray(panel.mosaic.lut)
    bar = panel.bars["mosaic"].colorMap()
    for weight in (0.01, 0.1, 0.3, 0.7):
        for value in (hi * weight, lo * weight):
            share = (value - lo) / (hi - lo)
            shown = lut[round(share * (len(lut) - 1))][:3].astype(int)
            labelled = np.asarray(bar.map(np.array([share]), mode="byte"))[0][:3].astype(int)
            # the bar interpolates between its stops: a few levels of 255
            assert np.abs(shown - labelled).max() <= 6, (weight, shown, labelled)


def test_the_kernel_stars_own_sums_are_shown_on_the_sum_map(qtbot, demo_window: MainWindow) -> None:
    # LSST's plotKernelSpatialModel: each kernel star's own kernel sum against the
    # spatial model's at the star. A dot per GOOD or CONTROL star, at its place on the
    # map.
    panel = demo_window.tabs.kernel_panel
    demo_window.tabs.setCurrentWidget(panel)
    result = demo_window.outcome.result
    table = result.kernel.candidates
    used = np.isin(np.asarray(table["status"]).astype(str), ("GOOD", "CONTROL"))
    used &= np.isfinite(np.asarray(table["kernel_sum"], float))
    xs, ys = panel.star_sums.getData()
    step = result.subtraction.kernel_sum_step
    np.testing.assert_allclose(
        np.sort(xs), np.sort((np.asarray(table["x"], float)[used] - step / 2) / step)
    )
    assert len(ys) == np.count_nonzero(used) > 0
    points = panel.star_sums.points()
    own = np.array([p.data()[0] for p in points])
    np.testing.assert_allclose(np.sort(own), np.sort(np.asarray(table["kernel_sum"], float)[used]))
    # each dot is coloured by its own sum less the model's in its errors: a star the
    # model matches is the middle (white) of the difference's colours, one 5 or more
    # above it the end of the table
    from diffviewer import display
    from diffviewer.gui.diagnostic_panels import PULL_LEVELS
    from diffviewer.gui.panels import SIGNED

    lut = display.make_lut("linear", SIGNED.cmap, symmetric=True)
    model = np.array([p.data()[2] for p in points])
    pulls = (own - model) / np.array([p.data()[1] for p in points])
    for point, pull in zip(points, pulls, strict=True):
        share = min(max((pull - PULL_LEVELS[0]) / (PULL_LEVELS[1] - PULL_LEVELS[0]), 0.0), 1.0)
        expected = lut[round(share * (len(lut) - 1))][:3].astype(int)
        shown = np.array(point.brush().color().getRgb()[:3])
        assert np.abs(shown - expected).max() <= 2
    np.testing.assert_allclose(
        model,
        result.kernel.solution.kernel_sum(
            np.asarray(table["x"], float)[used], np.asarray(table["y"], float)[used]
        ),
    )
    within = int(np.sum(np.abs(pulls) <= 3))
    assert f"{within} of {len(points)} within 3" in panel.info.text()


def test_the_background_map_is_the_subtracted_background_live_and_saved(
    qtbot, demo_window: MainWindow, tmp_path: Path
) -> None:
    # The fourth kernel map: the differential background the fit subtracted, at the
    # kernel-sum map's samples (KSUMMAP's grid), in the difference's unit; its title's
    # range is the samples'. A run read back from its folder (kernel.fits' BGCOEFFS)
    # shows the same.
    from diffviewer.engine.subtract import background_at, scaled_background, science_scale
    from diffviewer.gui import content
    from diffviewer.gui.diagnostic_panels import KernelPanel
    from diffviewer.io import demo_pair
    from diffviewer.outputs import write_outputs
    from diffviewer.results import read_saved_run

    result = demo_window.outcome.result
    fit, step = result.kernel, result.subtraction.kernel_sum_step
    ny, nx = result.science.shape
    xs = np.minimum(np.arange(0, nx, step) + step / 2.0, nx - 1)
    ys = np.minimum(np.arange(0, ny, step) + step / 2.0, ny - 1)
    gx, gy = np.meshgrid(xs, ys)
    want = fit.solution.background(gx.ravel(), gy.ravel()).reshape(gx.shape)
    want = want * science_scale(fit)
    views = content.kernel_views(result)
    assert views["background_map"].shape == result.subtraction.kernel_sum_map.shape
    np.testing.assert_allclose(views["background_map"], want, rtol=1e-12, atol=1e-12)
    # ... which is the plane the difference had taken out, at those pixels (either way
    # round: times the photometric scale when the science is convolved)
    assert step % 2 == 0  # the demo's samples sit on pixels
    iy, ix = gy.astype(int), gx.astype(int)
    for way in (fit, dataclasses.replace(fit, convolved="science")):
        np.testing.assert_allclose(
            background_at(way, gx, gy), scaled_background(way)[iy, ix], rtol=1e-5, atol=1e-5
        )
    np.testing.assert_allclose(
        views["background_map"], result.subtraction.background[iy, ix], rtol=1e-5, atol=1e-5
    )
    panel = demo_window.tabs.kernel_panel
    demo_window.tabs.setCurrentWidget(panel)
    lo, hi = f"{want.min():.3f}", f"{want.max():.3f}"
    said = f"{lo} to {hi}" if lo != hi else f"constant, {lo}"  # the demo's: -0.053
    assert panel.background_title.text == f"Background<br>{said} ct"
    np.testing.assert_allclose(panel.background_map.image, want, rtol=1e-6, atol=1e-6)
    levels = panel.bars["background"].levels()
    assert levels[0] == pytest.approx(want.min()) and levels[1] >= want.max()
    # read back from its saved folder
    out = tmp_path / "saved"
    write_outputs(result, out, list(demo_pair()))
    run = read_saved_run(out)
    saved = content.kernel_views(run)
    np.testing.assert_allclose(saved["background_map"], want, rtol=1e-12, atol=1e-12)
    assert saved["unit"] == views["unit"] == "ct"
    again = KernelPanel()
    qtbot.addWidget(again)
    again.set_data(**saved)
    assert again.background_title.text == panel.background_title.text


def test_a_config_without_limits_is_shown_as_it_is(qtbot) -> None:
    # A review: a saved run's saturation_level = 5e12 (a field without a declared limit)
    # was clamped to the panel's bound of 1e12, and the config opened read as edited.
    panel = ParameterPanel()
    qtbot.addWidget(panel)
    # Nor does the bound size the field: 1e300's short text narrowed the unbounded fields,
    # and the panel's rows wrapped around them (snr_min and snr_max below their labels).
    widths = {
        editor.sizeHint().width()
        for section in SECTION_TYPES
        for field in field_specs(section)
        if isinstance(editor := panel.editor(section, field.name), FloatSpinBox)
    }
    assert len(widths) == 1
    config = from_dict({"candidates": {"saturation_level": 5e12}})
    panel.set_config(config)
    assert panel.config() == config and not panel.is_modified()
