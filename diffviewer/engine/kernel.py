"""The PSF-matching kernel: Alard-Lupton basis, per-stamp fits, rejection, spatial model.

The kernel ``K`` maps the image with the narrower PSF (the *source*, normally the
template) onto the other (the *target*): ``target ~ K * source + background``.

Basis (Alard & Lupton 1998, ApJ 503, 325): Gaussians times polynomials
``exp(-r^2 / 2 s_i^2) x^p y^q`` with ``p + q <= degree_i``. The Gaussian widths follow the
LSST ip_diffim convention: the middle one is the matching width
``sqrt(s_target^2 - s_source^2)`` and consecutive ones differ by ``width_ratio``. The
first basis function is normalised to sum 1 and all others are made to sum to zero, so
the kernel sum (the photometric scale) is carried by the first coefficient alone; the
others are then orthonormalised (Gram-Schmidt) for a well-conditioned fit.

Fit: each stamp is fitted by weighted least squares (weights 1 / (var_target +
K^2 * var_source), with K the stamp's own kernel from a first pass) with a constant
background; stamps are rejected by kernel-sum outliers (clipped mean and MAD), residual
mean and standard deviation, or a failed fit, iterated. The spatial model then gives
every coefficient, and the background, as Chebyshev polynomials in x and y over the
image (scaled to [-1, 1]), from the sum of the stamps' normal equations (as ip_diffim's
spatial kernel solution does); the first coefficient, which alone carries the kernel sum,
has its own (default constant) order. Stamps whose residual against the spatial model
fails the same limits are rejected and the spatial model refitted. Orders are lowered
until there are :data:`STAMPS_PER_TERM` good stamps per spatial term.

With fewer than ``min_stamps`` good stamps (alert cutouts, blank fields) the kernel is
spatially constant: derived from the two PSF images (which :mod:`psf` measures from
stars, takes as given, measures from bright compact sources, or reads from the header),
or, when either PSF is only the default, a delta (a plain scaled difference), with a
warning either way. Only inputs without a pixel usable on both images raise
``InsufficientKernelSources``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np
import scipy.fft as sfft
import scipy.linalg
from astropy.table import Table
from numpy.polynomial import chebyshev

from diffviewer.config import KernelConfig
from diffviewer.engine.progress import Reporter
from diffviewer.engine.psf import PsfEstimate, cutouts, frozen
from diffviewer.errors import InsufficientKernelSources
from diffviewer.exposure import UNUSABLE, Exposure
from diffviewer.stats import FWHM_PER_SIGMA

if TYPE_CHECKING:  # candidates sizes its stamps with this module's stamp_half_width
    from diffviewer.engine.candidates import CandidateSet

#: Most stamps whose basis convolutions are held in memory at once.
STAMP_CHUNK = 256

#: Good stamps needed per spatial term before an order is used; below it the order is
#: lowered (with 2 per term, 14 DECam stamps at order 2 left 100-sigma galaxy residuals).
STAMPS_PER_TERM = 5

#: Fit-region half-width in FWHM of the broader PSF. Real PSFs have wings (a Moffat of
#: beta 3 holds ~9% of its flux beyond 1.5 FWHM, ~2% beyond 2.5): a region cut at 1.5 FWHM
#: lets each stamp's constant background absorb the wings' mismatch, biasing its kernel
#: sum and shape (DECam demo stacks: a -29 sigma lobe on the host galaxy of the transient
#: at (60, 181) with 1.5 FWHM, -4 sigma with 2.5, where SFFT leaves -16).
FIT_HALF_FWHM = 2.5


def n_terms(order: int) -> int:
    """Number of 2-D polynomial terms ``x^i y^j`` with ``i + j <= order``."""
    return (order + 1) * (order + 2) // 2


def chebyshev_terms(x: np.ndarray, y: np.ndarray, order: int, shape: tuple[int, int]) -> np.ndarray:
    """Chebyshev terms ``T_i(x') T_j(y')``, ``i + j <= order``, at image positions.

    Parameters
    ----------
    x, y : numpy.ndarray
        Positions (0-based px).
    order : int
        Total order.
    shape : (int, int)
        Image shape (ny, nx); x and y are scaled to [-1, 1] over it.

    Returns
    -------
    numpy.ndarray
        ``(len(x), n_terms(order))``, terms ordered by total degree, then by the y power.
    """
    ny, nx = shape
    xs = 2.0 * np.asarray(x, dtype=float) / max(nx - 1, 1) - 1.0
    ys = 2.0 * np.asarray(y, dtype=float) / max(ny - 1, 1) - 1.0
    tx = chebyshev.chebvander(xs, order)
    ty = chebyshev.chebvander(ys, order)
    return np.stack(
        [tx[..., d - j] * ty[..., j] for d in range(order + 1) for j in range(d + 1)], axis=-1
    )


def term_powers(order: int) -> list[tuple[int, int]]:
    """The (x power, y power) of each term of :func:`chebyshev_terms`, in order."""
    return [(d - j, j) for d in range(order + 1) for j in range(d + 1)]


def basis_sigmas(
    fwhm_source: float, fwhm_target: float, config: KernelConfig
) -> tuple[np.ndarray, bool]:
    """Widths of the basis Gaussians.

    Parameters
    ----------
    fwhm_source, fwhm_target : float
        FWHM (px) of the image that is convolved and of the one it is matched to.
    config : KernelConfig
        Number of Gaussians (``len(degrees)``), ``width_ratio``, ``min_sigma``.

    Returns
    -------
    (numpy.ndarray, bool)
        Widths (px), narrowest first, and whether matching would need deconvolution
        (target narrower than source; the matching width is then floored).
    """
    s_src, s_tgt = fwhm_source / FWHM_PER_SIGMA, fwhm_target / FWHM_PER_SIGMA
    deconv = s_tgt < s_src
    match = math.sqrt(max(s_tgt**2 - s_src**2, 0.0))
    match = max(match, config.min_sigma * config.width_ratio ** ((len(config.degrees) - 1) // 2))
    n = len(config.degrees)
    powers = np.arange(n) - (n - 1) // 2
    return match * config.width_ratio ** powers.astype(float), deconv


def kernel_size(sigmas: np.ndarray, config: KernelConfig) -> int:
    """Odd kernel side: ``2 * ceil(size_sigmas * widest) + 1``, clamped to the config's limits."""
    size = 2 * math.ceil(config.size_sigmas * float(np.max(sigmas))) + 1
    return int(min(max(size, config.min_size), config.max_size))


