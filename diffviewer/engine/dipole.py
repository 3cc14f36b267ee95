"""Dipole fit: two PSFs of opposite sign on one footprint, the positive lobe tied to the science.

A footprint with a positive and a negative part is fitted with two PSFs of opposite
sign (:func:`fit_dipole`; MINPACK's Levenberg-Marquardt on the footprint's pixels); it
is a dipole (:func:`is_dipole`) when the weaker lobe has at least ``flux_ratio`` of
the stronger's flux, the lobes are at most ``max_separation`` FWHM apart, and each
fitted lobe lies within one FWHM of the detected peak of its sign.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import leastsq

from diffviewer.engine.psf_fit import TOLERANCE, Cutout, FittedPixels

#: Most model evaluations of one dipole fit; a fit that needs more is not a dipole.
MAX_DIPOLE_EVALUATIONS = 100


@dataclasses.dataclass(frozen=True)
class DipoleFit:
    """Two PSFs of opposite sign fitted to one footprint.

    Attributes
    ----------
    pos_x, pos_y, neg_x, neg_y : float
        Lobe centres (0-based px).
    pos_flux, neg_flux : float
        Lobe fluxes, both >= 0 (image units): model = pos_flux P(pos) - neg_flux P(neg).
    pos_flux_err, neg_flux_err : float
        Their 1-sigma errors from the fit's covariance.
    success : bool
        Whether the optimiser converged.
    """

    pos_x: float
    pos_y: float
    neg_x: float
    neg_y: float
    pos_flux: float
    neg_flux: float
    pos_flux_err: float
    neg_flux_err: float
    success: bool

    @property
    def separation(self) -> float:
        """Distance between the lobes (px)."""
        return float(np.hypot(self.pos_x - self.neg_x, self.pos_y - self.neg_y))

    @property
    def orientation(self) -> float:
        """Direction from the negative to the positive lobe (deg, counter-clockwise from +x)."""
        return float(np.degrees(np.arctan2(self.pos_y - self.neg_y, self.pos_x - self.neg_x)))


def fit_dipole(
    difference: Cutout,
    science: Cutout,
    start_pos: tuple[float, float],
    start_neg: tuple[float, float],
) -> DipoleFit:
    """Fit two PSFs of opposite sign to a difference cutout, the positive lobe tied to the science.

    The model is ``f_p P_d(x - x_p) - f_n P_d(x - x_n)`` on the difference and, as the
    LSST dipole fit constrains the lobes with the pre-subtraction images, ``f_p P_s(x -
    x_p) + b`` on the science image (the positive lobe is the source as it is in the
    science image, over a constant sky b). Without that constraint a dipole made by
    a small shift is degenerate (only ``flux x separation`` is measured). Weighted
    least squares (MINPACK's Levenberg-Marquardt, scipy.optimize.leastsq, analytic
    Jacobian).

    Parameters
    ----------
    difference, science : Cutout
        The two cutouts (same pixels); the weights select the footprint.
    start_pos, start_neg : (float, float)
        First guesses (x, y) of the lobes in cutout pixels.

    Returns
    -------
    DipoleFit
        In cutout pixels; NaN and not successful when the difference has fewer usable
        pixels than parameters.
    """
    on_d, on_s = FittedPixels(difference), FittedPixels(science)
    if on_d.values.size < 7:
        nan = float("nan")
        return DipoleFit(nan, nan, nan, nan, nan, nan, nan, nan, False)
    # The PSFs are evaluated on the bounding box of the fitted pixels only: a footprint
    # is much smaller than its cutout, which has a PSF's margin.
    n_d = on_d.data.size
    last: dict[bytes, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    # The residual and the Jacobian are written into the same arrays at every
    # evaluation (MINPACK copies them); the Jacobian's zeros stay where they are.
    res = np.empty(n_d + on_s.data.size)
    jac = np.zeros((7, n_d + on_s.data.size))

    def lobes(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weighted lobes with their d/dy and d/dx, each (3, n): the positive and the
        negative on the difference's pixels, the positive on the science's. MINPACK asks
        for the Jacobian where it last evaluated the residual, so that evaluation is kept."""
        key = t.tobytes()
        if key not in last:
            last.clear()
            last[key] = on_d.at(t[0], t[1]), on_d.at(t[3], t[4]), on_s.at(t[0], t[1])
        return last[key]

    def residual(t: np.ndarray) -> np.ndarray:
        # on_d.data - (f_p pos - f_n neg), then on_s.data - b sqrt_weight - f_p sci
        pos, neg, sci = lobes(t)
        model, sky = res[:n_d], res[n_d:]
        np.subtract(np.multiply(pos[0], t[2]), np.multiply(neg[0], t[5]), out=model)
        np.subtract(on_d.data, model, out=model)
        np.subtract(on_s.data, np.multiply(on_s.sqrt_weight, t[6]), out=sky)
        np.subtract(sky, np.multiply(sci[0], t[2]), out=sky)
        return res

    def jacobian(t: np.ndarray) -> np.ndarray:
        # Rows (x_p, y_p, f_p, x_n, y_n, f_n, b) from each lobe's (value, d/dy, d/dx);
        # the derivatives are over the offset from the lobe's centre. Built row by row:
        # a lobe is 0 on the other image's pixels.
        f_p, f_n = t[2], t[5]
        pos, neg, sci = lobes(t)
        jac[0:2, :n_d], jac[0:2, n_d:] = f_p * pos[2:0:-1], f_p * sci[2:0:-1]
        jac[2, :n_d], jac[2, n_d:] = -pos[0], -sci[0]
        jac[3:5, :n_d] = -f_n * neg[2:0:-1]
        jac[5, :n_d] = neg[0]
        jac[6, n_d:] = -on_s.sqrt_weight
        return jac

    # The lobes at the start serve the first guess of the fluxes and MINPACK's first
    # evaluation (the same positions).
    first = on_d.at(*start_pos), on_d.at(*start_neg), on_s.at(*start_pos)
    design = np.stack([first[0][0], -first[1][0]])
    amp, *_ = np.linalg.lstsq(design.T, on_d.data, rcond=None)
    peak = float(np.max(np.abs(on_d.values)))
    floor = 0.05 * peak / max(float(difference.model.image.max()), 1e-12)
    f_p, f_n = (max(float(a), floor) for a in amp)
    sky = float(np.median(on_s.values)) if on_s.values.size else 0.0
    start = np.array([*start_pos, f_p, *start_neg, f_n, sky])
    scale = np.array([1.0, 1.0, max(f_p, f_n), 1.0, 1.0, max(f_p, f_n), 1.0 + abs(sky)])
    last[start.tobytes()] = first
    # MINPACK's lmder, as scipy.optimize.least_squares(method='lm', x_scale=scale)
    # calls it, without that wrapper's per-evaluation overhead.
    t, _, _, _, status = leastsq(
        residual,
        start,
        Dfun=jacobian,
        full_output=True,
        ftol=TOLERANCE,
        xtol=TOLERANCE,
        gtol=TOLERANCE,
        maxfev=MAX_DIPOLE_EVALUATIONS,
        diag=1.0 / scale,
        col_deriv=True,
    )
    errs = np.full(7, np.nan)
    final = jacobian(t)
    jtj = final @ final.T
    if np.linalg.cond(jtj) < 1e14:
        errs = np.sqrt(np.clip(np.diag(np.linalg.inv(jtj)), 0.0, None))
    return DipoleFit(
        float(t[0]),
        float(t[1]),
        float(t[3]),
        float(t[4]),
        float(t[2]),
        float(t[5]),
        float(errs[2]),
        float(errs[5]),
        status in (1, 2, 3, 4),
    )


