"""Completeness on GOTO at equal false peaks: diffviewer and HOTPANTS on the same injections.

The GOTO pair (``../shared/data/goto/``) holds no known transient, so its own 5 sigma
peaks tell residuals and real variables together. Here the point sources of
``tests/engine/test_dia_real.py`` (the science PSF diffviewer measured, on blank sky,
S/N 3-30 on diffviewer's difference's own noise: ``tests/engine/injection.py``) are
added to ``1.fits``; HOTPANTS (``peers.hotpants_command``, the pair's flags) and
diffviewer (default config) subtract ``2.fits`` from the same injected file, and one
shared detector (``peer_metrics``: 5 x 5 local maxima of the raw difference filtered
with the science PSF diffviewer measured, in the robust sigma of its sky) scores both
differences: the injections found by bin of that S/N at 5 sigma, the other peaks
(farther than 5 px from every injection: star residuals, real variables, noise), and
the injections found at the threshold where each difference has as many other peaks as
the one with the fewest at 5 sigma (completeness at equal purity).

Usage: ``python benchmarks/bench_goto_injections.py [--seeds N]``; each seed draws
other positions and fluxes, and the table pools the seeds (:func:`pooled`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import peer_metrics as pm
from astropy.io import fits
from peers import (
    ROOT,
    SCIENCE_PAIRS,
    hotpants_binary,
    hotpants_command,
    read_hotpants,
    run_process,
)
from scipy import ndimage

from diffviewer.engine import pipeline
from diffviewer.io import read_exposure

sys.path.insert(0, str(ROOT))
from tests.engine.injection import inject_on_blank_sky

#: The pair, as the peer benchmarks share it.
PAIR = SCIENCE_PAIRS["goto"]


def hotpants_raw(
    binary: Path, science: np.ndarray, files: tuple[Path, Path], folder: Path
) -> np.ndarray:
    """HOTPANTS's difference of ``science`` (written with the header of ``files[0]``) and
    the template ``files[1]``, NaN where its mask is set."""
    path = folder / "injected.fits"
    fits.PrimaryHDU(science.astype(np.float32), fits.getheader(files[0])).writeto(path)
    out = folder / "hp"
    run = run_process(hotpants_command(binary, PAIR, path, files[1], out))
    if run.returncode != 0:
        raise RuntimeError(f"HOTPANTS failed on {path} (exit {run.returncode})")
    return read_hotpants(out)[0]


def seed_figures(
    binary: Path,
    files: tuple[Path, Path],
    base: pipeline.SubtractionResult,
    seed: int,
) -> dict[str, dict[str, float]]:
    """Both programs' figures on one injection set into the pair ``files`` (``base``:
    diffviewer's run without injections): the injections of each bin, and the fractions
    found at 5 sigma and at equal other peaks."""
    injected = inject_on_blank_sky(base, np.random.default_rng(seed))
    inj = pm.Injections(injected.xy[:, 0], injected.xy[:, 1], injected.snr)
    # The template on the science's grid (GOTO's were made on one: nothing is warped).
    ours = pipeline.run_subtraction(
        base.science.replace(image=injected.image), base.template.exposure
    )
    raw = ours.subtraction.difference
    diffs = {"diffviewer": np.where(raw.good_pixels(), raw.image.astype(np.float64), np.nan)}
    with tempfile.TemporaryDirectory() as tmp:
        diffs["HOTPANTS"] = hotpants_raw(binary, injected.image, files, Path(tmp))
    bright = injected.image > np.median(injected.image) + 3 * pm.robust_sigma(injected.image)
    sky = ~ndimage.binary_dilation(bright, iterations=5)
    psf = np.asarray(base.kernel.science_psf.image, dtype=np.float64)
    peaks = {}
    for name, diff in diffs.items():
        filtered, covered, _ = pm.significance(diff, psf / psf.sum(), sky)
        peaks[name] = pm.shared_peaks(filtered, covered, inj)
    others = {name: p.false_above(pm.THRESHOLD) for name, p in peaks.items()}
    budget = min(others.values())
    figures = {}
    for name, p in peaks.items():
        figures[name] = {
            "other peaks at 5 sigma": float(others[name]),
            **pm.found_above(p, inj, pm.THRESHOLD, ""),
            **pm.found_at_budget(p, inj, budget),
            **{
                f"injected S/N {lo:g}-{hi:g}": float(np.sum((inj.snr >= lo) & (inj.snr < hi)))
                for lo, hi in pm.SNR_BINS
            },
        }
    return figures


def main() -> int:
    """Run every seed and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="injection sets (each a pair of runs)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    binary = hotpants_binary()
    files = PAIR.make(Path("."))
    if binary is None or files is None:
        print("skipped: HOTPANTS could not be built or the GOTO data is absent")
        return 0
    base = pipeline.run_subtraction(*(read_exposure(str(f)) for f in files))
    runs = [seed_figures(binary, files, base, 2024 + k) for k in range(args.seeds)]
    print(f"\n{PAIR.name}, {args.seeds} injection set(s), the shared detector")
    print(f"{'':40}" + "".join(f"{name:>14}" for name in runs[0]))
    for row in runs[0]["diffviewer"]:
        cells = "".join(f"{pooled(runs, name, row):>14.3g}" for name in runs[0])
        print(f"{row:40}{cells}")
    print(
        "found: fraction of the injections of that S/N (on diffviewer's difference's own "
        "noise) within 2 px of a peak; other peaks: farther than 5 px from every "
        "injection; at equal false peaks: above the threshold (sigma) where each "
        "difference has the fewest other peaks of the two at 5 sigma; injected: counts"
    )
    return 0


def pooled(runs: list[dict[str, dict[str, float]]], name: str, row: str) -> float:
    """A row over the seeds: a bin's found fraction over all its injections, the
    injected counts summed, any other figure averaged."""
    values = np.array([run[name][row] for run in runs])
    if row.startswith("injected"):
        return float(values.sum())
    if row.startswith("found S/N"):
        counts = np.array([run[name][f"injected S/N {row.split()[2]}"] for run in runs])
        # A seed's empty bin (NaN, no injection) adds nothing.
        return float(np.nansum(values * counts) / max(counts.sum(), 1.0))
    return float(values.mean())


if __name__ == "__main__":
    sys.exit(main())