def make_basis(sigmas: np.ndarray, degrees: tuple[int, ...], size: int) -> np.ndarray:
    """The Alard-Lupton basis images, normalised as described in the module docstring.

    Parameters
    ----------
    sigmas : numpy.ndarray
        Gaussian widths (px).
    degrees : tuple of int
        Polynomial degree for each Gaussian.
    size : int
        Odd kernel side (px).

    Returns
    -------
    numpy.ndarray
        ``(n_basis, size, size)`` float64; element 0 sums to 1, the others to 0 and are
        orthonormal to each other.
    """
    half = size // 2
    r = np.arange(-half, half + 1, dtype=float)
    yy, xx = np.meshgrid(r, r, indexing="ij")
    raw = []
    for s, deg in zip(sigmas, degrees, strict=True):
        g = np.exp(-0.5 * (xx**2 + yy**2) / s**2)
        for d in range(deg + 1):
            for j in range(d + 1):
                raw.append(g * (xx / half) ** (d - j) * (yy / half) ** j)
    first = raw[0] / raw[0].sum()
    rest = [b - b.sum() * first for b in raw[1:]]
    ortho: list[np.ndarray] = []
    for b in rest:
        for o in ortho:
            b = b - np.sum(b * o) * o
        norm = np.sqrt(np.sum(b * b))
        if norm > 1e-10:
            ortho.append(b / norm)
    return np.array([first, *ortho])


def fit_half_width(fwhm_a: float, fwhm_b: float) -> int:
    """Half-width (px) of a stamp's fit region: ``FIT_HALF_FWHM`` times the broader FWHM."""
    return int(max(4, math.ceil(FIT_HALF_FWHM * max(fwhm_a, fwhm_b))))


def stamp_half_width(fwhm_science: float, fwhm_template: float, config: KernelConfig) -> int:
    """Half-width (px) of the source-image stamp the kernel fit reads around each star.

    It is the fit region's half-width plus the kernel's, so candidate selection can check
    exactly the pixels the fit will use.

    Parameters
    ----------
    fwhm_science, fwhm_template : float
        PSF FWHM (px) of the two images.
    config : KernelConfig
        Basis and size limits.

    Returns
    -------
    int
    """
    lo, hi = sorted((fwhm_science, fwhm_template))
    sigmas, _ = basis_sigmas(lo, hi, config)
    return fit_half_width(fwhm_science, fwhm_template) + kernel_size(sigmas, config) // 2


