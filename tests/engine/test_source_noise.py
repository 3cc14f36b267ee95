"""The PSF-flux error with each source's own noise carried through the kernel (issue 12
point 5: a catalog whose S/N agrees with its score and with the scatter of its fluxes)."""

from __future__ import annotations

import numpy as np

from diffviewer.engine import source_noise
from diffviewer.engine.photometry import PsfModel
from diffviewer.engine.pipeline import run_subtraction
from diffviewer.stats import robust_std
from diffviewer.synthetic import make_pair


def test_the_factor_is_one_on_flat_variance_planes() -> None:
    # Planes holding their sky variance alone: the exact variance and the plane's differ
    # only by the decorrelation's whitening, which the ratio to flat sky takes out, at
    # every position, the image's corners and beyond them included.
    pair = make_pair((160, 160), 60, seed=4, sci_fwhm=2.5, tmpl_fwhm=4.0)
    result = run_subtraction(pair.science, pair.template)
    assert result.kernel.convolved == "science"
    flat = np.full(pair.science.shape, 9.0)
    noise = source_noise.InputNoise(
        result.kernel, flat, 0.25 * flat, (9.0, 2.25), np.asarray(result.decorrelation.kernel)
    )
    x = np.array([80.3, 0.0, 159.0, -3.0, 40.7])
    y = np.array([80.6, 0.0, 159.0, 170.0, 120.2])
    for weights in (
        source_noise.psf_weights(PsfModel(result.decorrelation.psf), pair.science.shape),
        source_noise.aperture_weights(6.0),
    ):
        factors = source_noise.error_factors(noise, weights, x, y)
        np.testing.assert_allclose(factors, 1.0, atol=1e-9)


def test_bright_transients_on_the_convolved_science_have_errors_that_hold() -> None:
    # The sharper science (2.5 px) convolved onto a 4 px template; 16 transients of
    # 20,000 counts (S/N ~100, their own Poisson noise most of their variance) on each of
    # six draws. The variance plane spreads a source's noise over the kernel's pixels as
    # if they stayed independent: the pulls' robust scatter was 1.33 and the ZOGY score
    # (which propagates the inputs' variance planes) read 0.81 of the catalog's S/N. Now
    # 1.08 and 0.99. The robust scatter of 96 pulls is known to ~0.09: at most 1.22; the
    # score within 5 % of the S/N.
    flux = 20000.0
    grid = np.linspace(50, 206, 4)
    transients = [(float(x) + 0.3, float(y) + 0.2, flux) for x in grid for y in grid]
    pulls, ratios, aperture_pulls = [], [], []
    for seed in range(6):
        pair = make_pair(
            (256, 256), 120, seed=100 + seed, sci_fwhm=2.5, tmpl_fwhm=4.0, transients=transients
        )
        result = run_subtraction(pair.science, pair.template)
        assert result.kernel.convolved == "science"
        cat = result.diasources
        x, y = np.asarray(cat["x"]), np.asarray(cat["y"])
        for tx, ty in zip(pair.transient_x, pair.transient_y, strict=True):
            dist = np.hypot(x - tx, y - ty)
            k = int(np.argmin(dist))
            if dist[k] < 1.5:
                pulls.append((cat["psf_flux"][k] - flux) / cat["psf_flux_err"][k])
                # the 9 px aperture holds all of a 4 px PSF: its flux is the transient's
                aperture_pulls.append((cat["ap_flux_9"][k] - flux) / cat["ap_flux_9_err"][k])
                ratios.append(cat["score_peak"][k] / cat["snr"][k])
    robust, aperture_robust = (robust_std(np.asarray(p)) for p in (pulls, aperture_pulls))
    print(
        f"\n{len(pulls)} transients: pulls' robust scatter {robust:.2f} (9 px aperture "
        f"{aperture_robust:.2f}), score/snr {np.median(ratios):.3f}"
    )
    assert len(pulls) >= 90
    assert 0.8 <= robust <= 1.22
    assert 0.8 <= aperture_robust <= 1.22
    assert abs(float(np.median(ratios)) - 1.0) < 0.05
