"""The engine hands each step's images to a viewer as soon as the step ends (Reporter.stage)."""

from __future__ import annotations

import numpy as np

from diffviewer.engine.pipeline import run_subtraction
from diffviewer.synthetic import make_pair


def test_stages_come_in_order_with_the_images_the_result_holds() -> None:
    pair = make_pair((128, 128), 40, seed=3, transients=[(64.0, 60.0, 2e4)])
    events: list[tuple[str, str]] = []
    stages: dict[str, dict[str, np.ndarray]] = {}

    def progress(step: str, fraction: float) -> None:
        events.append(("progress", step))

    def stage(name: str, products: dict[str, np.ndarray]) -> None:
        events.append(("stage", name))
        stages[name] = dict(products)

    result = run_subtraction(pair.science, pair.template, progress=progress, stage=stage)
    order = [name for kind, name in events if kind == "stage"]
    assert order == ["warp", "subtract", "difference", "score"]
    # each stage comes before the next step starts
    assert events.index(("stage", "warp")) < events.index(("progress", "kernel candidates"))
    assert events.index(("stage", "subtract")) < events.index(("progress", "decorrelate"))
    # the difference as soon as its pixels are final, before scoring, detection, measurement
    assert events.index(("stage", "difference")) < events.index(("progress", "renormalise"))
    np.testing.assert_array_equal(stages["warp"]["science"], result.science.image)
    np.testing.assert_array_equal(stages["warp"]["template"], result.template.exposure.image)
    np.testing.assert_array_equal(stages["subtract"]["matched"], result.subtraction.matched.image)
    np.testing.assert_array_equal(stages["difference"]["difference"], result.difference.image)
    np.testing.assert_array_equal(stages["score"]["score"], result.score.image)
