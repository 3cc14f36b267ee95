"""The stars registration matches: an image's brightest peaks, centred.

Stars are found with the candidate finder's peak detection
(:func:`diffviewer.engine.peaks.find_peaks`) at :data:`STAR_THRESHOLD` sigma, ranked by
their smoothed brightness, and centred by an iterated Gaussian-weighted centroid.
"""

from __future__ import annotations

import numpy as np

from diffviewer.engine.moments import cutouts
from diffviewer.engine.peaks import Peaks, find_peaks
from diffviewer.engine.progress import null_reporter
from diffviewer.exposure import Exposure

#: Detection threshold of registration stars (sigma of the smoothed image).
STAR_THRESHOLD = 7.0
#: Most stars of each image used (the brightest); enough for a crowded field's fit.
MAX_STARS = 2000
#: Half-side of the centroid box (px) and width of its Gaussian weight (px).
CENTROID_HALF, CENTROID_SIGMA = 6, 2.0
#: Passes of the weighted centroid.
CENTROID_ITERATIONS = 8


def _centroids(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Iterated Gaussian-weighted centroids of the stars at integer (x, y), background removed."""
    h = CENTROID_HALF
    offsets = np.arange(-h, h + 1, dtype=np.float64)
    stamps = cutouts(image, x, y, h)[0].astype(np.float64)
    border = np.concatenate(
        [stamps[:, 0], stamps[:, -1], stamps[:, 1:-1, 0], stamps[:, 1:-1, -1]], axis=1
    )
    stamps = stamps - np.median(border, axis=1)[:, None, None]
    cx = np.zeros(len(x))
    cy = np.zeros(len(x))
    for _ in range(CENTROID_ITERATIONS):
        wx = np.exp(-0.5 * ((offsets[None, :] - cx[:, None]) / CENTROID_SIGMA) ** 2)
        wy = np.exp(-0.5 * ((offsets[None, :] - cy[:, None]) / CENTROID_SIGMA) ** 2)
        weighted = stamps * wy[:, :, None] * wx[:, None, :]
        total = weighted.sum(axis=(1, 2))
        ok = total > 0
        nx_ = np.where(ok, (weighted.sum(axis=1) @ offsets) / np.where(ok, total, 1), cx)
        ny_ = np.where(ok, (weighted.sum(axis=2) @ offsets) / np.where(ok, total, 1), cy)
        cx, cy = np.clip(nx_, -1.5, 1.5), np.clip(ny_, -1.5, 1.5)
    return x + cx, y + cy


def star_peaks(exposure: Exposure) -> Peaks:
    """The peaks of an image among which :func:`find_stars` finds the registration's stars."""
    return find_peaks(exposure, STAR_THRESHOLD, null_reporter())


def find_stars(
    exposure: Exposure, max_stars: int = MAX_STARS, peaks: Peaks | None = None
) -> np.ndarray:
    """Positions of the brightest stars of an image, brightest first.

    Parameters
    ----------
    exposure : Exposure
        The image.
    max_stars : int
        Most stars returned.
    peaks : Peaks, optional
        The image's peaks (:func:`star_peaks`, or found with a lower threshold),
        when found already.

    Returns
    -------
    numpy.ndarray
        Shape (n, 2): x and y (0-based px), sub-pixel centroids.
    """
    found = (peaks or star_peaks(exposure)).above(STAR_THRESHOLD)
    xi, yi = found.x, found.y
    # Ranked by the smoothed image above the background (the image there less the peak
    # above it is the background): an undersampled star's own peak pixel halves as its
    # centre moves from a pixel's centre to its corner.
    brightness = found.value - (exposure.image[yi, xi] - found.peak)
    ny, nx = exposure.shape
    h = CENTROID_HALF
    inside = (xi >= h) & (xi < nx - h) & (yi >= h) & (yi < ny - h)
    order = np.argsort(-brightness[inside])[:max_stars]
    xs, ys = _centroids(exposure.image, xi[inside][order], yi[inside][order])
    return np.stack([xs, ys], axis=1)
