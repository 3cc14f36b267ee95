"""First guesses of a similarity transform between two star lists, voted for by triangles.

Each star and two of its :data:`NEIGHBOURS` nearest neighbours make a triangle; its
shape, the ratios of its shorter sides to its longest, does not change under a shift,
rotation or scale (the invariants of Groth 1986, AJ 91, 1244, built from nearest
neighbours as in Beroiz et al. 2020, Astronomy and Computing 32, 100384). Every
science triangle whose shape is within :data:`SHAPE_TOLERANCE` of a template
triangle's gives, from the three vertex pairs, the similarity that maps one onto the
other. Triangles of the stars both lists hold agree on one similarity; chance pairs of
triangles scatter over every rotation, scale and position. The similarities are
binned (:data:`ANGLE_BIN`, :data:`LOG_SCALE_BIN`, :data:`POSITION_BIN`) and the fullest
bins, each with at least :data:`MIN_VOTES`, give the guesses, the median of their
votes each.

Which stars of each image are listed is the caller's choice
(:func:`~diffviewer.engine.register_guesses.pattern_lists`): a star's neighbours are the same
on both lists only where the lists hold stars to one density on the sky.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.spatial import cKDTree

#: Nearest neighbours of each star that it makes triangles with (two at a time).
NEIGHBOURS = 5
#: Largest difference of two triangles' side ratios for their shapes to match.
SHAPE_TOLERANCE = 0.01
#: Triangles whose shortest side is below this fraction of their longest are left out:
#: their vertex order, read from the sides' lengths, is at the mercy of the centroids.
MIN_SIDE_RATIO = 0.1
#: Least difference between side ratios for the sides' order (hence the vertices') to
#: be read reliably; triangles closer to isosceles are left out.
SIDE_GAP = 0.02
#: Widths of the vote's bins: rotation (radians, 2 degrees), natural log of the scale
#: (3 %) and the science centre's position on the template (px).
ANGLE_BIN, LOG_SCALE_BIN, POSITION_BIN = np.radians(2.0), 0.03, 8.0
#: Science triangles whose shape matches more template triangles than this are left out:
#: a shape so common says little, and the pairs of a regular grid's triangles would
#: number in the tens of millions (a random list of 6000 stars matches at most ~640).
MAX_MATCHES = 2000
#: Fewest triangles a bin needs to give a guess. Chance fills bins too (unrelated lists
#: of 60 and 6000 stars: 2-4 in the fullest), so a guess is only a guess: the star fit
#: it leads to is judged (:func:`~diffviewer.engine.register.pattern_fit`).
MIN_VOTES = 4
#: Most guesses returned, fullest bin first.
MAX_GUESSES = 5


def triangles(stars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each star's triangles with pairs of its nearest neighbours, vertices in a fixed
    order (opposite the shortest, the middle, the longest side), and their shapes.

    Parameters
    ----------
    stars : numpy.ndarray
        ``(n, 2)`` positions.

    Returns
    -------
    vertices : numpy.ndarray
        ``(t, 3)`` int indices into ``stars``.
    shapes : numpy.ndarray
        ``(t, 2)`` the shortest and middle sides over the longest.
    """
    n = len(stars)
    if n < 3:
        return np.zeros((0, 3), dtype=int), np.zeros((0, 2))
    k = min(NEIGHBOURS, n - 1)
    _, near = cKDTree(stars).query(stars, k + 1)
    combos = np.array(list(itertools.combinations(range(1, k + 1), 2)))
    tri = np.concatenate([np.column_stack([near[:, 0], near[:, i], near[:, j]]) for i, j in combos])
    tri = np.unique(np.sort(tri, axis=1), axis=0)
    p = stars[tri]  # (t, 3, 2)
    # side i is the one opposite vertex i
    sides = np.linalg.norm(p[:, [1, 2, 0]] - p[:, [2, 0, 1]], axis=2)
    order = np.argsort(sides, axis=1)
    ordered = np.take_along_axis(sides, order, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        shapes = ordered[:, :2] / ordered[:, 2:]
    keep = (
        np.isfinite(shapes).all(axis=1)
        & (shapes[:, 0] >= MIN_SIDE_RATIO)
        & (shapes[:, 1] - shapes[:, 0] >= SIDE_GAP)
        & (1.0 - shapes[:, 1] >= SIDE_GAP)
    )
    return np.take_along_axis(tri, order, axis=1)[keep], shapes[keep]


def similarities(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarities ``target = a * source + b`` (complex ``a``, ``b``) of
    matched point sets, ``(m, k)`` complex positions each (a triangle's vertices, k = 3).

    Parameters
    ----------
    source, target : numpy.ndarray
        Complex ``x + i y``, one set a row.

    Returns
    -------
    a, b : numpy.ndarray
        ``(m,)`` complex: the scale times the turn, and the shift.
    """
    sc = source - source.mean(axis=1, keepdims=True)
    tc = target - target.mean(axis=1, keepdims=True)
    a = np.sum(np.conj(sc) * tc, axis=1) / np.sum(np.abs(sc) ** 2, axis=1)
    b = target.mean(axis=1) - a * source.mean(axis=1)
    return a, b


def similarity_guesses(
    science: np.ndarray, template: np.ndarray, centre: tuple[float, float]
) -> list[np.ndarray]:
    """The similarities science -> template most triangles agree on, fullest bin first.

    Parameters
    ----------
    science, template : numpy.ndarray
        ``(n, 2)`` and ``(m, 2)`` star positions (x, y), the lists to match (taken as
        given: the caller chooses how many of each).
    centre : (float, float)
        A science position (x, y), the image's centre: the vote is on where it lands.

    Returns
    -------
    list of numpy.ndarray
        3x3 matrices acting on (x, y, 1); empty when no bin has :data:`MIN_VOTES`.
    """
    s_tri, s_shape = triangles(science)
    t_tri, t_shape = triangles(template)
    if not len(s_tri) or not len(t_tri):
        return []
    found = cKDTree(t_shape).query_ball_point(s_shape, SHAPE_TOLERANCE)
    counts = np.fromiter((len(f) for f in found), dtype=np.int64, count=len(found))
    counts[counts > MAX_MATCHES] = 0
    if not counts.sum():
        return []
    s_index = np.repeat(np.arange(len(s_tri)), counts)
    kept = (f for f, n in zip(found, counts, strict=True) if n)
    t_index = np.concatenate([np.asarray(f, dtype=np.int64) for f in kept])
    as_complex = np.array([1.0, 1j])
    a, b = similarities(
        (science @ as_complex)[s_tri[s_index]], (template @ as_complex)[t_tri[t_index]]
    )
    landing = a * complex(*centre) + b
    cells = np.column_stack(
        [
            np.floor(np.angle(a) / ANGLE_BIN),
            np.floor(np.log(np.abs(a)) / LOG_SCALE_BIN),
            np.floor(landing.real / POSITION_BIN),
            np.floor(landing.imag / POSITION_BIN),
        ]
    )
    _, inverse, votes = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    guesses = []
    for cell in np.argsort(-votes)[:MAX_GUESSES]:
        if votes[cell] < MIN_VOTES:
            break
        chosen = inverse.ravel() == cell
        scale_turn = complex(np.median(a[chosen].real), np.median(a[chosen].imag))
        shift = complex(np.median(b[chosen].real), np.median(b[chosen].imag))
        guesses.append(similarity_matrix(scale_turn, shift))
    return guesses


def similarity_matrix(scale_turn: complex, shift: complex) -> np.ndarray:
    """The 3x3 matrix on (x, y, 1) of ``z -> scale_turn * z + shift`` (z = x + i y)."""
    return np.array(
        [
            [scale_turn.real, -scale_turn.imag, shift.real],
            [scale_turn.imag, scale_turn.real, shift.imag],
            [0.0, 0.0, 1.0],
        ]
    )