@dataclasses.dataclass(frozen=True, eq=False)
class KernelSolution:
    """A spatially varying kernel and differential background, evaluable anywhere.

    ``K(x, y) = sum_k a_k(x, y) B_k`` with ``a_k(x, y) = sum_s coefficients[k, s] P_s(x, y)``
    and ``background(x, y) = sum_t bg_coefficients[t] P_t(x, y)``, where ``P`` are the
    Chebyshev terms of :func:`chebyshev_terms` over ``shape``. The background is always
    in the sense science side minus template side (see :class:`KernelFit`).

    Attributes
    ----------
    basis : numpy.ndarray
        ``(n_basis, size, size)`` basis images.
    coefficients : numpy.ndarray
        ``(n_basis, n_terms(spatial_order))``.
    bg_coefficients : numpy.ndarray
        ``(n_terms(background_order),)``.
    spatial_order, background_order : int
        Chebyshev orders.
    shape : (int, int)
        Image shape (ny, nx) that scales x and y to [-1, 1].
    sigmas : numpy.ndarray
        Gaussian widths (px) of the basis.
    degrees : tuple of int
        Polynomial degree of each Gaussian.
    """

    basis: np.ndarray
    coefficients: np.ndarray
    bg_coefficients: np.ndarray
    spatial_order: int
    background_order: int
    shape: tuple[int, int]
    sigmas: np.ndarray
    degrees: tuple[int, ...]

    @property
    def size(self) -> int:
        """Kernel side (px)."""
        return int(self.basis.shape[-1])

    def describe(self) -> str:
        """The basis in words, e.g. ``'Alard-Lupton: 3 Gaussians sigma=[0.8, 1.6, 3.2] px ...'``."""
        sig = ", ".join(f"{s:.2f}" for s in self.sigmas)
        return (
            f"Alard-Lupton: {len(self.sigmas)} Gaussians sigma=[{sig}] px, degrees "
            f"{list(self.degrees)}, {self.basis.shape[0]} functions, {self.size}x{self.size} px"
        )

    def coefficients_at(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """Basis coefficients ``a_k`` at positions: ``(n, n_basis)``, ``(n_basis,)`` for scalars."""
        p = chebyshev_terms(np.atleast_1d(x), np.atleast_1d(y), self.spatial_order, self.shape)
        a = p @ self.coefficients.T
        return a[0] if np.ndim(x) == 0 else a

    def evaluate(self, x: float, y: float) -> np.ndarray:
        """The kernel image at (x, y) (0-based science px)."""
        return np.tensordot(self.coefficients_at(float(x), float(y)), self.basis, axes=1)

    def background(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """Differential background (image units) at positions."""
        p = chebyshev_terms(np.atleast_1d(x), np.atleast_1d(y), self.background_order, self.shape)
        b = p @ self.bg_coefficients
        return b[0] if np.ndim(x) == 0 else b

    def _term_image(self, coefficients: np.ndarray, order: int) -> np.ndarray:
        """``sum_t coefficients[t] P_t(x, y)`` over the whole image (float32, ``Ty @ C @ Tx^T``)."""
        ny, nx = self.shape
        tx = chebyshev.chebvander(2.0 * np.arange(nx) / max(nx - 1, 1) - 1.0, order)
        ty = chebyshev.chebvander(2.0 * np.arange(ny) / max(ny - 1, 1) - 1.0, order)
        coef = np.zeros((order + 1, order + 1))
        for c, (px, py) in zip(coefficients, term_powers(order), strict=True):
            coef[py, px] = c
        return ty.astype(np.float32) @ (coef @ tx.T).astype(np.float32)

    def background_image(self) -> np.ndarray:
        """The background over the whole image (float32)."""
        return self._term_image(self.bg_coefficients, self.background_order)

    def kernel_sum_image(self) -> np.ndarray:
        """The kernel sum over the whole image (float32)."""
        per_term = self.coefficients.T @ self.basis.sum(axis=(1, 2))
        return self._term_image(per_term, self.spatial_order)

    def kernel_sum(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """Kernel sum (photometric scale) at positions."""
        per_term = self.coefficients.T @ self.basis.sum(axis=(1, 2))
        p = chebyshev_terms(np.atleast_1d(x), np.atleast_1d(y), self.spatial_order, self.shape)
        k = p @ per_term
        return k[0] if np.ndim(x) == 0 else k

    def kernel_sum_map(self, shape: tuple[int, int] | None = None, step: int = 64) -> np.ndarray:
        """Kernel sum on a coarse grid: element (j, i) is at pixel (i * step, j * step) + step/2.

        Parameters
        ----------
        shape : (int, int), optional
            Image shape (defaults to :attr:`shape`).
        step : int
            Grid spacing (px).

        Returns
        -------
        numpy.ndarray
            ``(ceil(ny / step), ceil(nx / step))`` float32.
        """
        ny, nx = shape or self.shape
        ys = np.minimum(np.arange(0, ny, step) + step / 2.0, ny - 1)
        xs = np.minimum(np.arange(0, nx, step) + step / 2.0, nx - 1)
        gx, gy = np.meshgrid(xs, ys)
        return self.kernel_sum(gx.ravel(), gy.ravel()).reshape(gy.shape).astype(np.float32)

    def spatial_kernels(self) -> np.ndarray:
        """``(n_terms, size, size)``: the kernel image multiplying each spatial term ``P_s``."""
        return np.tensordot(self.coefficients.T, self.basis, axes=1)


@dataclasses.dataclass(frozen=True, eq=False)
class KernelFit:
    """The fitted PSF-matching kernel and the per-stamp quality assessment.

    Attributes
    ----------
    solution : KernelSolution
        The spatial model.
    candidates : astropy.table.Table
        The candidate table plus ``status`` (GOOD/BAD/CONTROL), ``reason`` (why BAD),
        ``chi2`` (per degree of freedom), ``kernel_sum`` (of the kernel as fitted: the
        science/template flux ratio, or its inverse when the science is convolved) and its
        formal error ``kernel_sum_err``, ``resid_mean``, ``resid_std`` (of the residual
        normalised by sqrt(var_target + K^2 * var_source), over the fit region, with the
        stamp's own kernel; for CONTROL stars with the spatial model), and
        ``spatial_resid_mean``, ``spatial_resid_std`` (with the spatial model).
    convolved : str
        'template' (science ~ K * template + background) or 'science'
        (K * science ~ template + background).
    photometric_scale : float
        Science/template flux ratio: the mean kernel sum over the image, or its inverse
        when the science is convolved.
    warnings : tuple of str
        Deconvolution risk, lowered orders, the PSF fallback, ...
    science_psf, template_psf : PsfEstimate
        The PSFs the basis was built from.
    own_coefficients : numpy.ndarray
        ``(n_candidates, n_basis + 1)`` each stamp's own kernel coefficients and
        background (NaN where the stamp could not be fitted).
    fit_half : int
        Half-width (px) of each stamp's fit region.
    """

    solution: KernelSolution
    candidates: Table
    convolved: str
    photometric_scale: float
    warnings: tuple[str, ...]
    science_psf: PsfEstimate
    template_psf: PsfEstimate
    own_coefficients: np.ndarray
    fit_half: int

    def source_target(self, science: Exposure, template: Exposure) -> tuple[Exposure, Exposure]:
        """(convolved image, image it is matched to)."""
        return (template, science) if self.convolved == "template" else (science, template)


def choose_mode(mode: str, fwhm_science: float, fwhm_template: float) -> tuple[str, list[str]]:
    """Which image to convolve, and warnings about deconvolution.

    Parameters
    ----------
    mode : str
        'template', 'science' or 'auto' (the image with the narrower PSF).
    fwhm_science, fwhm_template : float
        FWHM (px).

    Returns
    -------
    (str, list of str)
    """
    notes: list[str] = []
    if mode == "auto":
        mode = "template" if fwhm_template <= fwhm_science else "science"
    src, tgt = (
        (fwhm_template, fwhm_science) if mode == "template" else (fwhm_science, fwhm_template)
    )
    if src > tgt * 1.02:
        notes.append(
            f"matching would need deconvolution: the convolved {mode} has FWHM {src:.2f} px, "
            f"broader than the other image's {tgt:.2f} px; consider kernel.mode = 'auto'"
        )
    return mode, notes


def kernel_spectra(kernels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """rfft2 of centred odd kernels placed in arrays of ``shape`` with their centres at the origin.

    Parameters
    ----------
    kernels : numpy.ndarray
        ``(..., size, size)`` odd-sized kernels, ``size`` at most the smaller side of ``shape``.
    shape : (int, int)
        Shape of the (padded) arrays they will multiply in Fourier space.

    Returns
    -------
    numpy.ndarray
        ``(..., shape[0], shape[1] // 2 + 1)`` complex64 spectra.
    """
    h = kernels.shape[-1] // 2
    pad = np.zeros(kernels.shape[:-2] + tuple(shape), dtype=np.float32)
    # the four quadrants wrapped around the origin (a roll of the whole array, without the copy)
    for rows, krows in (
        (slice(0, h + 1), slice(h, None)),
        (slice(shape[0] - h, None), slice(0, h)),
    ):
        for cols, kcols in (
            (slice(0, h + 1), slice(h, None)),
            (slice(shape[1] - h, None), slice(0, h)),
        ):
            pad[..., rows, cols] = kernels[..., krows, kcols]
    return sfft.rfft2(pad, axes=(-2, -1), workers=-1)


def convolve_stamps(stamps: np.ndarray, kernels: np.ndarray, out_half: int) -> np.ndarray:
    """Convolve each stamp with each kernel and keep the central ``2 * out_half + 1`` pixels.

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(n, m, m)`` with ``m >= 2 * out_half + size`` (so the kept region never wraps).
    kernels : numpy.ndarray
        ``(k, size, size)`` odd-sized kernels.
    out_half : int
        Half-width of the region kept.

    Returns
    -------
    numpy.ndarray
        ``(n, k, 2 * out_half + 1, 2 * out_half + 1)`` float32.
    """
    m = stamps.shape[1]
    fs = sfft.rfft2(stamps.astype(np.float32), axes=(1, 2), workers=-1)
    fk = kernel_spectra(kernels, (m, m))
    conv = sfft.irfft2(fs[:, None] * fk[None], s=(m, m), axes=(2, 3), workers=-1)
    c = m // 2
    return np.ascontiguousarray(
        conv[:, :, c - out_half : c + out_half + 1, c - out_half : c + out_half + 1]
    )


@dataclasses.dataclass(frozen=True)
class _Stamps:
    """Per-stamp design data (internal)."""

    design: np.ndarray  # (n, npix, nb + 1): basis convolutions and the constant
    target: np.ndarray  # (n, npix)
    var_target: np.ndarray  # (n, npix)
    var_source: np.ndarray  # (n, m, m) source variance stamps (for K^2 * var)
    ok: np.ndarray  # (n,) bool: stamp inside and unmasked


def _build_stamps(
    source: Exposure,
    target: Exposure,
    x: np.ndarray,
    y: np.ndarray,
    basis: np.ndarray,
    fit_half: int,
    reporter: Reporter,
) -> tuple[_Stamps, np.ndarray]:
    """Extract stamps and convolve the source stamps with every basis function."""
    size = basis.shape[-1]
    src_half = fit_half + size // 2
    xi, yi = np.rint(x).astype(np.intp), np.rint(y).astype(np.intp)
    n = len(xi)
    ss, in_s = cutouts(source.image, xi, yi, src_half)
    ms, _ = cutouts(source.mask, xi, yi, src_half)
    mt, _ = cutouts(target.mask, xi, yi, fit_half)
    ok = (
        in_s
        & ~np.any((ms & int(UNUSABLE)) != 0, axis=(1, 2))
        & ~np.any((mt & int(UNUSABLE)) != 0, axis=(1, 2))
    )
    tt, _ = cutouts(target.image, xi, yi, fit_half)
    vt, _ = cutouts(target.variance, xi, yi, fit_half)
    vs, _ = cutouts(source.variance, xi, yi, src_half)
    npix = (2 * fit_half + 1) ** 2
    nb = basis.shape[0]
    design = np.empty((n, npix, nb + 1), dtype=np.float32)
    design[:, :, nb] = 1.0
    for start in range(0, n, STAMP_CHUNK):
        conv = convolve_stamps(ss[start : start + STAMP_CHUNK], basis, fit_half)
        design[start : start + STAMP_CHUNK, :, :nb] = conv.reshape(
            conv.shape[0], nb, npix
        ).transpose(0, 2, 1)
        reporter.update(0.05 + 0.4 * min(start + STAMP_CHUNK, n) / max(n, 1))
    stamps = _Stamps(
        design,
        tt.reshape(n, npix).astype(np.float32),
        np.clip(vt.reshape(n, npix), 1e-30, None).astype(np.float32),
        vs.astype(np.float32),
        ok,
    )
    return stamps, ok


def convolve_pairs(stamps: np.ndarray, kernels: np.ndarray, out_half: int) -> np.ndarray:
    """As :func:`convolve_stamps`, but stamp ``i`` with kernel ``i`` only (``kernels`` is
    ``(n, size, size)``; the result ``(n, 2 * out_half + 1, 2 * out_half + 1)`` float32)."""
    n, m = stamps.shape[0], stamps.shape[1]
    out = np.empty((n, 2 * out_half + 1, 2 * out_half + 1), dtype=np.float32)
    c = m // 2
    for start in range(0, n, STAMP_CHUNK):
        sl = slice(start, start + STAMP_CHUNK)
        spec = sfft.rfft2(stamps[sl].astype(np.float32), axes=(1, 2), workers=-1)
        spec *= kernel_spectra(kernels[sl], (m, m))
        conv = sfft.irfft2(spec, s=(m, m), axes=(1, 2), workers=-1)
        out[sl] = conv[:, c - out_half : c + out_half + 1, c - out_half : c + out_half + 1]
    return out


def _source_variance(
    stamps: _Stamps, idx: np.ndarray, coef: np.ndarray, basis: np.ndarray, fit_half: int
) -> np.ndarray:
    """``K_i^2 * var_source`` over each stamp's fit region, with each stamp's kernel ``coef``."""
    kern = np.tensordot(coef[:, : basis.shape[0]], basis, axes=1) ** 2  # (n, size, size)
    out = convolve_pairs(stamps.var_source[idx], kern, fit_half)
    return np.clip(out.reshape(len(idx), -1), 0, None)


def roughness_penalty(basis: np.ndarray) -> np.ndarray:
    """``R[k, l] = <L B_k, L B_l>`` with ``L`` the 5-point Laplacian, padded for the background.

    ``a^T R a`` is the squared Laplacian of the kernel ``sum_k a_k B_k``: a penalty on the
    kernel's high spatial frequencies, which the data barely constrain when the
    convolved image's PSF has little power there.
    """
    nb = basis.shape[0]
    pad = np.pad(basis, ((0, 0), (1, 1), (1, 1)))
    lap = (
        pad[:, :-2, 1:-1]
        + pad[:, 2:, 1:-1]
        + pad[:, 1:-1, :-2]
        + pad[:, 1:-1, 2:]
        - 4 * pad[:, 1:-1, 1:-1]
    ).reshape(nb, -1)
    out = np.zeros((nb + 1, nb + 1))
    out[:nb, :nb] = lap @ lap.T
    return out


def _solve_stamps(
    stamps: _Stamps, idx: np.ndarray, weights: np.ndarray, penalty: np.ndarray, strength: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batched weighted least squares per stamp, with a roughness penalty.

    The penalty ``strength * tr(M_kernel) / tr(R) * R`` is added to each stamp's normal
    matrix ``M`` (so it scales with the stamp's own information).

    Returns
    -------
    coef : (n, nb + 1) solutions (NaN where singular)
    normal : (n, nb + 1, nb + 1) normal matrices
    rhs : (n, nb + 1) right-hand sides
    ok : (n,) bool
    """
    a = stamps.design[idx]
    aw = a * weights[:, :, None]
    normal = np.matmul(aw.transpose(0, 2, 1), a).astype(np.float64)
    if strength > 0 and len(idx):
        nb = normal.shape[1] - 1
        lam = strength * np.trace(normal[:, :nb, :nb], axis1=1, axis2=2) / np.trace(penalty)
        normal = normal + lam[:, None, None] * penalty[None]
    rhs = np.einsum("npk,np->nk", aw, stamps.target[idx]).astype(np.float64)
    coef = np.full(rhs.shape, np.nan)
    ok = np.zeros(len(idx), dtype=bool)
    if len(idx):
        try:
            coef = np.linalg.solve(normal, rhs[..., None])[..., 0]
            ok = np.all(np.isfinite(coef), axis=1)
        except np.linalg.LinAlgError:
            for i in range(len(idx)):
                try:
                    coef[i] = np.linalg.solve(normal[i], rhs[i])
                    ok[i] = np.all(np.isfinite(coef[i]))
                except np.linalg.LinAlgError:
                    ok[i] = False
    return coef, normal, rhs, ok


def _residual_stats(
    stamps: _Stamps, idx: np.ndarray, coef: np.ndarray, var_total: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """chi^2/dof, mean and std of the normalised residual for each stamp."""
    model = np.einsum("npk,nk->np", stamps.design[idx], coef.astype(np.float32))
    r = (stamps.target[idx] - model) / np.sqrt(var_total)
    dof = max(r.shape[1] - coef.shape[1], 1)
    return (np.sum(r.astype(np.float64) ** 2, axis=1) / dof, r.mean(axis=1), r.std(axis=1))


def _inverse(matrices: np.ndarray) -> np.ndarray:
    """Batched inverse; singular matrices give NaN."""
    try:
        return np.asarray(np.linalg.inv(matrices))
    except np.linalg.LinAlgError:
        out = np.full(matrices.shape, np.nan)
        for i, m in enumerate(matrices):
            try:
                out[i] = np.linalg.inv(m)
            except np.linalg.LinAlgError:
                continue
        return out


def _kernel_sum_outliers(values: np.ndarray, errors: np.ndarray, nsigma: float) -> np.ndarray:
    """Kernel sums further than ``nsigma`` from the clipped mean, in units of their errors.

    Each stamp's deviation from the weighted, iteratively clipped mean is divided by its
    own formal error (faint stars have loose kernel sums), and the cut is at ``nsigma``
    times the clipped spread of those scaled deviations (at least 1), so a sample
    with extra scatter (colour terms, PSF mismatch) is not mostly rejected.
    """
    n = len(values)
    if n < 3:
        return np.zeros(n, dtype=bool)
    err = np.where(np.isfinite(errors) & (errors > 0), errors, np.inf)
    mean = float(np.median(values))
    keep = np.ones(n, dtype=bool)
    scale = 1.0
    for _ in range(5):
        z = (values - mean) / err
        spread = z[keep]
        scale = max(1.0, float(spread.std()) if keep.sum() > 2 else 1.0)
        new = np.abs(z) <= nsigma * scale
        if new.sum() < 2:
            break
        w = 1.0 / err[new] ** 2
        mean = float(np.sum(w * values[new]) / np.sum(w))
        if np.array_equal(new, keep):
            break
        keep = new
    return np.abs((values - mean) / err) > nsigma * scale


def _spatial_solve(
    normal: np.ndarray, rhs: np.ndarray, p: np.ndarray, q: np.ndarray, sum_terms: int
) -> np.ndarray:
    """Solve the spatial model from the stamps' normal equations.

    Parameters
    ----------
    normal, rhs : numpy.ndarray
        ``(n, nb + 1, nb + 1)`` and ``(n, nb + 1)``; the last parameter is the background.
    p, q : numpy.ndarray
        ``(n, ns)`` kernel and ``(n, nq)`` background spatial terms at the stamps.
    sum_terms : int
        Spatial terms of the first coefficient (the kernel sum): the first ``sum_terms``
        of ``p``; the others are held at zero.

    Returns
    -------
    numpy.ndarray
        ``nb * ns`` kernel coefficients (basis-major) then ``nq`` background coefficients.
    """
    nb = normal.shape[1] - 1
    ns, nq = p.shape[1], q.shape[1]
    g_cc = np.einsum("ikl,is,it->kslt", normal[:, :nb, :nb], p, p, optimize=True)
    g_cc = g_cc.reshape(nb * ns, nb * ns)
    g_cd = np.einsum("ik,is,iq->ksq", normal[:, :nb, nb], p, q, optimize=True).reshape(nb * ns, nq)
    g_dd = np.einsum("i,iq,ir->qr", normal[:, nb, nb], q, q, optimize=True)
    big = np.block([[g_cc, g_cd], [g_cd.T, g_dd]])
    vec = np.concatenate(
        [np.einsum("ik,is->ks", rhs[:, :nb], p).ravel(), np.einsum("i,iq->q", rhs[:, nb], q)]
    )
    free = np.ones(len(vec), dtype=bool)
    free[sum_terms:ns] = False  # basis 0's higher spatial terms
    big, vec = big[np.ix_(free, free)], vec[free]
    scale = np.sqrt(np.clip(np.diag(big), 1e-300, None))
    try:
        sol = scipy.linalg.solve(big / scale[:, None] / scale[None, :], vec / scale, assume_a="pos")
    except (np.linalg.LinAlgError, ValueError):
        sol = np.linalg.lstsq(big / scale[:, None] / scale[None, :], vec / scale, rcond=1e-10)[0]
    out = np.zeros(len(free))
    out[free] = sol / scale
    return out


def _insufficient(
    cands: CandidateSet, n_good: int, reasons: np.ndarray, why: str
) -> InsufficientKernelSources:
    """The error for a fit that cannot be made, naming the counts."""
    at_fit = {r: int(np.sum(reasons == r)) for r in sorted(set(reasons.tolist()) - {""})}
    sel = ", ".join(f"{k}: {v}" for k, v in cands.rejected.items() if v) or "none"
    fit = ", ".join(f"{k}: {v}" for k, v in at_fit.items()) or "none"
    return InsufficientKernelSources(
        f"only {n_good} usable kernel stamps ({why}): {cands.n_detected} stars found, rejected at "
        f"selection ({sel}), rejected at the fit ({fit}); lower candidates.snr_min or "
        "candidates.detect_threshold, give candidates.source_list, or PSF images of both inputs"
    )


def _psf_kernel(src_psf: PsfEstimate, tgt_psf: PsfEstimate, basis: np.ndarray) -> np.ndarray:
    """Least-squares basis coefficients of the kernel mapping the source PSF onto the target PSF."""
    size = basis.shape[-1]
    fit_half = tgt_psf.image.shape[0] // 2
    half = fit_half + size // 2
    m = 2 * half + 1
    emb = np.zeros((m, m))
    ps = src_psf.image
    h = ps.shape[0] // 2
    k = min(h, half)
    emb[half - k : half + k + 1, half - k : half + k + 1] = ps[h - k : h + k + 1, h - k : h + k + 1]
    conv = convolve_stamps(emb[None], basis, fit_half)[0].reshape(basis.shape[0], -1).T
    coef, *_ = np.linalg.lstsq(conv.astype(np.float64), tgt_psf.image.ravel(), rcond=None)
    return np.asarray(coef)


def _zero_point_ratio(science: Exposure, template: Exposure) -> float | None:
    """Science/template flux ratio from the zero points, when both are known."""
    if science.zero_point is None or template.zero_point is None:
        return None
    return float(10 ** (0.4 * (science.zero_point - template.zero_point)))


def _fallback_solution(
    science: Exposure,
    template: Exposure,
    good: np.ndarray,
    src_psf: PsfEstimate,
    tgt_psf: PsfEstimate,
    mode: str,
    size: int,
    config: KernelConfig,
) -> tuple[KernelSolution, str]:
    """The spatially constant kernel used when too few stamps survive, and why.

    With both PSFs known (measured, given, from bright sources or the header) the kernel
    maps the source PSF image onto the target's. When either is only the default, nothing
    is known of the PSF mismatch: the kernel maps one PSF onto itself (a delta, within
    the basis's reach), and the difference is a plain scaled difference. The kernel sum is
    the zero points' flux ratio when both are known, else 1; the background is the median
    difference over the pixels ``good`` on both images.
    """
    known = [e for e in (src_psf, tgt_psf) if e.source != "default"]
    delta = len(known) < 2
    if delta:
        src_psf = tgt_psf = known[0] if known else src_psf
    sigmas, _ = basis_sigmas(src_psf.fwhm, tgt_psf.fwhm, config)
    basis = make_basis(sigmas, config.degrees, size)
    sums = basis.sum(axis=(1, 2))
    coef = _psf_kernel(src_psf, tgt_psf, basis)
    ratio = _zero_point_ratio(science, template)
    scale = 1.0 if ratio is None else (ratio if mode == "template" else 1.0 / ratio)
    coef *= scale / float(coef @ sums)
    sci_side = science.image if mode == "template" else scale * science.image
    tmpl_side = scale * template.image if mode == "template" else template.image
    bg = float(np.median((sci_side - tmpl_side)[good]))
    if delta:
        why = (
            "no PSF is known for "
            + ("either image" if not known else "one image")
            + ": the kernel is a delta (a plain difference, no PSF matching; expect "
            "residuals at every star)"
        )
    else:
        why = (
            f"the kernel is derived from the two PSF images ({src_psf.source} {mode}, "
            f"{tgt_psf.source} other image), spatially constant"
        )
    why += ", with kernel sum " + (
        f"{scale:.4g} from the zero points" if ratio is not None else "1 (no zero points)"
    )
    solution = KernelSolution(
        frozen(basis),
        frozen(coef[:, None]),
        frozen([bg]),
        0,
        0,
        science.shape,
        frozen(sigmas),
        tuple(config.degrees),
    )
    return solution, why


def fit_kernel(
    science: Exposure,
    template: Exposure,
    candidates: CandidateSet,
    sci_psf: PsfEstimate,
    tmpl_psf: PsfEstimate,
    config: KernelConfig,
    reporter: Reporter,
) -> KernelFit:
    """Fit the spatially varying PSF-matching kernel and differential background.

    Parameters
    ----------
    science, template : Exposure
        The pair on one pixel grid.
    candidates : CandidateSet
        Kernel stars (control stars are never fitted).
    sci_psf, tmpl_psf : PsfEstimate
        PSFs of the two images (size the basis; the fallback kernel uses their images).
    config : KernelConfig
        Basis, orders, rejection limits, mode.
    reporter : Reporter
        Progress and cancellation.

    Returns
    -------
    KernelFit

    Raises
    ------
    InsufficientKernelSources
        Only when no pixel is usable on both images. With fewer than
        ``config.min_stamps`` good stamps the kernel falls back to one derived from the
        PSF images, or to a delta when a PSF is only the default (:func:`_fallback_solution`;
        the reason is in ``warnings``).
    """
    mode, notes = choose_mode(config.mode, sci_psf.fwhm, tmpl_psf.fwhm)
    source, target = (template, science) if mode == "template" else (science, template)
    src_psf, tgt_psf = (tmpl_psf, sci_psf) if mode == "template" else (sci_psf, tmpl_psf)
    sigmas, _ = basis_sigmas(src_psf.fwhm, tgt_psf.fwhm, config)
    size = kernel_size(sigmas, config)
    cap = max(3, (min(science.shape) // 2 - 1) | 1)  # odd, at most half the image side
    if size > cap:
        notes.append(
            f"the {size} px kernel the PSFs call for was cut to {cap} px, half the "
            f"{min(science.shape)} px image; its widest Gaussian is truncated"
        )
        size = cap
    basis = make_basis(sigmas, config.degrees, size)
    nb = basis.shape[0]
    fit_half = fit_half_width(sci_psf.fwhm, tmpl_psf.fwhm)
    shape = science.shape
    for name, est in (("science", sci_psf), ("template", tmpl_psf)):
        if est.source == "default":
            notes.append(
                f"the {name} PSF was neither measured nor given; the default "
                f"{est.fwhm:.1f} px Gaussian sized the kernel basis"
            )

    table = candidates.table.copy(copy_data=True)
    n = len(table)
    x = np.asarray(table["x"], dtype=float)
    y = np.asarray(table["y"], dtype=float)
    control = np.asarray(table["control"], dtype=bool)
    status = np.where(control, "CONTROL", "GOOD").astype(object)
    reason = np.full(n, "", dtype=object)
    chi2, ksum, ksum_err, rmean, rstd, smean, sstd = (np.full(n, np.nan) for _ in range(7))
    own = np.full((n, nb + 1), np.nan)
    sums = np.append(basis.sum(axis=(1, 2)), 0.0)
    penalty = roughness_penalty(basis)

    stamps, ok = (
        _build_stamps(source, target, x, y, basis, fit_half, reporter)
        if n
        else (None, np.zeros(0, bool))
    )
    reason[~ok] = "edge or masked in the fit stamp"
    status[~ok & ~control] = "BAD"
    fitted = np.nonzero(ok & ~control)[0]
    normal = np.zeros((n, nb + 1, nb + 1))
    rhs = np.zeros((n, nb + 1))
    var_total = np.zeros((n, (2 * fit_half + 1) ** 2), dtype=np.float32)
    if len(fitted) and stamps is not None:
        m = stamps.var_source.shape[-1]
        c = m // 2
        vs0 = stamps.var_source[
            fitted, c - fit_half : c + fit_half + 1, c - fit_half : c + fit_half + 1
        ]
        w0 = 1.0 / (stamps.var_target[fitted] + vs0.reshape(len(fitted), -1))
        coef0, _, _, ok0 = _solve_stamps(stamps, fitted, w0, penalty, config.regularization)
        coef0[~ok0] = 0.0
        coef0[~ok0, 0] = 1.0
        var_total[fitted] = stamps.var_target[fitted] + _source_variance(
            stamps, fitted, coef0, basis, fit_half
        )
        reporter.update(0.55)
        coef, nrm, rh, okf = _solve_stamps(
            stamps, fitted, 1.0 / var_total[fitted], penalty, config.regularization
        )
        normal[fitted], rhs[fitted], own[fitted] = nrm, rh, coef
        c2, mu, sd = _residual_stats(stamps, fitted, np.nan_to_num(coef), var_total[fitted])
        chi2[fitted], rmean[fitted], rstd[fitted] = c2, mu, sd
        ksum[fitted] = coef @ sums
        with np.errstate(all="ignore"):
            cov_sum = np.einsum("k,nkl,l->n", sums, _inverse(nrm), sums)
        ksum_err[fitted] = np.sqrt(np.clip(cov_sum, 0, None))
        bad_fit = fitted[~okf]
        status[bad_fit], reason[bad_fit] = "BAD", "fit failed"
        for _ in range(config.max_iterations):
            good = np.nonzero(status == "GOOD")[0]
            new = np.zeros(n, dtype=bool)
            for mask_, why in (
                (np.abs(rmean[good]) > config.max_residual_mean, "residual mean"),
                (rstd[good] > config.max_residual_std, "residual std"),
                (
                    _kernel_sum_outliers(ksum[good], ksum_err[good], config.max_kernel_sum_sigma),
                    "kernel sum outlier",
                ),
            ):
                hit = good[mask_ & ~new[good]]
                reason[hit] = why
                new[hit] = True
            if not new.any():
                break
            status[new] = "BAD"
    reporter.update(0.7)

    order, bg_order = config.spatial_order, config.background_order
    sum_order = config.kernel_sum_order
    n_good = int(np.sum(status == "GOOD"))
    while order > 0 and n_good < max(config.min_stamps, STAMPS_PER_TERM * n_terms(order)):
        order -= 1
    while bg_order > 0 and n_good < max(config.min_stamps, STAMPS_PER_TERM * n_terms(bg_order)):
        bg_order -= 1
    if (order, bg_order) != (
        config.spatial_order,
        config.background_order,
    ) and n_good >= config.min_stamps:
        notes.append(
            f"only {n_good} good kernel stamps: spatial order lowered to {order} "
            f"(kernel) and {bg_order} (background)"
        )

    if n_good < config.min_stamps or stamps is None:
        good_px = science.good_pixels() & template.good_pixels()
        if not good_px.any():
            raise _insufficient(
                candidates,
                n_good,
                np.where(status == "BAD", reason, ""),
                "no pixel is usable on both images",
            )
        solution, why = _fallback_solution(
            science, template, good_px, src_psf, tgt_psf, mode, size, config
        )
        notes.append(
            f"only {n_good} good kernel stamps (kernel.min_stamps = {config.min_stamps}): {why}"
        )
    else:
        sign = 1.0 if mode == "template" else -1.0
        assert stamps is not None
        for _ in range(config.max_iterations):
            gi = np.nonzero(status == "GOOD")[0]
            p = chebyshev_terms(x[gi], y[gi], order, shape)
            q = chebyshev_terms(x[gi], y[gi], bg_order, shape)
            sol = _spatial_solve(normal[gi], rhs[gi], p, q, n_terms(min(sum_order, order)))
            coefs = sol[: nb * n_terms(order)].reshape(nb, n_terms(order))
            bgc = sol[nb * n_terms(order) :]
            usable = np.nonzero(ok)[0]
            pa = chebyshev_terms(x[usable], y[usable], order, shape)
            qa = chebyshev_terms(x[usable], y[usable], bg_order, shape)
            coef_sp = np.column_stack([pa @ coefs.T, qa @ bgc])
            ctrl = control[usable]
            if ctrl.any():
                cu = usable[ctrl]
                var_total[cu] = stamps.var_target[cu] + _source_variance(
                    stamps, cu, coef_sp[ctrl], basis, fit_half
                )
            _, mu, sd = _residual_stats(stamps, usable, coef_sp, var_total[usable])
            smean[usable], sstd[usable] = mu, sd
            good = np.nonzero(status == "GOOD")[0]
            hit_mean = good[np.abs(smean[good]) > config.max_residual_mean]
            hit_std = good[(sstd[good] > config.max_residual_std) & ~np.isin(good, hit_mean)]
            n_hit = len(hit_mean) + len(hit_std)
            if n_hit == 0 or len(good) - n_hit < max(
                config.min_stamps, STAMPS_PER_TERM * n_terms(order)
            ):
                break
            status[hit_mean], reason[hit_mean] = "BAD", "spatial residual mean"
            status[hit_std], reason[hit_std] = "BAD", "spatial residual std"
        if control.any():
            cu = np.nonzero(control & ok)[0]
            c2, mu, sd = _residual_stats(stamps, cu, coef_sp[np.isin(usable, cu)], var_total[cu])
            chi2[cu], rmean[cu], rstd[cu] = c2, mu, sd
            ksum[cu] = coef_sp[np.isin(usable, cu)] @ sums
        own[:, nb] *= sign
        solution = KernelSolution(
            frozen(basis),
            frozen(coefs),
            frozen(sign * bgc),
            order,
            bg_order,
            shape,
            frozen(sigmas),
            tuple(config.degrees),
        )
    reporter.update(0.95)

    mean_sum = float(np.mean(solution.kernel_sum_map(step=max(16, min(shape) // 16))))
    scale = mean_sum if mode == "template" else 1.0 / mean_sum
    n_good = int(np.sum(status == "GOOD"))
    if 0 < n_good < 10:
        notes.append(f"only {n_good} good kernel stamps: the kernel is poorly constrained")
    table["status"] = status.astype(str)
    table["reason"] = reason.astype(str)
    table["chi2"] = chi2
    table["kernel_sum"] = ksum
    table["kernel_sum_err"] = ksum_err
    table["resid_mean"] = rmean
    table["resid_std"] = rstd
    table["spatial_resid_mean"] = smean
    table["spatial_resid_std"] = sstd
    return KernelFit(
        solution, table, mode, scale, tuple(notes), sci_psf, tmpl_psf, frozen(own), fit_half
    )
