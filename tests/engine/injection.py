"""Point sources injected on a real image's blank sky, their S/N on its own difference.

Shared by ``test_dia_real.py`` (the catalog's recovery on GOTO) and
``benchmarks/bench_goto_injections.py`` (the same injections subtracted by HOTPANTS
too). The S/N of an injected source is measured against the difference's own noise:
its flux over the PSF-flux error at its position times the robust scatter, in units of
those errors, of forced PSF fluxes at all the blank positions before injecting (the
GOTO images are coadds whose noise is shared and correlated, so no variance plane is
trusted here), so the S/N bins are what a perfect detector would see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffviewer.engine.background import estimate_background
from diffviewer.engine.photometry import PsfModel, forced_psf_flux
from diffviewer.engine.pipeline import SubtractionResult


@dataclass(frozen=True)
class InjectedSources:
    """Sources injected into a run's science image.

    Attributes
    ----------
    xy : numpy.ndarray
        (n, 2) positions (0-based px).
    snr, flux : numpy.ndarray
        True S/N on the run's difference, and flux (science units).
    scale : float
        Robust scatter of the forced fluxes at the blank positions over their errors.
    image : numpy.ndarray
        The science image (float64) with the sources added.
    """

    xy: np.ndarray
    snr: np.ndarray
    flux: np.ndarray
    scale: float
    image: np.ndarray


def difference_psf(result: SubtractionResult) -> np.ndarray:
    """The PSF of the measured difference (decorrelated when decorrelation ran)."""
    return result.decorrelation.psf if result.decorrelation is not None else result.subtraction.psf


def blank_positions(result: SubtractionResult, rng: np.random.Generator) -> np.ndarray:
    """Grid positions (70 px apart, jittered by up to 15 px) on blank sky: no detection,
    no mask, no pixel 5 sigma from the science's background within 9 px."""
    sci = result.science
    ny, nx = sci.shape
    grid = np.stack(np.meshgrid(np.arange(45.0, nx - 45, 70), np.arange(45.0, ny - 45, 70)), -1)
    xy = grid.reshape(-1, 2) + rng.uniform(-15, 15, (grid.size // 2, 2))
    good = sci.good_pixels() & result.difference.good_pixels()
    background, sigma = estimate_background(sci.image, good, 128)
    bright = np.abs(sci.image - background) > 5 * sigma
    seg = result.detections.segmentation
    keep = []
    for x, y in xy:
        box = (slice(int(y) - 9, int(y) + 10), slice(int(x) - 9, int(x) + 10))
        if good[box].all() and not bright[box].any() and not seg[box].any():
            keep.append((x, y))
    return np.array(keep)


def inject_on_blank_sky(result: SubtractionResult, rng: np.random.Generator) -> InjectedSources:
    """Sources of the science PSF the run measured (shifted to each sub-pixel position;
    its image holds the share ``enclosed`` of a star's flux, as the catalog measures it)
    at :func:`blank_positions`, half of S/N 3-10 (about 80 in the 5-7 bin on GOTO), half
    of 10-30, on ``result``'s difference's own noise (module docstring)."""
    xy = blank_positions(result, rng)
    diff = result.difference
    usable = diff.good_pixels() & (diff.variance > 0)
    diff_model = PsfModel(difference_psf(result))
    forced = np.array(
        [forced_psf_flux(diff.image, diff.variance, usable, diff_model, x, y) for x, y in xy]
    )
    err = forced[:, 1]
    # The honest error scale: ~300+ positions know it to ~4 % (the catalog's estimate
    # from 200 sky sources varies by ~10 % between runs).
    z0 = forced[:, 0] / err
    scale = float(1.4826 * np.median(np.abs(z0 - np.median(z0))))
    snr = np.where(
        rng.random(len(xy)) < 0.5, rng.uniform(3.0, 10.0, len(xy)), rng.uniform(10.0, 30.0, len(xy))
    )
    flux = snr * err * scale
    sci_model = PsfModel(result.science_psf.flux_image, result.science_psf.enclosed)
    image = result.science.image.astype(np.float64)
    for (x, y), f in zip(xy, flux, strict=True):
        stamp, x0, y0 = sci_model.stamp(x, y)
        image[y0 : y0 + stamp.shape[0], x0 : x0 + stamp.shape[1]] += f * stamp
    return InjectedSources(xy, snr, flux, scale, image)
