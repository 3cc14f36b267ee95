"""The A/B tab's baseline: a run kept as A stays A for the later runs until it is released
or another pair is opened (pytest-qt, offscreen, real runs of the demo pair)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diffviewer import display
from diffviewer.gui.model import Pair, RunOutcome
from diffviewer.gui.window import MainWindow, isolated_window
from diffviewer.synthetic import make_pair
from tests.gui.helpers import demo, finish, run


def _shows(window: MainWindow, side: str, run_: RunOutcome) -> None:
    """Assert the A/B view ``side`` ("a" or "b") shows ``run_``'s difference."""
    np.testing.assert_array_equal(
        getattr(window.tabs.ab_panel, side).data,
        display.display_array(run_.result.difference.image),
    )


def _rows(window: MainWindow) -> list[tuple[str, ...]]:
    """The A/B panel's parameters that differ: (name, A value, B value)."""
    table = window.tabs.ab_panel.params
    return [tuple(table.item(r, c).text() for c in range(3)) for r in range(table.rowCount())]


def _tab_text(window: MainWindow) -> str:
    return window.tabs.tabText(window.tabs.indexOf(window.tabs.ab_panel))


#: A saved run's folder of a night's long name (it gives way at 1280 x 720).
LONG_FOLDER = "2026-12-07_goto_field_T0123_night_review_long_folder_name_for_the_kept_run"


@contextlib.contextmanager
def _saved_run_at_1280_x_720(
    qtbot: Any, demo_window: MainWindow, tmp_path: Path
) -> Iterator[tuple[MainWindow, Path]]:
    """A 1280 x 720 window showing the demo run read back from a folder of
    :data:`LONG_FOLDER`, and that folder; its jobs shut down after."""
    from diffviewer.gui.saved import open_saved
    from diffviewer.io import demo_pair
    from diffviewer.outputs import write_outputs

    folder = tmp_path / LONG_FOLDER
    write_outputs(demo_window.outcome.result, folder, list(demo_pair()))
    small = isolated_window(tmp_path / "small", (1280, 720))
    qtbot.addWidget(small)
    try:
        small.runner = demo_window.runner
        finish(qtbot, small, "run", lambda: open_saved(small, folder))
        yield small, folder
    finally:
        small.jobs.shutdown()


def test_a_kept_run_stays_a_for_later_runs_until_released(qtbot, demo_window: MainWindow) -> None:
    window = demo_window
    ab = window.tabs.ab_panel
    window.tabs.setCurrentWidget(ab)
    reference = window.outcome
    ref_digest = reference.result.config.digest()
    default_threshold = str(reference.result.config.detection.threshold)
    # a pair's first run: no A yet, the run on screen is B (at its own levels)
    assert ab.a.data is None and ab.a.title_text == "A: (no previous run)"
    _shows(window, "b", reference)
    assert not ab.blink_button.isEnabled() and not ab.keep_button.isEnabled()
    assert ab.keep_b_button.isEnabled() and window.menus.keep_action.isEnabled()
    # Run > Keep this run as A: it is A at once, B waits for the next run
    window.menus.keep_action.trigger()
    assert (
        window.kept is reference
        and ab.keep_button.isChecked()
        and _tab_text(window) == "A/B (A kept)"
    )
    assert ab.a.title_text == f"A: kept run, config {ref_digest}"
    assert ab.b.data is None and ab.b.title_text == "B: (the next run)"
    _shows(window, "a", reference)
    assert not window.menus.keep_action.isEnabled() and window.menus.release_action.isEnabled()
    assert "kept as A" in window.message.whole
    # two more runs with changed parameters: A stays the kept run, B is the latest
    window.params.set_value("detection", "threshold", 8.0)
    run(qtbot, window)
    second = window.outcome
    window.params.set_value("detection", "threshold", 9.0)
    run(qtbot, window)
    latest = window.outcome
    assert latest.result.config.detection.threshold == 9.0
    assert window.kept is reference and window.previous is second
    assert ab.a.title_text == f"A: kept run, config {ref_digest}"
    assert ab.b.title_text == f"B: current run, config {latest.result.config.digest()}"
    _shows(window, "a", reference)
    _shows(window, "b", latest)
    assert _rows(window) == [("detection.threshold", default_threshold, "9.0")]
    assert _tab_text(window) == "A/B (A kept)" and ab.keep_button.isChecked()
    # released (Keep A unchecked on the tab): A is the previous run again
    ab.keep_button.click()
    assert window.kept is None and not ab.keep_button.isChecked() and _tab_text(window) == "A/B"
    assert ab.a.title_text == f"A: previous run, config {second.result.config.digest()}"
    _shows(window, "a", second)
    _shows(window, "b", latest)
    assert _rows(window) == [("detection.threshold", "8.0", "9.0")]
    assert window.menus.keep_action.isEnabled() and not window.menus.release_action.isEnabled()
    # Keep A keeps the run A shows (the previous one); the next run is compared with it
    ab.keep_button.click()
    assert window.kept is second and ab.keep_button.isChecked()
    assert ab.a.title_text == f"A: kept run, config {second.result.config.digest()}"
    window.params.set_value("detection", "threshold", 10.0)
    run(qtbot, window)
    _shows(window, "a", second)
    _shows(window, "b", window.outcome)
    # the window holds three runs: the kept one, the previous and the one on screen
    assert window.previous is latest and window.kept is second
    # another pair: nothing is kept, its first run has no A
    science = make_pair((160, 160), n_stars=40, seed=5, transients=[(80.0, 70.0, 3e4)])
    run(qtbot, window, Pair(science.science, science.template, "synthetic"))
    assert window.kept is None and window.previous is None
    assert not ab.keep_button.isChecked() and _tab_text(window) == "A/B"
    assert ab.a.data is None and ab.a.title_text == "A: (no previous run)"
    _shows(window, "b", window.outcome)
    assert not window.menus.release_action.isEnabled()


