"""Which image to convolve: ``kernel.mode`` 'template' against 'auto' on every real pair.

For each pair both modes run the whole pipeline; a table gives, per mode, the image
convolved, the kernel sum, the robust sky sigma of the raw difference (science units,
on the science image's sky), the bright-star residual of
``tests/engine/test_kernel_science.bright_star_residual`` (median / p90 of the rms within
1.5 FWHM of the 50 brightest kernel stars over their local sky sigma), the PSF-scale
noise over the renormalised variance's prediction on each quadrant's sky, the 5 sigma
peaks (positive / negative) of the raw difference filtered with the science PSF, and
the catalog's detections. Where the two differ, the bright stars' rms in counts is
compared star by star (auto over template: median and bootstrap 95 % interval), since
the two directions' differences have different noise. On the real pairs the peer
benchmarks share (GOTO, properimage) HOTPANTS runs too, with their flags
(``peers.hotpants_command``), and on the pyDIA frames, which have no WCS for HOTPANTS to
align them by, on the template diffviewer's auto run warped to the science; its
difference is scored by the same code in the same run: sky sigma, bright-star residual
(the auto run's kernel stars), 5 sigma peaks (the auto run's science PSF), and the same
bright stars' rms in counts against auto's, star by star; and again over the stars
outside the stamps of HOTPANTS's final kernel fit (its ``-savexy`` list). On GOTO each
of its 70 stamps carries far more of its 292-parameter spatial fit than one of our ~360
does (the ones at the field's edges most), so the stars it fitted flatter it: held out
of its fit (``-ssf``), its rms at two of them rose 2.1x and 1.3x. (The synthetic pairs
are in ``bench_peers_science.py``; the alert triplets in
``tests/engine/test_dia_real.py``.)

Usage: ``python benchmarks/bench_direction.py [--pairs goto properimage ...] [--set
kernel.degrees=[6,4,2] ...] [--around X Y R]``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import peer_metrics as pm
from astropy.io import fits
from peers import (
    DATA,
    ROOT,
    SCIENCE_PAIRS,
    Pair,
    hotpants_binary,
    hotpants_command,
    run_process,
)
from scipy import ndimage

from diffviewer.config import SubtractionConfig, apply_overrides
from diffviewer.engine import pipeline, renormalise, subtract
from diffviewer.exposure import MASK_DTYPE, Exposure, MaskPlane
from diffviewer.io import read_exposure

sys.path.insert(0, str(ROOT))
from tests.engine.test_kernel_science import bright_star_residual
from tests.engine.test_real_pairs import quadrant_ratios

PYDIA = DATA / "pydia"
PAIRS: dict[str, tuple[Path, Path]] = {
    "goto": (DATA / "goto" / "1.fits", DATA / "goto" / "2.fits"),
    "demo": (
        ROOT / "resources" / "demo" / "science.fits",
        ROOT / "resources" / "demo" / "template.fits",
    ),
    "properimage": (
        DATA / "properimage" / "aligned_eso085-030-004.fit",
        DATA / "properimage" / "aligned_eso085-030-005.fit",
    ),
    **{
        f"decam-{c}": (
            DATA / "decam_mini" / "input" / f"DEC-OBS04{c}.mini.fits",
            DATA / "decam_mini" / "input" / f"DEC-OBS18{c}.mini.fits",
        )
        for c in "abcde"
    },
    **{
        f"pydia-{e}": (PYDIA / f"AKB13475I0{e}.fits", PYDIA / "AKB13475I0012.fits")
        for e in ("016", "018", "060", "120", "150")
    },
}


def quadrant_scales(result: pipeline.SubtractionResult) -> list[float]:
    """PSF-scale noise over the final variance's prediction on each quadrant's sky."""
    diff = result.difference
    psf = result.decorrelation.psf if result.decorrelation else result.subtraction.psf
    ny, nx = diff.shape
    centre = result.kernel.solution.evaluate((nx - 1) / 2, (ny - 1) / 2)
    half = subtract.footprint_half_width(centre)
    sky = renormalise.sky_near(diff, psf, result.science, result.template.exposure, half)
    return quadrant_ratios(diff, psf, sky)


#: A disc (x, y, radius; px) whose peaks :func:`peak_text` also counts apart.
Region = tuple[float, float, float]


def peaks(
    diff: np.ndarray, psf: np.ndarray, sky: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Local maxima (5 x 5 px) of the PSF-filtered difference beyond +-5 robust sigma,
    positive and negative (each an (x, y) pair of arrays), and that sigma (the
    PSF-filtered sky's, the noise a detection sees, where the pixel sigma also holds the
    pixel-scale noise it averages away)."""
    z, covered, sigma = pm.significance(diff, psf, sky)
    pos = np.array(pm.local_peaks(z, covered, pm.THRESHOLD)[:2])
    neg = np.array(pm.local_peaks(-z, covered, pm.THRESHOLD)[:2])
    return pos, neg, sigma


