"""Register the template to the science image on its stars (the seed's fitAstrometry/register).

Stars are found on both images with the candidate finder's peak detection
(:func:`diffviewer.engine.peaks.find_peaks`) and centred by an iterated
Gaussian-weighted centroid. Without a usable WCS the two star lists are matched by
the identity (images of one shape), then by the translation most star pairs agree on
(:func:`shift_guess`), then by their patterns (:mod:`~diffviewer.engine.triangles`:
the similarity, shift, rotation and scale, most triangles of neighbouring stars vote
for; a flip is tried as the mirrored list). A first transform is then refined here on
every star it brings within :data:`MATCH_RADIUS` px of a template star: a least-squares
affine (or, with ``warp.transform_order = 2``, quadratic) fit from science to template
pixels, with :data:`CLIP_SIGMA` sigma clipping, matched again with the refined
transform.

With a WCS on both images the WCS mapping is checked the same way: science stars
are mapped through the WCSs and matched to template stars (a WCS off by more than the
match radius is sought by the translation the star pairs agree on after the WCS's own
rotation and scale, then by star patterns); when the star fit and the WCS mapping
differ by more than ``warp.wcs_tolerance`` px anywhere on the image, the star fit
replaces the WCS mapping and a note says so. A fit that is not trusted (its pairs may
be chance) neither confirms nor replaces a WCS: the WCS is used, and a note says it
was not confirmed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import betainc, gammainc

from diffviewer.engine.moments import cutouts
from diffviewer.engine.peaks import Peaks, find_peaks
from diffviewer.engine.progress import null_reporter
from diffviewer.engine.triangles import similarities, similarity_guesses, similarity_matrix
from diffviewer.errors import RegistrationError
from diffviewer.exposure import Exposure

#: Detection threshold of registration stars (sigma of the smoothed image).
STAR_THRESHOLD = 7.0
#: Most stars of each image used (the brightest); enough for a crowded field's fit.
MAX_STARS = 2000
#: Brightest stars given to the pattern matcher: of each image, or of the smaller one,
#: the other's in proportion to its area (:func:`pattern_lists`).
PATTERN_STARS = 60
#: Brightest stars of each image whose pairwise offsets vote for a translation
#: (:func:`shift_guess`), and the most-voted bins examined.
VOTE_STARS, VOTE_BINS = 200, 5
#: Fewest stars on each image (and matched pairs) for a transform (an affine has 6
#: parameters; 6 pairs leave no redundancy, so ask for a few more).
MIN_STARS = 6
#: With fewer stars than this on one image of the same shape as the other, and no match,
#: register = 'auto' takes the images as already aligned (with a warning) rather than
#: refusing: cutouts of a few dozen pixels hold a handful of stars.
FEW_STARS = 20
#: Half-side of the centroid box (px) and width of its Gaussian weight (px).
CENTROID_HALF, CENTROID_SIGMA = 6, 2.0
#: Passes of the weighted centroid.
CENTROID_ITERATIONS = 8
#: Largest distance (px) between a mapped science star and its template star.
MATCH_RADIUS = 2.5
#: Clipping of the transform fit's residuals (robust sigmas) and its passes.
CLIP_SIGMA, CLIP_ITERATIONS = 3.0, 10
#: A star fit with residuals beyond this RMS (px) is compared with the star patterns' fit
#: (:func:`register_on_stars`); a trusted fit pairs at least this fraction of the stars
#: of the image with fewer (:func:`_trusted`).
TRUSTED_RMS, TRUSTED_FRACTION = 0.5, 0.25
#: Chance probability below which a fit's pairs are taken as real (:func:`_trusted`).
CHANCE_P_VALUE = 1e-6
#: Farthest (px) a template star may lie outside the science image's footprint under a
#: WCS mapping to vote for that mapping's translation (:func:`check_wcs_on_stars`): how
#: far off a WCS can be found.
WCS_SEARCH = 50.0
#: Template area, in science image areas, above which a failed registration's message
#: says that the science image's stars may not be among the template's listed (when
#: :data:`MAX_STARS` of them are).
LARGER_AREA = 4.0
#: Points per side of the grid on which two mappings are compared.
COMPARE_GRID = 9
#: Points per side of the finer grid whose points on the template judge a WCS mapping
#: against stars (:func:`covered_points`: a piece a ninth of the image wide holds 3 of
#: its columns), and the fewest of them inside for that region to be used.
COVERED_GRID, MIN_COVERED = 33, 4
#: A star fit replaces a mapping only when it fits the stars better than the mapping at
#: this significance (two-sided 3 sigma), as it must stray from it by 3 of its errors.
IMPROVEMENT_P_VALUE = 0.0027
#: Stars spread by less than this (px, standard deviation) across their main axis lie on
#: a line (:func:`on_a_line`): a strip whose centroid stamps fit only its middle rows.
LINE_SPREAD = 3.0

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
        Shape (2, n_terms): template x and y as sums over :meth:`terms` of (x, y).
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
class Registration:
    """How the template was put on the science grid.

    Attributes
    ----------
    method : str
        'wcs' (the WCSs, confirmed or unchecked by stars), 'wcs refined on stars',
        'stars' (pattern match, no usable WCS), 'none' (pixel grids taken as one).
    transform : PolynomialTransform or None
        Science px -> template px fitted on stars, or, for stars on a line
        (:func:`on_a_line`), the WCS mapping (without a WCS, the similarity through the
        pairs) corrected along the line (:func:`corrected_along_line`); None when no fit
        was made.
    n_science_stars, n_template_stars : int
        Stars found on each image.
    n_matched : int
        Matched pairs kept by the fit.
    rms : float
        Residual RMS of the matched stars (the ``n_matched`` pairs) about the mapping
        used (px); NaN without a fit.
    position_error : float
        Largest 1-sigma error (px) of a position mapped by ``transform`` (from its
        residuals and the stars' spread) over the image, or, for a WCS checked on stars,
        where the template lies on it (for stars on a line, the correction's error at the
        ends of the line); NaN without a fit.
    notes : tuple of str
        What the user should know.
    applied : bool
        Whether ``transform`` is the mapping used: False for the star fit that checked a
        WCS kept ('wcs') and for a star fit no better than one pixel grid ('stars' on
        images of one shape, :func:`register_on_stars`).
    """

    method: str
    transform: PolynomialTransform | None
    n_science_stars: int
    n_template_stars: int
    n_matched: int
    rms: float
    position_error: float = math.nan
    notes: tuple[str, ...] = ()
    applied: bool = True


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


def list_lengths(n: int, area_ratio: float) -> tuple[int, int]:
    """How many of the science and the template's brightest stars to match: ``n`` of the
    image of smaller area, and ``n`` times the ratio of the areas of the other (the same
    density of stars on both).

    Parameters
    ----------
    n : int
        Stars of the smaller image.
    area_ratio : float
        The template's area over the science image's.

    Returns
    -------
    (int, int)
        Science stars, template stars.
    """
    return int(n * max(1.0, 1.0 / area_ratio)), int(n * max(1.0, area_ratio))


def shift_guess(
    science: np.ndarray,
    template: np.ndarray,
    linear: np.ndarray | None = None,
    area_ratio: float = 1.0,
) -> PolynomialTransform:
    """The translation science -> template that the most star pairs agree on, after a
    known linear part (rotation, scale) when one is given.

    Every offset from one of the brightest science stars to one of the template's, each
    image's brightest :data:`VOTE_STARS` in proportion to its area (:func:`list_lengths`:
    a template of many times the science image's area holds its brightest stars mostly
    elsewhere, as a science image does beside a small template piece), is binned on a
    grid of :data:`MATCH_RADIUS` px. Of the :data:`VOTE_BINS` fullest bins, the one whose
    offsets' median has the most offsets within :data:`MATCH_RADIUS` of it gives that
    median (a cluster split by a bin edge still counts whole). Frames of one telescope
    and orientation differ by a translation (dithers, unregistered exposures), which this
    finds from a handful of stars where star patterns need more; with a rotation the
    offsets do not cluster, and the fit the guess leads to is not trusted
    (:func:`_trusted`), or is trusted for a band of pairs only (:func:`register_on_stars`
    then tries patterns too).

    Parameters
    ----------
    science, template : numpy.ndarray
        Star positions, ``(n, 2)`` each, brightest first (:func:`find_stars`).
    linear : numpy.ndarray, optional
        2x2 matrix applied to the science positions first: another piece's of the same
        template (pieces cut from one image share its rotation and scale).
    area_ratio : float
        The template's area over the science image's.

    Returns
    -------
    PolynomialTransform
        The affine transform: ``linear`` (unit by default) and the translation found.
    """
    matrix = np.eye(2) if linear is None else np.asarray(linear, dtype=np.float64)
    n_science, n_template = list_lengths(VOTE_STARS, area_ratio)
    moved = science[:n_science] @ matrix.T
    offsets = (template[None, :n_template] - moved[:, None]).reshape(-1, 2)
    # (a linear part from a WCS that maps nothing onto the sky leaves none finite)
    offsets = offsets[np.isfinite(offsets).all(axis=1)]
    counts = np.zeros(0, dtype=np.int64)
    if len(offsets):
        cells = np.floor(offsets / MATCH_RADIUS).astype(np.int64)
        cells -= cells.min(axis=0)
        # one integer a cell (np.unique over rows is ~10x slower on 10^5 offsets)
        _, inverse, counts = np.unique(
            cells[:, 0] * (int(cells[:, 1].max()) + 1) + cells[:, 1],
            return_inverse=True,
            return_counts=True,
        )
    best, most = np.zeros(2), -1
    for cell in np.argsort(-counts)[:VOTE_BINS]:
        centre = np.median(offsets[inverse == cell], axis=0)
        near = int(np.count_nonzero(np.hypot(*(offsets - centre).T) <= MATCH_RADIUS))
        if near > most:
            best, most = centre, near
    return PolynomialTransform.from_matrix(np.block([[matrix, best[:, None]], [0.0, 0.0, 1.0]]))


def pattern_lists(area_ratio: float, n_science: int, n_template: int) -> list[tuple[int, int]]:
    """The lengths of the science and template star lists to match patterns among, in
    the order tried.

    First each image's brightest in proportion to its area (:func:`list_lengths`: a
    cutout of a larger image, or a piece of a smaller one, at one pixel scale and
    depth); then :data:`PATTERN_STARS` of each (one field at another pixel scale: 2 x 2
    binning gives a quarter of the pixels for the same stars); then the smaller image's
    stars as found, the other's in proportion (a shallower cutout of a deeper image).

    Parameters
    ----------
    area_ratio : float
        The template's area over the science image's.
    n_science, n_template : int
        The stars found on each.

    Returns
    -------
    list of (int, int)
        Distinct (science, template) lengths.
    """
    by_area = list_lengths(PATTERN_STARS, area_ratio)
    if area_ratio >= 1.0:
        found = min(n_science, by_area[0])
        by_depth = (found, int(found * area_ratio))
    else:
        found = min(n_template, by_area[1])
        by_depth = (int(found / area_ratio), found)
    return list(dict.fromkeys([by_area, (PATTERN_STARS, PATTERN_STARS), by_depth]))


def pattern_guesses(
    science: np.ndarray,
    template: np.ndarray,
    science_shape: tuple[int, int],
    area_ratio: float = 1.0,
) -> Iterator[PolynomialTransform]:
    """First similarity transforms science -> template from star patterns, likeliest first.

    Those the triangles of each image's brightest stars vote for
    (:func:`~diffviewer.engine.triangles.similarity_guesses`), for each of
    :func:`pattern_lists` in turn: with the science list as given, then mirrored (a flip
    between the images).

    Parameters
    ----------
    science, template : numpy.ndarray
        Star positions, ``(n, 2)`` each, brightest first (:func:`find_stars`).
    science_shape : (int, int)
        The science image's shape (its centre is where the vote is taken).
    area_ratio : float
        The template's area over the science image's.

    Yields
    ------
    PolynomialTransform
    """
    ny, nx = science_shape
    for n_science, n_template in pattern_lists(area_ratio, len(science), len(template)):
        for flip in (1.0, -1.0):
            mirrored = science[:n_science] * [flip, 1.0]
            centre = (flip * (nx - 1) / 2, (ny - 1) / 2)
            for matrix in similarity_guesses(mirrored, template[:n_template], centre):
                yield PolynomialTransform.from_matrix(matrix @ np.diag([flip, 1.0, 1.0]))


def pattern_fit(
    science: np.ndarray,
    template: np.ndarray,
    order: int,
    shapes: tuple[tuple[int, int], tuple[int, int]],
    listed: np.ndarray | None = None,
    area_ratio: float = 1.0,
) -> StarFit | None:
    """The fit that star patterns lead to: each of :func:`pattern_guesses` refined on every
    star (:func:`refine`) in turn, the first trusted (:func:`_trusted`), else the first
    found (None: none).

    Parameters
    ----------
    science, template : numpy.ndarray
        Star positions, ``(n, 2)`` each, brightest first (:func:`find_stars`).
    order : int
        Order of the fitted polynomial.
    shapes : ((int, int), (int, int))
        The science and template images' shapes.
    listed : numpy.ndarray, optional
        The template stars the patterns are sought among (all of ``template`` by default).
    area_ratio : float
        The area ``listed`` covers over the science image's.

    Returns
    -------
    StarFit or None
    """
    among = template if listed is None else listed
    first = None
    for guess in pattern_guesses(science, among, shapes[0], area_ratio):
        fit = refine(science, template, guess, order)
        if _trusted(fit, science, template, *shapes):
            return fit
        first = first or fit
    return first


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


def near_footprint(
    stars: np.ndarray, mapping: Mapping, science_shape: tuple[int, int], margin: float
) -> np.ndarray:
    """Which template stars lie within ``margin`` px of the science image's footprint
    under ``mapping`` (of the points of a :data:`COVERED_GRID` grid over it, within a
    grid step and ``margin``).

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


