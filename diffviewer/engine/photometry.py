"""PSF models shifted to sub-pixel positions and forced PSF photometry.

The forced PSF flux is the matched filter's: the PSF centred at the position, fitted
by unweighted linear least squares over the usable pixels, ``flux = sum(P d) /
sum(P^2)``, with the error propagated from the variance plane, ``err =
sqrt(sum(P^2 v)) / sum(P^2)``. Its S/N, ``sum(P d) / sqrt(sum(P^2 v))``, is exactly the
PSF-filtered difference over its filtered noise that detection thresholds
(:func:`diffviewer.engine.zogy.al_score`), so a source's ``snr`` is the detection
image at its centroid, but where a source's own noise was correlated by the kernel
(the catalog then multiplies the error: :mod:`diffviewer.engine.source_noise`).
Weighting each pixel by its inverse variance instead would weight a source's own
Poisson noise and a host galaxy's against it: on the demo transient it gave a third of
the flux and a fifth of the S/N.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
from scipy.interpolate import RectBivariateSpline

from diffviewer.engine.moments import adaptive_moments, shape_from_covariance
from diffviewer.errors import InputError

#: Sub-pixel steps per pixel of the tabulated PSF (bilinear between table entries: the
#: error is below 1e-3 of the peak for a PSF of FWHM >= 2 px).
OVERSAMPLE = 8


class PsfModel:
    """A PSF image that can be shifted to any sub-pixel position.

    The PSF (and, when first asked for, its two derivatives) is tabulated once on a
    grid eight times finer than the pixels (bicubic spline through the PSF image); a
    shifted PSF is then a bilinear blend of four slices of the table (each contiguous:
    the table is stored by sub-pixel phase), fast enough for thousands of sources and
    for the iterations of the dipole fit. The PSF is 0 beyond its stamp.

    Parameters
    ----------
    psf : numpy.ndarray
        Small odd PSF image (normalised here to sum ``enclosed``).
    enclosed : float
        Share of a point source's whole flux within the image (below 1 when the PSF's
        wing reaches past it: :attr:`diffviewer.engine.psf.PsfEstimate.enclosed`), so
        that a flux fitted with the model is the whole flux.
    """

    def __init__(self, psf: np.ndarray, enclosed: float = 1.0) -> None:
        p = np.asarray(psf, dtype=np.float64)
        if p.ndim != 2 or p.shape[0] % 2 == 0 or p.shape[1] % 2 == 0 or not p.sum() > 0:
            raise InputError(
                f"PSF of shape {p.shape} must be a 2-D image with odd sides and a positive sum"
            )
        if not 0.0 < enclosed <= 1.0:
            raise InputError(f"a PSF image's share of the flux must be in (0, 1], not {enclosed}")
        self.enclosed = float(enclosed)
        self.image = p / p.sum() * self.enclosed
        self.half = (p.shape[0] // 2, p.shape[1] // 2)
        hy, hx = self.half
        self._size = (2 * (hy + 1) * OVERSAMPLE + 1, 2 * (hx + 1) * OVERSAMPLE + 1)
        self._phases: dict[bool, np.ndarray] = {}

    # The FWHM and the spline are computed when first asked for: a catalog reads the
    # science PSF's FWHM nowhere, and a PsfField's shifted PSFs need no spline of the
    # centre's PSF (1k pair: 0.01 of the 0.03 s of the catalog's PSFs).
    @functools.cached_property
    def fwhm(self) -> float:
        """FWHM (px) of the PSF image, from its adaptive moments."""
        return shape_from_covariance(adaptive_moments(self.image)[2])[0]

    @functools.cached_property
    def _spline(self) -> RectBivariateSpline:
        """The interpolating bicubic spline through the PSF image (offsets in px)."""
        hy, hx = self.half
        return RectBivariateSpline(np.arange(-hy, hy + 1.0), np.arange(-hx, hx + 1.0), self.image)

    @property
    def n_nodes(self) -> int:
        """Number of positions whose PSF the model holds (1: the same PSF everywhere)."""
        return 1

    def nodes(
        self,
    ) -> tuple[tuple[float, ...], tuple[float, ...], tuple[tuple[np.ndarray, ...], ...]]:
        """The PSF images the model blends bilinearly between, and where they are.

        Returns
        -------
        xs, ys : tuple of float
            Node columns and rows (px); one node holds everywhere, wherever it is.
        images : tuple of tuple of numpy.ndarray
            ``images[row][column]``: the PSF at that node (sum :attr:`enclosed`).
        """
        return (0.0,), (0.0,), ((self.image,),)

    def _table(self, derivatives: bool) -> np.ndarray:
        """The table of the value (and of the two derivatives), by phase; built when first asked.

        Entry (c, a, b, i, k) is entry (c, i q + a, k q + b) of the table on the fine
        grid (offsets -(h + 1) ... h + 1 px in steps of 1 / q), for phases a, b = 0 ... q:
        the entries a shifted PSF reads (one every q along each axis) are contiguous, and
        those above them are at phase + 1.
        """
        if derivatives not in self._phases:
            q, (hy, hx), (ny, nx) = OVERSAMPLE, self.half, self._size
            oy = np.arange(-(hy + 1) * q, (hy + 1) * q + 1) / q
            ox = np.arange(-(hx + 1) * q, (hx + 1) * q + 1) / q
            orders = ((0, 0), (1, 0), (0, 1)) if derivatives else ((0, 0),)
            phases = np.zeros((len(orders), q + 1, q + 1, ny // q + 2, nx // q + 2))
            for c, (dy, dx) in enumerate(orders):
                fine = self._spline(oy, ox, dx=dy, dy=dx, grid=True)
                fine[np.abs(oy) > hy] = 0.0
                fine[:, np.abs(ox) > hx] = 0.0
                # Each phase's entries straight from the fine grid (0 beyond it).
                for a in range(q + 1):
                    for b in range(q + 1):
                        part = fine[a::q, b::q]
                        phases[c, a, b, : part.shape[0], : part.shape[1]] = part
            self._phases[derivatives] = phases
        return self._phases[derivatives]

    def on_box(
        self, x: float, y: float, box: tuple[int, int, int, int], derivatives: bool = False
    ) -> np.ndarray:
        """The PSF (and its derivatives along y and x) centred at (x, y), on a box of pixels.

        Parameters
        ----------
        x, y : float
            Centre (px).
        box : (int, int, int, int)
            ``(x0, y0, nx, ny)``: pixel of the box's [0, 0] (same frame as x, y) and size.
        derivatives : bool
            Also the two derivatives.

        Returns
        -------
        numpy.ndarray
            Shape (1, ny, nx), or (3, ny, nx) with derivatives: value, d/dy and d/dx of
            the PSF over its offset, bilinear in the table, 0 beyond the PSF's stamp.
        """
        x0, y0, nx, ny = box
        phases = self._table(derivatives)
        hy, hx = self.half
        rows = _taps(y0 - y + hy + 1, ny, self._size[0])
        cols = _taps(x0 - x + hx + 1, nx, self._size[1])
        if rows is None or cols is None:
            return np.zeros((len(phases), ny, nx))
        (ro, iy, ay, wy), (co, ix, ax, wx) = rows, cols
        n, m = ro.stop - ro.start, co.stop - co.start
        # The four entries around each pixel (phases (ay, ax), (ay, ax + 1), (ay + 1, ax),
        # (ay + 1, ax + 1)), blended in one product; gathered by slicing, not by index
        # lists (1.8 against 3.9 us a call: the dipole fits make thousands).
        corners = phases[:, ay : ay + 2, ax : ax + 2, iy : iy + n, ix : ix + m]
        weights = np.array([(1.0 - wy) * (1.0 - wx), (1.0 - wy) * wx, wy * (1.0 - wx), wy * wx])
        blend = (weights @ corners.reshape(len(phases), 4, n * m)).reshape(len(phases), n, m)
        if n == ny and m == nx:
            return blend
        out = np.zeros((len(phases), ny, nx))
        out[:, ro, co] = blend
        return out

    def shifted(self, x: float, y: float) -> tuple[np.ndarray, int, int]:
        """The PSF centred at (x, y) on a stamp one pixel larger than the PSF image.

        Returns
        -------
        stamp : numpy.ndarray
            The shifted PSF (:meth:`on_box`), shape (2 hy + 2, 2 hx + 2).
        x0, y0 : int
            Pixel of the stamp's [0, 0].
        """
        hy, hx = self.half
        x0, y0 = int(np.floor(x)) - hx, int(np.floor(y)) - hy
        return self.on_box(x, y, (x0, y0, 2 * hx + 2, 2 * hy + 2))[0], x0, y0

    def stamp(self, x: float, y: float) -> tuple[np.ndarray, int, int]:
        """The PSF centred at (x, y), normalised to sum :attr:`enclosed` on its stamp.

        Returns
        -------
        stamp : numpy.ndarray
            The shifted PSF.
        x0, y0 : int
            Image pixel of the stamp's [0, 0].
        """
        img, x0, y0 = self.shifted(x, y)
        total = img.sum()
        return (img * (self.enclosed / total) if total > 0 else img), x0, y0


def centre_psf(psf: np.ndarray | PsfModel) -> np.ndarray:
    """A PSF image as given, or a model's at the image centre.

    Parameters
    ----------
    psf : numpy.ndarray or PsfModel
        The PSF.

    Returns
    -------
    numpy.ndarray
    """
    return psf.image if isinstance(psf, PsfModel) else psf


def _taps(offset: float, n: int, size: int) -> tuple[slice, int, int, float] | None:
    """Table entries of ``n`` pixels along one axis for the bilinear blend.

    ``offset`` is the first pixel's offset from the PSF centre plus ``h + 1`` (px), so
    that it is ``k / OVERSAMPLE`` at table entry k of ``size``; the pixels step by
    OVERSAMPLE entries. Returns the pixels that fall inside the table, the index and
    phase of the entry below the first of them, and the weight of the entries above
    (at phase + 1); None when no pixel falls inside.
    """
    q = OVERSAMPLE
    f = offset * q
    r = math.floor(f)
    first = max(0, -(r // q))
    last = min(n, (size - 2 - r) // q + 1)
    if first >= last:
        return None
    index, phase = divmod(r + first * q, q)
    return slice(first, last), index, phase, f - r


def overlap(
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
    variance: np.ndarray,
    usable: np.ndarray,
    model: PsfModel,
    x: float,
    y: float,
    background: Callable[[tuple[slice, slice]], np.ndarray] | None = None,
) -> tuple[float, float]:
    """Matched-filter PSF flux at a fixed position, error from the variance plane.

    Parameters
    ----------
    image : numpy.ndarray
        The image (image units).
    variance : numpy.ndarray
        Its variance (image units^2).
    usable : numpy.ndarray
        Boolean map of the pixels that enter the fit.
    model : PsfModel
        The PSF.
    x, y : float
        Position (0-based px).
    background : callable or None
        The image's smooth background on a box of it (rows, columns), subtracted from
        the image before the fit; None when the image has none (a difference).

    Returns
    -------
    flux, err : float
        Flux and its 1-sigma error (image units); NaN when no usable pixel overlaps.
    """
    return _stamp_flux(image, variance, usable, model.stamp(x, y), background)


#: Radius (in the PSF's FWHM) of the pixels :func:`forced_psf_fit`'s chi^2 sums over: a
#: Gaussian's 99.8 % of light, its core and wing, where a residual of another shape than
#: the PSF (a dipole, a galaxy's core, a ring) differs from it most.
CHI2_RADIUS_FWHM = 1.5


def forced_psf_fit(
    image: np.ndarray,
    variance: np.ndarray,
    usable: np.ndarray,
    model: PsfModel,
    x: float,
    y: float,
) -> tuple[float, float, float]:
    """:func:`forced_psf_flux` on an image without a background, and how well the PSF
    times that flux fits the image near (x, y) (one PSF stamp made for both).

    Parameters
    ----------
    image, variance, usable : numpy.ndarray
        As :func:`forced_psf_flux`'s.
    model : PsfModel
        The PSF.
    x, y : float
        Position (0-based px).

    Returns
    -------
    flux, err, chi2 : float
        Flux and error (:func:`forced_psf_flux`), and ``sum((d - flux p)^2 / v) / (n -
        1)`` over the ``n`` usable pixels with a positive variance within
        :data:`CHI2_RADIUS_FWHM` FWHM of (x, y): about 1 for a point source on noise the
        variance describes; NaN with fewer than two such pixels or a NaN flux.
    """
    stamp = model.stamp(x, y)
    flux, err = _stamp_flux(image, variance, usable, stamp, None)
    radius = CHI2_RADIUS_FWHM * model.fwhm
    return flux, err, _stamp_chi2(image, variance, usable, stamp, (x, y, radius), flux)


def _stamp_flux(
    image: np.ndarray,
    variance: np.ndarray,
    usable: np.ndarray,
    stamp: tuple[np.ndarray, int, int],
    background: Callable[[tuple[slice, slice]], np.ndarray] | None,
) -> tuple[float, float]:
    """:func:`forced_psf_flux` with the PSF's stamp made (:meth:`PsfModel.stamp`)."""
    psf, x0, y0 = stamp
    cut = overlap(image.shape, x0, y0, *psf.shape)
    nan = float("nan")
    if cut is None:
        return nan, nan
    (iy, ix), (sy, sx) = cut
    ok = usable[iy, ix]
    d = image[iy, ix] if background is None else image[iy, ix] - background((iy, ix))
    p, d, v = psf[sy, sx].ravel(), d.ravel(), variance[iy, ix].ravel()
    if not ok.all():
        ok = ok.ravel()
        p, d, v = p[ok], d[ok], v[ok]
    # Sums of products by einsum, not BLAS: OpenBLAS runs a dot product of over 10^4
    # elements (a 106 x 106 PSF stamp) on all its threads, which on a loaded machine
    # made the catalog's ~1000 forced fits take seconds instead of 0.1 s.
    spp = float(np.einsum("i,i->", p, p))
    if p.size < 2 or not (np.isfinite(spp) and spp > 0):
        return nan, nan
    row = p / spp
    var = float(np.einsum("i,i,i->", row, row, v, dtype=np.float64))
    flux = float(np.einsum("i,i->", row, d, dtype=np.float64))
    return flux, float(np.sqrt(var)) if var > 0 else nan


