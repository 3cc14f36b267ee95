"""Circular aperture sums with the exact area of the circle on every pixel.

Pixel ``(row, col)`` is the unit square centred on ``(x, y) = (col, row)``. Its weight in
an aperture of radius ``r`` at ``(x0, y0)`` is the geometric area of the square within
the circle (0 to 1), computed in closed form: with ``Q(a, b)`` the area of the circle
(centred on the origin) within the rectangle between the origin and ``(a, b)``, signed
as ``a * b`` is, a square's area is ``Q`` at its four corners with alternating signs.
For ``0 <= a, b <= r``, ``Q(a, b) = a b`` when the corner ``(a, b)`` is inside the
circle, and otherwise ``c b + S(a) - S(c)``, where the circle crosses ``y = b`` at
``x = c = sqrt(r^2 - b^2)`` and ``S(t) = (t sqrt(r^2 - t^2) + r^2 asin(t / r)) / 2`` is
the area under the circle from 0 to ``t``.

The sum of an aperture is ``sum(w d)`` and its error ``sqrt(sum(w v))`` over the usable
pixels with a weight ``w > 0`` (``d`` the image, ``v`` the variance plane): the
definition of photutils' ``do_photometry`` given ``error = sqrt(v)`` and
``method='exact'``, which ``tests/engine/test_apertures.py`` checks against it; an
aperture reaching a pixel that is not usable, or off the image, is marked truncated
(photutils' sums with those pixels masked are the same sums, unmarked). Every source of
one radius is done at once on a stack of equal boxes.
"""

from __future__ import annotations

import numpy as np

#: Largest number of box pixels (sources x box area) held at once; bounds the memory
#: to some tens of MB whatever the number of sources.
CHUNK_PIXELS = 1 << 20


def _under_circle(t: np.ndarray, height: np.ndarray, r: float) -> np.ndarray:
    """Area under the circle of radius ``r`` between ``x = 0`` and ``x = t``.

    ``height`` is the circle's height ``sqrt(r^2 - t^2)`` at ``t`` (``0 <= t <= r``),
    given rather than computed so that the callers keep full precision near the
    circle's tangents; the arcsine is taken as an ``arctan2`` for the same reason.
    """
    return 0.5 * (t * height + r * r * np.arctan2(t, height))


def _corner_area(a: np.ndarray, b: np.ndarray, r: float) -> np.ndarray:
    """``Q(a, b)``: the circle's area between the origin and ``(a, b)``, signed as ``a b``.

    Parameters
    ----------
    a : numpy.ndarray
        ``(m, 1, k)`` corner x coordinates relative to each centre (px).
    b : numpy.ndarray
        ``(m, k, 1)`` corner y coordinates relative to each centre (px).
    r : float
        Radius (px).

    Returns
    -------
    numpy.ndarray
        ``(m, k, k)`` signed areas (px^2).
    """
    sign = np.sign(a) * np.sign(b)
    a, b = np.minimum(np.abs(a), r), np.minimum(np.abs(b), r)
    # Where the corner is outside the circle, the circle crosses y = b at x = crossing,
    # left of a; every square root and angle depends on one axis only.
    crossing = np.sqrt((r - b) * (r + b))
    outside = (crossing * b - _under_circle(crossing, b, r)) + _under_circle(
        a, np.sqrt((r - a) * (r + a)), r
    )
    return sign * np.where(a * a + b * b <= r * r, a * b, outside)


def pixel_weights(dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Area of each pixel of a stack of boxes within a circle of radius ``r``.

    Parameters
    ----------
    dx : numpy.ndarray
        ``(m, n)`` the box columns' centres less each circle's centre x (px).
    dy : numpy.ndarray
        ``(m, n)`` the box rows' centres less each circle's centre y (px).
    r : float
        Radius (px, > 0).

    Returns
    -------
    numpy.ndarray
        ``(m, n, n)`` weights in [0, 1] indexed (circle, row, column); exactly 0 on the
        pixels that do not reach into the circle.
    """
    ex = np.concatenate([dx - 0.5, dx[:, -1:] + 0.5], axis=1)[:, None, :]
    ey = np.concatenate([dy - 0.5, dy[:, -1:] + 0.5], axis=1)[:, :, None]
    q = _corner_area(ex, ey, r)
    area = q[:, 1:, 1:] - q[:, 1:, :-1] - q[:, :-1, 1:] + q[:, :-1, :-1]
    # The nearest point of each pixel to the centre decides whether it reaches in at all.
    near_x = np.maximum(np.abs(dx) - 0.5, 0.0)[:, None, :]
    near_y = np.maximum(np.abs(dy) - 0.5, 0.0)[:, :, None]
    return np.where(near_x * near_x + near_y * near_y < r * r, np.clip(area, 0.0, 1.0), 0.0)


def aperture_sums(
    image: np.ndarray,
    variance: np.ndarray,
    usable: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    r: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sums, errors and truncation of circular apertures of radius ``r``, exact pixel overlap.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image (any units).
    variance : numpy.ndarray
        Its variance plane (units squared); read only on usable pixels.
    usable : numpy.ndarray
        Boolean map of the pixels that enter the sums (others are left out, whatever
        they hold).
    xs, ys : numpy.ndarray
        Aperture centres (px, 0-based, pixel centres at integers).
    r : float
        Radius (px, > 0).

    Returns
    -------
    sums : numpy.ndarray
        ``sum(w d)`` over the usable pixels of each aperture (0 when none is usable;
        NaN when the aperture lies wholly off the image, or a usable pixel is NaN).
    errors : numpy.ndarray
        ``sqrt(sum(w v))`` over the same pixels.
    truncated : numpy.ndarray
        Boolean: the aperture reaches a pixel that is not usable or off the image, so
        its sum leaves part of its area out.
    """
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    sums, errors = np.empty(xs.size), np.empty(xs.size)
    truncated = np.zeros(xs.size, dtype=bool)
    side = int(np.floor(2.0 * r)) + 2
    steps = np.arange(side)
    chunk = max(1, CHUNK_PIXELS // (side * side))
    for start in range(0, xs.size, chunk):
        x, y = xs[start : start + chunk], ys[start : start + chunk]
        cols = np.floor(x - r + 0.5).astype(np.int64)[:, None] + steps
        rows = np.floor(y - r + 0.5).astype(np.int64)[:, None] + steps
        weights = pixel_weights(cols - x[:, None], rows - y[:, None], r)
        on = (
            (((rows >= 0) & (rows < image.shape[0]))[:, :, None])
            & (((cols >= 0) & (cols < image.shape[1]))[:, None, :])
        )
        at = (
            np.clip(rows, 0, image.shape[0] - 1)[:, :, None],
            np.clip(cols, 0, image.shape[1] - 1)[:, None, :],
        )
        reached = on & (weights > 0)
        take = reached & usable[at]
        with np.errstate(invalid="ignore"):  # 0 x inf on a pixel that does not enter
            sums[start : start + chunk] = np.where(take, weights * image[at], 0.0).sum((1, 2))
            variances = np.where(take, weights * variance[at], 0.0).sum((1, 2))
        errors[start : start + chunk] = np.sqrt(variances)
        truncated[start : start + chunk] = ((weights > 0) & ~take).any(axis=(1, 2))
        off = ~reached.any(axis=(1, 2))
        sums[start : start + chunk][off] = np.nan
        errors[start : start + chunk][off] = np.nan
    return sums, errors, truncated