def test_keep_b_as_a_keeps_the_run_on_screen_with_a_level_mode_chosen_for_a(
    qtbot, demo_window: MainWindow
) -> None:
    window = demo_window
    ab = window.tabs.ab_panel
    window.tabs.setCurrentWidget(ab)
    first = window.outcome
    # A's display menu sets B's display while there is no A (levels of B's difference)
    finish(qtbot, window, "levels:A/B", lambda: ab.a.levels_box.setCurrentText("minmax"))
    top = float(np.nanmax(np.abs(ab.b.data)))
    assert ab.b.levels()[1] == pytest.approx(top)
    window.params.set_value("detection", "threshold", 8.0)
    run(qtbot, window)
    second = window.outcome
    # the run on screen; A's levels are computed again, on it, for the mode chosen
    finish(qtbot, window, "levels:A/B", ab.keep_b_button.click)
    assert window.kept is second and ab.b.data is None and ab.keep_button.isChecked()
    _shows(window, "a", second)
    window.params.set_value("detection", "threshold", 9.0)
    finish(qtbot, window, "levels:A/B", window.run)
    _shows(window, "a", second)
    _shows(window, "b", window.outcome)
    # both at the level mode chosen for A, computed on A (the kept run)
    assert ab.a.settings.levels == "minmax"
    assert ab.a.levels()[1] == pytest.approx(float(np.nanmax(np.abs(ab.a.data))))
    assert ab.b.levels() == ab.a.levels()
    # blinking shows B in A's view and A again when it stops
    ab.blink_button.click()
    ab.swap()
    assert ab.shown() == "B" and ab.a.title_text.startswith("B: current run")
    ab.blink_button.click()
    assert ab.shown() == "A" and ab.a.title_text.startswith("A: kept run")
    assert first is not window.kept


def test_keep_this_run_as_a_has_a_key_of_its_own(window: MainWindow) -> None:
    keys = [key for key, _ in window.menus.key_rows()]
    assert dict(window.menus.key_rows())["Ctrl+Shift+A"] == "Keep this run as A"
    shortcuts = [k for key in keys for k in key.split(", ")]
    assert len(shortcuts) == len(set(shortcuts))  # no key does two things


