"""Score images: ZOGY's corrected score S_corr and the Alard-Lupton preconvolution score.

Both scores are matched-filter images normalised by their own noise, so that a
point source's peak is its detection S/N and empty sky has unit variance.

ZOGY follows Zackay, Ofek & Gal-Yam (2016, ApJ 830, 27; "ZOGY" below): with the
new image N, the reference R, their PSFs P_n, P_r, sky noise sigma_n, sigma_r and
flux zero points F_n, F_r, and the denominator

    den = sigma_n^2 F_r^2 |P_r^|^2 + sigma_r^2 F_n^2 |P_n^|^2            (Fourier space)

the proper difference is D^ = (F_r P_r^ N^ - F_n P_n^ R^) / sqrt(den) (eq. 13), its
PSF P_D^ = F_r F_n P_r^ P_n^ / (F_D sqrt(den)) with F_D = F_r F_n /
sqrt(sigma_n^2 F_r^2 + sigma_r^2 F_n^2) (eqs. 14-15), and the score
S = F_D D (x) flip(P_D) (eq. 17) is the same as S = k_n (x) N - k_r (x) R with

    k_n^ = F_n F_r^2 conj(P_n^) |P_r^|^2 / den,   k_r^ = F_r F_n^2 conj(P_r^) |P_n^|^2 / den

(eqs. 26-27). The corrected score divides S by its standard deviation computed from
the images' own variance maps, which holds the sky and the source noise:
V(S_N) = V_N (x) k_n^2, V(S_R) = V_R (x) k_r^2 (eqs. 28-29), plus the astrometric
term sigma_ast^2 (|grad S_N|^2 + |grad S_R|^2) (eqs. 30-31), kept only where the
gradients stand above the sky noise's so that empty sky keeps unit variance:
S_corr = S / sqrt(V(S_N) + V(S_R) + V_ast) (eq. 25).

The kernels are built once on a small grid from the PSF images and used for both S
and its variance, so S_corr stays exactly normalised whatever their truncation.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.fft as sfft
from scipy import ndimage
from scipy.interpolate import CubicSpline
from scipy.signal import fftconvolve

from diffviewer.config import ScoreConfig
from diffviewer.engine.kernel import KernelFit
from diffviewer.engine.progress import Reporter
from diffviewer.engine.subtract import footprint_half_width, grow_planes, template_planes
from diffviewer.errors import InputError
from diffviewer.exposure import MASK_DTYPE, UNUSABLE, Exposure, MaskPlane
from diffviewer.stats import robust_std


@dataclasses.dataclass(frozen=True)
class ScoreResult:
    """A score image and what it was made from.

    Attributes
    ----------
    image : numpy.ndarray
        The score (float32, read-only): S/N of a point source at each pixel, unit
        variance in empty sky, 0 where ``mask`` has an unusable plane.
    method : str
        ``'zogy'`` (S_corr) or ``'al'`` (Alard-Lupton preconvolution).
    psf : numpy.ndarray
        PSF (small odd image, sum 1) of the proper difference (ZOGY) or of the
        difference (AL).
    proper_difference : numpy.ndarray or None
        ZOGY's proper difference D (float32, read-only; unit sky noise), None for AL.
    mask : numpy.ndarray
        int32 mask planes; the score is not valid where any plane of
        :data:`~diffviewer.exposure.UNUSABLE` is set (NO_DATA where the inputs had none).
    noise_std : float
        Robust (MAD) standard deviation of the score over its valid pixels: 1 for a
        correct noise model; larger when the variance maps underestimate the noise.
    sigma_science, sigma_template : float
        Robust sky noise of the science and template after background subtraction
        (image units; NaN for AL).
    """

    image: np.ndarray
    method: str
    psf: np.ndarray
    proper_difference: np.ndarray | None
    mask: np.ndarray
    noise_std: float
    sigma_science: float = float("nan")
    sigma_template: float = float("nan")

    def __post_init__(self) -> None:
        for name in ("image", "psf", "proper_difference", "mask"):
            arr = getattr(self, name)
            if arr is not None:
                arr.flags.writeable = False


def sampled_robust_std(values: np.ndarray, max_samples: int = 1_000_000) -> float:
    """Robust (1.4826 MAD) standard deviation of at most ``max_samples`` evenly spaced values.

    Parameters
    ----------
    values : numpy.ndarray
        Samples (any shape).
    max_samples : int
        Larger inputs are subsampled regularly (a median of 16 M values costs 0.3 s).

    Returns
    -------
    float
        NaN for an empty input.
    """
    flat = np.asarray(values).ravel()
    return robust_std(flat[:: max(1, flat.size // max_samples)].astype(np.float64))


def estimate_background(image: np.ndarray, good: np.ndarray, mesh: int) -> tuple[np.ndarray, float]:
    """Smooth sky background and sky noise from sigma-clipped statistics per mesh.

    The image is cut into ``mesh`` x ``mesh`` cells; in each, the median of the good
    pixels is clipped at 3 sigma (sigma from the interquartile range) three times.
    Cells more than sigma from the median of their 3 x 3 neighbours take that median,
    and the grid is interpolated with a bicubic spline through the cell centres
    (SExtractor/photutils Background2D style) by natural cubic splines along x, then y.

    Parameters
    ----------
    image : numpy.ndarray
        The image (image units).
    good : numpy.ndarray
        Boolean map of usable pixels.
    mesh : int
        Cell side (px); a side shorter than the image uses one cell along it.

    Returns
    -------
    background : numpy.ndarray
        float32 background image.
    sigma : float
        Sky noise per pixel: the median over the cells of the clipped sigma.

    Raises
    ------
    InputError
        When no pixel is usable.
    """
    ny, nx = image.shape
    my, mx = min(mesh, ny), min(mesh, nx)
    gy, gx = -(-ny // my), -(-nx // mx)
    data = np.full((gy * my, gx * mx), np.nan, dtype=np.float32)
    data[:ny, :nx] = np.where(good, image, np.nan)
    cells = data.reshape(gy, my, gx, mx).transpose(0, 2, 1, 3).reshape(gy, gx, my * mx)
    cells = np.sort(cells, axis=2)
    n_valid = np.sum(np.isfinite(cells), axis=2)
    if not np.any(n_valid):
        raise InputError("no usable pixel to estimate the background: every pixel is masked")
    lo_idx = np.zeros((gy, gx), dtype=np.int64)
    hi_idx = n_valid.astype(np.int64)
    for _ in range(3):
        n = np.maximum(hi_idx - lo_idx, 1)
        last = cells.shape[2] - 1
        q1, med, q3 = (
            np.take_along_axis(
                cells, np.minimum(lo_idx + (n * f).astype(np.int64), last)[..., None], 2
            )[..., 0]
            for f in (0.25, 0.5, 0.75)
        )
        sig = (q3 - q1) / 1.349
        lo_v, hi_v = (med - 3.0 * sig)[..., None], (med + 3.0 * sig)[..., None]
        lo_idx = np.sum(cells < lo_v, axis=2)
        hi_idx = np.sum(cells <= hi_v, axis=2)
    # A cell needs half its pixels: the median of a mostly masked cell stands for the
    # unmasked part, off the cell centre. Other cells take their nearest usable cell's value.
    cell_pixels = np.outer(
        np.minimum(my, ny - np.arange(gy) * my), np.minimum(mx, nx - np.arange(gx) * mx)
    )
    usable = (n_valid >= 0.5 * cell_pixels) & np.isfinite(med) & (hi_idx > lo_idx)
    if not np.any(usable):
        usable = (n_valid > 0) & np.isfinite(med)
    nearest = ndimage.distance_transform_edt(~usable, return_distances=False, return_indices=True)
    grid = med[tuple(nearest)]
    sigma = float(np.median(sig[usable]))
    if grid.size == 1:
        return np.full(image.shape, grid.flat[0], dtype=np.float32), sigma
    # Cells pulled off by a bright object (more than sigma from the median of their
    # 3 x 3 neighbours) take that median; the others are kept, as a 3 x 3 median filter
    # biases a sky gradient at the edges of the grid.
    if min(gy, gx) >= 3:
        smooth = ndimage.median_filter(grid, size=3, mode="nearest")
        grid = np.where(np.abs(grid - smooth) > sigma, smooth, grid)
    yc = np.arange(gy) * my + (np.minimum(my, ny - np.arange(gy) * my) - 1) / 2.0
    xc = np.arange(gx) * mx + (np.minimum(mx, nx - np.arange(gx) * mx) - 1) / 2.0
    wy, wx = _natural_spline_weights(yc, ny), _natural_spline_weights(xc, nx)
    background = (wy @ (grid @ wx.T)).astype(np.float32)
    return background, sigma


def _natural_spline_weights(centres: np.ndarray, n: int) -> np.ndarray:
    """Weights (n, len(centres)) that interpolate values at cell centres to ``n`` pixels.

    A natural cubic spline (zero curvature at the ends, so it extrapolates nearly
    linearly to the image edges: a gradient is followed and cell noise is not blown
    up) is linear in the values, so it is a matrix; a single cell gives a constant.
    """
    if len(centres) == 1:
        return np.ones((n, 1))
    spline = CubicSpline(centres, np.eye(len(centres)), axis=0, bc_type="natural", extrapolate=True)
    return np.asarray(spline(np.arange(n, dtype=np.float64)))


def _normalised_psf(psf: np.ndarray, name: str) -> np.ndarray:
    """Check a PSF image (2-D, odd sides, positive sum) and return it with sum 1."""
    p = np.asarray(psf, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] % 2 == 0 or p.shape[1] % 2 == 0:
        raise InputError(f"{name} PSF must be a 2-D image with odd sides, got shape {p.shape}")
    total = float(np.sum(p))
    if not np.all(np.isfinite(p)) or total <= 0.0:
        raise InputError(
            f"{name} PSF has a non-finite value or a sum <= 0 ({total}); "
            "give a PSF image with positive flux"
        )
    return p / total


def _embed(
    centred: np.ndarray, shape: tuple[int, int], dtype: type[np.floating] = np.float64
) -> np.ndarray:
    """A zero array of ``shape`` holding a centred image, its centre moved to [0, 0]."""
    out: np.ndarray = np.zeros(shape, dtype=dtype)
    ky, kx = centred.shape
    rows = (np.arange(ky) - ky // 2) % shape[0]
    cols = (np.arange(kx) - kx // 2) % shape[1]
    out[np.ix_(rows, cols)] = centred
    return out


@dataclasses.dataclass(frozen=True)
class _ZogyKernels:
    """ZOGY's convolution kernels, centred, on a small grid."""

    k_n: np.ndarray
    k_r: np.ndarray
    d_n: np.ndarray
    d_r: np.ndarray
    psf_d: np.ndarray


