"""PSF fits on the weighted pixels of a cutout: the pixels and a PSF on them, shared by
the dipole fit (:mod:`dipole`), and one point source's position.

A source's position is the sub-pixel extreme of the PSF-filtered difference
(:func:`diffviewer.engine.measure`), which reads the extreme's neighbours. Where one of
them is unusable (a cosmic ray, a bad column through the source) the filtered image
holds no light there and its extreme is no centre; the position is then fitted with the
PSF on the usable pixels of the difference itself (:func:`fit_position`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import leastsq

from diffviewer.engine.photometry import PsfModel

#: Most model evaluations of a position fit (3 parameters; it converges in 5-10).
MAX_POSITION_EVALUATIONS = 50

#: Relative tolerances of the fits on the cost, the parameters and the gradient (MINPACK's).
TOLERANCE = 1e-8


@dataclasses.dataclass(frozen=True)
class Cutout:
    """Pixels of one image around a source, for a fit.

    Attributes
    ----------
    data : numpy.ndarray
        Pixel values (image units).
    weight : numpy.ndarray
        Inverse variance; 0 on pixels left out of the fit.
    model : PsfModel
        The image's PSF.
    """

    data: np.ndarray
    weight: np.ndarray
    model: PsfModel


class FittedPixels:
    """The fitted pixels of a cutout (those with a weight), and a PSF on them.

    Attributes
    ----------
    box : (int, int, int, int)
        Their bounding box ``(x0, y0, nx, ny)``, where the PSF is evaluated.
    inside : numpy.ndarray
        Their flat indices in the box.
    values : numpy.ndarray
        Their values (image units).
    sqrt_weight : numpy.ndarray
        Square root of their weights.
    data : numpy.ndarray
        ``values * sqrt_weight``.
    """

    def __init__(self, cut: Cutout) -> None:
        fitted = cut.weight > 0
        ys, xs = np.nonzero(fitted)
        y0, x0 = (int(ys.min()), int(xs.min())) if ys.size else (0, 0)
        y1, x1 = (int(ys.max()) + 1, int(xs.max()) + 1) if ys.size else (0, 0)
        self.inside = np.flatnonzero(fitted[y0:y1, x0:x1])
        self.model = cut.model
        self.box = (x0, y0, x1 - x0, y1 - y0)
        self.values = cut.data[fitted].astype(np.float64)
        self.sqrt_weight = np.sqrt(cut.weight[fitted])
        self.data = self.values * self.sqrt_weight

    def at(self, x: float, y: float) -> np.ndarray:
        """PSF, d/dy and d/dx centred at (x, y) (cutout px) times ``sqrt_weight``: (3, n)."""
        psf = self.model.on_box(x, y, self.box, derivatives=True)
        return psf.reshape(3, -1).take(self.inside, axis=1) * self.sqrt_weight


def fit_position(
    cut: Cutout, start: tuple[float, float], max_shift: float
) -> tuple[float, float] | None:
    """The position of one point source: ``f P(x - x0, y - y0)`` fitted to the cutout's
    weighted pixels by least squares (MINPACK's Levenberg-Marquardt, analytic Jacobian).

    Parameters
    ----------
    cut : Cutout
        The pixels (weight 0 where unusable or not the source's).
    start : (float, float)
        First guess (x, y), cutout px.
    max_shift : float
        Farthest the fit may end from ``start`` (px).

    Returns
    -------
    (float, float) or None
        (x, y) in cutout px; None with fewer usable pixels than twice the parameters, a
        flux that is not positive, a fit that did not converge or ended beyond
        ``max_shift``.
    """
    on = FittedPixels(cut)
    if on.values.size < 6:
        return None
    first = on.at(*start)
    flux0 = float(first[0] @ on.data) / max(float(first[0] @ first[0]), 1e-300)
    if not flux0 > 0:
        return None
    last: dict[bytes, np.ndarray] = {np.array(start, dtype=np.float64).tobytes(): first}

    def psf(t: np.ndarray) -> np.ndarray:
        """The weighted PSF and its derivatives at ``t``'s position (MINPACK asks for the
        Jacobian where it last evaluated the residual: that evaluation is kept)."""
        key = t[:2].tobytes()
        if key not in last:
            last.clear()
            last[key] = on.at(t[0], t[1])
        return last[key]

    def residual(t: np.ndarray) -> np.ndarray:
        return on.data - t[2] * psf(t)[0]

    def jacobian(t: np.ndarray) -> np.ndarray:
        # Rows (x, y, f); the derivatives are over the offset from the centre.
        p = psf(t)
        return np.stack([t[2] * p[2], t[2] * p[1], -p[0]])

    t, _, _, _, status = leastsq(
        residual,
        np.array([start[0], start[1], flux0]),
        Dfun=jacobian,
        full_output=True,
        ftol=TOLERANCE,
        xtol=TOLERANCE,
        gtol=TOLERANCE,
        maxfev=MAX_POSITION_EVALUATIONS,
        diag=np.array([1.0, 1.0, 1.0 / flux0]),
        col_deriv=True,
    )
    x, y, flux = (float(v) for v in t)
    if status not in (1, 2, 3, 4) or not flux > 0:
        return None
    if np.hypot(x - start[0], y - start[1]) > max_shift:
        return None
    return x, y
