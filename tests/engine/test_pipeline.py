"""The pipeline as a whole: step order, progress, timings, cancellation, the result."""

from __future__ import annotations

import dataclasses
import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from diffviewer import exposure
from diffviewer.config import SubtractionConfig, apply_overrides
from diffviewer.engine import kernel_design, tiles
from diffviewer.engine.pipeline import run_subtraction
from diffviewer.engine.progress import CancelToken
from diffviewer.errors import Cancelled, InputError
from diffviewer.exposure import Exposure, MaskPlane, set_planes
from diffviewer.stats import FWHM_PER_SIGMA
from diffviewer.synthetic import make_pair, render_gaussians

STEPS = [
    "warp",
    "kernel candidates",
    "psf",
    "sky",  # the inputs' sources and backgrounds on sky
    "kernel fit",
    "subtract",
    "decorrelate",
    "diagnostics",  # of the raw difference here, of the final one after detection
    "renormalise",
    "score",
    "detect",
    "measure",
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
    assert not any("own pixels" in note for note in result.warnings)


def test_a_template_that_is_the_science_image_is_named_as_such(pair) -> None:
    # The same file given twice (or a copy of it) ran to a zero difference whose notes
    # spoke of shared noise and no detection, never of the cause.
    copy = pair.science.replace(image=pair.science.image.copy(), source="copy.fits")
    result = run_subtraction(pair.science, copy)
    named = [note for note in result.warnings if "own pixels" in note]
    assert named == [
        f"the template copy.fits holds the science image's own pixels ({pair.science.source}): "
        "the difference is zero by construction; give a template of another epoch"
    ]
    assert not (~np.asarray(result.diasources["sky_source"], dtype=bool)).any()


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


def _scaled(exposure: Exposure, factor: float) -> Exposure:
    """The exposure in other flux units: image times ``factor``, variance times its square."""
    return exposure.replace(
        image=exposure.image * np.float32(factor),
        variance=exposure.variance * np.float32(factor) ** 2,
    )


def test_physical_flux_units_give_the_same_detections() -> None:
    # Three transients of S/N 25-35; 1e-12 is an erg/s/cm^2/A-like unit, where ZOGY's
    # kernel squared overflowed float32 and nothing was found.
    pair = make_pair(
        (256, 256),
        120,
        seed=2,
        transients=[(60.0, 70.0, 8e3), (180.0, 200.0, 1.2e4), (200.0, 60.0, 6e3)],
    )
    found = []
    for factor in (1.0, 1e-12):
        result = run_subtraction(_scaled(pair.science, factor), _scaled(pair.template, factor))
        cat = result.diasources[~np.asarray(result.diasources["sky_source"], dtype=bool)]
        assert len(cat) >= 3 and np.all(np.isfinite(cat["score_peak"]))
        found.append(cat)
    one, tiny = found
    assert len(one) == len(tiny)
    # Same positions and S/N up to float32 rounding (relative 1e-7 per operation; 1e-3
    # leaves room for thousands of them).
    np.testing.assert_allclose(tiny["x"], one["x"], atol=1e-3)
    np.testing.assert_allclose(tiny["y"], one["y"], atol=1e-3)
    np.testing.assert_allclose(tiny["score_peak"], one["score_peak"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(tiny["snr"], one["snr"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(tiny["psf_flux"], one["psf_flux"] * 1e-12, rtol=1e-3, atol=1e-15)


def test_units_too_small_for_single_precision_are_named(pair) -> None:
    # A variance of 1e-60 underflows float32 to 0: say which image and what to do.
    with pytest.raises(InputError, match=r"science image .* median variance of 0 .* multiply"):
        run_subtraction(_scaled(pair.science, 1e-30), _scaled(pair.template, 1e-30))


@pytest.mark.parametrize("plane", [MaskPlane.BAD, MaskPlane.NO_DATA])
def test_an_input_without_a_usable_pixel_is_named_as_such(pair, plane: MaskPlane) -> None:
    # A template made in Python whose every pixel is masked (a piece cut from a masked
    # region) was refused for "a median variance of 0 ... units too small for single
    # precision", its variance being 1000 counts^2.
    masked = pair.template.replace(mask=np.full(pair.template.shape, int(plane), np.int16))
    with pytest.raises(InputError, match=rf"template image .* no usable pixel: {plane.name} on"):
        run_subtraction(pair.science, masked)


def test_nan_outside_no_data_is_named_and_flagged_nan_is_not(pair) -> None:
    # An exposure made in Python with a NaN corner its mask does not flag: the
    # convolution spread the NaNs over the whole difference, which came out all NaN
    # with no detection and no word. Flagged NO_DATA, the same NaNs are left out.
    image = np.array(pair.template.image)
    image[:20, :20] = np.nan
    with pytest.raises(InputError, match=r"template image .* 400 NaN or infinite values"):
        run_subtraction(pair.science, pair.template.replace(image=image))
    corner = np.zeros(image.shape, dtype=bool)
    corner[:20, :20] = True
    flagged = pair.template.replace(
        image=image, mask=set_planes(pair.template.mask, corner, MaskPlane.NO_DATA)
    )
    result = run_subtraction(pair.science, flagged)
    assert np.isfinite(result.difference.image).all() and len(result.diasources) > 0


@pytest.fixture(scope="module")
def saturated() -> tuple[Exposure, Exposure, np.ndarray, np.ndarray]:
    """A pair with three stars of 6e6 counts clipped at 6e4 and masked SAT on both images."""
    shape = (320, 320)
    pair = make_pair(shape, 150, seed=4)
    sx, sy = np.array([80.3, 200.6, 250.2]), np.array([90.4, 150.1, 260.7])

    def clipped(exposure: Exposure, fwhm: float) -> Exposure:
        sigma = np.full(3, fwhm / FWHM_PER_SIGMA)
        image = exposure.image + render_gaussians(shape, sx, sy, np.full(3, 6e6), sigma, 40)
        hit = image > 6e4
        return exposure.replace(
            image=np.minimum(image, 6e4), mask=set_planes(exposure.mask, hit, MaskPlane.SAT)
        )

    return clipped(pair.science, 4.0), clipped(pair.template, 2.5), sx, sy


@pytest.mark.parametrize(
    ("method", "detect_on", "fit_region"),
    [
        ("zogy", "score", "choose"),
        # the kernel fitted on the stars' cores varies more between ZOGY's PSF nodes: the
        # score made from the images put 5.75 sigma on the wing of an unsaturated star of
        # 11,000 counts (its PSF-fit S/N 0.33), the score made from the difference does not
        ("zogy", "score", "core"),
        ("al", "score", "choose"),
        ("al", "difference", "choose"),
    ],
)
def test_no_unflagged_detections_around_saturated_stars(
    saturated, method, detect_on, fit_region
) -> None:
    science, template, sx, sy = saturated
    config = SubtractionConfig()
    config = dataclasses.replace(
        config,
        kernel=dataclasses.replace(config.kernel, fit_region=fit_region),
        score=dataclasses.replace(config.score, method=method),
        detection=dataclasses.replace(config.detection, detect_on=detect_on),
    )
    result = run_subtraction(science, template, config)
    cat = result.diasources[~np.asarray(result.diasources["sky_source"], dtype=bool)]
    near = np.min(np.hypot(cat["x"][:, None] - sx, cat["y"][:, None] - sy), axis=1) < 40
    # Before: 6-8 unflagged detections in the ring 10 px from the clipped cores (the
    # wings of a saturated core do not subtract), with saturation only checked at the
    # centre and the score's mask not grown by its kernels.
    assert not np.any(near & ~np.asarray(cat["flagged"], dtype=bool))
    # Saturation in the footprint or in the 3 x 3 centre (a ring detection 7 px from a
    # clipped core can have its centroid on the core's grown SAT pixels, outside its own
    # thresholded footprint).
    assert np.all((cat["flag_saturated"] | cat["flag_saturated_center"])[near])


def test_blocks_of_rows_of_any_size_give_the_same_run(
    pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The suite's images fit in one block of rows (exposure.ROW_BLOCK_PIXELS), a 4096^2
    # image in 64: with blocks of five rows and three pixels every block-wise map, plane
    # and filter of a run crosses block edges, next to a masked region and the image's
    # borders. The products are the same to the bit (summing the sky covariance by blocks
    # moves its sums by float64 rounding only, which no float32 product shows here).
    bad = np.zeros(pair.template.shape, dtype=bool)
    bad[40:60, 150:190] = True
    template = pair.template.replace(mask=set_planes(pair.template.mask, bad, MaskPlane.BAD))
    whole = run_subtraction(pair.science, template)
    monkeypatch.setattr(exposure, "ROW_BLOCK_PIXELS", 5 * pair.science.shape[1] + 3)
    blocks = run_subtraction(pair.science, template)
    _assert_same_products(blocks, whole)


def _assert_same_products(a, b) -> None:
    """Difference planes, score, segmentation and catalog equal to the bit."""
    for name in ("image", "variance", "mask"):
        np.testing.assert_array_equal(
            getattr(a.difference, name), getattr(b.difference, name), err_msg=name
        )
    np.testing.assert_array_equal(a.subtraction.matched.image, b.subtraction.matched.image)
    np.testing.assert_array_equal(a.score.image, b.score.image)
    np.testing.assert_array_equal(a.score.mask, b.score.mask)
    np.testing.assert_array_equal(a.detections.segmentation, b.detections.segmentation)
    assert len(a.diasources) == len(b.diasources) > 1
    for column in ("x", "y", "psf_flux", "psf_flux_err", "snr", "score_peak"):
        np.testing.assert_array_equal(a.diasources[column], b.diasources[column])
    for field in dataclasses.fields(a.diagnostics):
        np.testing.assert_array_equal(
            getattr(a.diagnostics, field.name), getattr(b.diagnostics, field.name), field.name
        )


@pytest.mark.parametrize("method", ["zogy", "al"])
def test_pieces_on_lent_threads_give_the_same_run(
    pair, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With tiles of at most 96 px the 256^2 pair is cut into a dozen tiles or more a
    # convolution (subtraction, decorrelation, score), and with 0.1 MB of spectra or
    # design a batch its 29 kernel stamps are fitted one at a time and its diagnostics
    # made 9-18 stamps at a time, three pieces at once: every product is the same to the
    # bit as on the calling thread alone.
    monkeypatch.setattr(tiles, "MAX_TILE_FFT", 96)
    monkeypatch.setattr(kernel_design, "STAMP_BATCH_BYTES", 1e5)
    config = apply_overrides(SubtractionConfig(), [f"score.method={method}"])
    alone = run_subtraction(pair.science, pair.template, config)
    with ThreadPoolExecutor(3) as pool:
        lent = run_subtraction(pair.science, pair.template, config, executor=pool)
    _assert_same_products(lent, alone)