def is_dipole(
    fit: DipoleFit,
    pos_peak: tuple[float, float],
    neg_peak: tuple[float, float],
    fwhm: float,
    *,
    flux_ratio: float,
    max_separation: float,
) -> bool:
    """Whether a two-lobe fit is a dipole (criteria in the module docstring).

    Parameters
    ----------
    fit : DipoleFit
        The two-lobe fit.
    pos_peak, neg_peak : (float, float)
        Detected peaks (x, y) of each sign, in the fit's pixels.
    fwhm : float
        FWHM of the difference's PSF (px).
    flux_ratio : float
        Least ratio of the weaker to the stronger lobe's flux.
    max_separation : float
        Largest separation of the lobes (FWHM).
    """
    strong = max(fit.pos_flux, fit.neg_flux)
    ratio = min(fit.pos_flux, fit.neg_flux) / strong if strong > 0 else 0.0
    # The fitted lobes must explain the detected ones: each within one FWHM of the
    # peak of its sign (a lobe pulled onto a galaxy's core or a neighbour is not).
    off_pos = np.hypot(fit.pos_x - pos_peak[0], fit.pos_y - pos_peak[1])
    off_neg = np.hypot(fit.neg_x - neg_peak[0], fit.neg_y - neg_peak[1])
    return bool(
        fit.success
        and max(off_pos, off_neg) <= fwhm
        and ratio >= flux_ratio
        and fit.separation <= max_separation * fwhm
    )
