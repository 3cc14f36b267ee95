"""The benchmarks' shared detector at equal false peaks (``benchmarks/peer_metrics.py``).

The README's claim that diffviewer finds more faint transients than HOTPANTS at the
same number of false peaks rests on :func:`budget_threshold` and
:func:`found_at_budget`: these pin what they count.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import peer_metrics as pm


def test_the_threshold_lies_between_the_budgets_last_false_peak_and_the_next() -> None:
    heights = np.array([4.0, 9.0, 5.5, 7.0, 6.0])
    assert pm.budget_threshold(heights, 2) == 6.5  # 9 and 7 above, 6 below
    assert pm.budget_threshold(heights, 0) == 9.5  # above the highest
    # More budget than false peaks above the floor: the floor.
    assert pm.budget_threshold(heights, 5) == pm.FLOOR
    assert pm.budget_threshold(np.array([3.5, 4.0]), 1) == 3.75


@given(
    st.lists(st.floats(3.0, 50.0), min_size=1, max_size=40, unique=True),
    st.integers(0, 45),
)
def test_exactly_the_budget_of_false_peaks_stands_above_the_threshold(
    heights: list[float], budget: int
) -> None:
    values = np.array(heights)
    level = pm.budget_threshold(values, budget)
    assert level >= pm.FLOOR
    assert np.count_nonzero(values > level) == min(budget, np.count_nonzero(values > pm.FLOOR))


def test_injections_are_found_above_the_threshold_the_false_peaks_set() -> None:
    # Two injections of S/N 4 (bin 3-5) and one of S/N 6 (bin 5-7); peaks on the first
    # (height 5.2) and the third (height 8), and three false peaks of 9, 6 and 5.1.
    injections = pm.Injections(
        x=np.array([100.0, 200.0, 300.0]), y=np.array([50.0, 50.0, 50.0]), snr=np.array([4, 4, 6])
    )
    px = np.array([101, 300, 500, 600, 700])
    py = np.array([50, 51, 50, 50, 50])
    height = np.array([5.2, 8.0, 9.0, 6.0, 5.1])
    peaks = pm.Peaks(px, py, height, ~pm.near_injections(px, py, injections))
    assert peaks.false.tolist() == [False, False, True, True, True]
    one = pm.found_at_budget(peaks, injections, 1)  # threshold 7.5: only the 8 stands
    assert one["threshold at equal false peaks"] == 7.5
    assert one["found S/N 3-5 at equal false peaks"] == 0.0
    assert one["found S/N 5-7 at equal false peaks"] == 1.0
    three = pm.found_at_budget(peaks, injections, 3)  # every false peak: the floor
    assert three["threshold at equal false peaks"] == pm.FLOOR
    assert three["found S/N 3-5 at equal false peaks"] == 0.5
