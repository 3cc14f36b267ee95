"""First mappings science -> template from the two star lists alone.

The translation most star pairs agree on (:func:`shift_guess`: frames of one
orientation), and the similarities the triangles of neighbouring stars vote for
(:func:`pattern_guesses`, :mod:`~diffviewer.engine.triangles`: any rotation, scale or
flip), each among lists whose lengths follow the images' areas (:func:`list_lengths`,
:func:`pattern_lists`). A guess need only come within the match radius: the fit on the
pairs it makes (:func:`~diffviewer.engine.register_fit.refine`) does the rest.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from diffviewer.engine.register_fit import MATCH_RADIUS, PolynomialTransform
from diffviewer.engine.triangles import similarity_guesses

#: Brightest stars given to the pattern matcher: of each image, or of the smaller one,
#: the other's in proportion to its area (:func:`pattern_lists`).
PATTERN_STARS = 60
#: Brightest stars of each image whose pairwise offsets vote for a translation
#: (:func:`shift_guess`), and the most-voted bins examined.
VOTE_STARS, VOTE_BINS = 200, 5


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
    image's brightest :data:`VOTE_STARS` in proportion to its area (:func:`list_lengths`: a
    template of many times the science image's area holds its brightest stars mostly
    elsewhere, as a science image does beside a small template piece), is binned on a grid
    of :data:`~diffviewer.engine.register_fit.MATCH_RADIUS` px. Of the :data:`VOTE_BINS`
    fullest bins, the one whose offsets' median has the most offsets within
    :data:`~diffviewer.engine.register_fit.MATCH_RADIUS` of it gives that median (a cluster
    split by a bin edge still counts whole). Frames of one telescope and orientation differ
    by a translation (dithers, unregistered exposures), which this finds from a handful of
    stars where star patterns need more; with a rotation the offsets do not cluster, and the
    fit the guess leads to is not trusted
    (:func:`~diffviewer.engine.register_trust.trusted`), or is trusted for a band of pairs
    only (:func:`~diffviewer.engine.register.register_on_stars` then tries patterns too).

    Parameters
    ----------
    science, template : numpy.ndarray
        Star positions, ``(n, 2)`` each, brightest first
        (:func:`~diffviewer.engine.register_stars.find_stars`).
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
        Star positions, ``(n, 2)`` each, brightest first
        (:func:`~diffviewer.engine.register_stars.find_stars`).
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
