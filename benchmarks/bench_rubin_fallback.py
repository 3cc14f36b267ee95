"""Rubin alert cutouts without stars: what sets the flux at the candidate?

On the 30-38 px Rubin cutouts no kernel star survives, so the engine derives the kernel
from the two PSF images (``kernel._fallback_solution``), at the size they call for
(31-43 px on LSSTCam; until 2026-12-04 it was cut to half the cutout, 15-19 px). For each
triplet whose kernel came from the PSFs, this prints the forced PSF flux at the
candidate (Rubin's ``DIFF_PSF`` at the cutout centre, every pixel, no mask) over the
same measurement on Rubin's own difference, for:

- ``engine``: diffviewer's final difference (the figure ``test_dia_real`` prints, there
  on the unmasked pixels only);
- ``engine kernel``: the engine's kernel applied to the whole template, padded with its
  median level and without any EDGE band, so that only the kernel differs from the next
  columns (``px``: its side);
- ``Wiener eps``: the kernel ``K = FT^-1[P_tgt conj(P_src) / (|P_src|^2 + eps)]`` on a
  grid of both PSF images' sides (no wrap-around), cropped to the target PSF image's side
  (the support ``K * P_src`` needs), sum 1, applied in the same way, for eps 1e-3, 1e-4
  and 1e-5 of ``|P_src(0)|^2 = 1`` (a sensitivity scan, not a chosen value);

how well each kernel maps the template's PSF image onto the science's (``PSF misfit``:
``sum |K * P_tmpl - P_sci|`` with both PSFs of sum 1, engine / Wiener 1e-4); the
half-width (px) of the centred square holding 99 % of the Wiener kernel's absolute
weight (``subtract.footprint_half_width``) against the cutout's half side: where it
reaches the half side, that footprint alone would mark the whole cutout EDGE (the engine
caps its EDGE border at a quarter of the side: ``subtract.edge_half_width``); and ``a``,
``b`` of Rubin's matched template (``SCI - DIFF``) fitted as ``a (K * TMPL) + b`` with the
eps 1e-4 kernel over the pixels at least 8 px from the edge, with the pixel noise
``sigma`` of ``SCI + TMPL``: a constant ``b`` over the PSF is a forced flux of
``b / sum(P^2)``.

Usage: ``python benchmarks/bench_rubin_fallback.py``.
"""

from __future__ import annotations

import argparse
import csv

import numpy as np
import scipy.fft as sfft
from astropy.io import fits
from peers import DATA
from scipy import ndimage

from diffviewer.config import SubtractionConfig
from diffviewer.engine import fftconv
from diffviewer.engine.photometry import PsfModel, forced_psf_flux
from diffviewer.engine.pipeline import run_subtraction
from diffviewer.engine.subtract import footprint_half_width
from diffviewer.io import normalize_psf, read_exposure

FOLDER = DATA / "rubin_triplets"

#: Regularisations scanned (fractions of the source PSF's power at zero frequency, 1).
EPS = (1e-3, 1e-4, 1e-5)


