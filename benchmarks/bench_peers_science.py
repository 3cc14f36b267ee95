"""The science table: diffviewer, HOTPANTS and an oracle on the same pairs, one metric code.

On each synthetic pair (issue 12's conditions: Moffat stars of different beta, flux
ratio 1.3, a 0.3 px template shift, a differential sky gradient; constant and varying
PSF; and the constant pair again with cosmic rays and hot columns on its science,
masked, the mask given to both programs) transients are injected in bins of true PSF
S/N, both programs run on the same two files (``peers.py``), and every difference is
scored by :mod:`peer_metrics` beside the oracle: the same files subtracted with the true
kernel and the true background, plain and decorrelated with the true kernel's filter
(each difference is scored against the exact expectation of its own kind, plain or
decorrelated: ``peer_metrics``). On the varying-PSF pair the truth used by the metrics
(PSF, kernel) is the one at the image centre, round: an approximation for the
PSF-filtered figures there. Real pairs have no truth: the table gives the kernel sum
each program found, diffviewer's detections (the GOTO and properimage pairs hold no
known transient) and each difference's robust sky sigma in science units.

Usage: ``python benchmarks/bench_peers_science.py [--pairs constant varying defects goto
demo properimage] [--seeds N]``. Pairs whose data is absent are skipped with the reason
printed. ``--seeds N`` draws N injection sets (and noises) per synthetic pair and prints
the mean of each figure: 48 injections a bin give a recovered fraction near 0.25 to
+-0.06, which one seed cannot tell from chance; eight give +-0.02.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import peer_metrics as pm
from astropy.io import fits
from astropy.table import Table
from peers import (
    DEFECT_SEED,
    HOT_COLUMNS,
    ROOT,
    SCIENCE_PAIRS,
    SKY,
    TEMPLATE_GAIN,
    Pair,
    diffviewer_env,
    hotpants_binary,
    hotpants_command,
    read_hotpants,
    run_process,
    write_pair_files,
)
from scipy import ndimage

from diffviewer.exposure import UNUSABLE
from diffviewer.synthetic import make_pair, with_defects

#: The first synthetic seed (the table's figures since 2026-12-02 are this seed's).
FIRST_SEED = 7
#: The programs compared (columns of :func:`run_both`'s result).
PROGRAMS = ("HOTPANTS", "diffviewer")


def run_both(
    pair: Pair, science: Path, template: Path, folder: Path, binary: Path | None
) -> dict[str, object]:
    """Run HOTPANTS and diffviewer on one pair; their differences, kernel sums, catalog."""
    found: dict[str, object] = {}
    if binary is not None:
        out = folder / "hp"
        hp = run_process(
            hotpants_command(binary, pair, science, template, out), log=folder / "hp.log"
        )
        if hp.returncode == 0:
            diff, header = read_hotpants(out)
            found["HOTPANTS"] = diff
            found["HOTPANTS ksum"] = (float(header["KSUM00"]), str(header["CONVOL00"]))
    out = folder / "dv"
    argv = [sys.executable, "-m", "diffviewer", "run", str(science), str(template)]
    dv = run_process(
        [*argv, "--out", str(out), "--quiet"],
        env=diffviewer_env(ROOT),
        log=folder / "dv.log",
        cwd=ROOT,
    )
    if dv.returncode == 0:
        with fits.open(out / "difference.fits") as hdul:
            diff = hdul["IMAGE"].data.astype(np.float64)
            # Pixels without a usable value (detection planes are not a lack of data).
            diff[(hdul["MASK"].data & int(UNUSABLE)) != 0] = np.nan
        meta = json.loads((out / "metadata.json").read_text())
        found["diffviewer"] = diff
        found["diffviewer ksum"] = (
            float(meta["kernel"]["kernel_sum"]["mean"]),
            str(meta["kernel"]["convolved"]),
        )
        found["diffviewer decorrelated"] = bool(meta["difference"]["decorrelated"])
        cat = Table.read(out / "diasources.ecsv")
        found["catalog"] = cat[~np.asarray(cat["sky_source"], dtype=bool)]
    return found


def synthetic_truth(
    pair: Pair, rng: np.random.Generator
) -> tuple[pm.Truth, pm.Truth, dict, np.ndarray]:
    """Injections, the truth of the plain and the decorrelated difference, make_pair's
    arguments and the true background of a synthetic pair."""
    kw = dict(pair.make_kwargs)
    ny, nx = kw["shape"]  # type: ignore[misc]
    fwhm, tfwhm = float(kw["sci_fwhm"]), float(kw["tmpl_fwhm"])  # type: ignore[arg-type]
    half = math.ceil(6.0 * fwhm)
    shift = kw["tmpl_shift"]  # type: ignore[assignment]
    psf = pm.psf_stamp(half, fwhm, float(kw["sci_beta"]))  # type: ignore[arg-type]
    tpsf = pm.psf_stamp(half, tfwhm, float(kw["tmpl_beta"]), *shift)  # type: ignore[arg-type, misc]
    kernel = pm.true_kernel(psf, tpsf, float(kw["photometric_scale"]))  # type: ignore[arg-type]
    sigma_s = math.sqrt(SKY)
    sigma_t = math.sqrt(SKY / TEMPLATE_GAIN)
    _, sigma_mf = pm.exact_noise(psf, pm.delta(psf.shape[0]), kernel, sigma_s, sigma_t)
    flux, snr = pm.injection_fluxes(psf, sigma_mf, rng)
    ix = rng.uniform(60, nx - 60, flux.size)
    iy = rng.uniform(60, ny - 60, flux.size)
    kw["transients"] = list(zip(ix.tolist(), iy.tolist(), flux.tolist(), strict=True))
    clean = make_pair(**{**kw, "gain": 1e12})  # type: ignore[arg-type]
    defects = None
    if pair.defects:
        defects = with_defects(clean.science, pair.defects, HOT_COLUMNS, DEFECT_SEED)[1]
    gx, gy = kw.get("background_gradient", (0.0, 0.0))  # type: ignore[misc]
    yy, xx = np.mgrid[0:ny, 0:nx]
    background = gx * (xx - (nx - 1) / 2) + gy * (yy - (ny - 1) / 2)
    stars_s = clean.science.image - background
    stars_t = clean.template.image
    sky = (stars_s < 0.05 * sigma_s) & (stars_t < 0.05 * sigma_t)
    border = 2 * half  # where a kernel or the filter reaches past the image
    sky[:border], sky[-border:], sky[:, :border], sky[:, -border:] = False, False, False, False
    # Exact local variance: science counts at gain 1, template counts at TEMPLATE_GAIN
    # through the squared kernel (sky and stars).
    var_s = SKY + np.clip(stars_s, 0, None)
    var_t = (SKY + np.clip(stars_t, 0, None)) / TEMPLATE_GAIN
    local = np.sqrt(var_s + pm.convolve_same(var_t, kernel**2))
    truth = pm.Truth(
        psf,
        kernel,
        pm.delta(psf.shape[0]),
        kernel,
        sigma_s,
        sigma_t,
        fwhm,
        clean.star_x,
        clean.star_y,
        clean.star_flux,
        ix,
        iy,
        flux,
        snr,
        sky,
        local,
        defects,
    )
    return truth, pm.whitened(truth, var_s, var_t), kw, background


def oracle(science: Path, template: Path, truth: pm.Truth, background: np.ndarray) -> np.ndarray:
    """The files subtracted with the true kernel and the true background."""
    sci = fits.getdata(science).astype(np.float64) - SKY
    tmpl = fits.getdata(template).astype(np.float64) - SKY
    return sci - pm.convolve_same(tmpl, truth.kernel) - background


def catalog_figures(cat: Table, truth: pm.Truth) -> dict[str, float]:
    """diffviewer's own catalog against the injections: false positives, recovered per
    bin, and the median catalog PSF flux over the truth (true S/N > 20)."""
    x, y = np.asarray(cat["x"], float), np.asarray(cat["y"], float)
    near = np.array(
        [
            np.any(np.hypot(truth.inj_x - a, truth.inj_y - b) <= pm.MATCH_PX)
            for a, b in zip(x, y, strict=True)
        ],
        dtype=bool,
    )
    out = {"false positives": float(np.sum(~near))}
    pos = np.asarray(cat["sign"]) > 0
    for lo, hi in pm.SNR_BINS:
        sel = (truth.inj_snr >= lo) & (truth.inj_snr < hi)
        hits = [
            bool(np.any(np.hypot(x[pos] - a, y[pos] - b) <= pm.MATCH_PX))
            for a, b in zip(truth.inj_x[sel], truth.inj_y[sel], strict=True)
        ]
        out[f"found S/N {lo:g}-{hi:g}"] = float(np.mean(hits))
    bright = truth.inj_snr > 20
    ratios = []
    injected = zip(truth.inj_x[bright], truth.inj_y[bright], truth.inj_flux[bright], strict=True)
    for a, b, f in injected:
        d = np.hypot(x - a, y - b)
        if d.size and d.min() <= pm.MATCH_PX:
            ratios.append(float(cat["psf_flux"][int(np.argmin(d))]) / f)
    out["flux ratio"] = float(np.median(ratios)) if ratios else float("nan")
    return out


def real_sky(science: Path) -> np.ndarray:
    """Pixels of a real science image away from sources (3 sigma, grown by 5 px)."""
    sci = fits.getdata(science).astype(np.float64)
    med = np.median(sci)
    sigma = pm.robust_sigma(sci)
    return ~ndimage.binary_dilation(sci > med + 3 * sigma, iterations=5)


def synthetic_columns(
    key: str, pair: Pair, seed: int, binary: Path | None
) -> dict[str, dict[str, object]]:
    """Every column of one synthetic pair, its injections and noise drawn from ``seed``."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        truth, white, kw, background = synthetic_truth(pair, np.random.default_rng(seed))
        science, template = write_pair_files(folder, key, make_pair(**kw), pair.defects)  # type: ignore[arg-type]
        found = run_both(pair, science, template, folder, binary)
        plain = oracle(science, template, truth, background)
        whitened = pm.convolve_same(plain, white.sci_filter)
        if truth.defects is not None:
            # The oracle's differences have no value where the science has none (and
            # whitened as 0 there, as diffviewer's is).
            whitened = pm.convolve_same(np.where(truth.defects, 0.0, plain), white.sci_filter)
            plain[truth.defects] = whitened[truth.defects] = np.nan
        # The same kind of figures and peaks for every difference, each with its truth.
        scored = {
            "oracle": (pm.score(plain, truth), truth),
            # The metric's check on whitened differences: this one reads 1.
            "oracle decorrelated": (pm.score(whitened, white), white),
        }
        for name in PROGRAMS:
            if name in found:
                # A decorrelated difference against the decorrelated truth (its
                # noise, local noise at the stars, PSF for fluxes and detection).
                kind = white if found.get(f"{name} decorrelated") else truth
                scored[name] = (pm.score(found[name], kind), kind)  # type: ignore[arg-type]
        # Every difference thresholded again where it has the purer program's false peaks.
        counts = {name: int(figures["false peaks"]) for name, ((figures, _), _) in scored.items()}
        budget = min((counts[n] for n in PROGRAMS if n in counts), default=counts["oracle"])
        true_sum = (float(truth.kernel.sum()), "true")
        columns: dict[str, dict[str, object]] = {
            name: {
                **figures,
                **pm.found_at_budget(peaks, kind.injections, budget),
                "kernel sum": found.get(f"{name} ksum", true_sum),
            }
            for name, ((figures, peaks), kind) in scored.items()
        }
        if "catalog" in found:
            columns["diffviewer catalog"] = catalog_figures(found["catalog"], truth)  # type: ignore[arg-type]
    return columns


