"""Kernel sums on small crops of the GOTO pair: diffviewer, HOTPANTS and the stars' own ratio.

A crop of a few hundred pixels holds a few kernel stars (2-17 good stamps on 300 px crops of GOTO),
fewer than the wing function needs (``kernel_basis.WING_MIN_STAMPS``): the kernel sum
rests on those stamps alone. Both programs run on the same crop files, and their flux
ratio (science over template: the kernel sum when the template is convolved, its inverse
when the science is) is set against a reference neither program makes: the flux ratio
of the isolated, unsaturated bright stars within :data:`MARGIN` px of the crop, in
apertures of :data:`APERTURE` px radius with the sky of an annulus beyond. The aperture
must hold the stars' wings: over the whole GOTO image (34 such stars, 2026-12-07) the
template-over-science ratio reads 1.016 in 10 px apertures, 1.009 in 15, 1.007 in 20
and 1.007 in 25 px, so 20 px (5.6 FWHM of the 3.6 px PSFs) is within about 0.2 % of the
total. The reference is the stars' ratios averaged with weights from each aperture's sky
noise, its error widened by their scatter where that is larger (``sqrt(chi^2 / dof)``);
crops with fewer than :data:`MIN_REFERENCE_STARS` such stars have no reference.

Usage: ``python benchmarks/bench_goto_crops.py [--size 300] [--step 330]``. Skipped with
the reason printed when the GOTO pair or HOTPANTS is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from peers import (
    DATA,
    ROOT,
    Pair,
    diffviewer_env,
    hotpants_binary,
    hotpants_command,
    run_process,
)
from photutils.aperture import CircularAnnulus, CircularAperture, aperture_photometry
from photutils.detection import DAOStarFinder
from scipy.spatial import cKDTree

#: Reference stars: apertures (px radius), the sky annulus's inner and outer radii, the
#: least distance to another detected source (px), the margin around the crop they are
#: taken from (px), the detection threshold (sigma) and the brightest peak (counts;
#: GOTO's coadds clip near 61,000).
APERTURE = 20.0
ANNULUS = (35.0, 50.0)
ISOLATION = 25.0
MARGIN = 150
THRESHOLD_SIGMA = 50.0
MAX_PEAK = 30000.0
#: GOTO's PSF FWHM (px), for the reference stars' detection.
FWHM = 3.6
MIN_REFERENCE_STARS = 3

#: The whole pair's files.
FILES = (DATA / "goto" / "1.fits", DATA / "goto" / "2.fits")

#: HOTPANTS's flags for a crop: GOTO's noise (as ``peers.PAIRS["goto"]``), and for a
#: crop's few stars 3 x 3 regions and a constant kernel and background, as diffviewer
#: lowers its orders to 0 with fewer than a dozen stamps.
CROP = Pair(
    "GOTO crop",
    lambda _: None,
    ("-tg", "1", "-tr", "0", "-ig", "1", "-ir", "0"),
    hotpants_extra=("-nsx", "3", "-nsy", "3", "-ko", "0", "-bgo", "0"),
)


@dataclass(frozen=True)
class Reference:
    """The stars' science-over-template flux ratio, its error and how many stars."""

    ratio: float
    error: float
    n: int


