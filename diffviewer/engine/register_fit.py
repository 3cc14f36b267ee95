"""Transforms from science to template pixels fitted on star pairs, and mappings compared.

A :class:`PolynomialTransform` (affine, or quadratic with ``warp.transform_order = 2``)
is fitted by least squares on the star pairs a first mapping brings within
:data:`MATCH_RADIUS` px, with :data:`CLIP_SIGMA` sigma clipping (:func:`fit_transform`),
and matched again with the fit (:func:`refine`). Mappings are compared on a grid over the
science image (:func:`image_grid`, :func:`max_difference`) or where a template lies on it
(:func:`covered_points`); a fit stands for another mapping only when it maps the stars
significantly better (:func:`improves_on`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import betainc

#: Fewest stars on each image, and matched pairs, for a transform (three pairs fix an
#: affine's 6 coefficients; six leave as many degrees of freedom).
MIN_STARS = 6
#: Largest distance (px) between a mapped science star and its template star.
MATCH_RADIUS = 2.5
#: Clipping of the transform fit's residuals (robust sigmas) and its passes.
CLIP_SIGMA, CLIP_ITERATIONS = 3.0, 10
#: Points per side of the grid on which two mappings are compared.
COMPARE_GRID = 9
#: Points per side of the finer grid whose points on the template judge a WCS mapping
#: against stars (:func:`covered_points`: a piece a ninth of the image wide holds 3 of
#: its columns), and the fewest of them inside for that region to be used.
COVERED_GRID, MIN_COVERED = 33, 4
#: A star fit replaces a mapping only when it fits the stars better than the mapping at
#: this significance (two-sided 3 sigma), as it must stray from it by 3 of its errors.
IMPROVEMENT_P_VALUE = 0.0027
#: Science px -> template px (arrays of any shape, kept).
Mapping = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
#: Science-image positions (x, y), flattened.
Points = tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class PolynomialTransform:
    """A polynomial map from science pixels (x, y) to template pixels (0-based).

    Attributes
    ----------
    order : int
        1 (affine) or 2 (quadratic).
    coefficients : numpy.ndarray
        Shape (2, n_terms): template x and y as sums over :meth:`design` of (x, y).
    """

    order: int
    coefficients: np.ndarray

    @staticmethod
    def design(x: np.ndarray, y: np.ndarray, order: int) -> np.ndarray:
        """The terms 1, x, y (and x^2, x y, y^2 for order 2) as columns."""
        x, y = np.ravel(x).astype(np.float64), np.ravel(y).astype(np.float64)
        columns = [np.ones_like(x), x, y]
        if order >= 2:
            columns += [x * x, x * y, y * y]
        return np.stack(columns, axis=1)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Template (x, y) px of science (x, y) px (any shape, kept)."""
        shape = np.shape(x)
        out = self.design(x, y, self.order) @ self.coefficients.T
        return out[:, 0].reshape(shape), out[:, 1].reshape(shape)

    @property
    def matrix(self) -> list[list[float]]:
        """The coefficients as nested lists (2 rows: template x, template y)."""
        return [[float(v) for v in row] for row in self.coefficients]

    @classmethod
    def rotation(
        cls,
        angle_deg: float,
        shift: tuple[float, float],
        centre: tuple[float, float],
        flip: bool = False,
    ) -> PolynomialTransform:
        """Rotate by ``angle_deg`` about ``centre`` (x mirrored first when ``flip``), then shift.

        Parameters
        ----------
        angle_deg : float
            Counter-clockwise rotation (deg).
        shift : (float, float)
            Shift added after the rotation (px).
        centre : (float, float)
            Fixed point of the rotation (px).
        flip : bool
            Mirror x before rotating.

        Returns
        -------
        PolynomialTransform
            An affine transform.
        """
        t = math.radians(angle_deg)
        rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        if flip:
            rot = rot @ np.diag([-1.0, 1.0])
        c = np.asarray(centre, dtype=np.float64)
        offset = c + np.asarray(shift, dtype=np.float64) - rot @ c
        return cls(1, np.column_stack([offset, rot]))

    def inverse(self) -> PolynomialTransform:
        """The inverse of an affine transform (order 1 only)."""
        if self.order != 1:
            raise ValueError("only an affine transform is inverted")
        m = np.vstack([self.coefficients[:, [1, 2, 0]], [0.0, 0.0, 1.0]])
        return PolynomialTransform.from_matrix(np.linalg.inv(m))

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> PolynomialTransform:
        """An affine transform from a 3x3 homogeneous matrix (x' = a x + b y + c)."""
        m = np.asarray(matrix, dtype=np.float64)
        return cls(1, np.array([[m[0, 2], m[0, 0], m[0, 1]], [m[1, 2], m[1, 0], m[1, 1]]]))