def mean_columns(
    per_seed: list[dict[str, dict[str, object]]],
) -> dict[str, dict[str, object]]:
    """Each figure's mean over the seeds (a kernel sum keeps which image it convolved).

    The S/N bins hold as many injections for every seed, so a bin's mean fraction is
    the fraction recovered of all its injections.
    """
    out: dict[str, dict[str, object]] = {}
    for column in per_seed[0]:
        figures: dict[str, object] = {}
        for row, first in per_seed[0][column].items():
            values = [seed[column][row] for seed in per_seed if row in seed.get(column, {})]
            if isinstance(first, tuple):
                figures[row] = (float(np.mean([v[0] for v in values])), first[1])  # type: ignore[index]
            else:
                figures[row] = float(np.mean(values))  # type: ignore[arg-type]
        out[column] = figures
    return out


def fmt(value: object) -> str:
    """One cell."""
    if isinstance(value, tuple):
        return f"{value[0]:.3f} ({value[1][:4]})"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3g}"
    return str(value)


def print_table(title: str, columns: dict[str, dict[str, object]]) -> None:
    """Rows are figures, columns are programs."""
    rows: list[str] = []
    for figures in columns.values():
        rows.extend(k for k in figures if k not in rows)
    width = max(len(row) for row in rows) + 2
    print(f"\n{title}")
    print(f"{'':{width}}" + "".join(f"{c:>20}" for c in columns))
    for row in rows:
        cells = "".join(f"{fmt(columns[c].get(row, '-')):>20}" for c in columns)
        print(f"{row:{width}}{cells}")


