"""The Alard-Lupton kernel basis, its size and the Chebyshev terms of its spatial model.

Basis (Alard & Lupton 1998, ApJ 503, 325): Gaussians times polynomials
``exp(-r^2 / 2 s_i^2) x^p y^q`` with ``p + q <= degree_i``. The Gaussian widths follow the
LSST ip_diffim convention: the middle one is the matching width
``sqrt(s_target^2 - s_source^2)`` and consecutive ones differ by ``width_ratio``.

Seeing PSFs have power-law wings (a Moffat profile of index beta falls as r^-2 beta), and
the kernel that matches a narrow PSF onto a wingy one carries the wingier PSF's wing (far
from the core, ``K ~ target PSF``). Gaussians cannot hold it: with the three Gaussians
alone, a beta 2.5 science PSF matched from a beta 3.5 template gave kernel sums 4 % low,
the rest absorbed by each stamp's background. So the basis has one more function, the
*wing*: the circular Moffat profile fitted to the target PSF image (:func:`fit_wing`),
and the kernel is made wide enough to hold :data:`WING_ENCLOSED` of the fitted profile's
flux (:func:`kernel_size`), with a fit region of :data:`FIT_HALF_FWHM`, widened to
where the model of a star reaches (:func:`wing_fit_half`). The wing needs
stamps to constrain it: with fewer than :data:`WING_MIN_STAMPS` the basis is the
Gaussians alone, and the wing's amplitude per unit kernel sum is fixed by the two PSFs'
fitted profiles instead (:mod:`kernel_spread`).

The first basis function is normalised to sum 1 and all others are made to sum to zero, so
the kernel sum (the photometric scale) is carried by the first coefficient alone; the
others are then orthonormalised (Gram-Schmidt) for a well-conditioned fit. A function
whose part independent of those before it is less than :data:`INDEPENDENT` of its own
norm is dropped: the pixels cannot tell it from the others (the high powers of a Gaussian
narrower than a pixel or two), and the relative rule drops the same ones at every kernel
side, so coefficients fitted at one size serve a basis made at another.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import optimize

from diffviewer.config import KernelConfig
from diffviewer.engine.psf import PsfEstimate
from diffviewer.engine.psf_wing import pixel_moffat
from diffviewer.stats import FWHM_PER_SIGMA

#: Least independent share of a basis function's norm for it to be kept (:func:`make_basis`).
INDEPENDENT = 1e-4

#: The highest degrees and the narrowest width floor (LSST's default basis) of a kernel
#: fitted to two PSF images alone (:func:`psf_only_config`).
PSF_ONLY_DEGREES = (4, 2, 2)
PSF_ONLY_MIN_SIGMA = 0.5

#: Fit-region half-width in FWHM of the broader PSF, with the wing function. A region cut
#: close to the core lets each stamp's constant background absorb the wings' mismatch,
#: biasing its kernel sum (Moffat beta 2.5 science: 4 % of its flux lies beyond 2.5 FWHM,
#: 1.5 % beyond 4; kernel sums 1.259 with 2.5 FWHM, 1.272 with 4 for a Gaussian basis).
FIT_HALF_FWHM = 4.0

#: Fit-region half-width in FWHM without the wing function (real PSFs' wings: a region cut
#: at 1.5 FWHM left a -29 sigma lobe on the host galaxy of the DECam demo transient). On
#: the demo stacks' stellar-locus PSF (5.40 px) the host lobe is -5 sigma at 3.0 FWHM
#: (17 px), -20 at 2.5 (14 px) and -29 at 3.5 (19 px); 2.5 FWHM of the former stack of
#: kernel stars with galaxies (6.43 px) gave the same 17 px.
CORE_FIT_HALF_FWHM = 3.0

#: Least number of stamps to be fitted for the wing function (and the wide kernel and fit
#: region they bring) to be used: with the 10 stamps of the 256 px DECam demo stacks, a
#: 41 px kernel with its wing left a -31 sigma lobe on the transient's host galaxy (SFFT:
#: -16), the Gaussian basis alone -7.
#: With fewer, the PSFs fix the wing (:mod:`kernel_spread`).
WING_MIN_STAMPS = 30

#: Share of the fitted wing profile's flux the kernel holds (sets its size). On the Moffat
#: pair (science beta 2.5) 99.5 % gave kernel sums 0.2-0.5 % low, 99.8 % 0.1-0.2 % low
#: (2026-12-02, the wing then fitted at the pixels' centres: 53 px kernels, 55-57 px now).
WING_ENCLOSED = 0.998

#: Limits of the fitted wing's Moffat index: below 1.5 the profile's flux diverges too
#: slowly to be a seeing wing; above 20 it is a Gaussian (no wing worth a function).
WING_BETA_LIMITS = (1.5, 20.0)
#: Narrowest core width (px) of a fitted wing.
WING_ALPHA_MIN = 0.3

#: Reach (px) of the lags over which a wing fit's residuals' correlation is summed
#: (:func:`correlated_covariance`): a stack's stars are recentred by Fourier shifts, which
#: correlate neighbouring pixels over a pixel or two.
RESIDUAL_CORRELATION_REACH = 2


@dataclasses.dataclass(frozen=True)
class Wing:
    """A circular Moffat profile ``(1 + r^2 / alpha^2)^-beta``: the kernel's wing function.

    Attributes
    ----------
    alpha : float
        Core width (px).
    beta : float
        Index (the profile falls as ``r^(-2 beta)``).
    weight : float or None
        None when the stamps fit the wing's amplitude (a basis function of its own); else
        the amplitude per unit kernel sum the two PSFs' profiles fix (:mod:`kernel_spread`).
    """

    alpha: float
    beta: float
    weight: float | None = None

    def profile(self, size: int) -> np.ndarray:
        """The profile on a ``size`` x ``size`` grid (``size`` odd) centred on its middle
        pixel, averaged over each pixel as :func:`fit_wing` fits it."""
        if size % 2 == 0:
            raise ValueError(f"a wing profile's side must be odd, not {size}")
        return pixel_moffat(1.0, self.alpha, self.beta, size // 2)

    def radius(self, enclosed: float) -> float:
        """Radius (px) holding ``enclosed`` of the profile's flux: ``1 - (1 + R^2/a^2)^(1-b)``."""
        return self.alpha * math.sqrt((1.0 - enclosed) ** (1.0 / (1.0 - self.beta)) - 1.0)


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