def _stamp_chi2(
    image: np.ndarray,
    variance: np.ndarray,
    usable: np.ndarray,
    stamp: tuple[np.ndarray, int, int],
    circle: tuple[float, float, float],
    flux: float,
) -> float:
    """Reduced chi^2 of ``flux`` times the stamp's PSF within ``circle`` (x, y, radius;
    px) on the usable pixels with a positive variance (:func:`forced_psf_fit`)."""
    psf, x0, y0 = stamp
    x, y, radius = circle
    # only the stamp's rows and columns within the circle
    c0, c1 = (
        max(int(np.ceil(x - radius)), x0),
        min(int(np.floor(x + radius)) + 1, x0 + psf.shape[1]),
    )
    r0, r1 = (
        max(int(np.ceil(y - radius)), y0),
        min(int(np.floor(y + radius)) + 1, y0 + psf.shape[0]),
    )
    cut = overlap(image.shape, c0, r0, max(r1 - r0, 0), max(c1 - c0, 0))
    if cut is None or not np.isfinite(flux):
        return float("nan")
    (iy, ix), (sy, sx) = cut
    rows, cols = np.ogrid[iy, ix]
    near = (cols - x) ** 2 + (rows - y) ** 2 <= radius**2
    v = variance[iy, ix]
    take = near & usable[iy, ix] & (v > 0)
    n = int(np.count_nonzero(take))
    if n < 2:
        return float("nan")
    p = psf[r0 - y0 :, c0 - x0 :][sy, sx]
    r = image[iy, ix][take] - flux * p[take]
    return float(np.einsum("i,i->", r / v[take], r, dtype=np.float64)) / (n - 1)
