"""Bright transients' PSF fluxes against the truth at several science PSF widths (issue 12 point 2).

The pairs of ``tests/engine/test_psf_flux.py`` (512^2, Moffat stars, science index 2.5,
template index 3.5 and 0.7 times the science's FWHM, flux ratio 1.3, template 0.3 px off,
80 transients of S/N 50-200 at least 24 px apart) at each science FWHM asked for, over
``--seeds`` pairs, through the whole pipeline (``diffviewer run``'s engine); the catalog's
``psf_flux`` over the injected flux. Printed per FWHM: the pooled median, and the mean of
the pairs' medians with its standard error (each pair adds a common part: its
differential background, its star residuals and its PSF estimate, so the pairs, not the
transients, are the independent draws). The synthetic renderer holds each star within 6
FWHM (its light renormalised there), so a measurement that extrapolates a Moffat's wing
reads 0.22-0.25 % above the injected flux at these widths (``benchmarks/SCIENCE.md``).

With ``--true-psf`` each pair runs again with the science's true PSF given (the
renderer's own, :attr:`diffviewer.synthetic.SyntheticPair.sci_psf`): what the catalog
reads when the PSF is exact, the reference for the stacked PSF's share of the bias.

Usage: ``python benchmarks/bench_psf_flux.py [--fwhm 2.2 2.8 4.0] [--seeds 12] [--true-psf]``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from peers import ROOT

sys.path.insert(0, str(ROOT))
from tests.engine.test_psf_flux import pair_flux_ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fwhm", type=float, nargs="+", default=[2.2, 2.8, 4.0])
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument(
        "--true-psf", action="store_true", help="also run each pair with its true science PSF"
    )
    args = parser.parse_args()
    print("| science FWHM (px) | PSF | pairs | transients | pooled median | mean of pair medians |")
    print("|---|---|---|---|---|---|")
    for fwhm in args.fwhm:
        for true_psf in (False, True) if args.true_psf else (False,):
            ratios = [
                pair_flux_ratios(seed, "moffat", fwhm, true_psf)[0] for seed in range(args.seeds)
            ]
            medians = np.array([np.median(r) for r in ratios])
            error = medians.std(ddof=1) / np.sqrt(len(medians)) if len(medians) > 1 else np.nan
            print(
                f"| {fwhm:.1f} | {'true, given' if true_psf else 'stacked'} | {len(ratios)} | "
                f"{sum(len(r) for r in ratios)} | {np.median(np.concatenate(ratios)):.4f} | "
                f"{medians.mean():.4f} +- {error:.4f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
