"""Cosmic rays and bad columns through the whole chain: a pixel defect is an unknown
pixel, not an unusable star, and its value goes nowhere (the kernel's stamps, the PSF's
stars, the convolution, the whitening and the score)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from diffviewer.config import from_dict
from diffviewer.engine.pipeline import SubtractionResult, run_subtraction
from diffviewer.synthetic import make_pair, with_defects

#: The pairs: the template convolved (the science's cosmic rays on the target) and the
#: science convolved (``auto``: the template is the broader; its cosmic rays reach the
#: kernel's footprint about them).
PAIRS = {
    "template": ({"sci_fwhm": 4.0, "tmpl_fwhm": 2.5}, "template"),
    "science": ({"sci_fwhm": 2.5, "tmpl_fwhm": 4.0, "tmpl_noise_scale": 0.2}, "auto"),
}

#: Share of the science's pixels hit by a cosmic ray: about what a minute's exposure
#: masks once each hit is grown by a pixel.
CR_FRACTION = 0.003

#: Columns of the science masked BAD (hot: they hold 5e4 as the cosmic rays do).
BAD_COLUMNS = (100, 300)


@pytest.fixture(scope="module", params=list(PAIRS))
def runs(
    request: pytest.FixtureRequest,
) -> tuple[SubtractionResult, SubtractionResult, np.ndarray]:
    """The pair run clean and with its science spoilt, and the spoilt pixels."""
    arguments, mode = PAIRS[request.param]
    pair = make_pair((512, 512), 250, seed=5, photometric_scale=1.3, **arguments)  # type: ignore[arg-type]
    config = from_dict({"kernel": {"mode": mode}})
    science, hit = with_defects(pair.science, CR_FRACTION, BAD_COLUMNS, seed=2)
    clean = run_subtraction(pair.science, pair.template, config)
    spoilt = run_subtraction(science, pair.template, config)
    assert spoilt.kernel.convolved == clean.kernel.convolved == request.param
    return clean, spoilt, hit


def _good(result: SubtractionResult) -> int:
    return int(np.sum(result.kernel.candidates["status"] == "GOOD"))


def test_pixel_defects_leave_the_kernel_fitted_from_its_stars(
    runs: tuple[SubtractionResult, SubtractionResult, np.ndarray],
) -> None:
    # A stamp with any unusable pixel was left out: at 0.3 % no star was left and the
    # kernel was derived from the two PSFs (and the PSF itself, from 3-4 stars, fell to a
    # default Gaussian on sharper stars). Only a star's core must be whole; a defect
    # elsewhere leaves its pixel out of the fit (on the convolved image, the target's
    # pixels within the kernel's reach of it). Measured: 35 of 39 stamps fitted with the
    # template convolved, 28 of 36 with the science convolved.
    clean, spoilt, _ = runs
    sums = [float(np.mean(r.kernel.solution.kernel_sum_map())) for r in (clean, spoilt)]
    errors = [r.kernel.kernel_sum_error for r in (clean, spoilt)]
    print(
        f"\n{spoilt.kernel.convolved}: {_good(spoilt)} of {_good(clean)} stamps, kernel sum "
        f"{sums[1]:.4f} +- {errors[1]:.4f} against {sums[0]:.4f} +- {errors[0]:.4f}, PSF "
        f"from {spoilt.science_psf.n_stars} of {clean.science_psf.n_stars} stars"
    )
    assert _good(spoilt) >= 0.6 * _good(clean)
    assert spoilt.science_psf.source == "measured"
    assert spoilt.science_psf.fwhm == pytest.approx(clean.science_psf.fwhm, rel=0.01)
    # The two runs share every star and the noise but the defects': their sums differ by
    # less than the spoilt run's error twice over.
    assert abs(sums[1] - sums[0]) < 2.0 * errors[1]
    # Neither the kernel derived from the PSFs nor the bad-subtraction guard (the science
    # convolved: fewer stamps, a lower spatial order, as it says).
    for sign in ("derived from the two PSF images", "bad-subtraction", "noise"):
        assert not [w for w in spoilt.warnings if sign in w]


def test_pixel_defects_give_no_detection(
    runs: tuple[SubtractionResult, SubtractionResult, np.ndarray],
) -> None:
    # Whitened with the rest, each defect's 5e4 counts spread beyond its mask over the
    # filter's footprint: 951 of a pair's 1051 detections lay beside them. Now none does,
    # and the sky's noise scale is the clean run's.
    clean, spoilt, hit = runs
    x = np.rint(np.asarray(spoilt.diasources["x"])).astype(int)
    y = np.rint(np.asarray(spoilt.diasources["y"])).astype(int)
    beside = ndimage.binary_dilation(hit, iterations=5)
    assert not np.any(beside[y, x]), f"{int(np.sum(beside[y, x]))} detections beside defects"
    assert len(spoilt.diasources) <= len(clean.diasources)
    assert spoilt.renormalisation.noise_scale == pytest.approx(
        clean.renormalisation.noise_scale, rel=0.03
    )


@pytest.mark.parametrize(
    ("detect_on", "astrometric_noise"), [("difference", 0.0), ("score", 0.0), ("score", 0.1)]
)
def test_transients_among_pixel_defects_are_all_found(
    detect_on: str, astrometric_noise: float
) -> None:
    # 49 transients of S/N ~17 on a grid, the science spoilt as above. The score grew each
    # pixel defect by its filter's footprint (as it grows a zeroed saturated core, whose
    # wings alone it would hold): at 0.3 % that left the score invalid almost everywhere.
    # Made from the difference, which is 0 at a defect as a static star's residual is
    # about it, a defect is a pixel left out (with an astrometric term, its images' zeroed
    # defects only raise the variance there: 34 of 49 found when grown). Every transient
    # the clean run finds is found.
    grid = np.arange(64.0, 449.0, 64.0)
    tx, ty = np.meshgrid(grid + 0.3, grid + 0.6)
    transients = [(float(x), float(y), 4000.0) for x, y in zip(tx.ravel(), ty.ravel(), strict=True)]
    pair = make_pair((512, 512), 250, seed=5, photometric_scale=1.3, transients=transients)
    science, _ = with_defects(pair.science, CR_FRACTION, BAD_COLUMNS, seed=2)
    config = from_dict(
        {"detection": {"detect_on": detect_on}, "score": {"astrometric_noise": astrometric_noise}}
    )
    found = []
    for image in (pair.science, science):
        cat = run_subtraction(image, pair.template, config).diasources
        cat = cat[~np.asarray(cat["sky_source"], dtype=bool)]
        dist = np.hypot(
            np.asarray(cat["x"])[:, None] - pair.transient_x[None],
            np.asarray(cat["y"])[:, None] - pair.transient_y[None],
        )
        found.append(int(np.sum(dist.min(axis=0) < 2.0)) if len(cat) else 0)
    print(f"\n{detect_on}, {astrometric_noise}: {found[1]} of the clean run's {found[0]}")
    assert found[0] == len(transients)
    assert found[1] == found[0]
