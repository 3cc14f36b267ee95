"""Whether a star fit's pairs are real: enough of the stars it overlaps, tight or beyond chance.

A first mapping off by more than the match radius pairs stars at random, and a fit on
them bends to them; :func:`trusted` says when a fit's pairs are more than that, and
:func:`better_fit` which of two fits to keep.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import gammainc

from diffviewer.engine.register_fit import COVERED_GRID, MATCH_RADIUS, Mapping, StarFit, image_grid

#: A fit from the WCS mapping is taken as is with residuals within this (px) and this
#: fraction of the stars of the image with fewer paired; otherwise star patterns are tried.
TRUSTED_RMS, TRUSTED_FRACTION = 0.5, 0.25
#: Chance probability below which a fit's pairs are taken as real whatever their
#: residuals (:func:`trusted`).
CHANCE_P_VALUE = 1e-6


def near_footprint(
    stars: np.ndarray, mapping: Mapping, science_shape: tuple[int, int], margin: float
) -> np.ndarray:
    """Which template stars lie within ``margin`` px of the science image's footprint under
    ``mapping`` (of the points of a :data:`~diffviewer.engine.register_fit.COVERED_GRID`
    grid over it, within a grid step and ``margin``).

    Parameters
    ----------
    stars : numpy.ndarray
        Template star positions, ``(n, 2)`` (px).
    mapping : callable
        Science px -> template px.
    science_shape : (int, int)
        The science image's shape.
    margin : float
        Reach beyond the footprint (px).

    Returns
    -------
    numpy.ndarray
        Boolean, one per star.
    """
    tx, ty = mapping(*image_grid(science_shape, COVERED_GRID))
    grid = np.stack([tx, ty], axis=1).reshape(COVERED_GRID, COVERED_GRID, 2)
    step = max(
        float(np.hypot(*np.diff(grid, axis=0).reshape(-1, 2).T).max()),
        float(np.hypot(*np.diff(grid, axis=1).reshape(-1, 2).T).max()),
    )
    if len(stars) == 0 or not np.isfinite(grid).all():
        return np.zeros(len(stars), dtype=bool)
    distance, _ = cKDTree(grid.reshape(-1, 2)).query(stars)
    return np.asarray(distance <= step + margin)


def _overlap_counts(
    fit: StarFit,
    science: np.ndarray,
    template: np.ndarray,
    science_shape: tuple[int, int],
    template_shape: tuple[int, int],
) -> tuple[int, int]:
    """Stars of each image that the fit puts on the other: science stars it maps within
    the template's outermost pixel centres, template stars within the science image's
    footprint (:func:`near_footprint`)."""
    tx, ty = fit.transform(science[:, 0], science[:, 1])
    ny, nx = template_shape
    on_template = (tx >= -0.5) & (tx <= nx - 0.5) & (ty >= -0.5) & (ty <= ny - 0.5)
    on_science = near_footprint(template, fit.transform, science_shape, 0.0)
    return int(np.count_nonzero(on_template)), int(np.count_nonzero(on_science))


def trusted(
    fit: StarFit | None,
    science: np.ndarray,
    template: np.ndarray,
    science_shape: tuple[int, int],
    template_shape: tuple[int, int],
) -> bool:
    """Whether a fit from a given first mapping looks right (a first mapping off by more
    than the match radius pairs stars at random).

    Of the stars the fit puts on the other image (:func:`_overlap_counts`: frames that
    overlap in part share only those), at least :data:`TRUSTED_FRACTION` of the image
    with fewer must be paired, and the residuals be within :data:`TRUSTED_RMS` px or the
    pairs far more than chance gives: as many pairs at random (each such science star
    within :data:`~diffviewer.engine.register_fit.MATCH_RADIUS` of a template star at the
    template's star density, Poisson) has a probability below :data:`CHANCE_P_VALUE`.
    Blends in a crowded field with a broad PSF move centroids by a pixel or more while the
    pairs are real (a star per 300 px^2 at a template FWHM of 7.7 px: 179 pairs at 1.1 px
    RMS, where chance gives 11).
    """
    if fit is None:
        return False
    n_sci, n_tmpl = _overlap_counts(fit, science, template, science_shape, template_shape)
    if fit.n_matched < TRUSTED_FRACTION * min(n_sci, n_tmpl):
        return False
    if fit.rms <= TRUSTED_RMS:
        return True
    area = float(template_shape[0] * template_shape[1])
    chance = n_sci * len(template) * math.pi * MATCH_RADIUS**2 / area
    # P(N >= n_matched) for a Poisson count of mean ``chance``
    return float(gammainc(fit.n_matched, chance)) < CHANCE_P_VALUE


def better_fit(
    first: StarFit | None, second: StarFit | None, trusted: Callable[[StarFit | None], bool]
) -> StarFit | None:
    """Of two fits, the trusted one on more pairs (``first`` when they pair as many);
    when neither is trusted, ``second`` (the later search's; None when it found none)."""
    if first is not None and trusted(first):
        if second is None or not trusted(second) or second.n_matched <= first.n_matched:
            return first
    return second
