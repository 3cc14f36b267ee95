"""Benchmark of the engine end to end: files in, every output written.

Each case runs in its own interpreter so that its peak RSS is its own. Prints a
table of seconds per step, the total, peak RSS and the difference's noise ratio.

Usage: ``python benchmarks/bench_engine.py [--cases goto synthetic4k decam] [--repeat N]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

CASES = {
    "goto": (str(DATA / "goto" / "1.fits"), str(DATA / "goto" / "2.fits")),
    "decam": (
        str(DATA / "decam_mini" / "peer_output_sfft" / "Stack-DEC-OBS04.fits"),
        str(DATA / "decam_mini" / "peer_output_sfft" / "Stack-DEC-OBS18.fits"),
    ),
}
SYNTHETIC = {"synthetic4k": ((4096, 4096), 20000)}
#: The steps after the subtraction (issue 4's budget); everything else is issue 3's.
DIA_STEPS = ("score", "detect", "measure")
#: Rows printed without a unit of seconds.
UNITLESS = ("peak_rss_gb", "noise_ratio", "noise_ratio_propagated", "n_diasources")


def make_synthetic(folder: Path, shape: tuple[int, int], n_stars: int) -> tuple[str, str]:
    """Write a seeded synthetic pair as FITS files (in a child process, outside the measurement)."""
    from diffviewer.fits_write import write_exposure
    from diffviewer.synthetic import make_pair

    pair = make_pair(shape, n_stars, seed=42, transients=[(1000.0, 1000.0, 2e4)])
    sci, tmpl = folder / "science.fits", folder / "template.fits"
    write_exposure(sci, pair.science)
    write_exposure(tmpl, pair.template)
    return str(sci), str(tmpl)


def measure_case(science: str, template: str, out: str) -> dict[str, float]:
    """Run one pair end to end in this process and return its figures."""
    from diffviewer.config import SubtractionConfig
    from diffviewer.engine.diagnostics import noise_ratio
    from diffviewer.engine.pipeline import run_subtraction
    from diffviewer.io import read_exposure
    from diffviewer.outputs import write_outputs

    t0 = time.perf_counter()
    sci, tmpl = read_exposure(science), read_exposure(template)
    t_read = time.perf_counter() - t0
    result = run_subtraction(sci, tmpl, SubtractionConfig())
    t1 = time.perf_counter()
    write_outputs(result, out, [Path(science), Path(template)], overwrite=True)
    t_write = time.perf_counter() - t1
    total = time.perf_counter() - t0
    dia = sum(result.timings.get(step, 0.0) for step in DIA_STEPS)
    figures = {
        "read": t_read,
        **result.timings,
        "write": t_write,
        "total": total,
        "  matching+subtraction (issue 3)": total - dia,
        "  score+detect+measure (issue 4)": dia,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "noise_ratio": noise_ratio(result.difference),
        "noise_ratio_propagated": noise_ratio(result.subtraction.difference),
        "n_diasources": float(np.sum(~np.asarray(result.diasources["sky_source"], dtype=bool))),
    }
    return figures


def _child(*args: str) -> list[str] | dict[str, float]:
    """Run this script's child mode in a fresh interpreter and return its JSON answer."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr else "child failed")
    answer: list[str] | dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return answer


def run_child(science: str, template: str) -> dict[str, float]:
    """Measure one case in a fresh interpreter (so the peak RSS is the case's own)."""
    with tempfile.TemporaryDirectory() as out:
        figures = _child("measure", science, template, out)
    assert isinstance(figures, dict)
    return figures


def print_table(results: dict[str, dict[str, float]]) -> None:
    """Print the figures as a table, one column per case."""
    names = list(results)
    rows: list[str] = []
    for figures in results.values():
        rows.extend(k for k in figures if k not in rows)
    width = max(len(r) for r in rows) + 2
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print("step".ljust(width) + "".join(n.rjust(14) for n in names))
    for row in rows:
        unit = "" if row in UNITLESS else " s"
        cells = []
        for n in names:
            v = results[n].get(row)
            cells.append(("-" if v is None else f"{v:.3f}{unit}").rjust(14))
        print(row.ljust(width) + "".join(cells))


def main() -> int:
    """Run the chosen cases and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--cases", nargs="+", default=["goto", "synthetic4k"], choices=[*CASES, *SYNTHETIC]
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the fastest is shown")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        if mode == "make":
            folder, ny, nx, n = rest
            answer: object = make_synthetic(Path(folder), (int(ny), int(nx)), int(n))
        else:
            answer = measure_case(*rest)
        print(json.dumps(answer))
        return 0
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            if case in SYNTHETIC:
                (ny, nx), n = SYNTHETIC[case]
                science, template = _child("make", tmp, str(ny), str(nx), str(n))
            else:
                science, template = CASES[case]
                if not Path(science).exists():
                    print(f"skipping {case}: {science} is absent")
                    continue
            runs = [run_child(science, template) for _ in range(args.repeat)]
            results[case] = min(runs, key=lambda r: r["total"])
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
