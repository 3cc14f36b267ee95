"""The direction on real pairs: the default (``kernel.mode = 'auto'``) convolves the
science on GOTO, and the noise of a science-convolved difference is described after the
decorrelation and the one renormalisation, quadrant by quadrant, as well as the
template-convolved one's (``test_real_pairs``). The evidence for the default, both modes
on every shared pair, is ``benchmarks/bench_direction.py`` (``benchmarks/SCIENCE.md``,
issue 12 point 3).

Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import pytest

from diffviewer.config import KernelConfig
from diffviewer.exposure import Exposure
from diffviewer.io import read_exposure
from tests.conftest import data_path
from tests.engine.test_real_pairs import run_engine


def quadrant_scales(
    science: Exposure, template: Exposure, config: KernelConfig
) -> tuple[str, list[float], float]:
    """Fit, subtract, decorrelate, renormalise; the PSF-scale noise over the
    renormalised variance's prediction on each quadrant's sky, the direction and the one
    noise scale applied."""
    run = run_engine(science, template, config)
    return run.fit.convolved, run.quadrants(), run.renormalisation.noise_scale


@pytest.mark.slow
def test_goto_default_convolves_the_science_and_its_noise_holds_in_every_quadrant() -> None:
    science = read_exposure(data_path("goto/1.fits"))
    template = read_exposure(data_path("goto/2.fits"))
    convolved, scales, noise_scale = quadrant_scales(science, template, KernelConfig())
    print(
        f"\nGOTO, default kernel.mode: {convolved} convolved; noise scale "
        f"{noise_scale:.3f}; after it, by quadrant {[round(q, 3) for q in scales]}"
    )
    # As HOTPANTS decides (its kernel sum 1.0005): the template's wing is the broader.
    # (The former default, 'template', left a bright-star residual of 16.9/29.5 local
    # sigma against 9.0/15.2 and a kernel sum of 0.974: test_kernel_science.)
    assert convolved == "science"
    # Each quadrant holds ~240 000 sky px of a PSF-filtered image (FWHM ~3.9 px, ~35 px
    # per independent value): its scale is known to ~1 %. What the one scale cannot
    # remove is the coadds' shared noise varying over the field: before it, the
    # quadrants' PSF-scale ratios are 0.72-0.76 in either direction (+-3 % about their
    # mean). 5 % is that spread plus 2 sigma. (With the science convolved one quadrant
    # was 1.12 at 8a7d33c, which kept 'auto' from being the default; measured now
    # 0.97-1.03, the template-convolved difference 0.96-1.03.)
    for q in scales:
        assert abs(q - 1.0) <= 0.05


def test_properimage_science_convolved_noise_holds_in_every_quadrant() -> None:
    # Independent frames (the noise scale is ~0.96 either way), PSFs within 5 %: 'auto'
    # is near a tie here (expected noise within 8 % each way; the pipeline's and this
    # helper's PSF estimates tip it differently), so the science is convolved by request:
    # the mirror of test_real_pairs' template-convolved run on the same pair.
    science = read_exposure(data_path("properimage/aligned_eso085-030-004.fit"))
    template = read_exposure(data_path("properimage/aligned_eso085-030-005.fit"))
    convolved, scales, noise_scale = quadrant_scales(
        science, template, KernelConfig(mode="science")
    )
    print(
        f"\nproperimage, science convolved: noise scale {noise_scale:.3f}; after it, by "
        f"quadrant {[round(q, 3) for q in scales]}"
    )
    assert convolved == "science"
    # ~60 000 sky px per quadrant, FWHM ~3.3 px: each scale to ~2 %; 5 % is 2.5 sigma
    # (the pipeline's science-convolved run: 0.99-1.01; template convolved 0.955-1.016).
    for q in scales:
        assert abs(q - 1.0) <= 0.05
