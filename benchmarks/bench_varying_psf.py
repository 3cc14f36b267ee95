"""False detections on pairs whose science PSF varies across the field: ZOGY, AL, difference.

Run ``python benchmarks/bench_varying_psf.py`` from the project root (about a minute).
Each synthetic pair (:func:`diffviewer.synthetic.make_pair`) carries five transients of
3e4 counts; a catalog entry (sky sources excluded) farther than 5 px from every
transient is a false positive. The pipeline runs with its defaults and the score set to
ZOGY (S_corr with the local PSFs of :mod:`diffviewer.engine.score_psfs`), to the AL
preconvolution score, and to no score with detection on the difference itself (what
the difference supports). Prints one row per pair and method.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import numpy as np

from diffviewer.config import SubtractionConfig
from diffviewer.engine.pipeline import run_subtraction
from diffviewer.synthetic import make_pair

MOFFAT = dict(
    profile="moffat",
    sci_fwhm=3.55,
    sci_fwhm_gradient=0.2,
    sci_ellipticity=(0.0, 0.15),
    sci_angle_deg=(0.0, 90.0),
    tmpl_fwhm=2.8,
    sci_beta=2.5,
    tmpl_beta=3.5,
    photometric_scale=1.3,
)
PAIRS: dict[str, dict[str, Any]] = {
    "gauss 512^2, FWHM +-10 %": dict(shape=(512, 512), n_stars=400, sci_fwhm_gradient=0.2),
    "gauss 512^2, FWHM +-25 %": dict(shape=(512, 512), n_stars=400, sci_fwhm_gradient=0.5),
    "moffat 1024^2, varying": dict(shape=(1024, 1024), n_stars=1500, **MOFFAT),
    "moffat 1024^2, same beta": dict(
        shape=(1024, 1024), n_stars=1500, **{**MOFFAT, "sci_beta": 3.5}
    ),
}


def configs(base: SubtractionConfig) -> dict[str, SubtractionConfig]:
    """The three ways of detecting: ZOGY score, AL score, the difference itself."""
    return {
        "zogy": dataclasses.replace(base, score=dataclasses.replace(base.score, method="zogy")),
        "al": dataclasses.replace(base, score=dataclasses.replace(base.score, method="al")),
        "difference": dataclasses.replace(
            base,
            score=dataclasses.replace(base.score, method="none"),
            detection=dataclasses.replace(base.detection, detect_on="difference"),
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel-min-size", type=int, default=None, help="kernel.min_size (px)")
    args = parser.parse_args()
    base = SubtractionConfig()
    if args.kernel_min_size is not None:
        base = dataclasses.replace(
            base, kernel=dataclasses.replace(base.kernel, min_size=args.kernel_min_size)
        )
    print(f"{'pair':28s} {'method':10s} {'false':>6s} {'found':>6s} {'nodes':>6s} {'score s':>8s}")
    for name, kwargs in PAIRS.items():
        ny, nx = kwargs["shape"]
        rng = np.random.default_rng(5)
        transients = [
            (float(rng.uniform(30, nx - 30)), float(rng.uniform(30, ny - 30)), 3e4)
            for _ in range(5)
        ]
        pair = make_pair(seed=1, transients=transients, **kwargs)
        for method, config in configs(base).items():
            t0 = time.perf_counter()
            result = run_subtraction(pair.science, pair.template, config)
            table = result.diasources[~np.asarray(result.diasources["sky_source"], dtype=bool)]
            x, y = np.asarray(table["x"], dtype=float), np.asarray(table["y"], dtype=float)
            near = np.hypot(x[:, None] - pair.transient_x, y[:, None] - pair.transient_y) < 5.0
            nodes = result.score.n_psf_nodes if result.score is not None else 0
            print(
                f"{name:28s} {method:10s} {int(np.sum(~near.any(axis=1))):6d} "
                f"{int(np.sum(near.any(axis=0))):6d} {nodes:6d} "
                f"{result.timings.get('score', time.perf_counter() - t0):8.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