def test_a_long_saved_folder_name_gives_way_in_a_s_title_at_1280_x_720(
    qtbot, demo_window: MainWindow, tmp_path: Path
) -> None:
    # A review colleague found A's title cut at the right on a 1280 x 720 screen when A was
    # a saved run of a long folder name: its end and the config digest were lost. The
    # folder name gives way, shortened in the middle; the role and the digest stay, and
    # the title's tooltip holds the whole path.
    name = LONG_FOLDER
    with _saved_run_at_1280_x_720(qtbot, demo_window, tmp_path) as (small, folder):
        small.menus.keep_action.trigger()  # the saved run kept as A
        ab = small.tabs.ab_panel
        small.tabs.setCurrentWidget(ab)
        digest = small.outcome.result.config.digest()
        whole = f"A: kept saved run {name}, config {digest}"
        assert ab.a.title_text == whole
        title = ab.a.title

        def fits() -> None:
            assert title.fontMetrics().horizontalAdvance(title.text()) <= title.width()

        qtbot.waitUntil(fits)
        # ~285 px: "A: kept saved run " and ", config <digest>" alone take 275, so the
        # folder keeps its floor of 16 characters (its start and end) and the end gives way
        shown = title.text()
        assert "…" in shown and len(shown) < len(whole)
        assert shown.startswith("A: kept saved run 2026-12")
        folder_part = shown[len("A: kept saved run ") :].split(",")[0]
        assert len(folder_part) >= 14 and folder_part.endswith("_run")
        assert title.toolTip() == f"{whole}\n{folder}"
        # blinking says so after the folder, which still gives way first
        small.params.set_value("detection", "threshold", 8.0)
        finish(qtbot, small, "run", small.run)
        ab.blink_timer.setInterval(10)
        ab.blink_button.setChecked(True)

        def blinking_a() -> None:
            assert ab.shown() == "A" and ab.a.title_text == f"{whole} (blinking)"
            assert title.text().startswith("A: kept saved run 2026-12")
            assert "…" in title.text()
            fits()

        qtbot.waitUntil(blinking_a)
        ab.blink_button.setChecked(False)
        # a wider window (1920 x 1080): the folder's middle alone gives way
        small.resize(1920, 1080)
        qtbot.waitUntil(lambda: title.width() > 500)
        shown = title.text()
        assert shown.endswith(f"_kept_run, config {digest}") and "…" in shown
        assert shown.startswith("A: kept saved run 2026-12-07_goto")
        fits()


def test_the_keep_message_fits_the_status_bar_at_1280_x_720(
    qtbot, demo_window: MainWindow, tmp_path: Path
) -> None:
    # A review colleague found the status bar's message of Keep B as A cut at the right on
    # a 1280 x 720 screen when B was a saved run of a long folder name: 970 px of text in
    # the ~900 px the step and the progress bar leave, its end lost unmarked. The folder
    # name gives way in the middle as in A's title, the digest and the rest stay, and the
    # message's tooltip holds it whole; fitted again when its room narrows.
    from diffviewer.gui.overlays import marker_note

    name = LONG_FOLDER
    with _saved_run_at_1280_x_720(qtbot, demo_window, tmp_path) as (small, _):
        ab = small.tabs.ab_panel
        small.tabs.setCurrentWidget(ab)
        ab.keep_b_button.click()  # Keep B as A, on the saved run
        assert small.kept is small.outcome
        message = small.message
        digest = small.outcome.result.config.digest()
        whole = (
            f"A/B: kept as A: saved run {name}, config {digest}; later runs are compared with it"
        )
        assert message.whole == whole
        status = small.statusBar()
        permanent = (small.marker_note, small.step_label, small.progress)

        def fits() -> None:
            # the text drawn is as wide as the message's room at most, and that room ends
            # before the status bar's permanent widgets (and within the status bar)
            shown = message.text()
            width = message.fontMetrics().horizontalAdvance(shown)
            assert width <= message.contentsRect().width()
            right = message.mapTo(small, message.rect().topRight()).x()
            assert right < min(w.mapTo(small, w.rect().topLeft()).x() for w in permanent)
            assert message.geometry().right() <= status.width()
            assert shown != whole and "…" in shown and message.toolTip() == whole

        qtbot.waitUntil(fits)
        shown = message.text()
        # the folder gave way in its middle: its start and end, the digest and the rest stay
        assert shown.startswith("A/B: kept as A: saved run 2026-12-07_goto")
        assert shown.endswith(f"_kept_run, config {digest}; later runs are compared with it")
        # a narrower room (the markers' note of a crowded field): fitted again, the folder
        # at its floor of 16 characters and the end cut after it
        small.marker_note.setText(marker_note(200, 521))
        qtbot.waitUntil(lambda: message.text() != shown)
        fits()
        assert message.text().startswith("A/B: kept as A: saved run 2026-12")
        assert message.text().endswith("…")
        # released: a short message, shown whole, no tooltip
        small.menus.release_action.trigger()
        assert (
            message.text()
            == message.whole
            == ("A/B: A released; each run is compared with the previous one")
        )
        assert message.toolTip() == ""