def peak_text(diff: np.ndarray, psf: np.ndarray, sky: np.ndarray, around: Region | None) -> str:
    """:func:`peaks` with the PSF ``psf`` (normalised here), as printed; with ``around``,
    how many of each sign lie within its disc."""
    pos, neg, sigma = peaks(diff, psf / psf.sum(), sky)
    text = f"5 sigma peaks +{pos.shape[1]}/-{neg.shape[1]} (PSF-filtered sky sigma {sigma:.4g})"
    if around is not None:
        x, y, radius = around
        within = [int(np.sum(np.hypot(p[0] - x, p[1] - y) < radius)) for p in (pos, neg)]
        text += f", +{within[0]}/-{within[1]} of them within {radius:g} px of ({x:g}, {y:g})"
    return text


#: Half-side (px) of HOTPANTS's stamps: ``-rss 15`` in ``peers.hotpants_command``.
HOTPANTS_STAMP_HALF = 15


@dataclass(frozen=True)
class HotpantsRun:
    """HOTPANTS's difference (its mask as BAD) and the centres (0-based science x, y, one
    row each) of the stamps its final kernel fit used."""

    difference: Exposure
    stamps: np.ndarray


def read_stamp_centres(path: Path) -> np.ndarray:
    """Centres (0-based x, y) of the ds9 boxes (1-based) that HOTPANTS's ``-savexy`` writes."""
    rows = re.findall(r"box\(\s*([-\d.]+),\s*([-\d.]+)", path.read_text())
    return np.array(rows, dtype=float).reshape(-1, 2) - 1.0


def in_stamps(xs: np.ndarray, ys: np.ndarray, centres: np.ndarray, half: int) -> np.ndarray:
    """Whether each position (xs, ys) lies within ``half`` px, on both axes, of a centre."""
    dx = np.abs(xs[:, None] - centres[None, :, 0])
    dy = np.abs(ys[:, None] - centres[None, :, 1])
    return np.any((dx <= half) & (dy <= half), axis=1)


#: HOTPANTS's flags for the pyDIA frames (SAAO 1.0 m: gain 1.9 e-/ADU, read noise 5 e-,
#: from their headers); 0 marks the pixels the warp left empty or masked.
PYDIA_HOTPANTS = Pair(
    "pyDIA frame against AKB13475I0012, warped by diffviewer",
    lambda _: None,
    ("-tg", "1.9", "-tr", "5", "-ig", "1.9", "-ir", "5"),
    hotpants_extra=("-tl", "1", "-il", "1"),
)


def plain_image(exposure: Exposure, path: Path) -> Path:
    """Write ``exposure``'s image as a plain float32 FITS file, its unusable pixels 0."""
    image = np.where(exposure.good_pixels(), exposure.image, 0.0).astype(np.float32)
    fits.PrimaryHDU(image).writeto(path)
    return path


def hotpants_difference(
    key: str, binary: Path | None, auto: pipeline.SubtractionResult
) -> HotpantsRun | None:
    """HOTPANTS's run on a pair the peer benchmarks share or, for the unregistered pyDIA
    frames (no WCS: HOTPANTS cannot align them), on the science and the template
    diffviewer's ``auto`` run warped to it; None without HOTPANTS or the data."""
    if binary is None or not (key in SCIENCE_PAIRS or key.startswith("pydia")):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if key in SCIENCE_PAIRS:
            pair = SCIENCE_PAIRS[key]
            files = pair.make(out)
        else:
            pair = PYDIA_HOTPANTS
            files = (
                plain_image(auto.science, out / "science.fits"),
                plain_image(auto.template.exposure, out / "template.fits"),
            )
        if files is None:
            return None
        command = [*hotpants_command(binary, pair, *files, out), "-savexy", str(out / "xy.reg")]
        run = run_process(command)
        if run.returncode != 0:
            return None
        image = fits.getdata(out / "diff.fits").astype(np.float32)
        bad = fits.getdata(out / "mask.fits") != 0
        stamps = read_stamp_centres(out / "xy.reg")
    mask = np.where(bad, int(MaskPlane.BAD), 0).astype(MASK_DTYPE)
    return HotpantsRun(Exposure(image=image, variance=np.ones_like(image), mask=mask), stamps)


def print_figures(
    label: str,
    result: pipeline.SubtractionResult,
    raw: Exposure,
    sky: np.ndarray,
    around: Region | None,
) -> None:
    """One row: sky sigma, bright-star residual (``result``'s kernel stars) and 5 sigma peaks
    (``result``'s science PSF; those within ``around`` too) of the raw difference ``raw``."""
    values = np.where(raw.good_pixels(), raw.image.astype(np.float64), np.nan)
    psf = np.array(result.kernel.science_psf.image, dtype=np.float64)
    med, p90 = bright_star_residual(result.kernel, raw)
    print(
        f"  {label}: sky sigma {pm.robust_sigma(values[sky & np.isfinite(values)]):.3g}, "
        f"bright-star residual {med:.1f}/{p90:.1f}, "
        f"{peak_text(values, psf, sky, around)}"
    )