def zogy_kernels(
    sci_psf: np.ndarray,
    tmpl_psf: np.ndarray,
    sigma_n: float,
    sigma_r: float,
    f_n: float,
    f_r: float,
) -> _ZogyKernels:
    """ZOGY's kernels k_n, k_r (score), d_n, d_r (proper difference) and P_D.

    Parameters
    ----------
    sci_psf, tmpl_psf : numpy.ndarray
        PSF images of the new and reference images (odd sides; normalised here).
    sigma_n, sigma_r : float
        Sky noise per pixel of the two images (image units).
    f_n, f_r : float
        Flux zero points (only their ratio matters for S_corr).

    Returns
    -------
    _ZogyKernels
        Centred kernels on an odd grid of about three PSF sides, and P_D cropped
        to the larger PSF side (sum 1). ``S = k_n (x) N - k_r (x) R`` and
        ``D = d_n (x) N - d_r (x) R`` (convolutions).
    """
    p_n, p_r = _normalised_psf(sci_psf, "science"), _normalised_psf(tmpl_psf, "template")
    side = max(*p_n.shape, *p_r.shape)
    size = 3 * side
    grid = (size, size)
    pn_hat = sfft.rfft2(_embed(p_n, grid))
    pr_hat = sfft.rfft2(_embed(p_r, grid))
    den = sigma_n**2 * f_r**2 * np.abs(pr_hat) ** 2 + sigma_r**2 * f_n**2 * np.abs(pn_hat) ** 2
    den = np.maximum(den, 1e-12 * float(den.max()))
    k_n_hat = f_n * f_r**2 * np.conj(pn_hat) * np.abs(pr_hat) ** 2 / den
    k_r_hat = f_r * f_n**2 * np.conj(pr_hat) * np.abs(pn_hat) ** 2 / den
    root = np.sqrt(den)
    d_n_hat, d_r_hat = f_r * pr_hat / root, f_n * pn_hat / root
    f_d = f_r * f_n / np.sqrt(sigma_n**2 * f_r**2 + sigma_r**2 * f_n**2)
    pd_hat = f_r * f_n * pr_hat * pn_hat / (f_d * root)

    def real(spec: np.ndarray) -> np.ndarray:
        return sfft.fftshift(sfft.irfft2(spec, s=grid))

    c, h = size // 2, side // 2
    psf_d = real(pd_hat)[c - h : c + h + 1, c - h : c + h + 1]
    psf_d = psf_d / psf_d.sum()
    return _ZogyKernels(real(k_n_hat), real(k_r_hat), real(d_n_hat), real(d_r_hat), psf_d)


