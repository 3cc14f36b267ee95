"""The reference of ``benchmarks/bench_goto_crops.py``: the stars' own flux ratio.

The benchmark's verdict on both programs' few-stamp kernel sums rests on
:func:`reference_ratio`; these pin that it reads a known ratio within its stated error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_goto_crops import reference_ratio, science_over_template

from diffviewer.synthetic import make_pair


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_stars_ratio_is_read_within_its_error(seed: int) -> None:
    # Gaussian stars of 4.0 and 2.5 px FWHM (a 20 px aperture holds all of both), the
    # science 1.3 times the template, each on its own sky; isolated stars only count.
    pair = make_pair((600, 600), 60, seed=seed, photometric_scale=1.3, sky=500.0, tmpl_sky=800.0)
    ref = reference_ratio(
        pair.science.image.astype(np.float64) + 500.0,
        pair.template.image.astype(np.float64) + 800.0,
    )
    assert ref.n >= 10
    assert 0.0 < ref.error < 0.02
    assert abs(ref.ratio - 1.3) < 3.0 * ref.error


def test_too_few_stars_give_no_reference() -> None:
    pair = make_pair((600, 600), 2, seed=0)
    ref = reference_ratio(pair.science.image.astype(np.float64), pair.template.image)
    assert np.isnan(ref.ratio) and ref.n < 3


def test_a_kernel_sum_is_read_as_the_science_over_template_ratio() -> None:
    # the template convolved: the kernel scales it onto the science
    assert science_over_template(1.3, "template") == 1.3
    assert science_over_template(1.3, "IMAGE") == pytest.approx(1 / 1.3)  # HOTPANTS's word
    assert science_over_template(1.3, "science") == pytest.approx(1 / 1.3)