def fit_wing(psf: PsfEstimate) -> tuple[Wing, np.ndarray] | None:
    """The circular Moffat profile that best fits a PSF image (least squares, free amplitude
    and offset), and the covariance of its core width and index.

    The model is the profile averaged over each pixel
    (:func:`~diffviewer.engine.psf_wing.pixel_moffat`), as a PSF image holds it: sampled at
    the pixels' centres instead, the core is too sharp for a pixel-integrated image and the
    fit widens it at the wing's expense. Noise-free Moffats of index 2.5 (FWHM 4 px) and
    3.5 (2.5 px), integrated over each pixel on the 3 x 3 sub-pixels the synthetic stars
    are (:func:`~diffviewer.synthetic.render_moffats`), were fitted with indices 2.58 and
    3.84 that way, and are recovered now; against a finer integral (15 x 15 sub-pixels)
    the 3 x 3 average still reads them 0.4 and 1.0 % steep (1.3 % at 2.0 px, 2.3 % at
    1.5 px). On issue 12's 300^2 Moffat pairs of 25 stars the science stacks' 2.54-2.72
    became 2.46-2.63 and the kernel sums' mean -0.37 % became -0.20 % (:mod:`kernel_spread`).

    The covariance is the fit's, the inverse of the normal matrix scaled by the residuals'
    mean square (the amplitude and offset marginalised), widened for the residuals'
    correlation (:func:`correlated_covariance`): a stack's pixels are not independent (its
    stars are recentred by Fourier shifts and medianed). Taken as independent, they left
    issue 12's eight 300^2 Moffat pairs' fitted science indices (9-15 stars, index 2.5;
    2.46-2.63) 1.50 of their errors (0.03-0.06) from the truth in rms; 1.34 now (errors
    0.030-0.064). The templates' (index 3.5, FWHM 2.8 px) lie 2.8 of theirs off, a bias of
    the recentred stack (3.53-3.71), which the kernel sums hardly see (the target's profile
    sets them: :mod:`~diffviewer.engine.kernel_spread`).

    Parameters
    ----------
    psf : PsfEstimate
        The target image's PSF (centred, sum 1).

    Returns
    -------
    (Wing, numpy.ndarray) or None
        The profile and the 2 x 2 covariance of (alpha, beta); None for a default PSF
        (nothing is known of its wings) or a failed fit.
    """
    if psf.source == "default":
        return None
    img = np.asarray(psf.image, dtype=float)
    h = img.shape[0] // 2
    alpha0 = psf.fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / 3.0) - 1.0))

    def resid(p: np.ndarray) -> np.ndarray:
        amp, alpha, beta, offset = p
        return (pixel_moffat(amp, alpha, beta, h) + offset - img).ravel()

    lo, hi = WING_BETA_LIMITS
    peak = float(img.max())
    try:
        sol = optimize.least_squares(
            resid,
            [peak, alpha0, 3.0, 0.0],
            bounds=(
                [0.0, WING_ALPHA_MIN, lo, -peak],
                [np.inf, 10.0 * max(psf.fwhm, 1.0), hi, peak],
            ),
        )
    except (ValueError, np.linalg.LinAlgError):
        return None
    if not sol.success or not np.all(np.isfinite(sol.x)):
        return None
    dof = max(sol.fun.size - sol.x.size, 1)
    residuals = sol.fun.reshape(img.shape) * math.sqrt(sol.fun.size / dof)
    covariance = correlated_covariance(sol.jac.reshape(*img.shape, -1), residuals)
    return Wing(float(sol.x[1]), float(sol.x[2])), covariance[1:3, 1:3]