@dataclasses.dataclass(frozen=True)
class StarFit:
    """A transform fitted on matched stars.

    Attributes
    ----------
    transform : PolynomialTransform
        Science px -> template px.
    n_matched : int
        Pairs kept by the clipping.
    rms : float
        Their residual RMS (px, 2-D distance).
    normal_inverse : numpy.ndarray
        ``(A^T A)^-1`` of the kept pairs' design matrix ``A``, for the fit's uncertainty.
    source, target : numpy.ndarray
        The kept pairs' positions, ``(n_matched, 2)`` each (px).
    """

    transform: PolynomialTransform
    n_matched: int
    rms: float
    normal_inverse: np.ndarray
    source: np.ndarray
    target: np.ndarray

    def position_error(self, points: Points) -> float:
        """Largest 1-sigma error (px, 2-D) of a position mapped at ``points``
        (:func:`image_grid`, :func:`covered_points`).

        The stars' scatter is their residuals' sum of squares over the degrees of freedom
        the fit leaves (pairs less coefficients per axis): the residual RMS alone read 1.3
        times low for 7 stars and an affine fit. NaN (unknown) when no degree is left.
        """
        n, p = self.n_matched, self.normal_inverse.shape[0]
        if n <= p:
            return math.nan
        d = PolynomialTransform.design(*points, self.transform.order)
        leverage = np.einsum("ij,jk,ik->i", d, self.normal_inverse, d)
        scatter = self.rms * math.sqrt(n / (n - p))
        return float(scatter * np.sqrt(max(float(leverage.max()), 0.0)))


def _unclipped(residual: np.ndarray) -> np.ndarray:
    """Pairs whose residual distance (px) is within :data:`CLIP_SIGMA` robust sigmas of
    all of them (the median distance of a 2-D Gaussian error is 1.177 sigma).

    The scale is that of every pair, not of those a previous pass kept: faint stars'
    centroids scatter more, and a scale from the kept pairs alone fell with each pass
    (274 real pairs cut to 175, the threshold from 0.076 to 0.039 px).
    """
    sigma = max(float(np.median(residual)) / 1.1774, 1e-3)
    return np.asarray(residual < CLIP_SIGMA * sigma * 1.1774 + 0.01)


def improves_on(fit: StarFit, mapping: Mapping) -> bool:
    """Whether a star fit maps its stars significantly better than ``mapping`` does.

    The stars whose residual under ``mapping``, about the residuals' median shift, is
    clipped (:func:`_unclipped`: a blend's centroid pulled by its neighbour) are set
    aside, the rest fitted again, and the two sums of squared residuals compared by an
    F-test, ``mapping`` being the fit with every coefficient held (2 x coefficients
    fewer degrees of freedom): significant below :data:`IMPROVEMENT_P_VALUE`. A fit on a
    narrow template piece's stars can bend to two blends there, and stray from the
    mapping across the piece, without fitting the other stars any better.
    """
    mx, my = mapping(fit.source[:, 0], fit.source[:, 1])
    rx, ry = mx - fit.target[:, 0], my - fit.target[:, 1]
    keep = _unclipped(np.hypot(rx - np.median(rx), ry - np.median(ry)))
    p = 2 * fit.normal_inverse.shape[0]
    if 2 * int(keep.sum()) <= p:
        return False
    again = fit_transform(fit.source[keep], fit.target[keep], fit.transform.order)
    dof = 2 * again.n_matched - p
    if dof <= 0:
        return False
    mx, my = mapping(again.source[:, 0], again.source[:, 1])
    theirs = float(np.sum((mx - again.target[:, 0]) ** 2 + (my - again.target[:, 1]) ** 2))
    ours = again.n_matched * again.rms**2
    if not ours > 0:
        return theirs > 0
    return f_tail(((theirs - ours) / p) / (ours / dof), p, dof) < IMPROVEMENT_P_VALUE


def f_tail(statistic: float, p: int, dof: int) -> float:
    """P(F >= ``statistic``) for an F distribution of (``p``, ``dof``) degrees of freedom,
    as a regularized incomplete beta function (scipy.stats is not imported by a run:
    test_engine_imports)."""
    return float(betainc(dof / 2.0, p / 2.0, dof / (dof + p * max(statistic, 0.0))))


