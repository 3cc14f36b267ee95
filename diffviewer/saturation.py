"""The saturation level of an image whose header does not give one: its flat top.

A detector or its converter clips every saturated pixel to one value (a raw uint16 frame
to 65535 or a little below, after bias and overscan handling: the pyDIA frames of this
project's data clip at 65300 ADU and carry no ``SATURATE`` card). The cores of the
brightest stars then form a plateau: the image's maximum is held by several pixels,
where a continuous distribution of star peaks repeats its maximum exactly with
vanishing probability. :func:`flat_top_level` recognises that plateau; the reader
flags pixels at or above it as ``SAT`` and says so.
"""

from __future__ import annotations

import numpy as np

from diffviewer.stats import robust_std

#: Fewest pixels sharing the maximum for it to count as a clip level. A saturated star
#: core covers several pixels; noisy star peaks (integer or float) rarely share their
#: maximum with even one other pixel, let alone three.
MIN_PLATEAU_PIXELS = 4

#: Largest fraction of the usable pixels that may sit on the plateau. Saturated cores
#: are a small part of any image; a larger share means quantised or constant data (a
#: mask, a flat field, a synthetic test image), whose maximum is no clip level.
MAX_PLATEAU_FRACTION = 0.01

#: Least height of the plateau above the median, in robust standard deviations of the
#: image. A clip level is far above the sky (pyDIA: 65300 ADU against a sky of a few
#: thousand with sigma ~50, over 1000 sigma); low, quantised data whose maximum merely
#: repeats stays well below this.
MIN_PLATEAU_SIGMAS = 50.0

#: Pixels sampled for the median and the robust sigma (a regular subsample: the two
#: statistics need no more, and a 4096^2 image is read in milliseconds).
SAMPLE_PIXELS = 100_000


def flat_top_level(image: np.ndarray, usable: np.ndarray) -> float | None:
    """The value at which an image is clipped, when its maximum forms a plateau.

    Parameters
    ----------
    image : numpy.ndarray
        Pixel values (image units).
    usable : numpy.ndarray
        Boolean, True on pixels with data (finite, not blank fill).

    Returns
    -------
    float or None
        The plateau value (image units): at least :data:`MIN_PLATEAU_PIXELS` usable pixels
        hold exactly the maximum, they are at most :data:`MAX_PLATEAU_FRACTION` of the
        usable pixels, and the maximum lies :data:`MIN_PLATEAU_SIGMAS` robust standard
        deviations or more above the median. None otherwise.
    """
    values = image[usable]
    if values.size == 0:
        return None
    top = float(values.max())
    n_top = int(np.count_nonzero(values == top))
    if n_top < MIN_PLATEAU_PIXELS or n_top > MAX_PLATEAU_FRACTION * values.size:
        return None
    sample = values[:: max(1, values.size // SAMPLE_PIXELS)]
    sigma = robust_std(sample)
    if not sigma > 0 or top - float(np.median(sample)) < MIN_PLATEAU_SIGMAS * sigma:
        return None
    return top