def wiener_kernel(src: np.ndarray, tgt: np.ndarray, eps: float) -> np.ndarray:
    """The Wiener-regularised kernel mapping ``src`` onto ``tgt`` (odd, centred, sum 1)."""
    n = src.shape[0] + tgt.shape[0] - 1
    spectra = []
    for p in (src, tgt):
        grid = np.zeros((n, n))
        h, w = p.shape[0] // 2, p.shape[1] // 2
        grid[n // 2 - h : n // 2 + h + 1, n // 2 - w : n // 2 + w + 1] = p / p.sum()
        spectra.append(sfft.fft2(sfft.ifftshift(grid)))
    ps, pt = spectra
    k = np.real(sfft.fftshift(sfft.ifft2(pt * np.conj(ps) / (np.abs(ps) ** 2 + eps))))
    half = tgt.shape[0] // 2
    k = k[n // 2 - half : n // 2 + half + 1, n // 2 - half : n // 2 + half + 1]
    return k / k.sum()


def psf_misfit(kernel: np.ndarray, src: np.ndarray, tgt: np.ndarray) -> float:
    """``sum |kernel * src - tgt|`` for the PSF images as the engine reads them (odd sides,
    sum 1: :func:`~diffviewer.io.normalize_psf`), centred on one grid."""
    model = fftconv.convolve(normalize_psf(src, "template"), kernel, mode="full")
    target = normalize_psf(tgt, "science")
    shape = np.maximum(model.shape, target.shape)
    grids = []
    for image in (model, target):
        grid = np.zeros(shape)
        (h, w), (cy, cx) = np.asarray(image.shape) // 2, shape // 2
        grid[cy - h : cy + h + 1, cx - w : cx + w + 1] = image
        grids.append(grid)
    return float(np.abs(grids[0] - grids[1]).sum())


def matched(template: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``kernel * template``, the world beyond the cutout at the template's median."""
    level = float(np.median(template))
    return fftconv.convolve(template - level, kernel, mode="same") + level * kernel.sum()


def candidate_position(diff: np.ndarray, psf: np.ndarray, sign: int) -> tuple[float, float]:
    """Where Rubin's difference, filtered by its PSF, peaks with ``sign`` within 3 px of
    the cutout centre (x, y)."""
    filtered = ndimage.correlate(np.nan_to_num(diff), psf / psf.sum(), mode="constant")
    yy, xx = np.indices(diff.shape)
    ny, nx = diff.shape
    near = np.hypot(yy - (ny - 1) / 2, xx - (nx - 1) / 2) < 3
    j, i = np.unravel_index(np.argmax(np.where(near, sign * filtered, -np.inf)), diff.shape)
    return float(i), float(j)


def forced(
    image: np.ndarray, variance: np.ndarray, psf: np.ndarray, xy: tuple[float, float]
) -> tuple[float, float]:
    """Forced PSF flux and its error at ``xy`` over every finite pixel."""
    ok = np.isfinite(image) & np.isfinite(variance) & (variance > 0)
    return forced_psf_flux(
        np.where(ok, image, 0.0), np.where(ok, variance, 1.0), ok, PsfModel(psf / psf.sum()), *xy
    )


def affine(ours: np.ndarray, theirs: np.ndarray, margin: int) -> tuple[float, float]:
    """Least-squares ``a``, ``b`` of ``theirs = a ours + b`` over the pixels at least
    ``margin`` px from the cutout's edge."""
    inner = (slice(margin, -margin), slice(margin, -margin))
    design = np.c_[ours[inner].ravel(), np.ones(ours[inner].size)]
    (a, b), *_ = np.linalg.lstsq(design, theirs[inner].ravel(), rcond=None)
    return float(a), float(b)


def main() -> None:
    """Print the table."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help
    with open(FOLDER / "rubin_triplets_meta.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    config = SubtractionConfig()
    head = ["triplet", "side", "Rubin S/N", "engine", "engine kernel", "px"]
    head += [f"Wiener {e:g}" for e in EPS]
    head += ["PSF misfit", "Wiener 99% half-width", "Rubin's = a ours + b"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for row in rows:
        path = FOLDER / row["file"]
        result = run_subtraction(
            read_exposure(f"{path}[SCI]"), read_exposure(f"{path}[TMPL]"), config
        )
        fit = result.kernel
        if np.sum(np.asarray(fit.candidates["status"]) == "GOOD") >= config.kernel.min_stamps:
            continue
        with fits.open(path) as hdul:
            sci, tmpl, diff = (
                np.asarray(hdul[n].data, np.float64) for n in ("SCI", "TMPL", "DIFF")
            )
            var = np.asarray(hdul["SCI_VAR"].data, np.float64) + hdul["TMPL_VAR"].data
            diff_var = np.asarray(hdul["DIFF_VAR"].data, np.float64)
            psf = np.asarray(hdul["DIFF_PSF"].data, np.float64)
            psfs = {n: np.asarray(hdul[n].data, np.float64) for n in ("SCI_PSF", "TMPL_PSF")}
        if fit.convolved != "template":
            continue  # Rubin convolves its template: compare like with like
        xy = candidate_position(diff, psf, int(np.sign(float(row["psfFlux"]))))
        theirs, err = forced(diff, diff_var, psf, xy)
        ny, nx = sci.shape
        kernel = fit.solution.evaluate((nx - 1) / 2, (ny - 1) / 2)
        ours = result.difference
        cells = [
            row["file"].removeprefix("rubin_").removesuffix(".fits"),
            f"{ny}",
            f"{theirs / err:+.1f}",
            f"{forced(ours.image.astype(float), ours.variance.astype(float), psf, xy)[0] / theirs:.2f}",  # noqa: E501
            f"{forced(sci - matched(tmpl, kernel), var, psf, xy)[0] / theirs:.2f}",
            f"{kernel.shape[0]}",
        ]
        halves = []
        for eps in EPS:
            k = wiener_kernel(psfs["TMPL_PSF"], psfs["SCI_PSF"], eps)
            cells.append(f"{forced(sci - matched(tmpl, k), var, psf, xy)[0] / theirs:.2f}")
            halves.append(str(footprint_half_width(k)))
        wiener = wiener_kernel(psfs["TMPL_PSF"], psfs["SCI_PSF"], EPS[1])
        misfits = [psf_misfit(k, psfs["TMPL_PSF"], psfs["SCI_PSF"]) for k in (kernel, wiener)]
        cells.append(" / ".join(f"{m:.3f}" for m in misfits))
        cells.append(" / ".join(halves) + f" (cutout {ny // 2})")
        a, b = affine(matched(tmpl, wiener), sci - diff, 8)
        cells.append(f"{a:.2f}, {b:+.1f} (sigma {np.sqrt(np.median(var)):.0f})")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