def test_a_title_shows_whole_where_it_fits_and_gives_way_in_the_middle(qtbot) -> None:
    from diffviewer.gui.views import ElidedTitle

    title = ElidedTitle()
    qtbot.addWidget(title)
    title.show()
    qtbot.waitExposed(title)
    whole = "A: saved run a_very_long_folder_name_of_a_night, config 0123456789ab"
    title.set_title(whole, "a_very_long_folder_name_of_a_night", "/data/a_very_long")
    title.resize(2 * title.sizeHint().width(), 20)
    assert title.text() == whole and title.toolTip() == "/data/a_very_long"
    assert title.sizeHint().width() >= title.fontMetrics().horizontalAdvance(whole)
    # narrower: the folder name shortened in the middle, the rest whole
    metrics = title.fontMetrics()
    title.resize(
        metrics.horizontalAdvance("A: saved run a_very_…of_a_night, config 0123456789ab"), 20
    )
    text = title.text()
    assert "…" in text and len(text) < len(whole)
    assert text.startswith("A: saved run a_v") and text.endswith("ht, config 0123456789ab")
    assert metrics.horizontalAdvance(text) <= title.width()
    # narrower still: the folder keeps its first and last characters, the end gives way
    title.resize(metrics.horizontalAdvance("A: saved run a_very_…of_a_night, conf"), 20)
    text = title.text()
    assert text.startswith("A: saved run a_very") and "…a_night, " in text
    assert text.endswith("…") and metrics.horizontalAdvance(text) <= title.width()
    # no tooltip given: the whole title is the tooltip while it is shortened
    title.set_title(whole, "a_very_long_folder_name_of_a_night")
    assert title.toolTip() == whole
    # no part named: the whole title gives way in the middle
    title.set_title(whole)
    text = title.text()
    assert text.startswith("A: saved") and text.endswith("89ab") and "…" in text


def test_the_parameters_table_s_headers_are_whole_at_1280_x_720(
    qtbot, demo_window: MainWindow, tmp_path: Path
) -> None:
    # A review colleague found the parameters table's "parameter that differs" cut to
    # "ameter that dif" on a 1280 x 720 screen: its column is a third of the table. It
    # reads "parameter", and its tooltip says what the table lists.
    from PyQt6.QtCore import Qt
    from PyQt6.QtWidgets import QStyle

    small = isolated_window(tmp_path / "small", (1280, 720))
    qtbot.addWidget(small)
    try:
        small.runner = demo_window.runner
        run(qtbot, small, demo())
        small.params.set_value("detection", "threshold", 8.0)
        run(qtbot, small)  # A the first run, B this one: a parameter differs
        ab = small.tabs.ab_panel
        small.tabs.setCurrentWidget(ab)
        table = ab.params
        assert _rows(small)[0][0] == "detection.threshold"
        header = table.horizontalHeader()
        margin = header.style().pixelMetric(QStyle.PixelMetric.PM_HeaderMargin, None, header)
        texts = [table.horizontalHeaderItem(c).text() for c in range(3)]

        def whole() -> None:
            assert header.isVisible()
            for col, text in enumerate(texts):
                need = header.fontMetrics().horizontalAdvance(text) + 2 * margin
                assert need <= header.sectionSize(col), (text, need, header.sectionSize(col))

        qtbot.waitUntil(whole)
        assert texts == ["parameter", "A", "B"]
        tip = table.model().headerData(0, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole)
        assert tip.startswith("The parameters whose values differ between A and B")
    finally:
        small.jobs.shutdown()
