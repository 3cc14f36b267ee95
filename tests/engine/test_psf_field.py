"""The catalog's PSF follows a PSF that varies over the image (issue 12 point 5)."""

from __future__ import annotations

import numpy as np
import pytest

from diffviewer.engine.photometry import PsfModel
from diffviewer.engine.psf_field import PsfField
from tests.engine.helpers import injected_flux_ratios


def _gaussian(half: int, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    g = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    return g / g.sum()


def test_field_between_nodes_is_the_blended_psf_shifted() -> None:
    # Shifting a PSF (an interpolating spline) is linear in it, so blending the shifted
    # node PSFs is shifting the blended PSF: the field's stamp at any sub-pixel position
    # is the blended PSF's, to the tabulation of PsfModel (1/8 px, bilinear).
    left, right = _gaussian(7, 1.2), _gaussian(7, 2.0)
    field = PsfField((0.0, 100.0), (50.0,), ((left, right),), 0.5 * (left + right))
    for x, w in ((0.0, 0.0), (25.3, 0.253), (100.0, 1.0), (140.0, 1.0)):
        stamp, x0, y0 = field.shifted(x, 47.6)
        expected, ex0, ey0 = PsfModel((1 - w) * left + w * right).shifted(x, 47.6)
        assert (x0, y0) == (ex0, ey0)
        np.testing.assert_allclose(stamp, expected, atol=2e-3 * expected.max())
    # the dipole fits' on_box stays the centre's PSF
    np.testing.assert_allclose(
        field.on_box(25.3, 47.6, (18, 40, 16, 16)),
        PsfModel(0.5 * (left + right)).on_box(25.3, 47.6, (18, 40, 16, 16)),
    )


def test_bright_transients_fluxes_hold_across_a_varying_psf() -> None:
    # The science FWHM grows by 40 % from left to right (3.5 -> 4.9 px, Gaussian: the
    # PSF's own shape adds no bias). One PSF for the whole image measured fluxes 12 %
    # high on the narrow side and 11 % low on the broad side.
    n, side = 150, 1024
    # S/N ~90-270 each (a Gaussian of FWHM 3.5-4.9 px on the difference's ~38 counts/px)
    xf, ratio, _, meta = injected_flux_ratios(
        (side, side),
        800,
        n,
        (2e4, 6e4),
        50,
        sci_fwhm=3.5,
        tmpl_fwhm=2.8,
        sci_fwhm_gradient=0.4,
        photometric_scale=1.3,
        tmpl_shift=(0.3, 0.3),
    )
    assert xf.size >= 0.9 * n  # isolated, bright: nearly all are caught
    assert meta["psf_nodes"] > 1  # metadata.json's detection.catalog_psf_nodes
    thirds = [np.median(ratio[(xf >= lo) & (xf < lo + side / 3)]) for lo in (0, side / 3)]
    thirds.append(np.median(ratio[xf >= 2 * side / 3]))
    print(f"\ncatalog psf_flux / truth, left to right thirds: {np.round(thirds, 4)}")
    # ~45 transients a third, each 0.4-1.1 % uncertain: each median is known to ~0.15 %.
    # Blending node PSFs whose change is at most score.max_psf_change = 5 % (L2) apart
    # leaves well under 1 % of flux from side to side; one PSF for the image missed by
    # 12 % and 11 % (1.119 / 0.992 / 0.889).
    assert max(thirds) - min(thirds) < 0.01
    # The level is the reference PSF's (test_psf_flux tests it on a constant PSF): here
    # it is stacked from locus stars over the whole varying field, not at its centre,
    # and the thirds read 0.998 / 0.992 / 0.990 (1.002 / 0.996 / 0.993 with the former
    # star selection).
    for value in thirds:
        assert value == pytest.approx(1.0, abs=0.015)