def reference_ratio(science: np.ndarray, template: np.ndarray) -> Reference:
    """:class:`Reference` of the isolated bright stars of one region (module docstring)."""
    _, level, sigma = sigma_clipped_stats(science)
    found = DAOStarFinder(fwhm=FWHM, threshold=THRESHOLD_SIGMA * sigma)(science - level)
    if found is None:
        return Reference(float("nan"), float("nan"), 0)
    xy = np.transpose([found["x_centroid"], found["y_centroid"]])
    far = cKDTree(xy).query(xy, k=2)[0][:, 1] if len(xy) > 1 else np.full(len(xy), np.inf)
    edge = ANNULUS[1] + 5
    ny, nx = science.shape
    keep = (
        (far > ISOLATION)
        & (np.asarray(found["peak"]) < MAX_PEAK)
        & (xy[:, 0] > edge)
        & (xy[:, 0] < nx - edge)
        & (xy[:, 1] > edge)
        & (xy[:, 1] < ny - edge)
    )
    xy = xy[keep]
    if len(xy) < MIN_REFERENCE_STARS:
        return Reference(float("nan"), float("nan"), len(xy))
    aperture, annulus = CircularAperture(xy, APERTURE), CircularAnnulus(xy, *ANNULUS)
    fluxes, noises = [], []
    for image in (science, template):
        rings = [m.multiply(image)[m.data > 0] for m in annulus.to_mask(method="center")]
        sky = np.array([np.median(r) for r in rings])
        total = np.asarray(aperture_photometry(image, aperture)["aperture_sum"])
        fluxes.append(total - sky * aperture.area)
        # the aperture's sky noise (the stars' own Poisson noise is below it at these fluxes)
        noises.append(np.array([1.4826 * np.median(np.abs(r - np.median(r))) for r in rings]))
    ok = (fluxes[0] > 0) & (fluxes[1] > 0)
    if np.count_nonzero(ok) < MIN_REFERENCE_STARS:
        return Reference(float("nan"), float("nan"), int(np.count_nonzero(ok)))
    (fs, ft), (ns, nt) = ((a[ok] for a in pair) for pair in (fluxes, noises))
    ratio = fs / ft
    variance = ratio**2 * aperture.area * ((ns / fs) ** 2 + (nt / ft) ** 2)
    weight = 1.0 / variance
    mean = float(np.sum(weight * ratio) / np.sum(weight))
    # widened by the scatter beyond the stated errors, when there is more
    chi2 = float(np.sum(weight * (ratio - mean) ** 2)) / (ratio.size - 1)
    error = float(np.sqrt(max(chi2, 1.0) / np.sum(weight)))
    return Reference(mean, error, int(ratio.size))


def write_crop(source: Path, out: Path, x0: int, y0: int, size: int) -> Path:
    """A ``size`` square crop of a single-HDU file, its WCS moved with it (CRPIX)."""
    with fits.open(source) as hdul:
        header = hdul[0].header.copy()
        data = hdul[0].data[y0 : y0 + size, x0 : x0 + size]
    for axis, offset in (("CRPIX1", x0), ("CRPIX2", y0)):
        if axis in header:
            header[axis] = float(header[axis]) - offset
    fits.writeto(out, data, header)
    return out


def science_over_template(ksum: float, convolved: str) -> float:
    """The flux ratio a kernel sum says: itself with the template convolved, else its
    inverse."""
    return ksum if convolved.strip().lower().startswith("t") else 1.0 / ksum


def run_hotpants(binary: Path, science: Path, template: Path, out: Path) -> float:
    """HOTPANTS's science-over-template ratio on one crop (NaN when it fails)."""
    proc = run_process(hotpants_command(binary, CROP, science, template, out))
    if proc.returncode != 0:
        return float("nan")
    header = fits.getheader(out / "diff.fits")
    return science_over_template(float(header["KSUM00"]), str(header["CONVOL00"]))


def run_diffviewer(science: Path, template: Path, out: Path) -> tuple[float, float, str]:
    """diffviewer's science-over-template ratio on one crop, its relative error and the
    image it convolved (a whole ``diffviewer run`` process; NaN when it fails)."""
    argv = [sys.executable, "-m", "diffviewer", "run", str(science), str(template)]
    argv += ["--out", str(out), "--quiet", "--products", "minimal"]
    proc = run_process(argv, env=diffviewer_env(ROOT), cwd=ROOT)
    if proc.returncode != 0:
        return float("nan"), float("nan"), "failed"
    kernel = json.loads((out / "metadata.json").read_text())["kernel"]
    ksum = float(kernel["kernel_sum"]["mean"])
    # no error with a single good stamp (nothing to hold out)
    error = kernel["kernel_sum"]["error"]
    error = float("nan") if error is None else float(error) / abs(ksum)
    return science_over_template(ksum, kernel["convolved"]), error, kernel["convolved"]


