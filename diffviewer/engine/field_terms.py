"""Polynomials over an image's field: the Chebyshev terms of spatially varying models.

The kernel's coefficients and differential background (:mod:`.kernel_solution`), the
stamps' background plane (:mod:`.kernel_stamps`) and the size of the stellar locus
(:mod:`.psf_stars`) vary over the image as sums of these terms.
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import chebyshev


def n_terms(order: int) -> int:
    """Number of 2-D polynomial terms ``x^i y^j`` with ``i + j <= order``."""
    return (order + 1) * (order + 2) // 2


def chebyshev_terms(x: np.ndarray, y: np.ndarray, order: int, shape: tuple[int, int]) -> np.ndarray:
    """Chebyshev terms ``T_i(x') T_j(y')``, ``i + j <= order``, at image positions.

    Parameters
    ----------
    x, y : numpy.ndarray
        Positions (0-based px).
    order : int
        Total order.
    shape : (int, int)
        Image shape (ny, nx); x and y are scaled to [-1, 1] over it.

    Returns
    -------
    numpy.ndarray
        ``(len(x), n_terms(order))``, terms ordered by total degree, then by the y power.
    """
    ny, nx = shape
    xs = 2.0 * np.asarray(x, dtype=float) / max(nx - 1, 1) - 1.0
    ys = 2.0 * np.asarray(y, dtype=float) / max(ny - 1, 1) - 1.0
    tx = chebyshev.chebvander(xs, order)
    ty = chebyshev.chebvander(ys, order)
    return np.stack(
        [tx[..., d - j] * ty[..., j] for d in range(order + 1) for j in range(d + 1)], axis=-1
    )


def term_powers(order: int) -> list[tuple[int, int]]:
    """The (x power, y power) of each term of :func:`chebyshev_terms`, in order."""
    return [(d - j, j) for d in range(order + 1) for j in range(d + 1)]