def correlated_covariance(
    jac: np.ndarray, residuals: np.ndarray, reach: int = RESIDUAL_CORRELATION_REACH
) -> np.ndarray:
    """The covariance of a least-squares fit's parameters on an image whose residuals may
    be correlated between nearby pixels.

    The sandwich ``B M B`` with ``B = (J^T J)^-1`` and ``M = sum over lags d of c(d)
    sum_p J(p) J(p + d)^T``, ``c(d)`` the residuals' autocovariance at lag ``d`` (within
    ``reach`` px along each axis; beyond it taken as 0): for independent residuals it is
    the usual ``B c(0)``. Where a diagonal entry comes out below that one's (the
    autocovariances' own scatter about 0, or anticorrelated residuals), the usual one is
    kept: correlation never narrows the stated errors.

    Parameters
    ----------
    jac : numpy.ndarray
        ``(ny, nx, k)``: the model's derivatives by its ``k`` parameters at each pixel.
    residuals : numpy.ndarray
        ``(ny, nx)``: the fit's residuals (scaled for the degrees of freedom if wanted).
    reach : int
        Largest lag (px) along each axis.

    Returns
    -------
    numpy.ndarray
        ``(k, k)``.
    """
    ny, nx, k = jac.shape
    flat = jac.reshape(-1, k)
    bread = np.linalg.pinv(flat.T @ flat)
    r = residuals - residuals.mean()
    independent = bread * float(np.mean(r * r))
    meat = np.zeros((k, k))
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            a = (slice(max(dy, 0), ny + min(dy, 0)), slice(max(dx, 0), nx + min(dx, 0)))
            b = (slice(max(-dy, 0), ny + min(-dy, 0)), slice(max(-dx, 0), nx + min(-dx, 0)))
            autocovariance = float(np.sum(r[a] * r[b])) / r.size
            meat += autocovariance * np.einsum("yxi,yxj->ij", jac[a], jac[b])
    sandwich = bread @ meat @ bread
    if np.all(np.diag(sandwich) >= np.diag(independent)):
        return sandwich
    return independent


def kernel_size(sigmas: np.ndarray, config: KernelConfig, wing: Wing | None = None) -> int:
    """Odd kernel side: ``2 * ceil(size_sigmas * widest) + 1``, widened to hold
    :data:`WING_ENCLOSED` of the wing's flux, clamped to the config's limits."""
    half = config.size_sigmas * float(np.max(sigmas))
    if wing is not None:
        half = max(half, wing.radius(WING_ENCLOSED))
    size = 2 * math.ceil(half) + 1
    return int(min(max(size, config.min_size), config.max_size))


