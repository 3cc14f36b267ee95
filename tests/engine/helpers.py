"""Shared helpers of the engine tests: synthetic PSFs, the steps up to the kernel fit."""

from __future__ import annotations

from typing import Any

import numpy as np

from diffviewer.config import CandidatesConfig, KernelConfig, ScoreConfig
from diffviewer.engine import candidates, kernel, psf, sky
from diffviewer.engine.progress import null_reporter
from diffviewer.exposure import Exposure
from diffviewer.stats import FWHM_PER_SIGMA
from diffviewer.synthetic import render_gaussians


def run_as_command(
    science: Exposure | object, template: Exposure | object, config: object = None
) -> Any:
    """``run_subtraction`` as ``diffviewer run`` calls it on two cores: two threads lent to
    the engine's tiles and stamp chunks (its output is the same on one: see
    ``tests/test_cli.py::test_threads_lent_change_no_output``), for the tests that run it
    dozens of times (a 512^2 pair: 1.8 s against 2.1 s).
    """
    from concurrent.futures import ThreadPoolExecutor

    from diffviewer.engine.pipeline import run_subtraction

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="test-lent") as pool:
        return run_subtraction(science, template, config, executor=pool)  # type: ignore[arg-type]


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
    cands: candidates.CandidateSet | None = None,
) -> kernel.KernelFit:
    """Select kernel stars (unless ``cands`` gives them), estimate both PSFs (with the
    bright-source fallback) and fit."""
    rep = null_reporter()
    if cands is None:
        cands = select(science, template, config, candidates_config)
    xy = cands.table["x"], cands.table["y"]
    sci_psf = psf.estimate_psf(science, *xy, bright=cands.bright)
    tmpl_psf = psf.estimate_psf(template, *xy, bright=cands.bright)
    backgrounds = sky.input_backgrounds(science, template, ScoreConfig().background_mesh)
    sources = sky.input_sources(science, template, backgrounds)
    return kernel.fit_kernel(
        science,
        template,
        cands,
        sci_psf,
        tmpl_psf,
        backgrounds,
        sources,
        config or KernelConfig(),
        rep,
    )


def select(
    science: Exposure,
    template: Exposure,
    config: KernelConfig | None = None,
    candidates_config: CandidatesConfig | None = None,
) -> candidates.CandidateSet:
    """The kernel stars of a pair, selected for the kernel ``config``'s basis."""
    return candidates.select_candidates(
        science,
        template,
        candidates_config or CandidatesConfig(),
        null_reporter(),
        kernel_config=config or KernelConfig(),
    )


def spread_positions(
    rng: np.random.Generator,
    shape: tuple[int, int],
    n: int,
    margin: float,
    separation: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uniform positions ``margin`` px or more from the edges, each at least
    ``separation`` px from the others (drawn in turn, a draw too close drawn again)."""
    xs: list[float] = []
    ys: list[float] = []
    for _ in range(1000 * n):
        if len(xs) == n:
            break
        x = float(rng.uniform(margin, shape[1] - margin))
        y = float(rng.uniform(margin, shape[0] - margin))
        if (
            separation <= 0
            or not xs
            or np.min(np.hypot(np.subtract(xs, x), np.subtract(ys, y))) >= separation
        ):
            xs.append(x)
            ys.append(y)
    if len(xs) < n:
        raise ValueError(f"{n} positions {separation} px apart do not fit in {shape}")
    return np.array(xs), np.array(ys)


def injected_flux_ratios(
    shape: tuple[int, int],
    n_stars: int,
    n: int,
    flux_range: tuple[float, float],
    margin: float,
    seed: int = 0,
    separation: float = 0.0,
    true_psf: bool = False,
    **pair: object,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Inject ``n`` transients (log-uniform flux in ``flux_range``, ``margin`` px or more
    from the edges, ``separation`` px or more apart) into a synthetic pair
    (:func:`diffviewer.synthetic.make_pair` with ``pair``; ``seed`` picks another pair and
    other transients), run the whole pipeline (``true_psf``: with the science's true PSF
    given, :attr:`~diffviewer.synthetic.SyntheticPair.sci_psf`), and match each to the
    catalog's nearest row within 2 px.

    Returns
    -------
    x : numpy.ndarray
        Column of each transient found (px).
    ratio, rel_err : numpy.ndarray
        Its catalog ``psf_flux`` and ``psf_flux_err`` over the injected flux.
    meta : dict
        The catalog's ``meta``.
    """
    from diffviewer.synthetic import make_pair

    rng = np.random.default_rng(3 + seed)
    if separation > 0:
        x, y = spread_positions(rng, shape, n, margin, separation)
    else:
        x = rng.uniform(margin, shape[1] - margin, n)
        y = rng.uniform(margin, shape[0] - margin, n)
    flux = np.exp(rng.uniform(np.log(flux_range[0]), np.log(flux_range[1]), n))
    transients = list(zip(x.tolist(), y.tolist(), flux.tolist(), strict=True))
    made = make_pair(shape, n_stars, seed=5 + seed, transients=transients, **pair)  # type: ignore[arg-type]
    science = made.science.replace(psf=made.sci_psf) if true_psf else made.science
    cat = run_as_command(science, made.template).diasources
    cx, cy = np.asarray(cat["x"]), np.asarray(cat["y"])
    near = np.hypot(cx[None, :] - x[:, None], cy[None, :] - y[:, None])
    found = near.min(axis=1) < 2.0
    rows = near.argmin(axis=1)[found]
    return (
        x[found],
        np.asarray(cat["psf_flux"])[rows] / flux[found],
        np.asarray(cat["psf_flux_err"])[rows] / flux[found],
        dict(cat.meta),
    )
