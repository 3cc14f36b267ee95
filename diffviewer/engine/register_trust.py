"""Whether a star fit's pairs are real: enough of the stars it overlaps, far beyond chance.

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

from diffviewer.engine.register_fit import COVERED_GRID, Mapping, StarFit, image_grid

#: A star fit with residuals beyond this RMS (px) is compared with the star patterns' fit
#: (:func:`~diffviewer.engine.register.register_on_stars`); a trusted fit pairs at least
#: this fraction of the stars of the image with fewer (:func:`trusted`).
TRUSTED_RMS, TRUSTED_FRACTION = 0.5, 0.25
#: Chance probability below which a fit's pairs are taken as real (:func:`trusted`).
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
    with fewer must be paired, and so many pairs must be far beyond what chance gives:
    beyond the pairs the fit makes by construction (one per coefficient of an axis: an
    affine maps any three stars onto any three), as many science stars within the kept
    pairs' largest residual of a template star, at the template's star density
    (Poisson), have a probability below :data:`CHANCE_P_VALUE`. Blends in a crowded
    field with a broad PSF move centroids by a pixel or more while the pairs are real (a
    star per 300 px^2 at a template FWHM of 7.7 px: 179 pairs at 1.1 px RMS, where
    chance gives 11 within the match radius); a narrow template piece's 8 stars, 6 or 7
    of them paired by chance at 0.6-0.9 px RMS, 124-175 px from the truth, were trusted
    when every pair was counted within the match radius, or any pairs within 0.5 px RMS.
    """
    if fit is None:
        return False
    n_sci, n_tmpl = _overlap_counts(fit, science, template, science_shape, template_shape)
    if fit.n_matched < TRUSTED_FRACTION * min(n_sci, n_tmpl):
        return False
    made = fit.normal_inverse.shape[0]  # coefficients of an axis
    if fit.n_matched <= made:
        return False
    mx, my = fit.transform(fit.source[:, 0], fit.source[:, 1])
    reach = float(np.max(np.hypot(mx - fit.target[:, 0], my - fit.target[:, 1])))
    area = float(template_shape[0] * template_shape[1])
    chance = n_sci * len(template) * math.pi * reach**2 / area
    # P(N >= n_matched - made) for a Poisson count of mean ``chance``
    return float(gammainc(fit.n_matched - made, chance)) < CHANCE_P_VALUE


def better_fit(
    first: StarFit | None, second: StarFit | None, trusted: Callable[[StarFit | None], bool]
) -> StarFit | None:
    """Of two fits, the trusted one on more pairs (``first`` when they pair as many);
    when neither is trusted, ``second`` (the later search's; None when it found none)."""
    if first is not None and trusted(first):
        if second is None or not trusted(second) or second.n_matched <= first.n_matched:
            return first
    return second
