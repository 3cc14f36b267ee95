"""The kernel stars of one synthetic Moffat pair, shared by the kernel fit's tests."""

from __future__ import annotations

import dataclasses

import numpy as np

from diffviewer.config import CandidatesConfig, KernelConfig
from diffviewer.engine import candidates, kernel_basis, kernel_design, kernel_stamps, psf
from diffviewer.engine.progress import null_reporter
from diffviewer.exposure import Exposure
from diffviewer.synthetic import make_pair
from tests.engine.test_kernel_science import MOFFAT


@dataclasses.dataclass(frozen=True)
class KernelStars:
    """A synthetic pair's kernel stars and what cutting and fitting their stamps needs
    (the template convolved)."""

    source: Exposure
    target: Exposure
    x: np.ndarray
    y: np.ndarray
    control: np.ndarray
    basis: np.ndarray
    fit_half: int
    fwhm: float

    def stamps(self, copies: int = 1) -> kernel_design.Stamps:
        """The stamps, each star cut ``copies`` times."""
        x, y = (np.concatenate([a] * copies) for a in (self.x, self.y))
        return kernel_design.build_stamps(
            self.source,
            self.target,
            x,
            y,
            self.basis.shape[-1],
            self.fit_half,
            kernel_stamps.CORE_FWHM * self.fwhm,
        )

    def fit(self, copies: int = 1) -> kernel_stamps.StampFits:
        """Cut and fit the stamps, each star ``copies`` times."""
        x, y, control = (np.concatenate([a] * copies) for a in (self.x, self.y, self.control))
        return kernel_stamps.fit_stamps(
            self.stamps(copies),
            x,
            y,
            control,
            self.basis,
            self.fwhm,
            self.target.shape,
            KernelConfig(),
            null_reporter(),
        )


def moffat_kernel_stars() -> KernelStars:
    """The kernel stars of a 768^2 pair of Moffat stars (800 stars, seed 4), with their basis."""
    pair = make_pair((768, 768), 800, seed=4, **MOFFAT)
    rep = null_reporter()
    cands = candidates.select_candidates(
        pair.science, pair.template, CandidatesConfig(), rep, kernel_config=KernelConfig()
    )
    x = np.asarray(cands.table["x"], dtype=float)
    y = np.asarray(cands.table["y"], dtype=float)
    control = np.asarray(cands.table["control"], dtype=bool)
    sci_psf = psf.estimate_psf(pair.science, x, y, bright=cands.bright)
    tmpl_psf = psf.estimate_psf(pair.template, x, y, bright=cands.bright)
    config = KernelConfig()
    plan = kernel_basis.plan_basis(tmpl_psf, sci_psf, config, int(np.sum(~control)))
    basis = plan.basis(config.degrees)
    fwhm = max(sci_psf.fwhm, tmpl_psf.fwhm)
    return KernelStars(pair.template, pair.science, x, y, control, basis, plan.fit_half, fwhm)
