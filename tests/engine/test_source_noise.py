"""The PSF-flux error with each source's own noise carried through the kernel (issue 12
point 5: a catalog whose S/N agrees with its score and with the scatter of its fluxes)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import signal

from diffviewer.engine import source_noise
from diffviewer.engine.pipeline import run_subtraction
from diffviewer.engine.subtract import science_scale
from diffviewer.stats import robust_std
from diffviewer.synthetic import make_pair


def _dense_weights(w: np.ndarray, filters: list[np.ndarray], n: int) -> list[np.ndarray]:
    """Each input pixel's weight in ``sum_i w_i (F * X)_i`` on an ``n`` x ``n`` image with
    ``w`` at its centre, by brute force: every pixel's impulse convolved ('same', direct)."""
    c, h = n // 2, w.shape[0] // 2
    placed = np.zeros((n, n))
    placed[c - h : c + h + 1, c - h : c + h + 1] = w
    out = []
    for f in filters:
        weights = np.zeros((n, n))
        for p in range(n * n):
            impulse = np.zeros((n, n))
            impulse.flat[p] = 1.0
            weights.flat[p] = np.sum(placed * signal.convolve2d(impulse, f, mode="same"))
        out.append(weights)
    return out


def test_the_factor_is_the_exact_variance_over_the_plane_s_by_brute_force() -> None:
    # Asymmetric kernel, decorrelation kernel and weights (any flip or offset shows), the
    # science convolved (s = 1 / kernel sum); a variance spike beside the source on the
    # convolved image. The exact variance by impulses: sum V_X a^2 + sum V_Y b^2 with a,
    # b each pixel's weight through phi * s K and s phi; the plane's: the PSF-weighted
    # s^2 (K^2 * V_X + V_Y); each over its value on flat planes.
    rng = np.random.default_rng(3)
    pair = make_pair((96, 96), 20, seed=4, sci_fwhm=2.5, tmpl_fwhm=4.0)
    fit = run_subtraction(pair.science, pair.template).kernel
    assert fit.convolved == "science"
    kern = rng.uniform(0.0, 1.0, (7, 7)) * 0.05
    kern[3, 3] += 0.6
    fit = dataclasses.replace(
        fit,
        solution=dataclasses.replace(
            fit.solution, basis=kern[None], coefficients=np.ones((1, 1)), spatial_order=0
        ),
    )
    phi = rng.normal(0.0, 0.05, (5, 5))
    phi[2, 2] += 1.0
    w = rng.uniform(0.0, 1.0, (9, 9))
    n, (vx, vy) = 41, (9.0, 4.0)
    convolved, other = np.full((n, n), vx), np.full((n, n), vy)
    convolved[n // 2 + 2, n // 2 - 1] += 400.0
    noise = source_noise.InputNoise(fit, convolved, other, (vx, vy), phi)
    factor = source_noise.error_factors(noise, w, np.array([20.0]), np.array([20.0]))[0]

    s = science_scale(fit)
    a, b = _dense_weights(w, [signal.convolve2d(phi, s * kern), s * phi], n)
    exact = np.sum(convolved * a**2) + np.sum(other * b**2)
    exact_sky = vx * np.sum(a**2) + vy * np.sum(b**2)
    placed = np.zeros((n, n))
    placed[16:25, 16:25] = w
    plane_x = signal.convolve2d(convolved, (s * kern) ** 2, mode="same")
    plane = np.sum(placed**2 * (plane_x + s * s * other))
    plane_sky = np.sum(placed**2) * (vx * np.sum((s * kern) ** 2) + s * s * vy)
    want = np.sqrt((exact / exact_sky) / (plane / plane_sky))
    assert want > 1.05
    # the module cuts each weight to the box holding all but 1e-4 of its sum (_core)
    assert factor == pytest.approx(want, rel=1e-4)


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
