"""Measurement of DIA sources: the diaSources catalog with ids, photometry, shapes, flags, dipoles.

Every source is measured on a cutout around its footprint, never on the whole image:

- centroid: the peak of the difference filtered by its PSF (the maximum-likelihood
  position of a point source), refined to sub-pixel by a three-point Gaussian fit
  in x and in y; a dipole's centroid is the midpoint of its two fitted lobes;
- PSF flux on the difference forced at the centroid: the PSF shifted to the
  sub-pixel centroid (tabulated at 1/8 px from a bicubic spline) and fitted by
  variance-weighted linear least
  squares, ``flux = sum(P d / v) / sum(P^2 / v)``, ``err = 1 / sqrt(sum(P^2 / v))``;
- the science image's PSF flux at the same place, fitted with a constant local sky
  (the science image is not sky-subtracted), as the seed's forced measurement does;
- aperture fluxes (photutils, exact circular overlap) at ``aperture_radii``;
- second moments from Gaussian-weighted moments (weight twice the PSF width),
  corrected for the weight (exact for a Gaussian source);
- flags from the mask planes of the difference, science and template, in the
  footprint and in the 3 x 3 pixels at the centroid (``*_center``);
- dipoles: a footprint with a positive and a negative part is fitted with two PSFs
  of opposite sign, the positive lobe tied to the science image (see
  :func:`fit_dipole`; scipy.optimize.least_squares on the footprint's pixels); it is a
  dipole when the weaker lobe has at least ``dipole_flux_ratio`` of the stronger's
  flux, the lobes are at most ``dipole_max_separation`` FWHM apart, and each fitted
  lobe lies within one FWHM of the detected peak of its sign. A footprint with both
  signs that is not a dipole is split back into the connected pieces of its positive
  and negative parts, one source each (they only touched).

Sky sources (blank positions from detection) are rows of the same table with
``sky_source`` true, sign 0 and only the forced fluxes and flags measured, as the
LSST diaSource catalog carries them. With ``calibrate_errors`` and at least
:data:`MIN_SKY_SOURCES` of them, the PSF-flux errors of every row are multiplied by
the robust scatter of the sky sources' ``flux / err`` (``meta['psf_flux_err_scale']``):
per-pixel variances miss the covariance of correlated noise (coadds, warped or
decorrelated images), which the blank sky measures.

Ids are the seed's ``makeIdFactory``: the exposure id in the high ``exposure_bits``
bits of an unsigned 64-bit integer and a running number from 1 in the low bits.

Catalog columns (0-based pixel coordinates; ct = image units):

==========================  =====  ===================================================
column                      unit   meaning
==========================  =====  ===================================================
id                                 uint64 DIA source id (exposure id in the high bits)
label                              footprint label in ``Detections.segmentation`` (0: sky;
                                   the pieces of a split footprint share it)
sky_source                         a blank-sky position, not a detection
x, y                        pix    centroid (dipoles: midpoint of the lobes)
ra, dec                     deg    from the difference's WCS; NaN without a celestial one
sign                               +1 brighter in the science, -1 in the template, 0 sky
                                   (a dipole: the sign of pos_flux - neg_flux)
psf_flux, psf_flux_err      ct     forced PSF flux on the difference and its error
snr                                psf_flux / psf_flux_err
peak_value                         signed peak of the detection image (sigma)
score_peak                         signed extreme of the score in the footprint
xx, yy, xy                  pix2   second moments (weight removed)
sci_psf_flux(_err)          ct     forced PSF flux on the science image, local sky fitted
npix                        pix2   footprint area
has_positive, has_negative         the footprint holds a part above / below threshold
is_dipole                          classified a dipole
pos_flux(_err), neg_flux    ct     two-lobe fit of a dipole (NaN for other sources)
pos_x, pos_y, neg_x, neg_y  pix    lobe centres of that fit
dipole_separation           pix    distance between the lobes
dipole_orientation          deg    from the negative to the positive lobe, from +x
flag_<plane>(_center)              mask plane in the footprint (in the 3 x 3 centre):
                                   edge, nodata, saturated (SAT or SAT_TEMPLATE),
                                   interpolated, bad, suspect, cr
flagged                            edge, nodata or saturated anywhere, or any other flag
                                   at the centre
ap_flux_<r>(_err)           ct     aperture flux in radius r px (``3``, ``2p5``, ...)
==========================  =====  ===================================================

``meta`` holds ``diff_psf_fwhm`` (px), ``psf_flux_err_scale``, ``exposure_id`` and
``exposure_bits``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import astropy.units as u
import numpy as np
from astropy.table import Table
from photutils.aperture import CircularAperture, aperture_photometry
from scipy import ndimage
from scipy.interpolate import RectBivariateSpline
from scipy.optimize import least_squares
from scipy.signal import fftconvolve

from diffviewer.config import MeasurementConfig
from diffviewer.engine.detect import Detections
from diffviewer.engine.progress import Reporter
from diffviewer.engine.psf import adaptive_moments, shape_from_covariance
from diffviewer.engine.subtract import template_planes
from diffviewer.engine.zogy import ScoreResult
from diffviewer.errors import ConfigError, InputError
from diffviewer.exposure import UNUSABLE, Exposure, MaskPlane
from diffviewer.stats import FWHM_PER_SIGMA, robust_std

#: Flag columns and the mask planes (difference, science, template) that raise them.
FLAG_PLANES: dict[str, int] = {
    "edge": int(MaskPlane.EDGE),
    "nodata": int(MaskPlane.NO_DATA),
    "saturated": int(MaskPlane.SAT | MaskPlane.SAT_TEMPLATE),
    "interpolated": int(MaskPlane.INTRP),
    "bad": int(MaskPlane.BAD),
    "suspect": int(MaskPlane.SUSPECT),
    "cr": int(MaskPlane.CR),
}

#: Flags that make a source "flagged" (the seed's SourceFlagChecker bad flags): any
#: of these anywhere in the footprint, or at the centre.
FLAGGED_ANYWHERE = ("edge", "nodata", "saturated")
FLAGGED_CENTER = ("interpolated", "bad", "suspect", "cr")

#: Most model evaluations of one dipole fit; a fit that needs more is not a dipole.
MAX_DIPOLE_EVALUATIONS = 100

#: Least number of sky sources whose forced fluxes calibrate the PSF-flux errors (the
#: scatter of 50 pulls is known to 10 %; use 100 or more for 7 %).
MIN_SKY_SOURCES = 50

#: Bits of an unsigned 64-bit DIA source id.
ID_BITS = 64


class IdFactory:
    """Unique 64-bit DIA source ids: exposure id in the high bits, a running number below.

    Parameters
    ----------
    exposure_id : int
        Id of the exposure, at least 0 and below ``2**exposure_bits``.
    exposure_bits : int
        High bits reserved for the exposure id (1-63).

    Raises
    ------
    ConfigError
        When the exposure id does not fit in ``exposure_bits`` bits.
    """

    def __init__(self, exposure_id: int, exposure_bits: int) -> None:
        if not 1 <= exposure_bits < ID_BITS:
            raise ConfigError(
                f"measurement.exposure_bits = {exposure_bits} must be between 1 and {ID_BITS - 1}"
            )
        if exposure_id < 0 or exposure_id >= 1 << exposure_bits:
            raise ConfigError(
                f"measurement.exposure_id = {exposure_id} does not fit in "
                f"measurement.exposure_bits = {exposure_bits} bits (largest "
                f"{(1 << exposure_bits) - 1}); raise exposure_bits or use a "
                "smaller id"
            )
        self.sequence_bits = ID_BITS - exposure_bits
        self._base = exposure_id << self.sequence_bits
        self._next = 1

    @property
    def capacity(self) -> int:
        """Largest running number (how many ids one exposure can have)."""
        return (1 << self.sequence_bits) - 1

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` ids as a uint64 array.

        Raises
        ------
        InputError
            When the running number would overflow its ``64 - exposure_bits`` bits.
        """
        if self._next + n - 1 > self.capacity:
            raise InputError(
                f"{self._next + n - 1} DIA sources do not fit in the "
                f"{self.sequence_bits} low bits of the id (at most {self.capacity}); "
                "lower measurement.exposure_bits"
            )
        seq = np.arange(self._next, self._next + n, dtype=np.uint64)
        self._next += n
        return np.uint64(self._base) | seq

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        return int(self.take(1)[0])


