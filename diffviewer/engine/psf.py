"""PSF size, shape and image of an exposure, measured from stars (or given, or a default).

The PSF image is the median of background-subtracted, flux-normalised cutouts of the
stars, each shifted to a common sub-pixel centre in Fourier space. Its FWHM and
ellipticity come from adaptive (Gaussian-weighted, iterated) second moments of that
stack, which for a Gaussian converge to its covariance.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.fft as sfft

from diffviewer.exposure import UNUSABLE, Exposure

FWHM_PER_SIGMA = float(2.0 * np.sqrt(2.0 * np.log(2.0)))

#: FWHM (px) of the Gaussian used when neither stars nor a given PSF are available:
#: about 1" seeing at 0.3"/px, a common ground-based case; the result says ``source='default'``.
DEFAULT_FWHM = 3.0

#: Least number of usable stars for a measured PSF.
MIN_STARS = 3

#: Most stars stacked (the first ones given); more add time, not accuracy.
MAX_STARS = 300


@dataclasses.dataclass(frozen=True, eq=False)
class PsfEstimate:
    """The PSF of one exposure.

    Attributes
    ----------
    fwhm : float
        Full width at half maximum (px) of the equivalent circular Gaussian,
        ``2.3548 * sqrt(sqrt(det C))`` for moment covariance ``C``.
    ellipticity : float
        ``1 - b/a`` from the moment covariance's eigenvalues (0 for a round PSF).
    image : numpy.ndarray
        Odd-sized, centred image of the PSF, sum 1, read-only (float64).
    n_stars : int
        Stars that went into the stack (0 unless measured).
    source : str
        'measured', 'given' (the exposure's own PSF image) or 'default'
        (a circular Gaussian of :data:`DEFAULT_FWHM`).
    """

    fwhm: float
    ellipticity: float
    image: np.ndarray
    n_stars: int
    source: str

    @property
    def sigma(self) -> float:
        """Gaussian width (px) equivalent to :attr:`fwhm`."""
        return self.fwhm / FWHM_PER_SIGMA


def cutouts(
    array: np.ndarray, xc: np.ndarray, yc: np.ndarray, half: int, fill: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Square cutouts of side ``2 * half + 1`` centred on integer pixels (vectorised).

    Parameters
    ----------
    array : numpy.ndarray
        2-D image.
    xc, yc : numpy.ndarray
        Integer centres (0-based column, row).
    half : int
        Half-width (px).
    fill : float
        Value of cutout pixels that fall outside the image.

    Returns
    -------
    stamps : numpy.ndarray
        ``(n, 2 * half + 1, 2 * half + 1)`` cutouts, same dtype as ``array``.
    inside : numpy.ndarray
        True where the whole cutout lies inside the image.
    """
    xc = np.asarray(xc, dtype=np.intp)
    yc = np.asarray(yc, dtype=np.intp)
    ny, nx = array.shape
    off = np.arange(-half, half + 1)
    rows = yc[:, None] + off[None, :]
    cols = xc[:, None] + off[None, :]
    stamps = array[np.clip(rows, 0, ny - 1)[:, :, None], np.clip(cols, 0, nx - 1)[:, None, :]]
    inside = (yc - half >= 0) & (yc + half < ny) & (xc - half >= 0) & (xc + half < nx)
    if not inside.all():
        outside = ((rows < 0) | (rows >= ny))[:, :, None] | ((cols < 0) | (cols >= nx))[:, None, :]
        stamps = np.where(outside, np.asarray(fill, dtype=stamps.dtype), stamps)
    return stamps, inside


def adaptive_moments(image: np.ndarray, iterations: int = 20) -> tuple[float, float, np.ndarray]:
    """Centroid and covariance of a compact source by iterated Gaussian-weighted moments.

    With weight covariance ``W`` the weighted moments of a Gaussian of covariance ``C``
    are ``(C^-1 + W^-1)^-1``; iterating ``W <- 2 M`` converges to ``W = C``.

    Parameters
    ----------
    image : numpy.ndarray
        Background-subtracted cutout with the source near its centre.
    iterations : int
        Most iterations.

    Returns
    -------
    (float, float, numpy.ndarray)
        x and y centroid (px, cutout coordinates) and the 2x2 covariance (px^2).
    """
    ny, nx = image.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    x0, y0 = (nx - 1) / 2.0, (ny - 1) / 2.0
    cov = np.eye(2) * 2.0**2
    for _ in range(iterations):
        inv = np.linalg.inv(cov)
        dx, dy = xx - x0, yy - y0
        w = np.exp(-0.5 * (inv[0, 0] * dx * dx + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy * dy))
        f = w * image
        s = f.sum()
        if not np.isfinite(s) or s <= 0:
            break
        x1, y1 = (f * xx).sum() / s, (f * yy).sum() / s
        dx, dy = xx - x1, yy - y1
        m = (
            np.array(
                [
                    [(f * dx * dx).sum(), (f * dx * dy).sum()],
                    [(f * dx * dy).sum(), (f * dy * dy).sum()],
                ]
            )
            / s
        )
        new = 2.0 * m
        if np.linalg.det(new) <= 0 or not np.all(np.isfinite(new)):
            break
        new = np.minimum(new, (max(nx, ny) / 2.0) ** 2)  # keep the weight inside the cutout
        done = np.allclose(new, cov, rtol=1e-4) and abs(x1 - x0) < 1e-4 and abs(y1 - y0) < 1e-4
        x0, y0, cov = x1, y1, new
        if done:
            break
    return float(x0), float(y0), cov


def shape_from_covariance(cov: np.ndarray) -> tuple[float, float]:
    """FWHM (px) of the equal-area circular Gaussian and ellipticity ``1 - b/a``."""
    ev = np.clip(np.linalg.eigvalsh(cov), 1e-6, None)
    a, b = np.sqrt(ev.max()), np.sqrt(ev.min())
    return float(FWHM_PER_SIGMA * np.sqrt(a * b)), float(1.0 - b / a)


def gaussian_image(fwhm: float, half: int) -> np.ndarray:
    """A centred circular Gaussian of side ``2 * half + 1``, sum 1."""
    s = fwhm / FWHM_PER_SIGMA
    r = np.arange(-half, half + 1)
    g = np.exp(-0.5 * (r / s) ** 2)
    img = np.outer(g, g)
    return img / img.sum()


def _frozen(a: np.ndarray) -> np.ndarray:
    out = np.array(a, dtype=np.float64)
    out.flags.writeable = False
    return out


def odd_square(image: np.ndarray) -> np.ndarray:
    """Zero-pad a PSF image to an odd square with the same centre pixel.

    An odd axis is padded equally on both sides; an even axis (no centre pixel) gets one
    extra zero row or column at its end first, so its centre is taken as ``n // 2``.
    """
    img = np.asarray(image, dtype=np.float64)
    img = np.pad(img, ((0, 1 - img.shape[0] % 2), (0, 1 - img.shape[1] % 2)))
    side = max(img.shape)
    py, px = (side - img.shape[0]) // 2, (side - img.shape[1]) // 2
    return np.pad(img, ((py, py), (px, px)))


def _estimate(image: np.ndarray, n_stars: int, source: str) -> PsfEstimate:
    """Wrap a PSF image (made an odd square and normalised here) with its moments."""
    img = odd_square(image)
    img = img / img.sum()
    _, _, cov = adaptive_moments(img)
    fwhm, ell = shape_from_covariance(cov)
    return PsfEstimate(fwhm, ell, _frozen(img), n_stars, source)


def fourier_shift(stamps: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Shift each stamp by (dx, dy) px (positive moves content right/up), periodically.

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(n, m, m)`` stack.
    dx, dy : numpy.ndarray
        Shifts per stamp (px).

    Returns
    -------
    numpy.ndarray
        Shifted stack (float64).
    """
    my, mx = stamps.shape[1:]
    fy = sfft.fftfreq(my)[:, None]
    fx = sfft.rfftfreq(mx)[None, :]
    phase = np.exp(-2j * np.pi * (fx[None] * dx[:, None, None] + fy[None] * dy[:, None, None]))
    return sfft.irfft2(sfft.rfft2(stamps, axes=(1, 2)) * phase, s=(my, mx), axes=(1, 2))


def stack_stars(
    exposure: Exposure, x: np.ndarray, y: np.ndarray, half: int
) -> tuple[np.ndarray, int]:
    """Median stack of normalised, recentred star cutouts.

    Parameters
    ----------
    exposure : Exposure
        The image.
    x, y : numpy.ndarray
        Star positions (0-based px).
    half : int
        Cutout half-width (px).

    Returns
    -------
    (numpy.ndarray, int)
        The stack (sum 1; zeros when no star was usable) and the number of stars used.
    """
    xi, yi = np.rint(x).astype(np.intp), np.rint(y).astype(np.intp)
    stamps, inside = cutouts(exposure.image, xi, yi, half)
    masks, _ = cutouts(exposure.mask, xi, yi, half)
    ok = inside & ~np.any((masks & int(UNUSABLE)) != 0, axis=(1, 2))
    stamps = stamps[ok].astype(np.float64)
    if len(stamps) == 0:
        return np.zeros((2 * half + 1, 2 * half + 1)), 0
    border = np.concatenate(
        [stamps[:, 0, :], stamps[:, -1, :], stamps[:, :, 0], stamps[:, :, -1]], axis=1
    )
    stamps = stamps - np.median(border, axis=1)[:, None, None]
    r = np.arange(-half, half + 1, dtype=float)
    # Centroid from Gaussian-weighted first moments about the integer centre (sigma = half / 3).
    w = np.exp(-0.5 * (r / max(half / 3.0, 1.0)) ** 2)
    wimg = stamps * w[None, :, None] * w[None, None, :]
    tot = wimg.sum(axis=(1, 2))
    good = tot > 0
    stamps, wimg, tot = stamps[good], wimg[good], tot[good]
    if len(stamps) == 0:
        return np.zeros((2 * half + 1, 2 * half + 1)), 0
    cx = (wimg.sum(axis=1) * r[None, :]).sum(axis=1) / tot
    cy = (wimg.sum(axis=2) * r[None, :]).sum(axis=1) / tot
    shifted = fourier_shift(stamps, -np.clip(cx, -1.5, 1.5), -np.clip(cy, -1.5, 1.5))
    flux = shifted.sum(axis=(1, 2))
    keep = flux > 0
    if not keep.any():
        return np.zeros((2 * half + 1, 2 * half + 1)), 0
    stack = np.median(shifted[keep] / flux[keep, None, None], axis=0)
    return stack / stack.sum(), int(keep.sum())


def estimate_psf(exposure: Exposure, x: np.ndarray, y: np.ndarray) -> PsfEstimate:
    """Measure the PSF from stars; else use the exposure's PSF image; else a default.

    Parameters
    ----------
    exposure : Exposure
        The image (background need not be subtracted: each cutout's border median is).
    x, y : array-like
        Positions (0-based px) of isolated, unsaturated stars, brightest first preferred;
        at most :data:`MAX_STARS` are used.

    Returns
    -------
    PsfEstimate
        ``source`` says which of the three applied: 'measured' with at least
        :data:`MIN_STARS` usable stars, else 'given' when ``exposure.psf`` exists,
        else 'default' (circular Gaussian, FWHM :data:`DEFAULT_FWHM` px).
    """
    x = np.asarray(x, dtype=float)[:MAX_STARS]
    y = np.asarray(y, dtype=float)[:MAX_STARS]
    if len(x) >= MIN_STARS:
        half = 12
        for _ in range(2):
            stack, n = stack_stars(exposure, x, y, half)
            if n < MIN_STARS:
                break
            est = _estimate(stack, n, "measured")
            want = int(np.clip(np.ceil(3.0 * est.fwhm), 6, 40))
            if abs(want - half) <= 2:
                return est
            half = want
        if n >= MIN_STARS:
            return _estimate(stack, n, "measured")
    if exposure.psf is not None and np.isfinite(exposure.psf).all() and exposure.psf.sum() > 0:
        return _estimate(np.asarray(exposure.psf, dtype=float), 0, "given")
    return _estimate(gaussian_image(DEFAULT_FWHM, int(np.ceil(3 * DEFAULT_FWHM))), 0, "default")
