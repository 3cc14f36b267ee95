"""Benchmark the template warp on a 2048 x 2048 pair: diffviewer against reproject.

Run ``python benchmarks/bench_warp.py`` from the project root. The science grid
uses the real TAN-SIP WCS of ``../shared/data/goto/1.fits`` when present (a plain
TAN WCS otherwise); the template grid is shifted by (3.3, -2.7) px and rotated by
1 degree (and, in one row, shifted by 0.3 px through a star-fit transform). Prints
wall-clock and CPU seconds (best of ``--repeat``) and the largest difference from
``reproject.reproject_interp`` over pixels both cover.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from reproject import reproject_interp

from diffviewer.config import WarpConfig
from diffviewer.engine.register_fit import PolynomialTransform
from diffviewer.engine.warp import warp_exposure, warp_template
from diffviewer.engine.warp_map import _to_template, pixel_map, wcs_mapping
from diffviewer.exposure import Exposure
from diffviewer.synthetic import tan_wcs

T = TypeVar("T")
GOTO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "goto" / "1.fits"


def _wcs_pair(n: int) -> tuple[WCS, WCS, str]:
    """Science and template WCSs: the template shifted by (3.3, -2.7) px and rotated 1 deg."""
    if GOTO.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            science = WCS(fits.getheader(GOTO))
        kind = "TAN-SIP (goto/1.fits)"
    else:
        science = tan_wcs((n, n))
        kind = "TAN (synthetic)"
    template = science.deepcopy()
    template.wcs.crpix = template.wcs.crpix + np.array([3.3, -2.7])
    t = np.deg2rad(1.0)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    template.wcs.pc = template.wcs.get_pc() @ rot.T
    template.wcs.set()
    return science, template, kind


def _best(func: Callable[[], T], repeat: int) -> tuple[tuple[float, float], T]:
    """Best wall-clock and CPU seconds of ``repeat`` calls, and the last result (CPU time
    is what a shared, loaded machine still measures fairly)."""
    times = []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = func()
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    return (min(t for t, _ in times), min(c for _, c in times)), out


def main() -> None:
    """Time each way of warping and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    n = args.size
    sci_wcs, tmpl_wcs, kind = _wcs_pair(n)
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 10.0, (n, n)).astype(np.float32)
    mask = np.zeros((n, n), np.int32)
    mask[rng.integers(0, n, 2000), rng.integers(0, n, 2000)] = 1
    science = Exposure(image, np.full((n, n), 100.0), np.zeros((n, n), np.int32), wcs=sci_wcs)
    template = Exposure(image, np.full((n, n), 100.0), mask, wcs=tmpl_wcs)
    stack = np.stack([image, np.full((n, n), 100.0, np.float32), mask.astype(np.float32)])

    rows = []
    # register = "wcs": the warp alone, as reproject does it (no check of the WCSs on stars)
    config = WarpConfig(register="wcs")
    t, result = _best(lambda: warp_template(template, science, config), args.repeat)
    ours = result.exposure.image
    rows.append(("diffviewer warp_template (image, variance, 1 mask plane)", t, np.nan))
    shift = PolynomialTransform.rotation(0.0, (0.3, 0.0), (0.0, 0.0))
    t, _ = _best(lambda: warp_exposure(template, science, "bilinear", mapping=shift), args.repeat)
    rows.append(("  warp_exposure of a 0.3 px shift (a translation, as a star fit)", t, np.nan))
    t, (_, _, how) = _best(lambda: pixel_map(wcs_mapping(sci_wcs, tmpl_wcs), (n, n)), args.repeat)
    rows.append((f"  of which the pixel mapping (coarse grid, {how}, verified)", t, np.nan))
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    t, _ = _best(lambda: _to_template(sci_wcs, tmpl_wcs, xx, yy), args.repeat)
    rows.append(("  the exact pixel mapping at every pixel, for comparison", t, np.nan))
    for roundtrip in (True, False):

        def run(roundtrip: bool = roundtrip) -> tuple[np.ndarray, np.ndarray]:
            return reproject_interp(
                (stack, tmpl_wcs),
                sci_wcs,
                shape_out=stack.shape,
                order="bilinear",
                roundtrip_coords=roundtrip,
            )

        t, (out, foot) = _best(run, args.repeat)
        both = (foot[0] > 0) & ((result.exposure.mask & 256) == 0)
        diff = float(np.abs(out[0] - ours)[both].max())
        rows.append((f"reproject_interp, 3 planes stacked, roundtrip_coords={roundtrip}", t, diff))

    print(f"warp of a {n} x {n} template, {kind} WCS, bilinear")
    print(f"{'method':<66} {'wall s':>7} {'CPU s':>7} {'max |diff|':>11}")
    for name, (wall, cpu), diff in rows:
        shown = "-" if np.isnan(diff) else f"{diff:.2e}"
        print(f"{name:<66} {wall:7.2f} {cpu:7.2f} {shown:>11}")


if __name__ == "__main__":
    main()