def wing_fit_half(size: int, fwhm_source: float) -> int:
    """Least fit-region half-width (px) for a kernel with the wing: its half side plus one
    FWHM of the convolved image's PSF, as far as the model ``K * source`` of a star reaches.

    The kernel sum is the model's flux, and only the region constrains it: with a 53 px
    kernel on a 39 px region (4 FWHM of the 4.7 px PSF), the flux the kernel puts beyond
    was the basis's extrapolation. On the noise-free Moffat pair of issue 12 (true sum
    1.3) the stamps' weighted kernel sum was 1.2953 with that region, 1.2972 / 1.2975 /
    1.2976 with 57 / 69 / 81 px (this rule gave 61 px; measured with the wing fitted at
    the pixels' centres; fitted to their integral since, that kernel is 2-4 px wider).

    Parameters
    ----------
    size : int
        Kernel side (px).
    fwhm_source : float
        FWHM (px) of the convolved image's PSF.

    Returns
    -------
    int
    """
    return size // 2 + math.ceil(fwhm_source)


def make_basis(
    sigmas: np.ndarray, degrees: tuple[int, ...], size: int, wing: Wing | None = None
) -> np.ndarray:
    """The Alard-Lupton basis images (plus the wing), normalised as the module says.

    Parameters
    ----------
    sigmas : numpy.ndarray
        Gaussian widths (px).
    degrees : tuple of int
        Polynomial degree for each Gaussian.
    size : int
        Odd kernel side (px).
    wing : Wing, optional
        The wing profile, appended after the Gaussians.

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
    if wing is not None:
        raw.append(wing.profile(size))
    first = raw[0] / raw[0].sum()
    rest = [b - b.sum() * first for b in raw[1:]]
    ortho: list[np.ndarray] = []
    for b in rest:
        whole = np.sqrt(np.sum(b * b))
        for o in ortho:
            b = b - np.sum(b * o) * o
        norm = np.sqrt(np.sum(b * b))
        if norm > INDEPENDENT * whole:
            ortho.append(b / norm)
    return np.array([first, *ortho])


def psf_only_config(config: KernelConfig) -> KernelConfig:
    """The basis of a kernel fitted to two PSF images alone: ``config`` with its degrees
    capped, Gaussian by Gaussian, at :data:`PSF_ONLY_DEGREES` (the last entry for any
    further Gaussian) and its narrowest width allowed down to :data:`PSF_ONLY_MIN_SIGMA`.

    Stamps of stars choose the prior that tames a rich basis by holding stars out
    (:mod:`kernel_prior`); a fit to two PSF images has nothing to hold out. With HOTPANTS's
    6, 4, 2 that fit follows the PSF models' structure far from the core: on Rubin's
    LSSTCam cutouts the kernel's L2 norm rose from 0.20 to 0.32, half its weight negative,
    and a transient's PSF flux fell to 0.14 of the survey's (0.51 with 4, 2, 2). And the
    noise-free fit can use a narrower Gaussian than stamps can: with 0.7 px the kernel
    mapping a PSF onto itself put 0.98 in its centre and -0.11 around it, with 0.5 px it
    is a delta to 4e-4.

    Parameters
    ----------
    config : KernelConfig
        The configured basis (``kernel.degrees``, ``kernel.min_sigma``).

    Returns
    -------
    KernelConfig
    """
    caps = PSF_ONLY_DEGREES + (PSF_ONLY_DEGREES[-1],) * len(config.degrees)
    return dataclasses.replace(
        config,
        degrees=tuple(min(d, c) for d, c in zip(config.degrees, caps, strict=False)),
        min_sigma=min(config.min_sigma, PSF_ONLY_MIN_SIGMA),
    )


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


@dataclasses.dataclass(frozen=True, eq=False)
class BasisPlan:
    """Everything that shapes the kernel before any stamp is read.

    Attributes
    ----------
    sigmas : numpy.ndarray
        Gaussian widths (px).
    wing : Wing or None
        The wing function's profile.
    size : int
        Kernel side (px, odd).
    fit_half : int
        Half-width (px) of each stamp's fit region.
    deconvolution : bool
        Whether the convolved image's PSF is the broader.
    core_half : int or None
        Half-width (px) of the region's core, :data:`CORE_FIT_HALF_FWHM` of the broader
        PSF, when the region is wider (with the wing): the kernel may be fitted on it
        alone (:mod:`kernel_region`).
    """

    sigmas: np.ndarray
    wing: Wing | None
    size: int
    fit_half: int
    deconvolution: bool
    core_half: int | None = None

    @property
    def stamp_half(self) -> int:
        """Half-width (px) of the convolved image's stamp: fit region plus kernel."""
        return self.fit_half + self.size // 2

    def basis(self, degrees: tuple[int, ...]) -> np.ndarray:
        """The basis images (:func:`make_basis`)."""
        return make_basis(self.sigmas, degrees, self.size, self.wing)


