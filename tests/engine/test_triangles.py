"""The similarity that star triangles vote for (diffviewer.engine.triangles)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffviewer.engine import triangles


def _similarity(degrees: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    t = math.radians(degrees)
    c, s = scale * math.cos(t), scale * math.sin(t)
    return np.array([[c, -s, shift[0]], [s, c, shift[1]], [0.0, 0.0, 1.0]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:2, :2].T + matrix[:2, 2]


@pytest.mark.parametrize(
    ("degrees", "scale", "shift"),
    [(0.0, 1.0, (12.0, -7.0)), (37.0, 1.1, (300.0, 40.0)), (-170.0, 0.8, (-50.0, 900.0))],
)
def test_the_similarity_of_shared_stars_among_unshared_ones_is_found(
    degrees: float, scale: float, shift: tuple[float, float]
) -> None:
    # 40 stars seen on both lists with 0.1 px centroid noise, 20 more on each alone (the
    # other's faint ones, or stars beyond its edge): the first guess maps the science
    # field's corners to within a pixel of the truth (measured 0.11-0.56 px: the median
    # of triangles ~30 px a side, each turned by its centroids' noise; the star fit that
    # follows needs it within its 2.5 px match radius).
    rng = np.random.default_rng(11)
    shared = rng.uniform(0, 400, (40, 2))
    truth = _similarity(degrees, scale, shift)
    science = np.vstack([shared, rng.uniform(0, 400, (20, 2))])
    template = np.vstack(
        [
            _apply(truth, shared) + rng.normal(0, 0.1, (40, 2)),
            _apply(truth, rng.uniform(0, 400, (20, 2))),
        ]
    )
    template = template[rng.permutation(len(template))]
    guesses = triangles.similarity_guesses(science, template, (200.0, 200.0))
    corners = np.array([[0.0, 0.0], [400.0, 0.0], [0.0, 400.0], [400.0, 400.0]])
    error = np.hypot(*(_apply(guesses[0], corners) - _apply(truth, corners)).T)
    assert error.max() < 1.0


def test_unrelated_lists_give_no_guess() -> None:
    # Chance pairs of triangles scatter over every rotation, scale and position: no bin
    # gathers triangles.MIN_VOTES of them.
    rng = np.random.default_rng(2)
    guesses = triangles.similarity_guesses(
        rng.uniform(0, 400, (60, 2)), rng.uniform(0, 400, (60, 2)), (200.0, 200.0)
    )
    assert guesses == []


def test_triangles_read_their_vertices_in_the_order_of_the_sides_opposite() -> None:
    # A 3-4-5 triangle: the vertex opposite the side of 3 first, then of 4, then of 5.
    stars = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 3.0]])
    vertices, shapes = triangles.triangles(stars)
    assert vertices.tolist() == [[1, 2, 0]]
    np.testing.assert_allclose(shapes, [[0.6, 0.8]])


@settings(max_examples=60, deadline=None)
@given(
    degrees=st.floats(-180.0, 180.0),
    scale=st.floats(0.5, 2.0),
    shift=st.tuples(st.floats(-2000.0, 2000.0), st.floats(-2000.0, 2000.0)),
    n_shared=st.integers(12, 150),
    seed=st.integers(0, 2**16),
)
def test_any_similarity_of_a_star_field_is_found(
    degrees: float, scale: float, shift: tuple[float, float], n_shared: int, seed: int
) -> None:
    # Any rotation, a scale of 0.5-2, any shift, 12-150 shared stars among a third as
    # many unshared on each list: the first guess comes within the star fit's 2.5 px
    # match radius at the field's corners.
    rng = np.random.default_rng(seed)
    shared = rng.uniform(0, 400, (n_shared, 2))
    truth = _similarity(degrees, scale, shift)
    extra = n_shared // 3
    science = np.vstack([shared, rng.uniform(0, 400, (extra, 2))])
    template = np.vstack(
        [
            _apply(truth, shared) + rng.normal(0, 0.1, (n_shared, 2)),
            _apply(truth, rng.uniform(0, 400, (extra, 2))),
        ]
    )
    template = template[rng.permutation(len(template))]
    guesses = triangles.similarity_guesses(science, template, (200.0, 200.0))
    corners = np.array([[0.0, 0.0], [400.0, 0.0], [0.0, 400.0], [400.0, 400.0]])
    assert guesses
    error = np.hypot(*(_apply(guesses[0], corners) - _apply(truth, corners)).T)
    assert error.max() < 2.5


def test_a_regular_grid_s_common_shapes_are_left_out() -> None:
    # Every triangle of a regular grid has one of a few shapes, so each science triangle
    # matched every template triangle of its shape: 1.6 s here for 64 stars against
    # 2025 (3 s and 260 MB in register_guesses.pattern_guesses at an area ratio of 100), and
    # guesses on a lattice, where every shift by its step fits as well. Shapes matched
    # more than MAX_MATCHES times are left out, and no guess is made.
    rows, columns = np.meshgrid(np.arange(45), np.arange(45), indexing="ij")
    jitter = np.random.default_rng(4).normal(0, 0.05, (45, 45, 2))
    template = np.stack([columns, rows], -1) * 12.0 + jitter
    science = template[10:18, 10:18].reshape(-1, 2) - 120.0
    guesses = triangles.similarity_guesses(science, template.reshape(-1, 2), (42.0, 42.0))
    assert guesses == []
