"""Seeded synthetic science/template pairs with a known truth, for tests and benchmarks.

Stars are either pixel-integrated round Gaussians (exact integrals over each pixel,
via the error function), so the matching kernel between the two images is known
analytically: a Gaussian of width sqrt(s_sci^2 - s_tmpl^2); or elliptical Moffat
profiles (Moffat 1969) with the wings of real seeing, whose width, ellipticity and
position angle may vary across the science image. Either way every star holds exactly
its flux, so the matching kernel's sum is exactly the photometric scale."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
from astropy.wcs import WCS
from scipy.special import erf

from diffviewer.exposure import Exposure, MaskPlane
from diffviewer.stats import FWHM_PER_SIGMA


@dataclasses.dataclass(frozen=True)
class SyntheticPair:
    """A science/template pair and what went into it.

    Attributes
    ----------
    science, template : Exposure
        The two images with their true variance and a TAN WCS.
    star_x, star_y : numpy.ndarray
        Star positions on the science grid (0-based pixels).
    star_flux : numpy.ndarray
        Star fluxes (counts, the same in both images).
    transient_x, transient_y, transient_flux : numpy.ndarray
        Point sources added to the science image only.
    sci_sigma, tmpl_sigma : float
        Gaussian PSF widths (px) at the image centre.
    sky_sigma : float
        Sky noise per pixel (counts) of the science image.
    sci_psf : numpy.ndarray
        The science PSF at the image centre as the renderer holds every source (its box,
        sum 1): the exact PSF a given-PSF run can be handed.
    """

    science: Exposure
    template: Exposure
    star_x: np.ndarray
    star_y: np.ndarray
    star_flux: np.ndarray
    transient_x: np.ndarray
    transient_y: np.ndarray
    transient_flux: np.ndarray
    sci_sigma: float
    tmpl_sigma: float
    sky_sigma: float
    sci_psf: np.ndarray

    @property
    def kernel_sigma(self) -> float:
        """Width (px) of the Gaussian that matches the template PSF to the science PSF."""
        return float(np.sqrt(self.sci_sigma**2 - self.tmpl_sigma**2))


def _pixel_integrals(
    centre: np.ndarray, sigma: np.ndarray, start: np.ndarray, n: int
) -> np.ndarray:
    """Fraction of a 1-D Gaussian falling in each of ``n`` pixels from ``start`` (per source)."""
    edges = start[:, None] + np.arange(n + 1)[None, :] - 0.5
    cdf = 0.5 * (1.0 + erf((edges - centre[:, None]) / (np.sqrt(2.0) * sigma[:, None])))
    return np.diff(cdf, axis=1)


def render_gaussians(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    sigma: np.ndarray,
    half_size: int,
) -> np.ndarray:
    """Render pixel-integrated circular Gaussians into an image.

    Parameters
    ----------
    shape : (int, int)
        Image shape (ny, nx).
    x, y : numpy.ndarray
        Centres (0-based pixels).
    flux : numpy.ndarray
        Total fluxes.
    sigma : numpy.ndarray
        Gaussian widths (px), one per source.
    half_size : int
        Each source is rendered in a box of side ``2 * half_size + 1``.

    Returns
    -------
    numpy.ndarray
        float64 image.
    """
    ny, nx = shape
    n = 2 * half_size + 1
    # A box's side of margin around the image: a source centred beyond the edge still
    # lights the pixels its box reaches.
    out = np.zeros((ny + 2 * n, nx + 2 * n))
    x0 = np.round(x).astype(int) - half_size
    y0 = np.round(y).astype(int) - half_size
    px = _pixel_integrals(x, sigma, x0.astype(float), n)
    py = _pixel_integrals(y, sigma, y0.astype(float), n)
    for i in range(len(x)):
        if -n < x0[i] < nx and -n < y0[i] < ny:
            ys, xs = y0[i] + n, x0[i] + n
            out[ys : ys + n, xs : xs + n] += flux[i] * np.outer(py[i], px[i])
    return out[n : n + ny, n : n + nx]


def moffat_alpha(fwhm: np.ndarray | float, beta: float) -> np.ndarray:
    """Moffat core width alpha (px) for a FWHM (px) and index beta (Moffat 1969).

    Parameters
    ----------
    fwhm : float or numpy.ndarray
        Full width at half maximum (px), the geometric mean of the two axes.
    beta : float
        Moffat index (> 1); smaller is wingier (atmospheric seeing: 2.5-4.5).

    Returns
    -------
    numpy.ndarray
        ``fwhm / (2 sqrt(2**(1/beta) - 1))``.
    """
    return np.asarray(fwhm, dtype=float) / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def render_moffats(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    fwhm: np.ndarray,
    beta: float,
    ellipticity: np.ndarray,
    angle_deg: np.ndarray,
    half_size: int,
    oversample: int = 3,
) -> np.ndarray:
    """Render elliptical Moffat profiles, each summing exactly to its flux in its box.

    Each profile is sampled on an ``oversample`` x ``oversample`` sub-grid per pixel and
    renormalised to its flux within its box, so that the flux in the image is the flux
    given (a star's truncated wings are not lost): the kernel that matches two such
    images has the exact sum ``flux ratio`` whatever the widths.

    Parameters
    ----------
    shape : (int, int)
        Image shape (ny, nx).
    x, y : numpy.ndarray
        Centres (0-based pixels).
    flux : numpy.ndarray
        Total fluxes.
    fwhm : numpy.ndarray
        FWHM (px), geometric mean of the axes, one per source.
    beta : float
        Moffat index.
    ellipticity : numpy.ndarray
        ``1 - b/a`` per source (0: round).
    angle_deg : numpy.ndarray
        Position angle of the major axis (degrees counter-clockwise from +x).
    half_size : int
        Each source is rendered in a box of side ``2 * half_size + 1``.
    oversample : int
        Sub-pixel samples per pixel side.

    Returns
    -------
    numpy.ndarray
        float64 image.
    """
    ny, nx = shape
    n = 2 * half_size + 1
    out = np.zeros((ny + 2 * n, nx + 2 * n))  # a box's side of margin, as render_gaussians
    sub = (np.arange(n * oversample) + 0.5) / oversample - 0.5 - half_size
    alpha = moffat_alpha(fwhm, beta)
    q = 1.0 - np.asarray(ellipticity, dtype=float)
    t = np.deg2rad(np.asarray(angle_deg, dtype=float))
    for i in range(len(x)):
        ix, iy = round(float(x[i])), round(float(y[i]))
        x0, y0 = ix - half_size, iy - half_size  # the box's first column and row
        if not (-n < x0 < nx and -n < y0 < ny):
            continue
        dx = sub[None, :] + ix - x[i]
        dy = sub[:, None] + iy - y[i]
        u = dx * np.cos(t[i]) + dy * np.sin(t[i])
        v = -dx * np.sin(t[i]) + dy * np.cos(t[i])
        r2 = (q[i] * u**2 + v**2 / q[i]) / alpha[i] ** 2
        prof = (1.0 + r2) ** (-beta)
        prof = prof.reshape(n, oversample, n, oversample).sum(axis=(1, 3))
        out[y0 + n : y0 + 2 * n, x0 + n : x0 + 2 * n] += flux[i] * prof / prof.sum()
    return out[n : n + ny, n : n + nx]


def tan_wcs(
    shape: tuple[int, int],
    scale_arcsec: float = 1.0,
    rotation_deg: float = 0.0,
    shift: tuple[float, float] = (0.0, 0.0),
) -> WCS:
    """A TAN WCS whose pixel grid is rotated and shifted about the image centre.

    A sky point at science pixel ``p`` lands on pixel ``R (p - c) + c + shift`` of a
    grid with this WCS, where ``c`` is the image centre and ``R`` the rotation.

    Parameters
    ----------
    shape : (int, int)
        Image shape (ny, nx).
    scale_arcsec : float
        Pixel scale.
    rotation_deg : float
        Rotation of the grid (counter-clockwise).
    shift : (float, float)
        Offset (dx, dy) in pixels.

    Returns
    -------
    astropy.wcs.WCS
    """
    ny, nx = shape
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [185.0, 12.0]
    wcs.wcs.crpix = [(nx - 1) / 2 + 1 + shift[0], (ny - 1) / 2 + 1 + shift[1]]
    t = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    scale = np.diag([-scale_arcsec / 3600.0, scale_arcsec / 3600.0])
    wcs.wcs.cd = scale @ rot.T
    return wcs


#: Issue 12's synthetic conditions (the benchmarks' pairs and the tests that hold the
#: engine to them): Moffat stars of beta 2.5 in the science matched from a steeper beta
#: 3.5 template, FWHM 4.0 and 2.8 px, flux ratio 1.3, a 0.3 px template shift and a
#: differential sky gradient; :func:`make_pair`'s keywords.
ISSUE12_CONDITIONS: dict[str, Any] = {
    "profile": "moffat",
    "sci_beta": 2.5,
    "tmpl_beta": 3.5,
    "photometric_scale": 1.3,
    "tmpl_shift": (0.3, 0.3),
    "background_gradient": (0.01, -0.005),
    "sci_fwhm": 4.0,
    "tmpl_fwhm": 2.8,
}


def make_pair(
    shape: tuple[int, int] = (512, 512),
    n_stars: int = 400,
    *,
    seed: int = 0,
    sci_fwhm: float = 4.0,
    tmpl_fwhm: float = 2.5,
    sci_fwhm_gradient: float = 0.0,
    sky: float = 1000.0,
    tmpl_sky: float = 1000.0,
    gain: float = 1.0,
    tmpl_noise_scale: float = 0.5,
    flux_range: tuple[float, float] = (3e3, 3e5),
    transients: list[tuple[float, float, float]] | None = None,
    tmpl_rotation_deg: float = 0.0,
    tmpl_shift: tuple[float, float] = (0.0, 0.0),
    photometric_scale: float = 1.0,
    photometric_gradient: tuple[float, float] = (0.0, 0.0),
    background_offset: float = 0.0,
    background_gradient: tuple[float, float] = (0.0, 0.0),
    profile: str = "gaussian",
    sci_beta: float = 3.0,
    tmpl_beta: float = 3.0,
    sci_ellipticity: tuple[float, float] = (0.0, 0.0),
    sci_angle_deg: tuple[float, float] = (0.0, 0.0),
) -> SyntheticPair:
    """Make a seeded science/template pair of the same star field.

    The science image is sky-subtracted stars plus Poisson-like Gaussian noise;
    the template is the same stars with a narrower PSF (and optionally on a rotated,
    shifted grid) and ``tmpl_noise_scale`` times the science noise, as a deep coadd.

    Parameters
    ----------
    shape : (int, int)
        Image shape (ny, nx) of both images.
    n_stars : int
        Number of stars (power-law fluxes within ``flux_range``).
    seed : int
        Random seed; the same arguments give the same pair.
    sci_fwhm, tmpl_fwhm : float
        PSF FWHM (px) at the image centre.
    sci_fwhm_gradient : float
        Fractional change of the science FWHM from the left to the right edge
        (0 = constant PSF); the template PSF is constant.
    sky, tmpl_sky : float
        Sky level (counts) that sets each image's noise; it is subtracted.
    gain : float
        Electrons per count of the science image.
    tmpl_noise_scale : float
        Template noise as a fraction of what its sky would give.
    flux_range : (float, float)
        Least and largest star flux (counts).
    transients : list of (x, y, flux), optional
        Point sources added to the science image only (science PSF).
    tmpl_rotation_deg, tmpl_shift : float, (float, float)
        The template's grid relative to the science grid (see :func:`tan_wcs`).
    photometric_scale : float
        Template fluxes are the science fluxes divided by this (the kernel sum to recover).
    photometric_gradient : (float, float)
        Fractional change of ``photometric_scale`` from the image centre to the right and
        to the top edge, linear in x and y (a transparency or flat-field difference
        across the field: the kernel sum to recover varies).
    background_offset : float
        Constant added to the science image (a differential background to recover).
    background_gradient : (float, float)
        Slope (counts per px along x, y, zero at the image centre) added to the science
        image with the offset.
    profile : {'gaussian', 'moffat'}
        Star profile. Gaussians are exact pixel integrals (the matching kernel is a
        known Gaussian); Moffats (:func:`render_moffats`) have the wings of real seeing.
    sci_beta, tmpl_beta : float
        Moffat indices of the science and template PSFs (``profile='moffat'``).
    sci_ellipticity : (float, float)
        Science PSF ellipticity ``1 - b/a`` at the left and right edges, linear in x
        between (``profile='moffat'``).
    sci_angle_deg : (float, float)
        Science PSF position angle (degrees) at the bottom and top edges, linear in y.

    Returns
    -------
    SyntheticPair
    """
    if profile not in ("gaussian", "moffat"):
        raise ValueError(f"profile must be 'gaussian' or 'moffat', not {profile!r}")
    if profile == "gaussian" and any(sci_ellipticity):
        raise ValueError("elliptical PSFs need profile='moffat'")
    rng = np.random.default_rng(seed)
    ny, nx = shape
    # Stars keep 3 FWHM from the edges, or sit at the centre of a smaller image.
    margin = min(3.0 * sci_fwhm, (min(shape) - 1) / 2)
    x = rng.uniform(margin, nx - 1 - margin, n_stars)
    y = rng.uniform(margin, ny - 1 - margin, n_stars)
    lo, hi = flux_range
    flux = lo * (hi / lo) ** rng.uniform(0.0, 1.0, n_stars) ** 2
    tr = np.array(transients or [], dtype=float).reshape(-1, 3)
    sx, sy = np.concatenate([x, tr[:, 0]]), np.concatenate([y, tr[:, 1]])
    fx, fy = sx / max(nx - 1, 1), sy / max(ny - 1, 1)
    sci_fw = sci_fwhm * (1.0 + sci_fwhm_gradient * (fx - 0.5))
    sci_e = sci_ellipticity[0] + (sci_ellipticity[1] - sci_ellipticity[0]) * fx
    sci_pa = sci_angle_deg[0] + (sci_angle_deg[1] - sci_angle_deg[0]) * fy
    widest = max(float(sci_fw.max()), tmpl_fwhm)
    half = int(np.ceil(5.0 * widest / FWHM_PER_SIGMA if profile == "gaussian" else 6.0 * widest))
    stars = functools.partial(_render_stars, profile, shape, half)
    sci_model = stars(sx, sy, np.concatenate([flux, tr[:, 2]]), sci_fw, sci_e, sci_pa, sci_beta)
    sci_var = (sky + np.clip(sci_model, 0, None)) / gain
    gx, gy = background_gradient
    yy, xx = np.mgrid[0:ny, 0:nx]
    sky_model = background_offset + gx * (xx - (nx - 1) / 2) + gy * (yy - (ny - 1) / 2)
    science = sci_model + sky_model + rng.normal(size=shape) * np.sqrt(sci_var)

    t = np.deg2rad(tmpl_rotation_deg)
    c = np.array([(nx - 1) / 2, (ny - 1) / 2])
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    q = rot @ (np.vstack([x, y]) - c[:, None]) + c[:, None] + np.array(tmpl_shift)[:, None]
    zeros = np.zeros(n_stars)
    tmpl_fw = np.full(n_stars, tmpl_fwhm)
    scale = photometric_scale * (
        1.0
        + photometric_gradient[0] * (2.0 * fx[:n_stars] - 1.0)
        + photometric_gradient[1] * (2.0 * fy[:n_stars] - 1.0)
    )
    tmpl_model = stars(q[0], q[1], flux / scale, tmpl_fw, zeros, zeros, tmpl_beta)
    tmpl_var = tmpl_noise_scale**2 * (tmpl_sky + np.clip(tmpl_model, 0, None)) / gain
    template = tmpl_model + rng.normal(size=shape) * np.sqrt(tmpl_var)

    sci_exp = _exposure(science, sci_var, tan_wcs(shape), gain, f"synthetic science (seed {seed})")
    tmpl_wcs = tan_wcs(shape, rotation_deg=tmpl_rotation_deg, shift=tmpl_shift)
    tmpl_exp = _exposure(template, tmpl_var, tmpl_wcs, gain, f"synthetic template (seed {seed})")
    return SyntheticPair(
        sci_exp,
        tmpl_exp,
        x,
        y,
        flux,
        tr[:, 0],
        tr[:, 1],
        tr[:, 2],
        sci_fwhm / FWHM_PER_SIGMA,
        tmpl_fwhm / FWHM_PER_SIGMA,
        float(np.sqrt(sky / gain)),
        _render_stars(
            profile,
            (2 * half + 1, 2 * half + 1),
            half,
            np.array([float(half)]),
            np.array([float(half)]),
            np.ones(1),
            np.array([sci_fwhm]),
            np.array([float(np.mean(sci_ellipticity))]),
            np.array([float(np.mean(sci_angle_deg))]),
            sci_beta,
        ),
    )


def _render_stars(
    profile: str,
    shape: tuple[int, int],
    half: int,
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    fwhm: np.ndarray,
    ellipticity: np.ndarray,
    angle_deg: np.ndarray,
    beta: float,
) -> np.ndarray:
    """Stars of one profile: :func:`render_gaussians` (round) or :func:`render_moffats`."""
    if profile == "gaussian":
        return render_gaussians(shape, x, y, flux, fwhm / FWHM_PER_SIGMA, half)
    return render_moffats(shape, x, y, flux, fwhm, beta, ellipticity, angle_deg, half)


def _exposure(
    image: np.ndarray, variance: np.ndarray, wcs: WCS, gain: float, source: str
) -> Exposure:
    """An unmasked exposure whose header holds the WCS and the gain."""
    header = wcs.to_header()
    header["GAIN"] = (gain, "electrons per count")
    mask = np.zeros(image.shape, dtype=np.int32)
    return Exposure(image, variance, mask, wcs=wcs, header=header, source=source)


#: Counts a synthetic cosmic ray or hot column pixel holds (above the sky).
DEFECT_COUNTS = 5e4


def with_defects(
    exposure: Exposure, fraction: float, columns: tuple[int, ...], seed: int
) -> tuple[Exposure, np.ndarray]:
    """``exposure`` with cosmic rays on ``fraction`` of its pixels (masked CR) and hot
    columns (masked BAD), each holding :data:`DEFECT_COUNTS`; and the map of both.

    Parameters
    ----------
    exposure : Exposure
        The image.
    fraction : float
        Share of the pixels hit by a cosmic ray, drawn independently.
    columns : tuple of int
        The hot columns (0-based x).
    seed : int
        Of the cosmic rays' positions.

    Returns
    -------
    (Exposure, numpy.ndarray)
        The spoilt exposure and where it was spoilt.
    """
    hit = np.random.default_rng(seed).random(exposure.shape) < fraction
    planes = np.where(hit, int(MaskPlane.CR), 0)
    planes[:, list(columns)] = int(MaskPlane.BAD)
    hit[:, list(columns)] = True
    image = np.where(hit, np.float32(DEFECT_COUNTS), exposure.image)
    mask = exposure.mask | planes.astype(exposure.mask.dtype)
    return exposure.replace(image=image, mask=mask), hit
