"""The catalog's PSF fluxes of bright transients against the truth (issue 12 point 2)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.engine.helpers import injected_flux_ratios

#: Injected transients: enough that the median ratio is known to ~0.2 % at S/N 50-200.
N_TRANSIENTS = 80


def _catalog_flux_ratios(profile: str) -> tuple[np.ndarray, np.ndarray]:
    """Catalog psf_flux over the injected flux, and the catalog's relative errors, of
    transients of S/N 50-200 in a 512^2 pair (flux ratio 1.3, template 0.3 px off)."""
    # The difference's noise is ~38 counts a pixel (science sky 1000, template 250 times
    # 1.3^2): a 4 px PSF gives S/N ~ flux / 230, so 1.1e4-4.5e4 is S/N 50-200.
    _, ratio, rel_err, _ = injected_flux_ratios(
        (512, 512),
        300,
        N_TRANSIENTS,
        (1.1e4, 4.5e4),
        40,
        profile=profile,
        sci_beta=2.5,
        tmpl_beta=3.5,
        sci_fwhm=4.0,
        tmpl_fwhm=2.8,
        photometric_scale=1.3,
        tmpl_shift=(0.3, 0.3),
    )
    return ratio, rel_err


@pytest.mark.parametrize(
    "profile",
    [
        "gaussian",
        pytest.param(
            "moffat",
            marks=pytest.mark.xfail(
                strict=True,
                reason="issue 12 point 2, open: with Moffat beta 2.5 stars the catalog's PSF "
                "flux is 2.4 % low (0.976): the measured PSF image stops at 3 FWHM and each "
                "star's sky, its cutout's border, holds its wings; a stack to 5 FWHM gave "
                "0.982, with the sky of a 64 px background mesh 1.013 (neighbours' wings "
                "lift it). The true PSF given to the science gives 0.992 cut at 3 FWHM, "
                "1.003 at 4.5 and 1.006 whole (as rendered, 6 FWHM): a second bias of "
                "+0.6 %, neither the decorrelation's (1.005 without it) nor the PSF "
                "field's (1.006 with the centre PSF), remains to be found",
            ),
        ),
    ],
)
def test_bright_transients_psf_fluxes_are_unbiased(profile: str) -> None:
    ratio, rel_err = _catalog_flux_ratios(profile)
    # A few fall on a bright star (saturated or masked core) or a neighbour: most remain.
    assert len(ratio) >= 0.7 * N_TRANSIENTS
    # The median of n ratios with errors e scatters by ~1.25 median(e) / sqrt(n): ~0.2 %
    # here (each transient's own error 0.5-2 %), so 0.5 % is 2.5 of it: a bias of the
    # PSF model (a truncated or mis-normalised PSF, the wrong PSF for the decorrelated
    # difference: 1-6 %) exceeds it, noise alone does not.
    spread = 1.2533 * float(np.median(rel_err)) / np.sqrt(len(ratio))
    print(
        f"\n{profile}: catalog psf_flux / truth median {np.median(ratio):.4f} of {len(ratio)} "
        f"(its noise {spread:.4f})"
    )
    assert spread < 0.0025
    assert float(np.median(ratio)) == pytest.approx(1.0, abs=0.005)
