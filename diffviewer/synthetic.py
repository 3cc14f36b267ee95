"""Seeded synthetic science/template pairs with a known truth, for tests and benchmarks.

Stars are pixel-integrated elliptical-free Gaussians (exact integrals over each
pixel, via the error function), so the matching kernel between the two images is
known analytically: a Gaussian of width sqrt(s_sci^2 - s_tmpl^2).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from astropy.wcs import WCS
from scipy.special import erf

from diffviewer.exposure import Exposure
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
    out = np.zeros((ny + 2 * half_size, nx + 2 * half_size))
    n = 2 * half_size + 1
    x0 = np.round(x).astype(int) - half_size
    y0 = np.round(y).astype(int) - half_size
    px = _pixel_integrals(x, sigma, x0.astype(float), n)
    py = _pixel_integrals(y, sigma, y0.astype(float), n)
    for i in range(len(x)):
        if -n < x0[i] < nx and -n < y0[i] < ny:
            ys, xs = y0[i] + half_size, x0[i] + half_size
            out[ys : ys + n, xs : xs + n] += flux[i] * np.outer(py[i], px[i])
    return out[half_size : half_size + ny, half_size : half_size + nx]


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
    background_offset: float = 0.0,
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
    background_offset : float
        Constant added to the science image (a differential background to recover).

    Returns
    -------
    SyntheticPair
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    margin = 3.0 * sci_fwhm
    x = rng.uniform(margin, nx - 1 - margin, n_stars)
    y = rng.uniform(margin, ny - 1 - margin, n_stars)
    lo, hi = flux_range
    flux = lo * (hi / lo) ** rng.uniform(0.0, 1.0, n_stars) ** 2
    sig_s = sci_fwhm / FWHM_PER_SIGMA * (1.0 + sci_fwhm_gradient * (x / max(nx - 1, 1) - 0.5))
    sig_t = np.full(n_stars, tmpl_fwhm / FWHM_PER_SIGMA)
    half = int(np.ceil(5.0 * max(sig_s.max(), sig_t.max())))
    tr = np.array(transients or [], dtype=float).reshape(-1, 3)
    tr_sig = (
        sci_fwhm / FWHM_PER_SIGMA * (1.0 + sci_fwhm_gradient * (tr[:, 0] / max(nx - 1, 1) - 0.5))
    )

    sci_model = render_gaussians(
        shape,
        np.concatenate([x, tr[:, 0]]),
        np.concatenate([y, tr[:, 1]]),
        np.concatenate([flux, tr[:, 2]]),
        np.concatenate([sig_s, tr_sig]),
        half,
    )
    sci_var = (sky + np.clip(sci_model, 0, None)) / gain
    science = sci_model + background_offset + rng.normal(size=shape) * np.sqrt(sci_var)

    t = np.deg2rad(tmpl_rotation_deg)
    c = np.array([(nx - 1) / 2, (ny - 1) / 2])
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    q = rot @ (np.vstack([x, y]) - c[:, None]) + c[:, None] + np.array(tmpl_shift)[:, None]
    tmpl_model = render_gaussians(shape, q[0], q[1], flux / photometric_scale, sig_t, half)
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
    )


def _exposure(
    image: np.ndarray, variance: np.ndarray, wcs: WCS, gain: float, source: str
) -> Exposure:
    """An unmasked exposure whose header holds the WCS and the gain."""
    header = wcs.to_header()
    header["GAIN"] = (gain, "electrons per count")
    mask = np.zeros(image.shape, dtype=np.int32)
    return Exposure(image, variance, mask, wcs=wcs, header=header, source=source)