class _FourierGrid:
    """A padded real-FFT grid on which small centred kernels are convolved with images."""

    def __init__(self, shape: tuple[int, int], kernel_side: int) -> None:
        pad = kernel_side // 2 + 1
        self.shape = shape
        self.padded = (
            sfft.next_fast_len(shape[0] + 2 * pad, real=True),
            sfft.next_fast_len(shape[1] + 2 * pad, real=True),
        )

    def spectrum(self, image: np.ndarray) -> np.ndarray:
        """Spectrum of an image placed at the origin of the padded grid (zeros around)."""
        return sfft.rfft2(np.asarray(image, dtype=np.float32), s=self.padded, workers=-1)

    def kernel_spectrum(self, kernel: np.ndarray) -> np.ndarray:
        """Spectrum of a centred kernel, its centre moved to the origin."""
        return sfft.rfft2(_embed(kernel, self.padded, np.float32), workers=-1)

    def image(self, spectrum: np.ndarray) -> np.ndarray:
        """Back to an image of the original shape."""
        out = sfft.irfft2(spectrum, s=self.padded, workers=-1)
        return out[: self.shape[0], : self.shape[1]]


def _signal_gradient2(filtered: np.ndarray, kernel: np.ndarray, sigma: float) -> np.ndarray:
    """|grad S|^2 of a filtered image where it is significantly above the sky noise's.

    ZOGY's astrometric term (eqs. 30-31) uses the gradients of S_N = k_n (x) N and
    S_R = k_r (x) R; on noisy images those gradients hold noise everywhere, which would
    inflate the variance of empty sky. The sky noise alone gives |grad S|^2 an
    (about exponential) distribution of mean sigma^2 sum |grad k|^2 (the central
    difference is linear, so grad(k (x) N) = grad(k) (x) N); only values above 9 times
    that mean (a chance of 1e-4 for noise) are kept, the gradients of real sources.
    """
    gy, gx = np.gradient(filtered)
    ky, kx = np.gradient(kernel)
    noise = sigma**2 * float(np.sum(kx * kx + ky * ky))
    grad2 = gx * gx + gy * gy
    return np.where(grad2 > 9.0 * noise, grad2, 0.0)


