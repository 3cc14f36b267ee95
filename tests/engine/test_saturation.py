"""A coadd's saturation without a SATURATE card: the broad cores piled up below its maximum.

A coadd of frames that each clip at 65535 after their own sky is subtracted keeps no
exact flat top: its saturated cores peak within a few per cent of one another whatever
their fluxes. The GOTO coadds of ``../shared/data`` are such images (issue 12: their
unflagged saturated stars left 29 of diffviewer's 180 positive 5 sigma peaks, where
HOTPANTS is told the level by hand and masks them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage

from diffviewer.exposure import MaskPlane
from diffviewer.io import read_exposure
from diffviewer.saturation import flat_top_level, star_plateau_level
from tests.conftest import data_path

SAT = int(MaskPlane.SAT)
#: The converter's range and the three frames' skies: clip levels 64735, 63035, 61535
#: after each frame's sky is subtracted (2.4 % either side of their mean).
ADC_MAX = 65535.0
FRAME_SKIES = (800.0, 2500.0, 4000.0)
#: Gaussian stars of FWHM 3 px: the peak pixel holds 1 / (2 pi sigma^2) of the flux.
SIGMA = 3.0 / 2.3548
PEAK_SHARE = 1.0 / (2 * np.pi * SIGMA**2)


def _stars(fluxes: np.ndarray, xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Gaussian stars rendered in 31 x 31 px boxes (their peaks at integer pixels)."""
    image = np.zeros(shape)
    dy, dx = np.mgrid[-15:16, -15:16]
    profile = PEAK_SHARE * np.exp(-(dx**2 + dy**2) / (2 * SIGMA**2))
    for flux, (x, y) in zip(fluxes, xy, strict=True):
        image[y - 15 : y + 16, x - 15 : x + 16] += flux * profile
    return image


def _field(seed: int, capped: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Star light, fluxes and positions of a 512^2 field.

    Fluxes follow star counts N(>F) ~ 1/F from 2e4 to 6e6 (about 13 stars bright enough
    to clip); with ``capped`` none exceeds 5e5 (peak 39,000, unclipped) and ten stars
    lie within 10 % of that cap, as a synthetic field with a flux cap has them.
    """
    rng = np.random.default_rng(seed)
    n = 400
    fluxes = 2e4 / rng.uniform(2e4 / 6e6, 1.0, n)
    if capped:
        fluxes = np.minimum(fluxes, 4e5)
        fluxes[:10] = rng.uniform(4.5e5, 5e5, 10)
    xy = rng.integers(20, 492, (n, 2))
    return _stars(fluxes, xy, (512, 512)), fluxes, xy


def _coadd(light: np.ndarray, seed: int, clip: bool = True) -> np.ndarray:
    """Mean of three frames, each with its sky, noise and a flat field (1 % from pixel to
    pixel), clipped at the converter's range (when ``clip``), flat-fielded and
    sky-subtracted: a clipped pixel reads 65535 / flat - sky, so no two cores agree."""
    rng = np.random.default_rng(seed)
    frames = []
    for sky in FRAME_SKIES:
        flat = rng.normal(1.0, 0.01, light.shape)
        counts = flat * (sky + light + rng.normal(0.0, np.sqrt(sky + light)))
        frames.append((np.minimum(counts, ADC_MAX) if clip else counts) / flat - sky)
    return np.mean(frames, axis=0) + 500.0


def test_a_clipped_coadd_has_its_saturated_cores_found() -> None:
    light, fluxes, xy = _field(3)
    image = _coadd(light, 4)
    usable = np.ones(image.shape, bool)
    assert flat_top_level(image, usable) is None  # no exact flat top to find
    level = star_plateau_level(image, usable)
    assert level is not None
    true_peak = fluxes * PEAK_SHARE
    lowest_clip = 0.97 * (ADC_MAX - max(FRAME_SKIES))  # 3 sigma of the flat below
    core = np.array([image[y - 1 : y + 2, x - 1 : x + 2].max() for x, y in xy])
    # every star clipped in all three frames has its core at or above the level
    assert np.all(core[true_peak > 1.03 * (ADC_MAX - min(FRAME_SKIES))] >= level)
    # no star far below the lowest clip is taken as saturated
    assert np.all(core[true_peak < 0.85 * lowest_clip] < level)


def test_the_same_stars_unclipped_are_not_saturated() -> None:
    light, _, _ = _field(3)
    assert star_plateau_level(_coadd(light, 4, clip=False), np.ones(light.shape, bool)) is None


def test_stars_of_similar_flux_near_the_top_are_not_a_clip_level() -> None:
    # Ten unclipped stars within 10 % of the top (a flux cap, as synthetic fields have)
    # pile up as clipped cores would, but their cores are as narrow as the PSF.
    light, _, _ = _field(5, capped=True)
    image = _coadd(light, 6, clip=False)
    assert star_plateau_level(image, np.ones(image.shape, bool)) is None


def test_reading_a_clipped_coadd_flags_its_cores_sat(tmp_path: Path) -> None:
    light, _, _ = _field(3)
    image = _coadd(light, 4).astype(np.float32)
    path = tmp_path / "coadd.fits"
    fits.PrimaryHDU(image).writeto(path)
    exposure = read_exposure(str(path))
    assert exposure.saturation is not None
    how, level = exposure.saturation
    assert how == "star plateau"
    np.testing.assert_array_equal((exposure.mask & SAT) != 0, image >= level)


@pytest.mark.parametrize("name", ["goto/1.fits", "goto/2.fits"])
def test_goto_coadds_have_their_saturated_stars_flagged(name: str) -> None:
    # The benchmark hands HOTPANTS 60000 as these coadds' valid upper limit: every star
    # reaching it must have a SAT core, and the flag stays on the cores (well under
    # 0.1 % of the image). A core above 60000 may split where the (double) PSF dips: the
    # pixels within 3 px are one star.
    exposure = read_exposure(str(data_path(name)))
    assert exposure.saturation is not None and exposure.saturation[0] == "star plateau"
    sat = (exposure.mask & SAT) != 0
    labels, n_stars = ndimage.label(
        ndimage.binary_dilation(exposure.image >= 60000.0, iterations=3)
    )
    assert n_stars >= 10
    flagged = ndimage.maximum(sat, labels, np.arange(1, n_stars + 1))
    assert np.all(flagged)
    assert np.count_nonzero(sat) < 1e-3 * sat.size