def main() -> int:
    """Run every chosen pair and print one table per pair."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pairs", nargs="+", default=list(SCIENCE_PAIRS), choices=list(SCIENCE_PAIRS)
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="injection sets (and noise) per synthetic pair; figures are their mean",
    )
    args = parser.parse_args()
    binary = hotpants_binary()
    if binary is None:
        print("HOTPANTS could not be built (see ../shared/peers/README.md): its column is empty")
    for key in args.pairs:
        pair = SCIENCE_PAIRS[key]
        if pair.make_kwargs:
            per_seed = [
                synthetic_columns(key, pair, FIRST_SEED + k, binary) for k in range(args.seeds)
            ]
            title = pair.name if args.seeds == 1 else f"{pair.name}, mean of {args.seeds} seeds"
            print_table(title, mean_columns(per_seed))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            files = pair.make(folder)
            if files is None:
                print(f"\nskipping {pair.name}: its data is absent")
                continue
            science, template = files
            found = run_both(pair, science, template, folder, binary)
            sky = real_sky(science)
            columns = {}
            for name in PROGRAMS:
                if name in found:
                    diff = found[name]
                    columns[name] = {
                        "sky sigma": pm.robust_sigma(diff[sky]),  # type: ignore[index]
                        "kernel sum": found[f"{name} ksum"],
                    }
            if "catalog" in found:
                columns["diffviewer"]["detections"] = float(len(found["catalog"]))  # type: ignore[arg-type]
            print_table(pair.name, columns)
    print(
        "\nEach difference against the exact expectation of the true-kernel difference of "
        "its own kind (plain, or decorrelated with the true kernel's filter phi for "
        "diffviewer's). noise, mf noise: sky sigma and PSF-filtered sky sigma over it; star "
        "res: rms within 1.5 FWHM of the 50 brightest stars over its exact pixel noise; flux "
        "ratio: forced PSF flux / true (S/N > 20; with that kind's PSF, P or phi P, at the "
        "sub-pixel position; the catalog column: its own psf_flux); found: fraction of "
        "injections detected (shared 5 sigma "
        "detector; 'diffviewer catalog': its own diasources); false peaks: the shared "
        "detector's farther than 5 px from every injection; at equal false peaks: found at "
        "the threshold (in sigma) where the difference has as many false peaks as the "
        "program with the fewest has at 5 sigma; "
        "faint S/N / true: the filtered "
        "difference at the injections of true S/N 3-7 over their true S/N; kernel sum "
        "(which image was convolved): truth 1.3 when the template is convolved."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
