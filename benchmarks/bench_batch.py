"""Benchmark of ``diffviewer batch``: pairs per minute against the number of workers.

Real pairs: the four quadrants (925 x 925) of the GOTO pair and the five DECam
``mini`` frame pairs (256 x 256), from ``../shared/data``. Each worker count runs the
whole list into a fresh folder on a fresh ``LocalCluster`` (start-up and shut-down
included in the wall time); then a rerun of the finished batch (everything skipped)
is timed. Prints a table, the per-pixel cost and peak memory of the pairs, and what a
survey night of 4k x 2k CCD pairs costs from those figures.

Usage: ``python benchmarks/bench_batch.py [--workers 1 2] [--night-pairs 200000]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.wcs import WCS

from diffviewer.batch import BatchOptions, run_batch
from diffviewer.config import SubtractionConfig

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
#: A survey CCD (px).
CCD_PIXELS = 4096 * 2048


def goto_quadrants(folder: Path) -> list[tuple[str, str, str]]:
    """The GOTO pair cut into four quadrant pairs (same grid, WCS kept)."""
    pairs = []
    for role, name in (("science", "1.fits"), ("template", "2.fits")):
        with fits.open(DATA / "goto" / name) as hdul:
            data, header = hdul[0].data.astype(np.float32), hdul[0].header
        wcs = WCS(header)
        half = data.shape[0] // 2
        for q, (y, x) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            cut = Cutout2D(data, (x * half + half // 2, y * half + half // 2), half, wcs=wcs)
            head = header.copy()
            head.update(cut.wcs.to_header())
            path = folder / f"goto_q{q}_{role}.fits"
            fits.writeto(path, cut.data, head, overwrite=True)
            if role == "science":
                pairs.append((str(path), "", f"goto_q{q}"))
            else:
                pairs[q] = (pairs[q][0], str(path), pairs[q][2])
    return pairs


def decam_pairs() -> list[tuple[str, str, str]]:
    """The five DECam frame pairs."""
    folder = DATA / "decam_mini" / "input"
    return [
        (
            str(folder / f"DEC-OBS04{c}.mini.fits"),
            str(folder / f"DEC-OBS18{c}.mini.fits"),
            f"decam_{c}",
        )
        for c in "abcde"
    ]


def main() -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--night-pairs", type=int, default=200_000)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"real data {DATA} is absent; nothing to benchmark", file=sys.stderr)
        return 1
    load = os.getloadavg()[0]
    print(f"cores {os.cpu_count()}, load average {load:.1f} at start")
    print(f"{'workers':>7} {'pairs':>5} {'wall s':>7} {'pairs/min':>9} {'rerun s':>7}")
    per_pixel = []
    with tempfile.TemporaryDirectory() as tmp:
        pairs = goto_quadrants(Path(tmp)) + decam_pairs()
        for n in args.workers:
            out = Path(tmp) / f"out{n}"
            options = BatchOptions(out=out, config=SubtractionConfig(), workers=n)
            t0 = time.perf_counter()
            rows = run_batch(pairs, options, say=lambda _: None)
            wall = time.perf_counter() - t0
            t0 = time.perf_counter()
            run_batch(pairs, options, say=lambda _: None)
            rerun = time.perf_counter() - t0
            ok = [r for r in rows if r["status"] == "ok"]
            print(f"{n:>7} {len(ok):>5} {wall:>7.1f} {len(ok) / wall * 60:>9.1f} {rerun:>7.1f}")
            for r in ok:
                if r["name"].startswith("goto"):
                    per_pixel.append((r["seconds"], r["peak_memory"]))
    seconds = float(np.median([s for s, _ in per_pixel]))
    memory = float(np.max([m for _, m in per_pixel]))
    quad = (1850 // 2) ** 2
    ccd_s = seconds * CCD_PIXELS / quad
    print(
        f"GOTO quadrant ({quad / 1e6:.2f} Mpx): median {seconds:.1f} s per pair on a worker, "
        f"peak {memory:.0f} MB; scaled to a 4k x 2k CCD: {ccd_s:.0f} s per pair"
    )
    for nodes, cores in ((10, 32), (50, 32), (100, 64)):
        hours = args.night_pairs * ccd_s / (nodes * cores) / 3600
        print(
            f"{args.night_pairs} CCD pairs on {nodes} nodes x {cores} workers: {hours:.1f} h "
            f"({args.night_pairs * ccd_s / 3600:.0f} core-hours)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
