"""Boolean pixel maps made by blocks of rows are the whole-image expressions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffviewer import exposure
from diffviewer.engine.sky import usable_on_both
from diffviewer.exposure import UNUSABLE, Exposure, MaskPlane, planes_clear, planes_set

#: Values a pixel's image or variance may hold: ordinary ones and every awkward one.
AWKWARD = np.array([1.0, 2.5, -3.0, 0.0, np.nan, np.inf, -np.inf], dtype=np.float32)


def _exposure(rng: np.random.Generator, shape: tuple[int, int]) -> Exposure:
    """An exposure whose planes draw from :data:`AWKWARD` and random mask bits."""
    image = rng.choice(AWKWARD, size=shape)
    variance = rng.choice(AWKWARD, size=shape)
    planes = [int(p) for p in MaskPlane]
    mask = np.zeros(shape, dtype=np.int16)
    for plane in planes:
        mask[rng.random(shape) < 0.15] |= np.int16(plane)
    return Exposure(image=image, variance=variance, mask=mask)


@settings(max_examples=80, deadline=None)
@given(
    rows=st.integers(1, 30),
    cols=st.integers(1, 30),
    block=st.integers(1, 200),
    seed=st.integers(0, 2**16),
)
def test_maps_by_blocks_of_rows_are_the_whole_image_expressions(
    rows: int, cols: int, block: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    sci, tmpl = _exposure(rng, (rows, cols)), _exposure(rng, (rows, cols))
    nodata = int(MaskPlane.NO_DATA)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exposure, "ROW_BLOCK_PIXELS", block)
        maps = {
            "set": planes_set(sci.mask, nodata),
            "clear": planes_clear(sci.mask, int(UNUSABLE)),
            "good": sci.good_pixels(),
            "usable": sci.usable_pixels(),
            "both": usable_on_both(sci, tmpl),
        }
    expected_both = ((sci.mask | tmpl.mask) & int(UNUSABLE)) == 0
    for e in (sci, tmpl):
        expected_both &= np.isfinite(e.image) & np.isfinite(e.variance) & (e.variance > 0)
    expected = {
        "set": (sci.mask & nodata) != 0,
        "clear": (sci.mask & int(UNUSABLE)) == 0,
        "good": (sci.mask & int(UNUSABLE)) == 0,
        "usable": ((sci.mask & int(UNUSABLE)) == 0) & (sci.variance > 0),
        "both": expected_both,
    }
    for name, got in maps.items():
        assert got.dtype == bool and got.shape == (rows, cols), name
        np.testing.assert_array_equal(got, expected[name], err_msg=name)
