"""The science -> template pixel mapping at every science pixel, and the area it implies.

A mapping (:func:`wcs_mapping` through two WCSs, or a fit on stars) is computed exactly
on a coarse grid (every :data:`COARSE_STEP` px) and at the centres of its cells; when an
affine map fitted there reproduces all of them to :data:`COARSE_TOLERANCE` px (a shift or
rotation, the affine star fit, a TAN WCS over a small field) it is evaluated at every
pixel, otherwise a bicubic spline through the grid is, under the same check; when both
miss (a WCS with small-scale distortion, or points off the projection) the exact mapping
is computed for every pixel (:func:`pixel_map`). Template pixels per science pixel, for
the warp's conservation of flux, are the mapping's Jacobian determinant on the same grid
(:func:`pixel_area`).
"""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS
from scipy.interpolate import RectBivariateSpline

from diffviewer.engine import resample
from diffviewer.engine.progress import Reporter, null_reporter
from diffviewer.engine.register_fit import Mapping

#: Spacing of the grid on which the pixel mapping is computed exactly (px).
COARSE_STEP = 32
#: Largest error of the interpolated pixel mapping accepted (px); beyond it the exact one is used.
COARSE_TOLERANCE = 1e-3


def _to_template(
    science_wcs: WCS, template_wcs: WCS, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Template pixel coordinates (0-based) of science pixels, through the sky; NaN off the sky.

    Points off the template's projection are NaN. When all are (a template of another
    part of the sky, said by the coverage it leaves), the distortion's iterative
    inversion is not run: on nothing but NaNs astropy warns of an all-NaN slice.
    """
    with np.errstate(invalid="ignore"):
        ra, dec = science_wcs.all_pix2world(x, y, 0)
        if not np.isfinite(template_wcs.wcs_world2pix(ra, dec, 0)[0]).any():
            nowhere = np.full(np.shape(ra), np.nan)
            return nowhere, nowhere.copy()
        tx, ty = template_wcs.all_world2pix(ra, dec, 0, quiet=True)
    return np.asarray(tx, dtype=np.float64), np.asarray(ty, dtype=np.float64)


def wcs_mapping(science_wcs: WCS, template_wcs: WCS) -> Mapping:
    """Science px -> template px through two celestial WCSs (NaN off the sky)."""

    def mapping(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _to_template(science_wcs, template_wcs, np.asarray(x), np.asarray(y))

    return mapping


def _coarse_axis(n: int) -> np.ndarray:
    """Nodes every :data:`COARSE_STEP` px along an axis of ``n`` px, ends included."""
    return np.unique(np.append(np.arange(0, n, COARSE_STEP), n - 1)).astype(np.float64)


def _interpolated_map(
    mapping: Mapping, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The mapping at every pixel from a coarse grid, or None when that misses by too much.

    The mapping is evaluated exactly on the nodes and at the cell centres (where an
    interpolation between nodes is least accurate). An affine map fitted on these points
    is used when it reproduces every one of those points to :data:`COARSE_TOLERANCE` px
    (a shift, a rotation, a fitted affine transform, a TAN WCS over a small field);
    otherwise a bicubic spline through the nodes, under the same check.
    """
    ny, nx = shape
    gx, gy = _coarse_axis(nx), _coarse_axis(ny)
    if gx.size < 4 or gy.size < 4:
        return None
    node_px, node_py = np.meshgrid(gx, gy)
    mid_px, mid_py = np.meshgrid((gx[:-1] + gx[1:]) / 2, (gy[:-1] + gy[1:]) / 2)
    node_x, node_y = mapping(node_px, node_py)
    mid_x, mid_y = mapping(mid_px, mid_py)
    if not all(np.isfinite(a).all() for a in (node_x, node_y, mid_x, mid_y)):
        return None
    rows, cols = np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64)
    px = np.concatenate([node_px.ravel(), mid_px.ravel()])
    py = np.concatenate([node_py.ravel(), mid_py.ravel()])
    exact = np.stack(
        [
            np.concatenate([node_x.ravel(), mid_x.ravel()]),
            np.concatenate([node_y.ravel(), mid_y.ravel()]),
        ],
        axis=1,
    )
    design = np.stack([np.ones_like(px), px, py], axis=1)
    affine = np.linalg.lstsq(design, exact, rcond=None)[0]
    if np.hypot(*(design @ affine - exact).T).max() <= COARSE_TOLERANCE:
        (ox, oy), (ax, ay), (bx, by) = affine
        return (
            ox + ax * cols[None, :] + bx * rows[:, None],
            oy + ay * cols[None, :] + by * rows[:, None],
            "affine",
        )
    spline_x = RectBivariateSpline(gy, gx, node_x, kx=3, ky=3)
    spline_y = RectBivariateSpline(gy, gx, node_y, kx=3, ky=3)
    error = np.hypot(
        spline_x.ev(mid_py.ravel(), mid_px.ravel()) - mid_x.ravel(),
        spline_y.ev(mid_py.ravel(), mid_px.ravel()) - mid_y.ravel(),
    )
    if error.max() > COARSE_TOLERANCE:
        return None
    return spline_x(rows, cols), spline_y(rows, cols), "spline"