def _variance_floor(var: np.ndarray) -> float:
    """Score variance below which a pixel has no data (FFT round-off around masked areas)."""
    return 1e-6 * float(np.max(var))


def _score_mask(
    science: Exposure, template: Exposure, bad: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The score's mask and where the score is invalid.

    The union of the two masks (template SAT as SAT_TEMPLATE) with its planes grown by
    the score kernels' footprint (``size`` px square, :func:`subtract.grow_planes`):
    the score there sums the wings of a source whose core was zeroed. ``bad`` pixels
    (unusable on either input, or without data) are grown likewise; NO_DATA marks those
    no plane explains.

    Returns
    -------
    mask : numpy.ndarray
        int32 mask.
    invalid : numpy.ndarray
        Boolean map where the score is not valid.
    """
    mask = grow_planes(science.mask | template_planes(template.mask), size)
    invalid = ndimage.maximum_filter(bad.view(np.uint8), size=size, mode="constant") > 0
    flagged = (mask & int(UNUSABLE)) != 0
    mask = np.where(invalid & ~flagged, mask | int(MaskPlane.NO_DATA), mask).astype(MASK_DTYPE)
    return mask, invalid | flagged


def kernel_matched_psfs(fit: KernelFit) -> tuple[np.ndarray, np.ndarray]:
    """Science and template PSFs made consistent with the fitted matching kernel.

    ZOGY's matching is implicit in the two PSFs: it subtracts a source cleanly only when
    P_n = K (x) P_r (up to the flux ratio). Independently measured PSFs rarely meet that
    to the accuracy a bright galaxy needs (on the DECam demo stacks, PSFs broadened by
    galaxies among the stars turned the transient on its host into a negative dipole),
    and they do not carry the residual misregistration that the kernel absorbs by
    moving its centroid. So the image that was convolved keeps its measured PSF and the
    other's is that PSF convolved with the kernel at the image centre, normalised to
    sum 1 (the flux ratio enters ZOGY separately).

    Parameters
    ----------
    fit : KernelFit
        The PSF-matching kernel fit, with the two PSF estimates it was sized from.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        PSF images (odd, sum 1) of the science and of the template.
    """
    ny, nx = fit.solution.shape
    k = fit.solution.evaluate((nx - 1) / 2.0, (ny - 1) / 2.0)
    k = k / k.sum()
    source = fit.template_psf if fit.convolved == "template" else fit.science_psf
    measured = np.asarray(source.image, dtype=np.float64)
    matched = fftconvolve(measured, k, mode="full")
    matched /= matched.sum()
    return (matched, measured) if fit.convolved == "template" else (measured, matched)


def zogy_score(
    science: Exposure,
    template: Exposure,
    sci_psf: np.ndarray,
    tmpl_psf: np.ndarray,
    flux_ratio: float,
    config: ScoreConfig,
    reporter: Reporter,
) -> ScoreResult:
    """ZOGY's proper difference and corrected score S_corr (see the module docstring).

    Each image's background is subtracted (:func:`estimate_background`); pixels
    unusable in either image (or non-finite, or with non-positive variance) are set
    to 0 in both images and their variance, so they add neither signal nor noise,
    and are 0 and masked in S_corr. The grid is zero-padded by half a kernel so
    nothing wraps around.

    Parameters
    ----------
    science, template : Exposure
        The new and reference images on one pixel grid (image units), with variance maps.
    sci_psf, tmpl_psf : numpy.ndarray
        Their PSF images (small, odd sides, any normalisation).
    flux_ratio : float
        Science flux over template flux of one source (F_n / F_r; the kernel sum).
    config : ScoreConfig
        ``astrometric_noise`` (px per axis) and ``background_mesh`` (px).
    reporter : Reporter
        Progress and cancellation.

    Returns
    -------
    ScoreResult
        ``image`` is S_corr; ``proper_difference`` is D (unit sky noise); ``psf`` is P_D.

    Raises
    ------
    InputError
        On different image shapes, a bad PSF, a non-positive flux ratio, or no usable pixel.
    """
    if science.shape != template.shape:
        raise InputError(
            f"ZOGY needs images on one grid: science {science.shape} vs "
            f"template {template.shape}; warp the template first"
        )
    if not np.isfinite(flux_ratio) or flux_ratio <= 0.0:
        raise InputError(
            f"the flux ratio of {science.source} to {template.source} (the PSF-matching "
            f"kernel's sum) is {flux_ratio}, not a positive number: the kernel fit failed; "
            "check the kernel stars and residuals, or use score.method = 'al'"
        )
    bad = ((science.mask | template.mask) & int(UNUSABLE)) != 0
    for exp in (science, template):
        bad |= ~np.isfinite(exp.image) | ~np.isfinite(exp.variance) | (exp.variance <= 0)
    good = ~bad
    if not np.any(good):
        raise InputError(f"{science.source} and {template.source} share no usable pixel")
    bkg_n, sigma_n = estimate_background(science.image, good, config.background_mesh)
    reporter.update(0.1)
    bkg_r, sigma_r = estimate_background(template.image, good, config.background_mesh)
    reporter.update(0.2)
    if not (sigma_n > 0.0 and sigma_r > 0.0):
        raise InputError(
            f"sky noise of {science.source} ({sigma_n}) or {template.source} "
            f"({sigma_r}) is not positive; check the images"
        )
    # Each image in units of its own sky noise, so that the kernels, S and its variance
    # are of order 1 whatever the flux unit (k_n scales as 1/sigma^2: in physical units,
    # ~1e-12, k_n^2 overflows float32). A source of template flux f is then
    # F_n f / sigma_n on N and f / sigma_r on R: the zero points become F_n sigma_r / sigma_n
    # and 1 (times sigma_r, which S_corr and D do not see).
    kern = zogy_kernels(sci_psf, tmpl_psf, 1.0, 1.0, float(flux_ratio) * sigma_r / sigma_n, 1.0)
    grid = _FourierGrid(science.shape, kern.k_n.shape[0])
    zero = np.float32(0.0)
    in_n, in_r = np.float32(1.0 / sigma_n), np.float32(1.0 / sigma_r)
    n_hat = grid.spectrum(np.where(good, (science.image - bkg_n) * in_n, zero))
    r_hat = grid.spectrum(np.where(good, (template.image - bkg_r) * in_r, zero))
    vn_hat = grid.spectrum(np.where(good, science.variance * in_n * in_n, zero))
    vr_hat = grid.spectrum(np.where(good, template.variance * in_r * in_r, zero))
    reporter.update(0.4)
    kn_hat, kr_hat = grid.kernel_spectrum(kern.k_n), grid.kernel_spectrum(kern.k_r)
    var = grid.image(
        vn_hat * grid.kernel_spectrum(kern.k_n**2) + vr_hat * grid.kernel_spectrum(kern.k_r**2)
    )
    reporter.update(0.6)
    if config.astrometric_noise > 0.0:
        s_n, s_r = grid.image(kn_hat * n_hat), grid.image(kr_hat * r_hat)
        score = s_n - s_r
        for s_part, kernel in ((s_n, kern.k_n), (s_r, kern.k_r)):
            var += config.astrometric_noise**2 * _signal_gradient2(s_part, kernel, 1.0)
        del s_n, s_r
    else:
        score = grid.image(kn_hat * n_hat - kr_hat * r_hat)
    reporter.update(0.8)
    proper = grid.image(
        grid.kernel_spectrum(kern.d_n) * n_hat - grid.kernel_spectrum(kern.d_r) * r_hat
    )
    # Near an unusable pixel (a saturated core set to 0) the score holds the wings alone.
    half = max(footprint_half_width(kern.k_n), footprint_half_width(kern.k_r))
    mask, invalid = _score_mask(
        science, template, bad | ~(var > _variance_floor(var)), 2 * half + 1
    )
    s_corr = np.where(invalid, zero, score / np.sqrt(np.where(invalid, 1.0, var)))
    s_corr = s_corr.astype(np.float32)
    proper = np.where(invalid, zero, proper).astype(np.float32)
    reporter.update(1.0)
    return ScoreResult(
        image=s_corr,
        method="zogy",
        psf=kern.psf_d,
        proper_difference=proper,
        mask=mask,
        noise_std=sampled_robust_std(s_corr[~invalid]),
        sigma_science=sigma_n,
        sigma_template=sigma_r,
    )


def al_score(difference: Exposure, psf: np.ndarray, reporter: Reporter) -> ScoreResult:
    """Alard-Lupton preconvolution score: the difference filtered by its PSF over its noise.

    ``score = (d (x) flip(P)) / sqrt(v (x) flip(P)^2)``, as the LSST pipeline's
    preconvolution mode detects: a point source's peak is its PSF-photometry S/N
    (``f sqrt(sum P^2) / sigma``) and white sky noise gives unit variance.

    Parameters
    ----------
    difference : Exposure
        The difference image with its variance (image units).
    psf : numpy.ndarray
        The difference's PSF (small, odd sides; normalised here).
    reporter : Reporter
        Progress and cancellation.

    Returns
    -------
    ScoreResult
        ``method='al'``, ``psf`` the normalised PSF, no proper difference.

    Raises
    ------
    InputError
        On a bad PSF. A difference without any usable pixel gives a score of zeros,
        all masked NO_DATA.
    """
    p = _normalised_psf(psf, "difference")
    bad = ((difference.mask & int(UNUSABLE)) != 0) | ~np.isfinite(difference.image)
    bad |= ~np.isfinite(difference.variance) | (difference.variance <= 0)
    if np.all(bad):
        # A cutout smaller than the kernel is all EDGE: nothing to score, nothing found.
        return ScoreResult(
            image=np.zeros(difference.shape, dtype=np.float32),
            method="al",
            psf=p,
            proper_difference=None,
            mask=(difference.mask | int(MaskPlane.NO_DATA)).astype(MASK_DTYPE),
            noise_std=float("nan"),
        )
    flipped = p[::-1, ::-1]
    grid = _FourierGrid(difference.shape, max(p.shape))
    zero = np.float32(0.0)
    num = grid.image(
        grid.spectrum(np.where(bad, zero, difference.image)) * grid.kernel_spectrum(flipped)
    )
    reporter.update(0.5)
    var = grid.image(
        grid.spectrum(np.where(bad, zero, difference.variance)) * grid.kernel_spectrum(flipped**2)
    )
    invalid = bad | ~(var > _variance_floor(var))
    score = np.where(invalid, zero, num / np.sqrt(np.where(invalid, 1.0, var))).astype(np.float32)
    mask = np.where(
        invalid & ((difference.mask & int(UNUSABLE)) == 0),
        difference.mask | int(MaskPlane.NO_DATA),
        difference.mask,
    ).astype(MASK_DTYPE)
    reporter.update(1.0)
    return ScoreResult(
        image=score,
        method="al",
        psf=p,
        proper_difference=None,
        mask=mask,
        noise_std=sampled_robust_std(score[~invalid]),
    )
