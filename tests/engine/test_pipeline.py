"""The pipeline as a whole: step order, progress, timings, cancellation, the result."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from diffviewer.config import SubtractionConfig
from diffviewer.engine.pipeline import run_subtraction
from diffviewer.engine.progress import CancelToken
from diffviewer.errors import Cancelled
from diffviewer.synthetic import make_pair

STEPS = [
    "warp",
    "kernel candidates",
    "psf",
    "kernel fit",
    "subtract",
    "decorrelate",
    "score",
    "detect",
    "measure",
    "diagnostics",
]


@pytest.fixture(scope="module")
def pair():
    """A small pair with one transient of S/N ~ 50 (flux 2e4 over a sky noise of ~32)."""
    return make_pair((256, 256), 150, seed=7, transients=[(128.3, 97.6, 2e4)])


def test_steps_report_in_order_and_are_timed(pair) -> None:
    calls: list[tuple[str, float]] = []
    result = run_subtraction(
        pair.science, pair.template, progress=lambda s, f: calls.append((s, f))
    )
    fractions = [f for _, f in calls]
    assert fractions[0] == 0.0 and fractions[-1] == pytest.approx(1.0)
    assert all(b >= a for a, b in itertools.pairwise(fractions)), "progress went back"
    seen = list(dict.fromkeys(s for s, _ in calls))
    assert seen == STEPS
    assert list(result.timings) == STEPS and all(t >= 0 for t in result.timings.values())
    # The transient is found, positive, where it was put.
    cat = result.diasources[~np.asarray(result.diasources["sky_source"], dtype=bool)]
    near = np.hypot(cat["x"] - 128.3, cat["y"] - 97.6) < 1.0
    assert near.sum() == 1 and cat["sign"][near][0] == 1
    assert result.config == SubtractionConfig()


@pytest.mark.parametrize("stop_at", ["kernel fit", "score", "measure"])
def test_cancel_raises_at_the_next_check(pair, stop_at: str) -> None:
    token = CancelToken()
    seen: list[str] = []

    def progress(step: str, fraction: float) -> None:
        seen.append(step)
        if step == stop_at:
            token.cancel()

    with pytest.raises(Cancelled, match=stop_at):
        run_subtraction(pair.science, pair.template, progress=progress, cancel=token)
    assert seen[-1] == stop_at, "no step may start after a cancel"


def test_inputs_are_left_untouched(pair) -> None:
    before = [a.copy() for a in (pair.science.image, pair.template.image, pair.template.mask)]
    run_subtraction(pair.science, pair.template)
    after = (pair.science.image, pair.template.image, pair.template.mask)
    assert all(np.array_equal(b, a) for b, a in zip(before, after, strict=True))
