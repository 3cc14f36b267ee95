"""Where the sky is: pixels far from every source of either input image.

A source is any pixel whose 5 x 5 box mean (after a smooth background) exceeds three
times that mean's robust spread over the usable pixels, of either sign (a hole in the
sky is no sky either). The spread is measured on the box mean itself, so noise
correlated between pixels (coadds, resampled stacks) does not make every pixel a
source. Sky is every usable pixel farther than a given distance, in x or y, from a
source pixel of either input. Quantities that must not see the sources (the
renormalisation of the difference's noise, a differential background) are measured
there.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from diffviewer.engine.background import estimate_background, sampled_robust_std
from diffviewer.exposure import Exposure

#: Box (px) over which an input is averaged to find its sources, and the threshold
#: (robust sigma of that mean) above which a pixel is a source.
SOURCE_BOX = 5
SOURCE_SIGMA = 3.0

#: Background mesh (px) for finding the inputs' sources.
BACKGROUND_MESH = 128


def source_map(exposure: Exposure, good: np.ndarray) -> np.ndarray:
    """Pixels where an input shows a source (see the module docstring).

    Parameters
    ----------
    exposure : Exposure
        A science or template image on the difference's grid.
    good : numpy.ndarray
        Usable pixels.

    Returns
    -------
    numpy.ndarray
        Boolean map of source pixels.
    """
    background, _ = estimate_background(exposure.image, good, BACKGROUND_MESH)
    # In place: one float32 plane besides the box mean (the renormalisation makes this
    # map of each input).
    excess = np.subtract(exposure.image, background, out=background)
    excess[~good] = 0.0
    mean = ndimage.uniform_filter(excess, size=SOURCE_BOX)
    del excess
    sigma = sampled_robust_std(mean[good]) if good.any() else 0.0
    return np.asarray(good & (np.abs(mean) > SOURCE_SIGMA * sigma))


def sky_pixels(
    science: Exposure, template: Exposure, good: np.ndarray, distance: float
) -> np.ndarray:
    """Pixels of ``good`` farther than ``distance`` px in x or y from every source.

    Parameters
    ----------
    science, template : Exposure
        The inputs on one grid.
    good : numpy.ndarray
        Pixels that may be sky (usable on both inputs and wherever else required).
    distance : float
        Least distance (px) from a source pixel of either input.

    Returns
    -------
    numpy.ndarray
        Boolean sky map.
    """
    sources = source_map(science, good & science.good_pixels())
    sources |= source_map(template, good & template.good_pixels())
    if not sources.any():
        return np.asarray(good)
    # A square of side 2 distance + 1 (separable, fast), a little wider than the circle.
    size = 2 * int(np.ceil(distance)) + 1
    near = ndimage.maximum_filter(sources.view(np.uint8), size=size, mode="constant")
    return np.asarray(good & (near == 0))
