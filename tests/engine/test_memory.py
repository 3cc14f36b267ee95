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
from collections.abc import Callable

import numpy as np
import pytest

from diffviewer import exposure
from diffviewer.engine import kernel_design, resample, star_fluxes, tiles, warp
from diffviewer.engine.pipeline import SubtractionResult, run_subtraction
from diffviewer.engine.register_fit import PolynomialTransform
from diffviewer.engine.subtract import grow_planes, science_scale, template_planes
from diffviewer.exposure import Exposure, MaskPlane
from diffviewer.synthetic import make_pair
from tests.engine.kernel_stars import KernelStars, moffat_kernel_stars


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
    # its product, about 23 MB whatever the image (3.9 planes with the output on a
    # 1500 x 1300 image, 1.7 on this one, measured). The image is large enough that the
    # bound of 3 planes leaves a margin to tile-sized state and still fails a whole-image
    # convolution. The result is the whole-image convolution to float32 rounding.
    shape = (3000, 2600)
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
    assert peak < 3 * image.nbytes
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


def _traced_peak(run: Callable[[], object]) -> tuple[object, int]:
    """``run()`` and the traced peak of memory it allocated (bytes)."""
    tracemalloc.start()
    try:
        out = run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return out, peak


def test_a_translated_template_is_warped_without_image_sized_float64_temporaries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What the warp holds beyond its inputs, in float32 planes of this image: the map
    # (tx, ty, float64: 4), the bicubic prefilter's float64 copy (2), the image and
    # variance made (2), the mask and the off-image map (0.75), and a block of rows.
    # The translation test, the squared-weight passes of the variance and the float64
    # planes resampled into took 16.3 planes at once (7.6 now at 2048^2).
    monkeypatch.setattr(resample, "BLOCK_PIXELS", 1 << 15)  # blocks of 32 rows here
    n = 1024
    rng = np.random.default_rng(1)
    template = Exposure(
        rng.normal(100.0, 3.0, (n, n)), np.full((n, n), 9.0), np.zeros((n, n), np.int16)
    )
    science = Exposure(np.zeros((n, n)), np.ones((n, n)), np.zeros((n, n), np.int16))
    mapping = PolynomialTransform.rotation(0.0, (0.3, -0.3), (0.0, 0.0))
    plane = n * n * np.dtype(np.float32).itemsize
    for interpolation in ("bilinear", "bicubic"):
        (warped, _), peak = _traced_peak(
            lambda i=interpolation: warp.warp_exposure(template, science, i, mapping=mapping)
        )
        assert peak < 9 * plane, (interpolation, peak / plane)
    # ... and the planes are the per-pixel path's (resample.translation: a shift)
    assert warped.variance.dtype == np.float32 and np.all(warped.variance[8:-8, 8:-8] > 0)


@pytest.fixture(scope="module")
def kernel_stars() -> KernelStars:
    return moffat_kernel_stars()


def test_the_stamps_design_is_never_held_whole(kernel_stars: KernelStars) -> None:
    # Twice the stars add their own stamps (source and variance cut-outs: a third of
    # their design here) and results (variance and clipping planes, equations: 6 %) to
    # what cutting and fitting them holds, never their design: the design of every stamp
    # at once (460 MB for the 1000 stamps of a 2048 x 4096 run) was that run's peak of
    # memory (and here 1 design more).
    side = 2 * kernel_stars.fit_half + 1
    design = len(kernel_stars.x) * side**2 * (kernel_stars.basis.shape[0] + 1) * 4
    _, once = _traced_peak(kernel_stars.fit)
    _, twice = _traced_peak(lambda: kernel_stars.fit(2))
    assert twice - once < 0.6 * design, (once / design, twice / design)


def test_each_stamps_fit_is_its_own_however_the_stamps_are_chunked(
    kernel_stars: KernelStars, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stamp's fit (first pass, variances, clipping) depends on that stamp alone: fitted
    # one stamp at a time, the stamps get the kernels and verdicts they get in chunks.
    chunked = kernel_stars.fit()
    monkeypatch.setattr(kernel_design, "STAMP_BATCH_BYTES", 1.0)
    single = kernel_stars.fit()
    assert np.array_equal(single.status, chunked.status)
    assert np.sum(chunked.status == "GOOD") > 50
    np.testing.assert_allclose(single.coef, chunked.coef, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(single.used, chunked.used)


def test_kernel_candidates_are_measured_without_stamps_of_them_all() -> None:
    # The local S/N of 4,000 sources holds one chunk's cutouts (image, variance, mask:
    # 10 bytes a pixel, SOURCE_CHUNK sources) and their selections, not every source's
    # at once (88 MB here, 16 chunks' worth).
    pair = make_pair((1024, 1024), 500, seed=3)
    rng = np.random.default_rng(0)
    xi, yi = rng.integers(0, 1024, 4000), rng.integers(0, 1024, 4000)
    fwhm = 4.0
    side = 2 * int(np.ceil(star_fluxes.LOCAL_ANNULUS_FWHM[1] * fwhm)) + 1
    chunk = star_fluxes.SOURCE_CHUNK * side**2 * 10
    _, peak = _traced_peak(lambda: star_fluxes.local_snr(pair.science, xi, yi, 6.0, fwhm))
    assert peak < 3 * chunk, peak / chunk


def test_the_raw_difference_is_made_without_an_image_sized_background(
    result: SubtractionResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The raw difference's pixels over the whole image are made a block of rows at a
    # time (blocks of 16 rows here): its background plane was a second image-sized
    # array. The same bits as made by boxes.
    monkeypatch.setattr(exposure, "ROW_BLOCK_PIXELS", 1 << 12)
    products = result.subtraction
    plane = products.science.image.nbytes
    whole, peak = _traced_peak(products.difference_pixels)
    assert peak < 1.5 * plane, peak / plane
    rows = (slice(0, 100), slice(100, None))
    halves = [products.difference_pixels((r, slice(None))) for r in rows]
    np.testing.assert_array_equal(whole, np.concatenate(halves))