def pixel_map(
    mapping: Mapping,
    shape: tuple[int, int],
    reporter: Reporter | None = None,
    span: tuple[float, float] = (0.0, 1.0),
) -> tuple[np.ndarray, np.ndarray, str]:
    """The template pixel (x, y) seen by every science pixel.

    Parameters
    ----------
    mapping : callable
        Science (x, y) px -> template (x, y) px (the WCSs, or a fit on stars).
    shape : (int, int)
        Science image shape (ny, nx).
    reporter : Reporter, optional
        Progress and cancellation (the exact path reports per block of rows).
    span : (float, float)
        The part of the reporter's step this covers.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, str)
        Template x and y (0-based px), each of ``shape`` (NaN off the sky), accurate to
        :data:`COARSE_TOLERANCE` px or better; and how they were computed: 'affine'
        (an affine map checked on a coarse grid), 'spline' (a bicubic spline through
        a coarse grid, checked between its nodes) or 'exact' (the mapping at every pixel).
    """
    reporter = reporter or null_reporter()
    interpolated = _interpolated_map(mapping, shape)
    if interpolated is not None:
        return interpolated
    ny, nx = shape
    tx = np.empty(shape)
    ty = np.empty(shape)
    cols = np.arange(nx, dtype=np.float64)
    for start, stop in resample.row_blocks(ny, nx):
        bx, by = np.meshgrid(cols, np.arange(start, stop, dtype=np.float64))
        tx[start:stop], ty[start:stop] = mapping(bx, by)
        reporter.update(span[0] + (span[1] - span[0]) * stop / ny)
    return tx, ty, "exact"


def pixel_area(mapping: Mapping, shape: tuple[int, int]) -> float | np.ndarray:
    """Template pixels per science pixel: the mapping's Jacobian determinant.

    Found by central differences on the coarse grid of :func:`pixel_map`; one number
    when it varies by less than 1e-4 over the image (a shift, a rotation, an affine
    fit, a TAN WCS over a small field), else a bilinear plane through the grid (a
    distorted WCS over a wide field).

    Parameters
    ----------
    mapping : callable
        Science (x, y) px -> template (x, y) px.
    shape : (int, int)
        Science image shape (ny, nx).

    Returns
    -------
    float or numpy.ndarray
        The area, or a float32 plane of it of ``shape``; 1 where the mapping is not
        finite anywhere.
    """
    ny, nx = shape
    gx, gy = _coarse_axis(nx), _coarse_axis(ny)
    px, py = np.meshgrid(gx, gy)
    x_lo, y_lo = mapping(px - 0.5, py)
    x_hi, y_hi = mapping(px + 0.5, py)
    x_dn, y_dn = mapping(px, py - 0.5)
    x_up, y_up = mapping(px, py + 0.5)
    area = np.abs((x_hi - x_lo) * (y_up - y_dn) - (x_up - x_dn) * (y_hi - y_lo))
    finite = np.isfinite(area)
    if not finite.any():
        return 1.0
    typical = float(np.median(area[finite]))
    area = np.where(finite, area, typical)
    if area.max() - area.min() < 1e-4 * typical or min(gx.size, gy.size) < 2:
        return typical
    plane = RectBivariateSpline(gy, gx, area, kx=1, ky=1)(np.arange(ny), np.arange(nx))
    return plane.astype(np.float32)
