"""Stars on a line (a strip two centroid stamps across): what they fix of a mapping.

A line of stars fixes a shift, and a rotation and a scale along it (at order 2 a bend
along it); across it a fit's terms follow the centroids' own scatter. :func:`on_a_line`
tells such stars, :func:`corrected_along_line` corrects a mapping by them along the line
only, and :func:`similarity_through` carries their pairs' similarity across it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from diffviewer.engine.register_fit import Mapping, PolynomialTransform, StarFit, image_grid
from diffviewer.engine.triangles import similarities, similarity_matrix

#: Stars spread by less than this (px, standard deviation) across their main axis lie on
#: a line (:func:`on_a_line`): a strip whose centroid stamps fit only its middle rows.
LINE_SPREAD = 3.0


def on_a_line(fit: StarFit) -> bool:
    """Whether the fit's stars lie on a line: their positions' spread across their main
    axis (standard deviation, science px) below :data:`LINE_SPREAD`. On a strip two
    centroid stamps across every star found lies on its middle row, and the fit's terms
    across the row follow the centroids' own scatter: applied across a 24 x 1200 strip,
    such a fit was 11.5 px off at its edges, and judged there it called a right WCS 11.5
    px off."""
    centred = fit.source - fit.source.mean(axis=0)
    spread = np.linalg.svd(centred, compute_uv=False) / math.sqrt(len(centred))
    return bool(spread[-1] < LINE_SPREAD)


def similarity_through(fit: StarFit, flip: float) -> PolynomialTransform:
    """The least-squares similarity (shift, rotation, one scale) through a fit's pairs,
    after the science positions' x times ``flip`` (-1: a mirror image)."""
    mirrored = fit.source * [flip, 1.0]
    source, target = (points @ np.array([1.0, 1j]) for points in (mirrored, fit.target))
    a, b = similarities(source[None], target[None])
    matrix = similarity_matrix(complex(a[0]), complex(b[0])) @ np.diag([flip, 1.0, 1.0])
    return PolynomialTransform.from_matrix(matrix)


@dataclasses.dataclass(frozen=True)
class LineCorrection:
    """A mapping corrected by stars on a line (:func:`corrected_along_line`).

    Attributes
    ----------
    as_polynomial, moved : PolynomialTransform
        The mapping as a polynomial over the image, and with the correction added.
    error : float
        The correction's 1-sigma error at the ends of the stars' line (px, 2-D).
    residuals : float
        The stars' sum of squared residuals about ``moved`` (px^2).
    parameters : int
        The correction's coefficients (both axes).
    """

    as_polynomial: PolynomialTransform
    moved: PolynomialTransform
    error: float
    residuals: float
    parameters: int


def corrected_along_line(
    fit: StarFit, mapping: Mapping, shape: tuple[int, int], order: int
) -> LineCorrection:
    """``mapping`` as a polynomial of ``order`` over an image of ``shape`` (fitted on
    :func:`~diffviewer.engine.register_fit.image_grid`), then corrected by the fit's stars
    on a line (:func:`on_a_line`): their offsets from it, a polynomial of degree ``order``
    in the position along their main axis (a shift, a rotation and a scale along that axis,
    and with order 2 a bend along it), added; across the axis nothing is fixed by them."""
    gx, gy = image_grid(shape)
    design = PolynomialTransform.design(gx, gy, order)

    def as_polynomial(x: np.ndarray, y: np.ndarray) -> PolynomialTransform:
        coefficients = np.linalg.lstsq(design, np.stack([x, y], axis=1), rcond=None)[0]
        return PolynomialTransform(order, coefficients.T)

    tx, ty = mapping(gx, gy)
    mx, my = mapping(fit.source[:, 0], fit.source[:, 1])
    offsets = fit.target - np.stack([mx, my], axis=1)
    centre = fit.source.mean(axis=0)
    axis = np.linalg.svd(fit.source - centre, full_matrices=False)[2][0]
    along = (fit.source - centre) @ axis
    reach = max(float(np.abs(along).max()), 1.0)  # positions scaled to [-1, 1]

    def powers(position: np.ndarray) -> np.ndarray:
        return np.vander(position / reach, order + 1, increasing=True)

    terms = powers(along)
    coefficients = np.linalg.lstsq(terms, offsets, rcond=None)[0]
    on_grid = powers((np.stack([gx, gy], axis=1) - centre) @ axis) @ coefficients
    residuals = float(np.sum((offsets - terms @ coefficients) ** 2))
    # the polynomial's error at the line's ends, from the scatter about it (2-D)
    scatter = math.sqrt(residuals / max(len(along) - (order + 1), 1))
    ends = powers(np.array([along.min(), along.max()]))
    leverage = np.einsum("ij,jk,ik->i", ends, np.linalg.pinv(terms.T @ terms), ends)
    return LineCorrection(
        as_polynomial(tx, ty),
        as_polynomial(tx + on_grid[:, 0], ty + on_grid[:, 1]),
        float(scatter * math.sqrt(max(float(leverage.max()), 0.0))),
        residuals,
        2 * (order + 1),
    )