def _trusted(
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


def _better_fit(
    first: StarFit | None, second: StarFit | None, trusted: Callable[[StarFit | None], bool]
) -> StarFit | None:
    """Of two fits, the trusted one on more pairs (``first`` when they pair as many);
    when neither is trusted, ``second`` (the later search's; None when it found none)."""
    if first is not None and trusted(first):
        if second is None or not trusted(second) or second.n_matched <= first.n_matched:
            return first
    return second


def _what_to_try(n_sci: int, n_tmpl: int, area_ratio: float) -> str:
    """Advice for a failed star registration (``area_ratio``: the template's area over
    the science image's)."""
    larger = (
        f"the template covers {area_ratio:.0f} times the science image's area, and of its "
        f"stars only the brightest {MAX_STARS} are listed, which may leave out the science "
        "image's: crop it to the science field, or "
        if area_ratio > LARGER_AREA and n_tmpl >= MAX_STARS
        else "check that both images show the same field, "
    )
    return (
        f"{n_sci} stars were found on the science image and {n_tmpl} on the template "
        f"(at least {MIN_STARS} each, {STAR_THRESHOLD:g} sigma peaks); {larger}give both a "
        "celestial WCS, or, when the images are already on one pixel grid, set "
        "warp.register = none"
    )


def _area_ratio(science: Exposure, template: Exposure) -> float:
    """The template's area in pixels over the science image's."""
    return float(np.prod(template.shape)) / float(np.prod(science.shape))


def register_on_stars(
    science: Exposure,
    template: Exposure,
    order: int,
    guess: Mapping | None = None,
    science_peaks: Peaks | None = None,
    template_peaks: Peaks | None = None,
    linear: np.ndarray | None = None,
) -> Registration:
    """Find the science -> template pixel transform from the stars alone.

    Parameters
    ----------
    science, template : Exposure
        The two images (no WCS needed).
    order : int
        Order of the fitted polynomial (1 affine, 2 quadratic).
    guess : callable, optional
        A first mapping to try (e.g. the identity for images of one shape); kept when
        the fit it leads to is trusted (:func:`_trusted`). Then the translation most
        star pairs agree on (:func:`shift_guess`), on the same terms, then star patterns
        (:func:`pattern_fit`), also when that fit is trusted for its pairs' number only.
        Stars on a line give a similarity (:func:`_stars_on_a_line`).
    science_peaks, template_peaks : Peaks, optional
        Each image's peaks, when found already (:func:`find_stars`).
    linear : numpy.ndarray, optional
        The 2x2 linear part the translation is sought after (:func:`shift_guess`).

    Returns
    -------
    Registration
        Method 'stars'.

    Raises
    ------
    RegistrationError
        When too few stars are found or their patterns do not match (the message
        says how many stars each image had and what to try).
    """
    sci, tmpl = find_stars(science, peaks=science_peaks), find_stars(template, peaks=template_peaks)
    n_sci, n_tmpl = len(sci), len(tmpl)
    area_ratio = _area_ratio(science, template)
    advice = _what_to_try(n_sci, n_tmpl, area_ratio)
    if min(n_sci, n_tmpl) < MIN_STARS:
        raise RegistrationError(
            f"cannot register template {template.source} to science {science.source} on "
            f"stars: too few stars; {advice}",
            n_sci,
            n_tmpl,
        )
    shapes = (science.shape, template.shape)
    fit = refine(sci, tmpl, guess, order) if guess is not None else None
    if not _trusted(fit, sci, tmpl, *shapes):
        fit = refine(sci, tmpl, shift_guess(sci, tmpl, linear, area_ratio), order)
    if fit is None or not _trusted(fit, sci, tmpl, *shapes) or fit.rms > TRUSTED_RMS:
        # A fit trusted for its many pairs alone may hold them in a band of a rotated
        # field, bent to them (a third of a field turned 4 degrees: 19 pairs at 1.2 px,
        # 6 px off, where its patterns pair 39 at 0.13 px): patterns are tried too.
        patterned = pattern_fit(sci, tmpl, order, shapes, area_ratio=area_ratio)
        fit = _better_fit(fit, patterned, lambda f: _trusted(f, sci, tmpl, *shapes))
    if fit is None:
        raise RegistrationError(
            f"cannot register template {template.source} to science {science.source}: the "
            f"star patterns do not match; {advice}",
            n_sci,
            n_tmpl,
        )
    if on_a_line(fit):
        return _stars_on_a_line(fit, (sci, tmpl), shapes, order, (n_sci, n_tmpl))
    grid = image_grid(science.shape)
    error = fit.position_error(grid)
    if science.shape == template.shape and not improves_on(fit, identity):
        note = (
            f"the star fit departs from one pixel grid by up to "
            f"{max_difference(fit.transform, identity, grid):.2f} px over the image, but "
            f"fits its {fit.n_matched} stars no better than one grid does: the template was "
            "not resampled"
        )
        return Registration(
            "stars",
            fit.transform,
            n_sci,
            n_tmpl,
            fit.n_matched,
            rms_about(fit, identity),
            error,
            (note,),
            applied=False,
        )
    return Registration("stars", fit.transform, n_sci, n_tmpl, fit.n_matched, fit.rms, error)


def _similarity_through(fit: StarFit, flip: float) -> PolynomialTransform:
    """The least-squares similarity (shift, rotation, one scale) through a fit's pairs,
    after the science positions' x times ``flip`` (-1: a mirror image)."""
    mirrored = fit.source * [flip, 1.0]
    source, target = (points @ np.array([1.0, 1j]) for points in (mirrored, fit.target))
    a, b = similarities(source[None], target[None])
    matrix = similarity_matrix(complex(a[0]), complex(b[0])) @ np.diag([flip, 1.0, 1.0])
    return PolynomialTransform.from_matrix(matrix)


def _stars_on_a_line(
    fit: StarFit,
    stars: tuple[np.ndarray, np.ndarray],
    shapes: tuple[tuple[int, int], tuple[int, int]],
    order: int,
    counts: tuple[int, int],
) -> Registration:
    """:func:`register_on_stars` for stars on a line (:func:`on_a_line`), without a WCS.

    A line of stars fixes a shift, and a rotation and a scale along it (with order 2 a
    bend along it), which a similarity carries across; an affine fit's terms across the
    line follow the centroids' scatter (7-8 px off across 24 px strips). Its mirror image
    across the line fits the stars as well but for their spread across it: it is taken
    only when it fits them significantly better (an F-test at :data:`IMPROVEMENT_P_VALUE`
    on the same pairs), and said when it cannot be told. The model is made again on every
    star it pairs (a first guess may pair a part of the line only: 25 of 86 stars on a
    27 x 1381 strip, 1.9 px off at its end). Frames of one shape keep one grid unless
    the model maps the stars significantly better (the same F-test, as
    :func:`improves_on`).

    Parameters
    ----------
    fit : StarFit
        The trusted fit, its stars on a line.
    stars : (numpy.ndarray, numpy.ndarray)
        The science and template star lists (:func:`find_stars`).
    shapes : ((int, int), (int, int))
        The science and template images' shapes.
    order : int
        Order of the transform returned.
    counts : (int, int)
        Stars found on each image.

    Returns
    -------
    Registration
    """
    science, template = stars
    n_sci, n_tmpl = counts
    tiny = 1e-300  # for noise-free positions
    seen, mirrored = (
        corrected_along_line(fit, _similarity_through(fit, flip), shapes[0], order)
        for flip in (1.0, -1.0)
    )
    dof = 2 * fit.n_matched - seen.parameters
    flip, notes = 1.0, []
    if dof > 0:
        ratio = max(seen.residuals, tiny) / max(mirrored.residuals, tiny)
        if f_tail(ratio, dof, dof) < IMPROVEMENT_P_VALUE:
            flip = -1.0
        elif f_tail(1.0 / ratio, dof, dof) >= IMPROVEMENT_P_VALUE:
            notes.append(
                f"the {fit.n_matched} stars matched lie on a line, which its mirror image "
                "across the line fits as well: the template was taken as not mirrored"
            )
    model = (seen, mirrored)[flip < 0]
    si, ti = match_nearest(science, template, model.moved, MATCH_RADIUS)
    if len(si) >= MIN_STARS:
        fit = fit_transform(science[si], template[ti], 1)
        model = corrected_along_line(fit, _similarity_through(fit, flip), shapes[0], order)
    dof = 2 * fit.n_matched - model.parameters
    if shapes[0] == shapes[1] and dof > 0:
        about_grid = float(np.sum((fit.target - fit.source) ** 2))
        ours = max(model.residuals, tiny)
        statistic = (about_grid - ours) / model.parameters / (ours / dof)
        if f_tail(statistic, model.parameters, dof) >= IMPROVEMENT_P_VALUE:
            departs = max_difference(model.moved, identity, image_grid(shapes[0]))
            notes.append(
                f"the {fit.n_matched} stars matched lie on a line; moved and stretched along "
                f"it as they agree, the mapping departs from one pixel grid by up to "
                f"{departs:.2f} px over the image, but fits them no better than one grid "
                "does: the template was not resampled"
            )
            kept = rms_about(fit, identity)
            return Registration(
                "stars", model.moved, n_sci, n_tmpl, fit.n_matched, kept, model.error,
                tuple(notes), applied=False,
            )  # fmt: skip
    rms = rms_about(fit, model.moved)
    return Registration(
        "stars", model.moved, n_sci, n_tmpl, fit.n_matched, rms, model.error, tuple(notes)
    )


def check_wcs_on_stars(
    science: Exposure,
    template: Exposure,
    wcs_mapping: Mapping,
    order: int,
    tolerance: float,
    science_peaks: Peaks | None = None,
    template_peaks: Peaks | None = None,
) -> Registration:
    """Check the WCS mapping on matched stars; replace it by the star fit when they disagree.

    Parameters
    ----------
    science, template : Exposure
        The two images with celestial WCSs.
    wcs_mapping : callable
        Science px -> template px through the two WCSs.
    order : int
        Order of the star fit.
    tolerance : float
        Largest disagreement (px) between the WCS mapping and the star fit where the
        template lies on the science image (:func:`covered_points`), beyond three times
        the fit's own error there, for which the WCS mapping is kept. It is kept as well
        when the fit does not map the stars significantly better
        (:func:`improves_on`). Stars on a line (:func:`on_a_line`) judge the WCS mapping
        corrected along the line instead of their fit (:func:`_along_line`).
    science_peaks, template_peaks : Peaks, optional
        Each image's peaks, when found already (:func:`find_stars`).

    Returns
    -------
    Registration
        'wcs' (kept: confirmed by stars, or, with a note, not checked: too few stars, or
        no fit that chance cannot give) or 'wcs refined on stars' (the star fit, or, for
        stars on a line, the WCS mapping corrected along it: :func:`corrected_along_line`).
    """
    sci, tmpl = find_stars(science, peaks=science_peaks), find_stars(template, peaks=template_peaks)
    n_sci, n_tmpl = len(sci), len(tmpl)
    if min(n_sci, n_tmpl) < MIN_STARS:
        note = (
            f"the WCS mapping was not checked on stars ({n_sci} on the science image, "
            f"{n_tmpl} on the template; {MIN_STARS} needed)"
        )
        return Registration("wcs", None, n_sci, n_tmpl, 0, math.nan, notes=(note,))
    fit = _wcs_star_fit(sci, tmpl, wcs_mapping, order, science.shape, template.shape)
    if fit is None or not _trusted(fit, sci, tmpl, science.shape, template.shape):
        found = (
            "no star pairs"
            if fit is None
            else (f"{fit.n_matched} star pairs at {fit.rms:.2f} px RMS, which chance can give")
        )
        note = (
            f"the WCS mapping was used unchecked: neither it, nor the translation the stars "
            f"agree on, nor star patterns paired the stars ({n_sci} on the science image, "
            f"{n_tmpl} on the template: {found}); look at the difference for dipoles at "
            "every star, and set warp.register = stars when the WCSs are wrong"
        )
        return Registration("wcs", None, n_sci, n_tmpl, 0, math.nan, notes=(note,))
    # Judged where the template (or this piece of it) lies on the science image: a fit on
    # a narrow piece's stars, extrapolated across the rest of the image, is not.
    covered = covered_points(science.shape, wcs_mapping, template.shape)
    if on_a_line(fit):
        return _along_line(
            fit, wcs_mapping, science.shape, order, covered, tolerance, n_sci, n_tmpl
        )
    error = fit.position_error(covered)
    offset = max_difference(fit.transform, wcs_mapping, covered)
    if offset <= tolerance + 3.0 * error or not improves_on(fit, wcs_mapping):
        rms = rms_about(fit, wcs_mapping)
        return Registration(
            "wcs", fit.transform, n_sci, n_tmpl, fit.n_matched, rms, error, applied=False
        )
    note = (
        f"the WCSs disagree with {fit.n_matched} matched stars by up to {offset:.2f} px "
        f"(warp.wcs_tolerance = {tolerance:g} px, star fit uncertain by {error:.2f} px): the "
        f"template was registered on the stars instead (residual RMS {fit.rms:.3f} px)"
    )
    return Registration(
        "wcs refined on stars",
        fit.transform,
        n_sci,
        n_tmpl,
        fit.n_matched,
        fit.rms,
        error,
        (note,),
    )


def _along_line(
    fit: StarFit,
    wcs_mapping: Mapping,
    shape: tuple[int, int],
    order: int,
    covered: Points,
    tolerance: float,
    n_sci: int,
    n_tmpl: int,
) -> Registration:
    """:func:`check_wcs_on_stars` for stars on a line (:func:`on_a_line`): the WCS
    mapping corrected by what such stars fix (:func:`corrected_along_line`) replaces it
    where that correction exceeds ``tolerance`` and three of its errors where the
    template lies."""
    # the correction's own size is judged, not the polynomial's fit to a WCS's distortion
    line = corrected_along_line(fit, wcs_mapping, shape, order)
    moved, error = line.moved, line.error
    offset = max_difference(moved, line.as_polynomial, covered)
    if offset <= tolerance + 3.0 * error:
        kept = rms_about(fit, wcs_mapping)
        return Registration("wcs", moved, n_sci, n_tmpl, fit.n_matched, kept, error, applied=False)
    rms = rms_about(fit, moved)
    note = (
        f"the WCSs disagree with {fit.n_matched} matched stars on a line by up to "
        f"{offset:.2f} px (warp.wcs_tolerance = {tolerance:g} px): the WCS mapping was "
        f"moved and stretched along the line as the stars agree, its shape across the line "
        f"kept (uncertain by {error:.2f} px; residual RMS {rms:.3f} px)"
    )
    return Registration(
        "wcs refined on stars", moved, n_sci, n_tmpl, fit.n_matched, rms, error, (note,)
    )


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
    :func:`image_grid`), then corrected by the fit's stars on a line (:func:`on_a_line`):
    their offsets from it, a polynomial of degree ``order`` in the position along their
    main axis (a shift, a rotation and a scale along that axis, and with order 2 a bend
    along it), added; across the axis nothing is fixed by them."""
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


def _wcs_star_fit(
    science: np.ndarray,
    template: np.ndarray,
    wcs_mapping: Mapping,
    order: int,
    science_shape: tuple[int, int],
    template_shape: tuple[int, int],
) -> StarFit | None:
    """The star fit that checks a WCS mapping: from the WCS mapping itself; when that
    fit is not trusted (the WCSs off by more than the match radius), from the
    translation the stars agree on after the WCS's rotation and scale, then from star
    patterns, both among the template stars within :data:`WCS_SEARCH` px of the science
    footprint (a template many times the science image's area holds mostly stars the
    science image does not). The first trusted fit, else the last one found (None:
    none)."""
    fit = refine(science, template, wcs_mapping, order)
    if _trusted(fit, science, template, science_shape, template_shape):
        return fit
    near = template[near_footprint(template, wcs_mapping, science_shape, WCS_SEARCH)]
    if len(near) < MIN_STARS:
        near = template
    linear = jacobian(wcs_mapping, science_shape)
    voted = refine(science, template, shift_guess(science, near, linear), order)
    if _trusted(voted, science, template, science_shape, template_shape):
        return voted
    fit = voted or fit
    shapes = (science_shape, template_shape)
    return pattern_fit(science, template, order, shapes, listed=near) or fit