def star_rms(diff: Exposure, fwhm: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Per star at (xs, ys): rms (counts) of the raw difference ``diff`` within 1.5 ``fwhm``,
    about the median of an 81 x 81 px box (NaN near the edges and where a pixel within
    1.5 ``fwhm`` is masked, e.g. a saturated core one program masks and the other fills)."""
    r = int(np.ceil(1.5 * fwhm))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    core = np.hypot(dx, dy) <= 1.5 * fwhm
    img, good = diff.image.astype(np.float64), diff.good_pixels()
    out = np.full(xs.size, np.nan)
    for k in range(xs.size):
        x, y = round(float(xs[k])), round(float(ys[k]))
        if 40 <= x < img.shape[1] - 40 and 40 <= y < img.shape[0] - 40:
            stamp = (slice(y - r, y + r + 1), slice(x - r, x + r + 1))
            if not np.all(good[stamp][core]):
                continue
            box = (slice(y - 40, y + 41), slice(x - 40, x + 41))
            level = np.median(img[box][good[box]])
            out[k] = np.sqrt(np.mean((img[stamp][core] - level) ** 2))
    return out


def print_star_ratio(
    label: str, ours: np.ndarray, theirs: np.ndarray, rng: np.random.Generator
) -> None:
    """The star-by-star ratio of two differences' bright-star rms: median, bootstrap 95 %
    interval of the median, and how many stars the first leaves lower."""
    ratio = ours / theirs
    ratio = ratio[np.isfinite(ratio)]
    boot = [np.median(rng.choice(ratio, ratio.size)) for _ in range(2000)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    first = label.split(" / ")[0]
    print(
        f"  bright-star rms {label}, star by star: median {np.median(ratio):.3f} "
        f"({lo:.3f}-{hi:.3f}), {first} lower for {int(np.sum(ratio < 1))} of {ratio.size}"
    )


def main() -> int:
    """Run both modes on every chosen pair and print one block per pair."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="a config override for both modes' runs, as `diffviewer run --set` takes it",
    )
    parser.add_argument(
        "--around",
        nargs=3,
        type=float,
        metavar=("X", "Y", "R"),
        help="also count the 5 sigma peaks within R px of (X, Y), 0-based (GOTO's bright "
        "galaxy: 1230 620 200)",
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    binary = hotpants_binary()
    for key in args.pairs:
        science_path, template_path = PAIRS[key]
        if not (science_path.is_file() and template_path.is_file()):
            print(f"\n{key}: skipped, its data is absent")
            continue
        science, template = read_exposure(str(science_path)), read_exposure(str(template_path))
        image = science.image.astype(np.float64)
        bright = image > np.median(image) + 3 * pm.robust_sigma(image)
        sky = ~ndimage.binary_dilation(bright, iterations=5)
        results = {
            mode: pipeline.run_subtraction(
                science,
                template,
                apply_overrides(SubtractionConfig(), [*args.set, f"kernel.mode={mode}"]),
            )
            for mode in ("template", "auto")
        }
        print(f"\n{key}: {results['auto'].kernel.direction.reason}")
        for mode, result in results.items():
            raw = result.subtraction.difference
            values = np.where(raw.good_pixels(), raw.image.astype(np.float64), np.nan)
            psf = np.array(result.kernel.science_psf.image, dtype=np.float64)
            cat = result.diasources[~np.asarray(result.diasources["sky_source"], dtype=bool)]
            positive = int(np.sum(np.asarray(cat["sign"]) > 0))
            med, p90 = bright_star_residual(result.kernel, raw)
            print(
                f"  {mode:8} {result.kernel.convolved:8} convolved, kernel sum "
                f"{result.kernel.photometric_scale:.4f}, sky sigma "
                f"{pm.robust_sigma(values[sky]):.3g}, bright-star residual {med:.1f}/{p90:.1f}, "
                f"quadrants {' '.join(f'{q:.3f}' for q in quadrant_scales(result))}, "
                f"{peak_text(values, psf, sky, args.around)}, "
                f"detections +{positive}/-{len(cat) - positive}"
            )
        auto = results["auto"]
        fwhm = max(auto.kernel.science_psf.fwhm, auto.kernel.template_psf.fwhm)
        tab = results["template"].kernel.candidates
        order = np.argsort(-np.asarray(tab["snr"]))[:50]
        xs, ys = np.asarray(tab["x"])[order], np.asarray(tab["y"])[order]
        ours = star_rms(auto.subtraction.difference, fwhm, xs, ys)
        hotpants = hotpants_difference(key, binary, auto)
        if hotpants is not None:
            print_figures("HOTPANTS", auto, hotpants.difference, sky, args.around)
            theirs = star_rms(hotpants.difference, fwhm, xs, ys)
            print_star_ratio("auto / HOTPANTS", ours, theirs, rng)
            outside = ~in_stamps(xs, ys, hotpants.stamps, HOTPANTS_STAMP_HALF)
            print_star_ratio(
                "auto / HOTPANTS outside its stamps", ours[outside], theirs[outside], rng
            )
        if np.array_equal(
            auto.difference.image, results["template"].difference.image, equal_nan=True
        ):
            print("  identical differences")
            continue
        template_rms = star_rms(results["template"].subtraction.difference, fwhm, xs, ys)
        print_star_ratio("auto / template", ours, template_rms, rng)
    return 0


if __name__ == "__main__":
    sys.exit(main())