def fit_transform(source: np.ndarray, target: np.ndarray, order: int) -> StarFit:
    """Least-squares polynomial transform with sigma clipping.

    Parameters
    ----------
    source, target : numpy.ndarray
        Matched positions, shape (n, 2) each (px).
    order : int
        1 (affine) or 2 (quadratic).

    Returns
    -------
    StarFit
    """
    design = PolynomialTransform.design(source[:, 0], source[:, 1], order)
    keep = np.ones(len(source), dtype=bool)
    coefficients = np.zeros((2, design.shape[1]))
    for _ in range(CLIP_ITERATIONS):
        coefficients = np.linalg.lstsq(design[keep], target[keep], rcond=None)[0].T
        residual = np.hypot(*(design @ coefficients.T - target).T)
        new = _unclipped(residual)
        if new.sum() < design.shape[1] or np.array_equal(new, keep):
            break
        keep = new
    residual = np.hypot(*(design[keep] @ coefficients.T - target[keep]).T)
    return StarFit(
        PolynomialTransform(order, coefficients),
        int(keep.sum()),
        float(np.sqrt(np.mean(residual**2))),
        np.linalg.pinv(design[keep].T @ design[keep]),
        source[keep],
        target[keep],
    )


def match_nearest(
    science: np.ndarray, template: np.ndarray, mapping: Mapping, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (science, template) of stars that ``mapping`` brings within ``radius`` px.

    Each template star keeps only its nearest science star.
    """
    tx, ty = mapping(science[:, 0], science[:, 1])
    predicted = np.stack([tx, ty], axis=1)
    finite = np.isfinite(predicted).all(axis=1)
    distance, index = cKDTree(template).query(
        np.where(finite[:, None], predicted, 1e12), distance_upper_bound=radius
    )
    found = np.flatnonzero(np.isfinite(distance))
    best: dict[int, int] = {}
    for i in found[np.argsort(distance[found])]:
        best.setdefault(int(index[i]), int(i))
    pairs = np.array(sorted((s, t) for t, s in best.items()), dtype=int).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def refine(
    science: np.ndarray, template: np.ndarray, mapping: Mapping, order: int
) -> StarFit | None:
    """Fit science -> template on the stars ``mapping`` pairs up, twice (match, fit, rematch).

    Returns
    -------
    StarFit or None
        None with fewer pairs than :data:`MIN_STARS` (or three per coefficient).
    """
    result = None
    radius = MATCH_RADIUS
    for _ in range(2):
        si, ti = match_nearest(science, template, mapping, radius)
        if len(si) < max(MIN_STARS, (order + 1) * (order + 2)):
            return result
        result = fit_transform(science[si], template[ti], order)
        mapping = result.transform
        radius = min(MATCH_RADIUS, max(1.0, 5.0 * result.rms))
    return result


def image_grid(shape: tuple[int, int], n: int = COMPARE_GRID) -> Points:
    """``n x n`` points spanning an image of ``shape``, corners included (flattened x, y)."""
    ny, nx = shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, n), np.linspace(0, ny - 1, n))
    return gx.ravel(), gy.ravel()


def covered_points(
    shape: tuple[int, int], mapping: Mapping, template_shape: tuple[int, int]
) -> Points:
    """The points of a fine grid over the science image that ``mapping`` brings onto the
    template (within half a pixel of its outermost pixel centres): where a template, or
    a piece of one, can put data. All of the grid when fewer than :data:`MIN_COVERED`
    are."""
    gx, gy = image_grid(shape, COVERED_GRID)
    tx, ty = mapping(gx, gy)
    ny, nx = template_shape
    inside = (tx >= -0.5) & (tx <= nx - 0.5) & (ty >= -0.5) & (ty <= ny - 0.5)
    if np.count_nonzero(inside) < MIN_COVERED:
        return gx, gy
    return gx[inside], gy[inside]


def max_difference(a: Mapping, b: Mapping, points: Points) -> float:
    """Largest distance (px) between two mappings at ``points`` (:func:`image_grid`)."""
    ax, ay = a(*points)
    bx, by = b(*points)
    distance = np.hypot(ax - bx, ay - by)
    return float(distance.max()) if np.isfinite(distance).all() else math.inf


def identity(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mapping of two images on one pixel grid."""
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def jacobian(mapping: Mapping, shape: tuple[int, int]) -> np.ndarray:
    """The mapping's 2x2 derivative at the centre of an image of ``shape``."""
    cx, cy = (shape[1] - 1) / 2, (shape[0] - 1) / 2
    tx, ty = mapping(np.array([cx, cx + 1, cx]), np.array([cy, cy, cy + 1]))
    return np.array([[tx[1] - tx[0], tx[2] - tx[0]], [ty[1] - ty[0], ty[2] - ty[0]]])


def rms_about(fit: StarFit, mapping: Mapping) -> float:
    """RMS (px, 2-D) of the fit's kept pairs about another mapping (the one used)."""
    mx, my = mapping(fit.source[:, 0], fit.source[:, 1])
    return float(np.sqrt(np.mean((mx - fit.target[:, 0]) ** 2 + (my - fit.target[:, 1]) ** 2)))
