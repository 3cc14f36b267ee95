"""The A/B tab's baseline: a run kept as A stays A for the later runs until it is released
or another pair is opened (pytest-qt, offscreen, real runs of the demo pair)."""

from __future__ import annotations

import numpy as np
import pytest

from diffviewer import display
from diffviewer.gui.model import Pair, RunOutcome
from diffviewer.gui.window import MainWindow
from diffviewer.synthetic import make_pair
from tests.gui.helpers import finish, run


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
    assert "kept as A" in window.status.currentMessage()
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
