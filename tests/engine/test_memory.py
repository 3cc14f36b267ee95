"""What a run keeps in memory: the image planes of its result and the inputs it frees.

Issue 9's memory target (peak RSS <= 2x HOTPANTS's) is checked by
``benchmarks/bench_peers.py``; these tests pin the behaviour behind it, not a figure of
memory: which image-sized planes the result holds and of what width, that those made on
demand are the same bits each time, that the template pieces as read are freed once
warped, and (in image planes, traced) what convolving a large cell adds.
"""

from __future__ import annotations

import dataclasses
import gc
import tracemalloc
import weakref

import numpy as np
import pytest

from diffviewer.engine import tiles
from diffviewer.engine.pipeline import SubtractionResult, run_subtraction
from diffviewer.engine.subtract import grow_planes, science_scale, template_planes
from diffviewer.exposure import Exposure, MaskPlane
from diffviewer.synthetic import make_pair


@pytest.fixture(scope="module")
def pair():
    """A small pair whose template is shifted 0.3 px (so it is warped) with one transient."""
    return make_pair(
        (256, 256), 150, seed=7, tmpl_shift=(0.3, 0.3), transients=[(128.3, 97.6, 2e4)]
    )


@pytest.fixture(scope="module")
def result(pair) -> SubtractionResult:
    return run_subtraction(pair.science, pair.template)


def _root(array: np.ndarray) -> np.ndarray:
    """The array that owns an array's memory."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _planes(obj: object, shape: tuple[int, int], found: dict[int, str], path: str) -> None:
    """Every array of ``shape`` reachable through dataclass fields, by owner's address."""
    if isinstance(obj, np.ndarray):
        if obj.shape == shape:
            found.setdefault(_root(obj).__array_interface__["data"][0], path)
        return
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _planes(getattr(obj, f.name), shape, found, f"{path}.{f.name}")


def test_the_result_holds_only_the_planes_it_shows_or_writes(result) -> None:
    found: dict[int, str] = {}
    _planes(result, result.science.shape, found, "result")
    # The science and the warped template (image, variance, mask: 6), the matched image
    # and its variance (2), the difference (image, variance, detection mask: 3), the
    # score and its mask (2), the segmentation and the filtered difference (2). The raw
    # difference, the background and the masks of the matched image and of the
    # difference before detection are made when read: 20 planes were kept before
    # (13.7 MB each on GOTO, 67 MB at 4096^2).
    assert len(found) == 15, sorted(found.values())


def test_every_mask_plane_takes_two_bytes_a_pixel(result) -> None:
    # The ten mask planes fit 16 bits: half the memory of an int32 mask (GOTO: 6.8 MB of
    # each of the five masks a run holds at its peak).
    masks = [
        result.science.mask,
        result.template.exposure.mask,
        result.difference.mask,
        result.score.mask,
        result.subtraction.matched.mask,
        result.subtraction.difference.mask,
    ]
    assert all(m.dtype == np.int16 for m in masks)


def test_a_large_cell_is_convolved_in_pieces() -> None:
    # Nodes at the corners: one cell for the whole image. Convolved whole, its spectra,
    # product and weights took 8.2 image planes (traced) above the output. Cut into tiles
    # of at most tiles.MAX_TILE_FFT px, what is held besides the output is tile-sized: the
    # four nodes' kernel spectra (kept until their last cell), a tile's data spectrum and
    # its product, 3.9 planes of this image with the output (bounded by the tile size,
    # not by the image's). The result is the whole-image convolution to float32 rounding.
    shape = (1500, 1300)
    image = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    r = np.arange(-7, 8)
    kernel = np.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2) / 2.0**2)
    kernel /= kernel.sum()
    tracemalloc.start()
    try:
        (out,) = tiles.blend_cells(
            shape,
            lambda box: (image[box],),
            (0.0, shape[1] - 1.0),
            (0.0, shape[0] - 1.0),
            kernel.shape[0] // 2,
            lambda grid, j, i: (grid.kernel_spectrum(kernel),),
            lambda grid, j, i, spectra, data: (grid.image(data[0] * spectra[0]),),
            lambda done: None,
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * image.nbytes
    grid = tiles.FourierGrid(shape, kernel.shape[0])
    whole = grid.image(grid.spectrum(image) * grid.kernel_spectrum(kernel))
    np.testing.assert_allclose(out, whole, atol=1e-6)


def test_the_planes_made_on_read_are_the_same_bits_each_time(result) -> None:
    products = result.subtraction
    first, second = products.difference, products.difference
    for name in ("image", "variance", "mask"):
        a, b = getattr(first, name), getattr(second, name)
        assert a is not b and np.array_equal(a, b) and not a.flags.writeable
    np.testing.assert_array_equal(products.matched.mask, products.matched.mask)
    np.testing.assert_array_equal(products.background, products.background)


def test_the_raw_difference_is_science_minus_matched_minus_background(result) -> None:
    products = result.subtraction
    assert result.kernel.convolved == "template" and science_scale(result.kernel) == 1.0
    diff = products.difference
    expected = result.science.image - products.matched_image
    expected -= products.background
    np.testing.assert_array_equal(diff.image, expected)
    np.testing.assert_array_equal(
        diff.variance, result.science.variance + products.matched_variance
    )
    mask = template_planes(products.matched.mask)
    mask |= grow_planes(result.science.mask, products.footprint, int(MaskPlane.SAT))
    np.testing.assert_array_equal(diff.mask, mask)
    # The edge the kernel reaches beyond is flagged on the matched image and the difference.
    assert np.all(products.matched.mask[0] & int(MaskPlane.EDGE))
    assert np.all(diff.mask[0] & int(MaskPlane.EDGE))


def test_the_decorrelated_difference_is_the_measured_one(result) -> None:
    assert result.decorrelation is not None
    assert result.decorrelation.difference is result.difference
    assert np.any(result.difference.mask & int(MaskPlane.DETECTED))


def test_the_template_as_read_is_freed_once_warped(pair) -> None:
    refs: list[weakref.ref[Exposure]] = []

    def read() -> list[Exposure]:
        """The template as a reader hands it over: a list no one else holds."""
        piece = dataclasses.replace(pair.template, source="read")
        refs.append(weakref.ref(piece))
        return [piece]

    alive: dict[str, bool] = {}

    def progress(step: str, fraction: float) -> None:
        if step not in alive:
            gc.collect()
            alive[step] = refs[0]() is not None

    result = run_subtraction(pair.science, read(), progress=progress)
    assert result.template.warped and result.template.exposure.source != "read"
    assert alive["warp"] and not alive["kernel candidates"] and not alive["measure"]
