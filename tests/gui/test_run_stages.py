"""What the window shows while a run goes on (pytest-qt, offscreen, the real engine).

Each image goes on screen as soon as its step has made it: the science when read, the
template after the warp, the difference once its pixels are final (after decorrelation),
all before the run's outcome; a re-run's images replace the last run's, and a cancelled
re-run puts the last run back.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from diffviewer import display
from diffviewer.gui.window import MainWindow
from tests.gui.helpers import RUN_TIMEOUT_MS, demo, run


@dataclasses.dataclass(frozen=True)
class Event:
    """A step starting, or an image put on screen while the run went on."""

    kind: str  # "step" or "shown"
    name: str  # the step, or the view
    data: np.ndarray | None = None  # the view's array just after the window showed it
    outcome: object = None  # the window's outcome at that moment
    running: bool = False  # whether the window said a run was under way
    markers: int = 0  # DIA markers drawn on the difference view
    status: str = ""  # the step label


def watch(window: MainWindow) -> list[Event]:
    """The run lane's step changes and shown images, in the order the window got them.

    Connected after the window's own slots, so each record sees what the window did.
    """
    events: list[Event] = []

    def on_progress(lane: str, job_id: int, step: str, fraction: float) -> None:
        if lane == "run" and not any(e.kind == "step" and e.name == step for e in events):
            events.append(Event("step", step))

    def on_partial(lane: str, job_id: int, views: dict) -> None:
        for name in views:
            events.append(
                Event(
                    "shown",
                    name,
                    window.area.panels[name].data,
                    window.outcome,
                    window.is_running() and window.progress.value() < 1000,
                    len(window.overlays.dia_items["difference"].points()),
                    window.step_label.text(),
                )
            )

    window.jobs.progress.connect(on_progress)
    window.jobs.partial.connect(on_partial)
    return events


def index(events: list[Event], kind: str, name: str) -> int:
    """Position of the first event of that kind and name."""
    return next(i for i, e in enumerate(events) if (e.kind, e.name) == (kind, name))


def test_inputs_show_before_the_subtraction_and_the_final_difference_before_the_outcome(
    qtbot, window: MainWindow
) -> None:
    events = watch(window)
    run(qtbot, window, demo())
    outcome = window.outcome
    result = outcome.result
    # the science and template are on screen before the subtraction step starts
    for name in ("science", "template"):
        assert index(events, "shown", name) < index(events, "step", "subtract")
    shown = events[index(events, "shown", "difference")]
    # the difference is on screen before scoring, detection and measurement, while the run
    # still says it is going, ...
    assert index(events, "shown", "difference") < index(events, "step", "score")
    assert shown.outcome is None and shown.running
    assert shown.status.endswith(": difference shown, sources to come")
    # ... and it is the final difference: the very array the outcome shows, whose values
    # are the measured (decorrelated) difference's, exactly (the same float32 pixels)
    assert shown.data is outcome.images["difference"]
    assert result.decorrelation is not None
    np.testing.assert_array_equal(shown.data, display.display_array(result.difference.image))
    # the outcome leaves the early images in place (not redrawn)
    assert window.area.panels["difference"].data is shown.data


def test_a_rerun_replaces_the_difference_early_and_a_cancelled_one_puts_it_back(
    qtbot, window: MainWindow
) -> None:
    run(qtbot, window, demo())
    first = window.outcome
    drawn = len(window.overlays.dia_items["difference"].points())
    assert drawn > 0
    # without decorrelation the difference is final right after the subtraction: other
    # pixels than the first run's
    window.params.set_value("decorrelation", "enabled", False)
    events = watch(window)
    run(qtbot, window)
    second = window.outcome
    shown = events[index(events, "shown", "difference")]
    assert shown.outcome is first and shown.running
    np.testing.assert_array_equal(shown.data, display.display_array(second.result.difference.image))
    assert not np.array_equal(shown.data, first.images["difference"])
    # the last run's markers left with its difference, the new ones came with the outcome
    assert shown.markers == 0 < len(window.overlays.dia_items["difference"].points())

    # cancelled once its difference is on screen: the last run is back, markers and all
    def cancel_at_difference(lane: str, job_id: int, views: dict) -> None:
        if "difference" in views:
            window.cancel()

    window.jobs.partial.connect(cancel_at_difference)
    window.params.set_value("decorrelation", "enabled", True)
    with qtbot.waitSignal(window.jobs.cancelled, timeout=RUN_TIMEOUT_MS):
        window.run()
    assert window.outcome is second
    assert window.area.panels["difference"].data is second.images["difference"]
    assert len(window.overlays.dia_items["difference"].points()) > 0
    assert window.step_label.text() == "cancelled"
