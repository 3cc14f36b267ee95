"""Shared helpers of the engine tests: synthetic PSFs, the steps up to the kernel fit."""

from __future__ import annotations

import numpy as np

from diffviewer.config import CandidatesConfig, KernelConfig
from diffviewer.engine import candidates, kernel, psf
from diffviewer.engine.progress import null_reporter
from diffviewer.exposure import Exposure
from diffviewer.stats import FWHM_PER_SIGMA
from diffviewer.synthetic import render_gaussians


def gaussian_psf(fwhm: float, half: int = 12) -> np.ndarray:
    """Pixel-integrated Gaussian PSF image (the synthetic pairs' own PSF), sum ~1."""
    side = 2 * half + 1
    return render_gaussians(
        (side, side),
        np.array([float(half)]),
        np.array([float(half)]),
        np.array([1.0]),
        np.array([fwhm / FWHM_PER_SIGMA]),
        half,
    )


def fit_kernel_to(
    science: Exposure,
    template: Exposure,
    config: KernelConfig | None = None,
    candidates_config: CandidatesConfig | None = None,
) -> kernel.KernelFit:
    """Select kernel stars, estimate both PSFs (with the bright-source fallback) and fit."""
    rep = null_reporter()
    cands = candidates.select_candidates(
        science, template, candidates_config or CandidatesConfig(), rep
    )
    xy = cands.table["x"], cands.table["y"]
    sci_psf = psf.estimate_psf(science, *xy, bright=cands.bright)
    tmpl_psf = psf.estimate_psf(template, *xy, bright=cands.bright)
    return kernel.fit_kernel(
        science, template, cands, sci_psf, tmpl_psf, config or KernelConfig(), rep
    )