def make_id_factory(exposure_id: int, exposure_bits: int) -> IdFactory:
    """The seed's ``makeIdFactory``: an iterator of unique 64-bit DIA source ids.

    Parameters
    ----------
    exposure_id : int
        Id of the exposure (stored in the high bits).
    exposure_bits : int
        Number of high bits for the exposure id.

    Returns
    -------
    IdFactory
        ``next(factory)`` gives one id, ``factory.take(n)`` a uint64 array.
    """
    return IdFactory(exposure_id, exposure_bits)


#: Sub-pixel steps per pixel of the tabulated PSF (bilinear between table entries: the
#: error is below 1e-3 of the peak for a PSF of FWHM >= 2 px).
OVERSAMPLE = 8


class PsfModel:
    """A PSF image that can be shifted to any sub-pixel position.

    The PSF and its two derivatives are tabulated once on a grid eight times finer
    than the pixels (bicubic spline through the PSF image); a shifted PSF is then a
    bilinear blend of four strided slices of the table, fast enough for thousands
    of sources and for the iterations of the dipole fit. The PSF is 0 beyond its
    stamp.

    Parameters
    ----------
    psf : numpy.ndarray
        Small odd PSF image (normalised here to sum 1).
    """

    def __init__(self, psf: np.ndarray) -> None:
        p = np.asarray(psf, dtype=np.float64)
        if p.ndim != 2 or p.shape[0] % 2 == 0 or p.shape[1] % 2 == 0 or not p.sum() > 0:
            raise InputError(
                f"PSF of shape {p.shape} must be a 2-D image with odd sides and a positive sum"
            )
        self.image = p / p.sum()
        self.half = (p.shape[0] // 2, p.shape[1] // 2)
        self.fwhm = shape_from_covariance(adaptive_moments(self.image)[2])[0]
        hy, hx = self.half
        spline = RectBivariateSpline(np.arange(-hy, hy + 1.0), np.arange(-hx, hx + 1.0), self.image)
        q = OVERSAMPLE
        oy = np.arange(-(hy + 1) * q, (hy + 1) * q + 1) / q
        ox = np.arange(-(hx + 1) * q, (hx + 1) * q + 1) / q
        inside = (np.abs(oy) <= hy)[:, None] & (np.abs(ox) <= hx)[None, :]
        # Value, derivative along y, derivative along x, stacked: one blend gives all three.
        self._tables = np.stack(
            [
                spline(oy, ox, dx=dy, dy=dx, grid=True) * inside
                for dy, dx in ((0, 0), (1, 0), (0, 1))
            ]
        )

    def shifted(self, x: float, y: float, derivatives: bool = False) -> tuple[np.ndarray, int, int]:
        """The PSF (and its derivatives along y and x) centred at (x, y), on pixels.

        Parameters
        ----------
        x, y : float
            Centre (px).
        derivatives : bool
            Also the two derivatives.

        Returns
        -------
        stamps : numpy.ndarray
            Shape (1, ny, nx), or (3, ny, nx) with derivatives: value, d/dy and d/dx
            of the PSF over its offset, on a stamp one pixel larger than the PSF image.
        x0, y0 : int
            Pixel of the stamp's [0, 0].
        """
        q = OVERSAMPLE
        table = self._tables if derivatives else self._tables[:1]
        hy, hx = self.half
        ix, iy = int(np.floor(x)), int(np.floor(y))
        qy, qx = (y - iy) * q, (x - ix) * q
        ry, rx = int(qy), int(qx)
        wy, wx = qy - ry, qx - rx
        sy, sx = q - ry, q - rx
        ny, nx = 2 * hy + 2, 2 * hx + 2
        ya, yb = slice(sy, sy + ny * q, q), slice(sy - 1, sy - 1 + ny * q, q)
        xa, xb = slice(sx, sx + nx * q, q), slice(sx - 1, sx - 1 + nx * q, q)
        out = ((1.0 - wy) * (1.0 - wx)) * table[:, ya, xa] + ((1.0 - wy) * wx) * table[:, ya, xb]
        out += (wy * (1.0 - wx)) * table[:, yb, xa] + (wy * wx) * table[:, yb, xb]
        return out, ix - hx, iy - hy

    def render(
        self, x: float, y: float, shape: tuple[int, int], derivatives: bool = False
    ) -> np.ndarray:
        """:meth:`shifted` placed in zero arrays of ``shape``: shape (1 or 3, *shape)."""
        stamps, x0, y0 = self.shifted(x, y, derivatives)
        out = np.zeros((stamps.shape[0], *shape))
        cut = _overlap(shape, x0, y0, *stamps.shape[1:])
        if cut is not None:
            out[(slice(None), *cut[0])] = stamps[(slice(None), *cut[1])]
        return out

    def stamp(self, x: float, y: float) -> tuple[np.ndarray, int, int]:
        """The PSF centred at (x, y), normalised to sum 1 on its stamp.

        Returns
        -------
        stamp : numpy.ndarray
            The shifted PSF.
        x0, y0 : int
            Image pixel of the stamp's [0, 0].
        """
        stamps, x0, y0 = self.shifted(x, y)
        img = stamps[0]
        total = img.sum()
        return (img / total if total > 0 else img), x0, y0


def _overlap(
    shape: tuple[int, int], x0: int, y0: int, ny: int, nx: int
) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Slices of an image and of a stamp at (x0, y0) for their overlap; None when they miss."""
    ya, yb = max(y0, 0), min(y0 + ny, shape[0])
    xa, xb = max(x0, 0), min(x0 + nx, shape[1])
    if ya >= yb or xa >= xb:
        return None
    return (slice(ya, yb), slice(xa, xb)), (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))


def forced_psf_flux(
    image: np.ndarray,
    weight: np.ndarray,
    model: PsfModel,
    x: float,
    y: float,
    fit_sky: bool = False,
) -> tuple[float, float]:
    """Variance-weighted linear least-squares PSF flux at a fixed position.

    Parameters
    ----------
    image : numpy.ndarray
        The image (image units).
    weight : numpy.ndarray
        Inverse variance, 0 for unusable pixels.
    model : PsfModel
        The PSF.
    x, y : float
        Position (0-based px).
    fit_sky : bool
        Fit a constant background together with the flux.

    Returns
    -------
    flux, err : float
        Flux and its 1-sigma error (image units); NaN when no usable pixel overlaps.
    """
    psf, x0, y0 = model.stamp(x, y)
    cut = _overlap(image.shape, x0, y0, *psf.shape)
    if cut is None:
        return float("nan"), float("nan")
    (iy, ix), (sy, sx) = cut
    p, d, w = psf[sy, sx].ravel(), image[iy, ix].ravel().astype(np.float64), weight[iy, ix].ravel()
    if not fit_sky:
        a = float(np.sum(p * p * w))
        if a <= 0.0:
            return float("nan"), float("nan")
        return float(np.sum(p * d * w) / a), float(1.0 / np.sqrt(a))
    design = np.stack([p, np.ones_like(p)])
    normal = (design * w) @ design.T
    if np.sum(w > 0) < 3 or np.linalg.cond(normal) > 1e12:
        return float("nan"), float("nan")
    cov = np.linalg.inv(normal)
    coef = cov @ ((design * w) @ d)
    return float(coef[0]), float(np.sqrt(cov[0, 0]))


def _refine_peak(img: np.ndarray, iy: int, ix: int) -> tuple[float, float]:
    """Sub-pixel offset (dy, dx) of a local maximum: three-point Gaussian, else parabola, fit."""
    out = []
    for axis, (c, n) in enumerate(((iy, img.shape[0]), (ix, img.shape[1]))):
        if c <= 0 or c >= n - 1:
            out.append(0.0)
            continue
        if axis == 0:
            lo, mid, hi = img[c - 1, ix], img[c, ix], img[c + 1, ix]
        else:
            lo, mid, hi = img[iy, c - 1], img[iy, c], img[iy, c + 1]
        if lo > 0 and mid > 0 and hi > 0:
            lo, mid, hi = np.log(lo), np.log(mid), np.log(hi)
        curv = lo - 2.0 * mid + hi
        out.append(float(np.clip(0.5 * (lo - hi) / curv, -0.5, 0.5)) if curv < 0 else 0.0)
    return out[0], out[1]


def _peak(filtered: np.ndarray, inside: np.ndarray, sign: int) -> tuple[float, float]:
    """Sub-pixel (x, y) of the extreme of ``sign * filtered`` within a footprint (cutout px)."""
    vals = np.where(inside, sign * filtered, -np.inf)
    iy, ix = np.unravel_index(int(np.argmax(vals)), vals.shape)
    dy, dx = _refine_peak(sign * filtered, int(iy), int(ix))
    return float(ix + dx), float(iy + dy)


def _weighted_moments(
    img: np.ndarray, good: np.ndarray, xc: float, yc: float, sigma_w: float
) -> tuple[float, float, float]:
    """Second moments (xx, yy, xy; px^2) from Gaussian-weighted moments, the weight removed."""
    y, x = np.indices(img.shape, dtype=np.float64)
    dx, dy = x - xc, y - yc
    w = np.where(good, np.exp(-0.5 * (dx * dx + dy * dy) / sigma_w**2), 0.0) * img
    total = float(w.sum())
    nan = float("nan")
    if total <= 0.0:
        return nan, nan, nan
    m = (
        np.array(
            [[np.sum(w * dx * dx), np.sum(w * dx * dy)], [np.sum(w * dx * dy), np.sum(w * dy * dy)]]
        )
        / total
    )
    # For a Gaussian source of covariance C seen through a Gaussian weight W:
    # M^-1 = C^-1 + W^-1, so C = (M^-1 - W^-1)^-1.
    if np.linalg.det(m) <= 0:
        return nan, nan, nan
    inv = np.linalg.inv(m) - np.eye(2) / sigma_w**2
    if np.linalg.det(inv) <= 0 or inv[0, 0] <= 0:
        return nan, nan, nan
    c = np.linalg.inv(inv)
    return float(c[0, 0]), float(c[1, 1]), float(c[0, 1])


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
    least squares (scipy.optimize.least_squares, analytic Jacobian).

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
    ny, nx = difference.data.shape
    sel_d, sel_s = difference.weight > 0, science.weight > 0
    sw_d, sw_s = np.sqrt(difference.weight[sel_d]), np.sqrt(science.weight[sel_s])
    d, s = difference.data[sel_d].astype(np.float64), science.data[sel_s].astype(np.float64)
    n_d = d.size
    if n_d < 7:
        nan = float("nan")
        return DipoleFit(nan, nan, nan, nan, nan, nan, nan, nan, False)

    def lobe(
        cut: Cutout, sel: np.ndarray, xc: float, yc: float, derivatives: bool = False
    ) -> np.ndarray:
        """PSF (and d/dy, d/dx) at (xc, yc) on the selected pixels, shape (1 or 3, n)."""
        return cut.model.render(xc, yc, (ny, nx), derivatives)[:, sel]

    def residual(t: np.ndarray) -> np.ndarray:
        r_d = (
            d
            - t[2] * lobe(difference, sel_d, t[0], t[1])[0]
            + t[5] * lobe(difference, sel_d, t[3], t[4])[0]
        )
        r_s = s - t[2] * lobe(science, sel_s, t[0], t[1])[0] - t[6]
        return np.concatenate([sw_d * r_d, sw_s * r_s])

    def jacobian(t: np.ndarray) -> np.ndarray:
        jac = np.zeros((n_d + s.size, 7))
        p_val, p_dy, p_dx = lobe(difference, sel_d, t[0], t[1], derivatives=True)
        n_val, n_dy, n_dx = lobe(difference, sel_d, t[3], t[4], derivatives=True)
        s_val, s_dy, s_dx = lobe(science, sel_s, t[0], t[1], derivatives=True)
        jac[:n_d, 0], jac[:n_d, 1], jac[:n_d, 2] = t[2] * p_dx, t[2] * p_dy, -p_val
        jac[:n_d, 3], jac[:n_d, 4], jac[:n_d, 5] = -t[5] * n_dx, -t[5] * n_dy, n_val
        jac[n_d:, 0], jac[n_d:, 1], jac[n_d:, 2] = t[2] * s_dx, t[2] * s_dy, -s_val
        jac[n_d:, 6] = -1.0
        return jac * np.concatenate([sw_d, sw_s])[:, None]

    design = np.stack(
        [lobe(difference, sel_d, *start_pos)[0], -lobe(difference, sel_d, *start_neg)[0]]
    )
    amp, *_ = np.linalg.lstsq((design * sw_d).T, d * sw_d, rcond=None)
    floor = 0.05 * float(np.max(np.abs(d))) / max(float(difference.model.image.max()), 1e-12)
    f_p, f_n = (max(float(a), floor) for a in amp)
    sky = float(np.median(s)) if s.size else 0.0
    start = np.array([*start_pos, f_p, *start_neg, f_n, sky])
    scale = np.array([1.0, 1.0, max(f_p, f_n), 1.0, 1.0, max(f_p, f_n), 1.0 + abs(sky)])
    res = least_squares(
        residual, start, jac=jacobian, method="lm", x_scale=scale, max_nfev=MAX_DIPOLE_EVALUATIONS
    )
    t = res.x
    errs = np.full(7, np.nan)
    jtj = res.jac.T @ res.jac
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
        bool(res.success),
    )


@dataclasses.dataclass(frozen=True)
class _FootprintCutout:
    """One footprint's cutout: slices, difference pixels, masks and detection-image values."""

    box: tuple[slice, slice]
    data: np.ndarray
    good: np.ndarray
    inside: np.ndarray
    detection: np.ndarray


def _detection_values(
    difference: Exposure,
    score: ScoreResult | None,
    detections: Detections,
    box: tuple[slice, slice],
    good: np.ndarray,
    flipped: np.ndarray,
) -> np.ndarray:
    """The detection image (in the sigma of its threshold) on a cutout.

    On the difference it is, as in detection (:func:`diffviewer.engine.zogy.al_score`),
    the difference filtered with the flipped PSF ``flipped`` over the filtered noise;
    the cutout's margin of half a PSF makes it exact inside the footprint.
    """
    if detections.detection_image == "score" and score is not None:
        values = score.image[box].astype(np.float64)
    else:
        num = fftconvolve(np.where(good, difference.image[box], 0.0), flipped, mode="same")
        var = fftconvolve(np.where(good, difference.variance[box], 0.0), flipped**2, mode="same")
        values = np.where(var > 0, num / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)
    return values / detections.threshold_scale


def _is_dipole(
    fit: DipoleFit,
    pos_peak: tuple[float, float],
    neg_peak: tuple[float, float],
    fwhm: float,
    config: MeasurementConfig,
) -> bool:
    """Whether a two-lobe fit is a dipole (criteria in the module docstring)."""
    strong = max(fit.pos_flux, fit.neg_flux)
    ratio = min(fit.pos_flux, fit.neg_flux) / strong if strong > 0 else 0.0
    # The fitted lobes must explain the detected ones: each within one FWHM of the
    # peak of its sign (a lobe pulled onto a galaxy's core or a neighbour is not).
    off_pos = np.hypot(fit.pos_x - pos_peak[0], fit.pos_y - pos_peak[1])
    off_neg = np.hypot(fit.neg_x - neg_peak[0], fit.neg_y - neg_peak[1])
    return bool(
        fit.success
        and max(off_pos, off_neg) <= fwhm
        and ratio >= config.dipole_flux_ratio
        and fit.separation <= config.dipole_max_separation * fwhm
    )


def _parts(cut: _FootprintCutout, det_mask: np.ndarray, both: bool) -> list[tuple[np.ndarray, int]]:
    """The sources of a footprint that is not a dipole, each with its sign.

    A one-signed footprint is one source. A footprint with both signs that is not a
    dipole is split back into the connected pieces of its positive (DETECTED) and
    negative (DETECTED_NEGATIVE) parts, one source each, as a deblender would: the
    merge only served to look for a dipole.
    """
    if not both:
        values = np.where(cut.inside, cut.detection, 0.0)
        sign = 1 if values.flat[int(np.argmax(np.abs(values)))] >= 0 else -1
        return [(cut.inside, sign)]
    out: list[tuple[np.ndarray, int]] = []
    for sign, plane in ((1, MaskPlane.DETECTED), (-1, MaskPlane.DETECTED_NEGATIVE)):
        pieces, n = ndimage.label(
            cut.inside & ((det_mask & int(plane)) != 0), structure=np.ones((3, 3), dtype=bool)
        )
        out.extend((pieces == k, sign) for k in range(1, n + 1))
    return out


def _measure_part(
    cut: _FootprintCutout,
    part: np.ndarray,
    sign: int,
    filtered: np.ndarray,
    centre: tuple[float, float] | None,
    planes: np.ndarray,
    score: ScoreResult | None,
    fwhm: float,
) -> dict[str, float]:
    """Centroid, peaks, moments, area and footprint flags of one source (a dipole: sign 0).

    ``centre`` (cutout px) is given for a dipole (the midpoint of its lobes); otherwise
    it is the sub-pixel peak of the PSF-filtered difference in ``part``. The caller
    sets ``has_positive`` / ``has_negative``.
    """
    ys, xs = cut.box
    values = np.where(part, cut.detection, 0.0)
    peak = float(values.flat[int(np.argmax(np.abs(values) if sign == 0 else sign * values))])
    sign = sign or (1 if peak >= 0 else -1)
    cx, cy = centre if centre is not None else _peak(filtered, part, sign)
    row: dict[str, float] = {
        "x": cx + xs.start,
        "y": cy + ys.start,
        "sign": sign,
        "peak_value": peak,
        "npix": int(part.sum()),
    }
    row["xx"], row["yy"], row["xy"] = _weighted_moments(
        sign * cut.data, cut.good & part, cx, cy, 2.0 * fwhm / FWHM_PER_SIGMA
    )
    if score is not None:
        sv = np.where(part, score.image[cut.box], 0.0)
        row["score_peak"] = float(sv.flat[int(np.argmax(np.abs(sv)))])
    bits = int(np.bitwise_or.reduce(planes[cut.box][part])) if part.any() else 0
    py, px = np.nonzero(part)
    touches = bool(part.any()) and (
        ys.start + py.min() == 0
        or xs.start + px.min() == 0
        or ys.start + py.max() == planes.shape[0] - 1
        or xs.start + px.max() == planes.shape[1] - 1
    )
    for name, plane_bits in FLAG_PLANES.items():
        row[f"flag_{name}"] = bool(bits & plane_bits) or (name == "edge" and touches)
    return row


def sky_error_scale(flux: np.ndarray, err: np.ndarray) -> float:
    """Ratio of the actual to the predicted scatter of forced PSF fluxes on blank sky.

    Parameters
    ----------
    flux, err : numpy.ndarray
        Forced PSF fluxes and their errors at sky-source positions.

    Returns
    -------
    float
        Standard deviation of ``flux / err`` after clipping at 4 robust sigma (a sky
        source on a faint undetected object is dropped; the clipped std keeps ~95 %
        of the efficiency of a plain one, the MAD only 37 %); 1 when the variance
        plane describes the noise, above 1 where the noise is correlated (the GOTO
        coadds: 1.4). 1 when fewer than :data:`MIN_SKY_SOURCES` are usable.
    """
    ok = np.isfinite(flux) & np.isfinite(err) & (err > 0)
    pulls = flux[ok] / err[ok]
    if pulls.size < MIN_SKY_SOURCES:
        return 1.0
    centre, spread = float(np.median(pulls)), robust_std(pulls)
    kept = pulls[np.abs(pulls - centre) <= 4.0 * spread]
    scale = float(np.std(kept)) if kept.size >= MIN_SKY_SOURCES else float("nan")
    return scale if np.isfinite(scale) and scale > 0 else 1.0


def _inverse_variance(variance: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """1 / variance (float32), 0 on bad pixels."""
    return np.where(bad, 0.0, 1.0 / np.where(bad, 1.0, variance)).astype(np.float32)


def _columns(n: int, radii: tuple[float, ...]) -> dict[str, np.ndarray]:
    """Empty columns of the catalog (NaN / False / 0)."""
    nan = np.full(n, np.nan)
    cols: dict[str, np.ndarray] = {
        "label": np.zeros(n, dtype=np.int32),
        "sky_source": np.zeros(n, dtype=bool),
        "x": nan.copy(),
        "y": nan.copy(),
        "sign": np.zeros(n, dtype=np.int8),
        "psf_flux": nan.copy(),
        "psf_flux_err": nan.copy(),
        "snr": nan.copy(),
        "peak_value": nan.copy(),
        "score_peak": nan.copy(),
        "xx": nan.copy(),
        "yy": nan.copy(),
        "xy": nan.copy(),
        "sci_psf_flux": nan.copy(),
        "sci_psf_flux_err": nan.copy(),
        "npix": np.zeros(n, dtype=np.int32),
        "has_positive": np.zeros(n, dtype=bool),
        "has_negative": np.zeros(n, dtype=bool),
        "is_dipole": np.zeros(n, dtype=bool),
        "pos_flux": nan.copy(),
        "pos_flux_err": nan.copy(),
        "neg_flux": nan.copy(),
        "neg_flux_err": nan.copy(),
        "pos_x": nan.copy(),
        "pos_y": nan.copy(),
        "neg_x": nan.copy(),
        "neg_y": nan.copy(),
        "dipole_separation": nan.copy(),
        "dipole_orientation": nan.copy(),
    }
    for name in FLAG_PLANES:
        cols[f"flag_{name}"] = np.zeros(n, dtype=bool)
        cols[f"flag_{name}_center"] = np.zeros(n, dtype=bool)
    return cols


def aperture_column(radius: float) -> str:
    """Name of the aperture-flux column for a radius (px), e.g. ``ap_flux_3`` or ``ap_flux_2p5``."""
    text = f"{radius:g}".replace(".", "p")
    return f"ap_flux_{text}"


_UNITS: dict[str, u.UnitBase] = {
    "x": u.pix,
    "y": u.pix,
    "pos_x": u.pix,
    "pos_y": u.pix,
    "neg_x": u.pix,
    "neg_y": u.pix,
    "psf_flux": u.ct,
    "psf_flux_err": u.ct,
    "sci_psf_flux": u.ct,
    "sci_psf_flux_err": u.ct,
    "pos_flux": u.ct,
    "pos_flux_err": u.ct,
    "neg_flux": u.ct,
    "neg_flux_err": u.ct,
    "xx": u.pix**2,
    "yy": u.pix**2,
    "xy": u.pix**2,
    "npix": u.pix**2,
    "dipole_separation": u.pix,
    "dipole_orientation": u.deg,
    "ra": u.deg,
    "dec": u.deg,
    "snr": u.dimensionless_unscaled,
    "peak_value": u.dimensionless_unscaled,
    "score_peak": u.dimensionless_unscaled,
    "id": u.dimensionless_unscaled,
    "label": u.dimensionless_unscaled,
    "sign": u.dimensionless_unscaled,
}


def measure_sources(
    difference: Exposure,
    science: Exposure,
    template: Exposure,
    score: ScoreResult | None,
    detections: Detections,
    diff_psf: np.ndarray,
    sci_psf: np.ndarray,
    config: MeasurementConfig,
    reporter: Reporter,
) -> Table:
    """Measure every detected footprint (and sky source) on cutouts of the difference.

    Parameters
    ----------
    difference : Exposure
        The difference (with the DETECTED planes) on which sources are measured.
    science, template : Exposure
        The science image and the template on its grid (forced science flux, flags).
    score : ScoreResult or None
        The score image, for ``score_peak``.
    detections : Detections
        Footprints and sky-source positions.
    diff_psf, sci_psf : numpy.ndarray
        PSF images of the difference and of the science image.
    config : MeasurementConfig
        Aperture radii, dipole criteria, exposure id and bits.
    reporter : Reporter
        Progress and cancellation.

    Returns
    -------
    astropy.table.Table
        One row per source (sky sources last, ``sky_source`` true), a unit on every
        measured column (pix, pix2, ct = image units, deg; S/N and scores are
        dimensionless); ``meta`` holds the difference PSF's FWHM (px).
        Columns: see the module docstring and :data:`FLAG_PLANES`.
    """
    factory = make_id_factory(config.exposure_id, config.exposure_bits)
    model, sci_model = PsfModel(diff_psf), PsfModel(sci_psf)
    shape = difference.shape
    bad = ((difference.mask & int(UNUSABLE)) != 0) | ~(difference.variance > 0)
    bad |= ~np.isfinite(difference.image)
    weight = _inverse_variance(difference.variance, bad)
    sci_weight = _inverse_variance(
        science.variance, ((science.mask & int(UNUSABLE)) != 0) | ~(science.variance > 0)
    )
    planes = difference.mask | science.mask | template_planes(template.mask)
    table = detections.table
    seg = detections.segmentation
    margin = max(model.half)
    flipped = model.image[::-1, ::-1]
    found: list[dict[str, float]] = []
    for i in range(len(table)):
        if i % 50 == 0:  # a dipole fit takes up to ~10 ms
            reporter.update(0.8 * i / max(len(table), 1))
        label = int(table["label"][i])
        y0 = max(int(table["bbox_ymin"][i]) - margin, 0)
        y1 = min(int(table["bbox_ymax"][i]) + margin + 1, shape[0])
        x0 = max(int(table["bbox_xmin"][i]) - margin, 0)
        x1 = min(int(table["bbox_xmax"][i]) + margin + 1, shape[1])
        box = (slice(y0, y1), slice(x0, x1))
        cut = _FootprintCutout(
            box=box,
            data=difference.image[box].astype(np.float64),
            good=~bad[box],
            inside=seg[box] == label,
            detection=_detection_values(difference, score, detections, box, ~bad[box], flipped),
        )
        filtered = fftconvolve(np.where(cut.good, cut.data, 0.0), flipped, mode="same")
        both = bool(table["has_positive"][i]) and bool(table["has_negative"][i])
        if both:
            pos_peak, neg_peak = _peak(filtered, cut.inside, 1), _peak(filtered, cut.inside, -1)
            fit = fit_dipole(
                Cutout(cut.data, np.where(cut.inside, weight[box], 0.0), model),
                Cutout(science.image[box], np.where(cut.inside, sci_weight[box], 0.0), sci_model),
                pos_peak,
                neg_peak,
            )
            if _is_dipole(fit, pos_peak, neg_peak, model.fwhm, config):
                centre = (0.5 * (fit.pos_x + fit.neg_x), 0.5 * (fit.pos_y + fit.neg_y))
                row = _measure_part(cut, cut.inside, 0, filtered, centre, planes, score, model.fwhm)
                found.append(
                    {
                        **row,
                        "pos_flux": fit.pos_flux,
                        "neg_flux": fit.neg_flux,
                        "pos_flux_err": fit.pos_flux_err,
                        "neg_flux_err": fit.neg_flux_err,
                        "pos_x": fit.pos_x + x0,
                        "pos_y": fit.pos_y + y0,
                        "neg_x": fit.neg_x + x0,
                        "neg_y": fit.neg_y + y0,
                        "dipole_separation": fit.separation,
                        "dipole_orientation": fit.orientation,
                        # A dipole's sign is that of its net flux, not of its stronger peak.
                        "sign": 1 if fit.pos_flux >= fit.neg_flux else -1,
                        "label": label,
                        "is_dipole": True,
                        "has_positive": True,
                        "has_negative": True,
                    }
                )
                continue
        for part, sign in _parts(cut, detections.mask[box], both):
            row = _measure_part(cut, part, sign, filtered, None, planes, score, model.fwhm)
            found.append(
                {
                    **row,
                    "label": label,
                    "has_positive": sign > 0,
                    "has_negative": sign < 0,
                }
            )

    n_fp, n_sky = len(found), len(detections.sky_x)
    cols = _columns(n_fp + n_sky, config.aperture_radii)
    for k, row in enumerate(found):
        for name, value in row.items():
            cols[name][k] = value

    for j in range(n_sky):
        k = n_fp + j
        cols["sky_source"][k] = True
        cols["x"][k], cols["y"][k] = float(detections.sky_x[j]), float(detections.sky_y[j])
        if score is not None:
            sy, sx = int(detections.sky_y[j]), int(detections.sky_x[j])
            cols["score_peak"][k] = float(score.image[sy, sx])
    reporter.update(0.85)

    xs, ys = cols["x"], cols["y"]
    for k in range(n_fp + n_sky):
        if k % 500 == 0:
            reporter.update(0.85 + 0.1 * k / max(n_fp + n_sky, 1))
        flux, err = forced_psf_flux(difference.image, weight, model, xs[k], ys[k])
        cols["psf_flux"][k], cols["psf_flux_err"][k] = flux, err
        cols["snr"][k] = flux / err if err > 0 else np.nan
        cols["sci_psf_flux"][k], cols["sci_psf_flux_err"][k] = forced_psf_flux(
            science.image, sci_weight, sci_model, xs[k], ys[k], fit_sky=True
        )
        ix, iy = round(xs[k]), round(ys[k])
        centre = planes[max(iy - 1, 0) : iy + 2, max(ix - 1, 0) : ix + 2]
        centre_bits = (
            int(np.bitwise_or.reduce(centre.ravel())) if centre.size else int(MaskPlane.NO_DATA)
        )
        for name, bits in FLAG_PLANES.items():
            cols[f"flag_{name}_center"][k] = bool(centre_bits & bits)
            if cols["sky_source"][k]:
                cols[f"flag_{name}"][k] = bool(centre_bits & bits)

    error_scale = 1.0
    if config.calibrate_errors and n_sky >= MIN_SKY_SOURCES:
        error_scale = sky_error_scale(cols["psf_flux"][n_fp:], cols["psf_flux_err"][n_fp:])
        for name in ("psf_flux_err", "pos_flux_err", "neg_flux_err"):
            cols[name] = cols[name] * error_scale
        cols["snr"] = cols["psf_flux"] / cols["psf_flux_err"]

    flagged = np.zeros(n_fp + n_sky, dtype=bool)
    for name in FLAGGED_ANYWHERE:
        flagged |= cols[f"flag_{name}"] | cols[f"flag_{name}_center"]
    for name in FLAGGED_CENTER:
        flagged |= cols[f"flag_{name}_center"]
    cols["flagged"] = flagged

    aperture_cols: dict[str, np.ndarray] = {}
    if n_fp + n_sky and config.aperture_radii:
        positions = np.column_stack([xs, ys])
        apertures = [CircularAperture(positions, r=r) for r in config.aperture_radii]
        phot = aperture_photometry(
            np.where(bad, 0.0, difference.image),
            apertures,
            error=np.sqrt(np.where(bad, 0.0, difference.variance)),
            mask=bad,
        )
        for j, r in enumerate(config.aperture_radii):
            name = aperture_column(r)
            key = "" if len(config.aperture_radii) == 1 else f"_{j}"
            aperture_cols[name] = np.asarray(phot[f"aperture_sum{key}"], dtype=np.float64)
            aperture_cols[f"{name}_err"] = np.asarray(
                phot[f"aperture_sum_err{key}"], dtype=np.float64
            )
    else:
        for r in config.aperture_radii:
            aperture_cols[aperture_column(r)] = np.zeros(n_fp + n_sky)
            aperture_cols[f"{aperture_column(r)}_err"] = np.zeros(n_fp + n_sky)

    ra = np.full(n_fp + n_sky, np.nan)
    dec = np.full(n_fp + n_sky, np.nan)
    if difference.has_celestial_wcs and difference.wcs is not None and n_fp + n_sky:
        world = difference.wcs.pixel_to_world_values(xs, ys)
        ra, dec = np.asarray(world[0], dtype=np.float64), np.asarray(world[1], dtype=np.float64)

    out = Table()
    out["id"] = factory.take(n_fp + n_sky)
    ordered = ["label", "sky_source", "x", "y"]
    for name in ordered:
        out[name] = cols[name]
    out["ra"], out["dec"] = ra, dec
    for name, values in cols.items():
        if name not in ordered:
            out[name] = values
    for name, values in aperture_cols.items():
        out[name] = values
        out[name].unit = u.ct
    for name, unit in _UNITS.items():
        out[name].unit = unit
    out.meta["diff_psf_fwhm"] = model.fwhm
    out.meta["psf_flux_err_scale"] = error_scale
    out.meta["exposure_id"] = config.exposure_id
    out.meta["exposure_bits"] = config.exposure_bits
    reporter.update(1.0)
    return out