def summary(name: str, ratios: np.ndarray, reference: np.ndarray) -> str:
    """One program's line: how many crops it failed (no result, or a ratio that is not
    positive: no flux ratio is), and over the crops with a reference the median deviation
    from it and the mean absolute one."""
    failed = ~(ratios > 0)
    dev = (ratios / reference - 1)[np.isfinite(reference) & ~failed]
    return (
        f"{name:10s} failed on {int(failed.sum())} of {ratios.size} crops; against the "
        f"reference ({dev.size} crops) median {np.median(dev):+.4f}, mean |dev| "
        f"{np.mean(np.abs(dev)):.4f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=300, help="crop side (px)")
    parser.add_argument("--step", type=int, default=330, help="between crops' corners (px)")
    args = parser.parse_args()
    files = FILES if all(p.is_file() for p in FILES) else None
    binary = hotpants_binary()
    if files is None or binary is None:
        what = f"the GOTO pair ({DATA / 'goto'})" if files is None else "HOTPANTS (../shared/peers)"
        print(f"skipping: {what} is absent")
        return 0
    science, template = (fits.getdata(p).astype(np.float64) for p in files)
    ny, nx = science.shape
    starts_y = range(MARGIN - 50, ny - args.size - MARGIN + 51, args.step)
    starts_x = range(MARGIN - 50, nx - args.size - MARGIN + 51, args.step)
    rows = []
    print(
        f"{'x0':>5} {'y0':>5} {'ref S/T':>8} {'+-':>6} {'n':>3} {'HOTPANTS':>9} {'dev':>7} "
        f"{'diffviewer':>10} {'+-':>6} {'dev':>7} {'pull':>5}  convolved"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for y0 in starts_y:
            for x0 in starts_x:
                folder = Path(tmp) / f"{x0}_{y0}"
                folder.mkdir()
                sci, tmpl = (
                    write_crop(p, folder / f"{name}.fits", x0, y0, args.size)
                    for p, name in zip(files, ("science", "template"), strict=True)
                )
                region = (
                    slice(max(y0 - MARGIN, 0), y0 + args.size + MARGIN),
                    slice(max(x0 - MARGIN, 0), x0 + args.size + MARGIN),
                )
                ref = reference_ratio(science[region], template[region])
                hp = run_hotpants(binary, sci, tmpl, folder / "hp")
                dv, dv_err, convolved = run_diffviewer(sci, tmpl, folder / "dv")
                pull = (dv / ref.ratio - 1) / np.hypot(dv_err, ref.error / ref.ratio)
                rows.append((ref, hp, dv, pull))
                print(
                    f"{x0:5d} {y0:5d} {ref.ratio:8.4f} {ref.error:6.4f} {ref.n:3d} {hp:9.4f} "
                    f"{hp / ref.ratio - 1:+7.4f} {dv:10.4f} {dv * dv_err:6.4f} "
                    f"{dv / ref.ratio - 1:+7.4f} {pull:+5.1f}  {convolved}",
                    flush=True,
                )
    reference = np.array([r[0].ratio for r in rows])
    print(
        f"\n{np.isfinite(reference).sum()} of {len(rows)} crops have a reference "
        f"({MIN_REFERENCE_STARS}+ stars)"
    )
    for i, name in ((1, "HOTPANTS"), (2, "diffviewer")):
        print(summary(name, np.array([r[i] for r in rows]), reference))
    pulls = np.array([r[3] for r in rows])
    pulls = pulls[np.isfinite(pulls)]
    print(
        f"diffviewer's pulls against the reference (its stated error and the reference's): "
        f"median |pull| {np.median(np.abs(pulls)):.2f} (0.67 for honest errors), "
        f"{np.mean(np.abs(pulls) < 2):.0%} within 2 (95 %), over {pulls.size} crops"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