def plan_basis(
    src_psf: PsfEstimate, tgt_psf: PsfEstimate, config: KernelConfig, n_stamps: int
) -> BasisPlan:
    """Basis widths, wing, kernel size and fit region from the two PSFs.

    Parameters
    ----------
    src_psf, tgt_psf : PsfEstimate
        PSFs of the convolved image and of the image it is matched to.
    config : KernelConfig
        Basis and size limits.
    n_stamps : int
        Stamps that will be fitted (the wing needs :data:`WING_MIN_STAMPS`).

    Returns
    -------
    BasisPlan
    """
    sigmas, deconv = basis_sigmas(src_psf.fwhm, tgt_psf.fwhm, config)
    fitted = fit_wing(tgt_psf) if config.wing and n_stamps >= WING_MIN_STAMPS else None
    wing = None if fitted is None else fitted[0]
    size = kernel_size(sigmas, config, wing)
    broader = max(src_psf.fwhm, tgt_psf.fwhm)
    core_half = int(max(4, math.ceil(CORE_FIT_HALF_FWHM * broader)))
    if wing is None:
        return BasisPlan(sigmas, wing, size, core_half, deconv)
    fit_half = max(math.ceil(FIT_HALF_FWHM * broader), wing_fit_half(size, src_psf.fwhm))
    return BasisPlan(
        sigmas, wing, size, fit_half, deconv, core_half if core_half < fit_half else None
    )


def size_cap(shape: tuple[int, ...]) -> int:
    """The largest kernel side (px, odd) fitted on stamps of an image of this shape: half
    its shorter side, so that part of even a small cutout has stamps and usable pixels.

    Parameters
    ----------
    shape : tuple of int
        The image's shape.

    Returns
    -------
    int
    """
    return max(3, (min(shape) // 2 - 1) | 1)


def stamp_half_width(
    sci_psf: PsfEstimate, tmpl_psf: PsfEstimate, config: KernelConfig, *, wing: bool = False
) -> int:
    """Half-width (px) of the stamp the Gaussian basis's fit reads around each star, in
    either direction; with ``wing``, of the stamp the basis with its wing function reads
    (wider kernel and fit region), when the config and the PSFs allow a wing.

    Candidate selection checks the Gaussian basis's pixels (edges, masks, saturation) and
    sizes its isolation radius with them. The wing's wider stamps are not asked for there:
    on the DECam demo stacks they halved the candidates (16 to 8) and the fit failed; the
    kernel fit checks its own stamps' edges and masks, and clips other sources within
    them. Light that only the convolved image holds reaches a stamp's fit region from
    anywhere in its wider stamp: selection looks that far for it
    (:func:`diffviewer.engine.star_fluxes.unmatched_light`).

    Parameters
    ----------
    sci_psf, tmpl_psf : PsfEstimate
        PSFs of the two images.
    config : KernelConfig
        Basis and size limits.
    wing : bool
        The stamp of the basis with the wing function.

    Returns
    -------
    int
    """
    n_stamps = WING_MIN_STAMPS if wing else 0
    return max(
        plan_basis(tmpl_psf, sci_psf, config, n_stamps).stamp_half,
        plan_basis(sci_psf, tmpl_psf, config, n_stamps).stamp_half,
    )
