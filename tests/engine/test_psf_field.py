"""The catalog's PSF follows a PSF that varies over the image (issue 12 point 5)."""

from __future__ import annotations

import numpy as np
import pytest

from diffviewer.engine import zogy
from diffviewer.engine.photometry import PsfModel, forced_psf_flux
from diffviewer.engine.progress import null_reporter
from diffviewer.engine.psf_field import PsfField
from diffviewer.exposure import Exposure, MaskPlane
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


def _elliptical(half: int, sx: float, sy: float) -> np.ndarray:
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    g = np.exp(-(xx**2) / (2 * sx**2) - yy**2 / (2 * sy**2))
    return g / g.sum()


def test_the_filtered_difference_is_the_catalogs_psf_fit_everywhere() -> None:
    # Detection thresholds the difference filtered with its PSF over the filtered noise;
    # the catalog's snr is the forced PSF fit with the PSF field. Filtered with the field's
    # nodes, blended as the field blends them, the two are one estimator: the numerator
    # exactly, the noise to the nodes' spread about their blend (FWHM 3.3 -> 4.0 px across
    # a 100 px cell: at a cell's centre, under white noise, the blended noise is 0.70 %
    # above the fit's, the largest gap; 0.67 % measured). With the centre's PSF for
    # detection (before), the gap reached 0.65 (of the S/N, or of 1 sigma below it),
    # median 0.07.
    rng = np.random.default_rng(5)
    shape, half = (240, 260), 12
    xs, ys = (30.0, 130.0, 230.0), (20.0, 120.0, 220.0)
    nodes = tuple(
        tuple(_elliptical(half, 1.4 + 0.3 * i, 1.4 + 0.3 * j) for i in range(3)) for j in range(3)
    )
    field = PsfField(xs, ys, nodes, nodes[1][1], enclosed=0.98)
    # White noise of varying variance and a star residual: a +-2000 count dipole.
    sigma = np.linspace(15.0, 30.0, shape[1])[None, :] * np.ones(shape)
    image = rng.normal(size=shape) * sigma
    image[100:103, 90:93] += 2000.0
    image[103:106, 90:93] -= 2000.0
    mask = np.zeros(shape, dtype=np.int32)
    mask[50, 50:60] = int(MaskPlane.BAD)
    diff = Exposure(image, sigma**2, mask)
    usable = diff.usable_pixels()
    at = [(int(x), int(y)) for x, y in rng.uniform((15, 15), (245, 225), (200, 2))]
    at += [(x, y) for x in range(86, 97) for y in range(96, 110)]
    for psf, bound in ((field, 0.0075), (nodes[1][1], None)):
        filtered = zogy.al_score(diff, psf, null_reporter()).image
        gaps = []
        for x, y in at:
            flux, err = forced_psf_flux(image, sigma**2, usable, field, x, y)
            gaps.append(abs(filtered[y, x] - flux / err) / max(1.0, abs(flux / err)))
        if bound is not None:
            assert max(gaps) < bound
        else:
            assert max(gaps) > 0.1  # the test can tell the two filters apart
