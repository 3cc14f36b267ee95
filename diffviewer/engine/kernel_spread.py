"""The wing of a kernel fitted on too few stamps for the wing function: a fixed spread.

Seeing PSFs have power-law wings the basis's Gaussians cannot hold
(:mod:`kernel_basis`); the wing function that carries them needs
:data:`~diffviewer.engine.kernel_basis.WING_MIN_STAMPS` stamps to be fitted. With fewer,
the Gaussians alone left kernel sums biased low by more than their errors: issue 12's
Moffat pair (science beta 2.5 from a beta 3.5 template, true sum 1.30) cut to 300^2 with
25 stars gave 1.255-1.273 over eight draws, 7-21 times their stated errors.

With fewer stamps the wing's amplitude per unit kernel sum, ``w``, is fixed by the two
PSFs instead (:func:`wing_spread`), and the convolved image is spread with
``S = delta + w W`` (``W = P - sum(P) B_0``: the wing profile less its sum in the
narrowest Gaussian) before the Gaussian kernel ``K_G`` is fitted to it on the stamps as
before (:func:`diffviewer.engine.subtract.convolved`: the image with ``S``, its variance
with ``S^2``, the sky covariance measured on it); the kernel is then ``K_G * S``
(:func:`spread_solution`), and the stamps' own kernels are on the spread basis
(:func:`spread_basis`). ``S`` is no small change: on issue 12's PSFs ``w sum(P)`` is
0.9, the core of the image moved into the profile (``S`` is 0.77 at its centre,
``sum(S^2)`` 0.63), which is why its variance is carried. ``S`` sums to 1, so the kernel
sum is ``K_G``'s, and the profiles' fit errors are the sum's too
(:func:`profile_sum_error`: the stars' jackknife cannot see them, as every fold shares
the spread; left out, issue 12's eight draws had pulls to -4.2). When too few stamps
pass their cuts for a fit at all, the kernel from the PSFs
(:func:`diffviewer.engine.kernel._fallback_solution`) is not spread; only the stamps'
own kernels were fitted on the spread image.

Fitting the wing into a wider kernel instead widened the stamps, which lost stamps at
edges and masks and, on the DECam demo stacks (12 good stamps), changed which stamps
shaped the kernel near the transient's host (a -14 sigma lobe there, -4 before).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from diffviewer.config import KernelConfig
from diffviewer.engine.fftconv import convolve
from diffviewer.engine.kernel_basis import (
    WING_ALPHA_MIN,
    WING_BETA_LIMITS,
    Wing,
    fit_wing,
    kernel_size,
    make_basis,
)
from diffviewer.engine.kernel_design import psf_kernel_coefficients
from diffviewer.engine.kernel_solution import KernelSolution
from diffviewer.engine.psf import PsfEstimate, frozen


def moffat_model(psf: PsfEstimate, profile: Wing) -> PsfEstimate:
    """``psf`` with its image replaced by ``profile`` on the same grid, sum 1."""
    image = profile.profile(psf.image.shape[0])
    return dataclasses.replace(psf, image=image / image.sum())


@dataclasses.dataclass(frozen=True)
class Spread:
    """The wing fixed by the two PSFs (:func:`wing_spread`).

    Attributes
    ----------
    wing : Wing
        The target's profile with its ``weight``, the amplitude per unit kernel sum.
    image : numpy.ndarray
        The spread ``delta + w W`` (odd side, sum 1).
    sum_error : float
        Relative standard error the two profiles' fits give the kernel sum
        (:func:`profile_sum_error`); NaN where it could not be computed.
    """

    wing: Wing
    image: np.ndarray
    sum_error: float


def wing_spread(
    src_psf: PsfEstimate,
    tgt_psf: PsfEstimate,
    sigmas: np.ndarray,
    config: KernelConfig,
    cap: int,
) -> Spread | None:
    """The wing's amplitude per unit kernel sum, the spread ``delta + w W`` and the kernel
    sum's error from the profiles (:func:`spread_of`, :func:`profile_sum_error`).

    The profiles, not the PSF images, because a stack of a few stars is noisy where the
    wing is faint: on four 300^2 Moffat pairs of 25 stars (template FWHM 2.8 px; 0.0313
    from the true PSFs) the images gave -0.0005 to 0.058, the profiles 0.0300-0.0305
    (fitted then at the pixels' centres); on 300^2 crops of GOTO the images gave -6.3 and
    1.9. Finding ``w`` instead as the one whose spread lets the Gaussians map one profile
    onto the other best gave 0.028-0.031 and sums 0.1 % lower.

    Parameters
    ----------
    src_psf, tgt_psf : PsfEstimate
        PSFs of the convolved image and of the image it is matched to.
    sigmas : numpy.ndarray
        The basis's Gaussian widths (px).
    config : KernelConfig
        ``kernel.wing`` (off: no spread), the degrees and size limits.
    cap : int
        Largest side (px, odd) of the spread.

    Returns
    -------
    Spread or None
        None without the wing, without a profile fitted to either PSF image, or where
        :func:`spread_of` gives none.
    """
    if not config.wing:
        return None
    target, source = fit_wing(tgt_psf), fit_wing(src_psf)
    if target is None or source is None:
        return None
    made = spread_of(src_psf, tgt_psf, (source[0], target[0]), sigmas, config, cap)
    if made is None:
        return None
    error = profile_sum_error(src_psf, tgt_psf, (source, target), sigmas, config, (cap, made[1]))
    return Spread(made[0], made[1], error)


def spread_of(
    src_psf: PsfEstimate,
    tgt_psf: PsfEstimate,
    profiles: tuple[Wing, Wing],
    sigmas: np.ndarray,
    config: KernelConfig,
    cap: int,
) -> tuple[Wing, np.ndarray] | None:
    """The spread the two profiles fix.

    The kernel mapping the source's profile onto the target's (:func:`moffat_model`) is
    fitted on the basis with the wing function, at the size the wing calls for
    (:func:`~diffviewer.engine.kernel_basis.make_basis`). The part of the wing function
    independent of the Gaussians is the zero-sum profile ``W = P - sum(P) B_0`` less its
    projection on them, so its coefficient over the first one's (the kernel sum), divided
    by that part's norm ``<B_wing, W>``, is ``w``. That holds for the additive kernel
    ``K_G + w sum(K_G) W``; the convolution ``K_G * S`` differs from it by ``K_G``
    smoothing ``W``, so ``w`` is an approximation: 0.0302 from the profiles fitted to
    issue 12's true PSF images, 0.0313 from the images themselves.

    Parameters
    ----------
    src_psf, tgt_psf : PsfEstimate
        PSFs of the convolved image and of the image it is matched to (their grids).
    profiles : (Wing, Wing)
        The source's and the target's fitted profiles.
    sigmas, config, cap
        As for :func:`wing_spread`.

    Returns
    -------
    (Wing, numpy.ndarray) or None
        The target's profile with its ``weight``, and the spread (odd side, sum 1); None
        when the target's profile falls as steeply as the source's or more (no wing for
        the kernel to add: on a GOTO crop, beta 6.6 onto 3.3 gave a weight of 0.66 that
        reshaped the core and a kernel sum of 1.8 +- 0.65), when the share of the
        kernel's flux the profiles' kernel puts in the wing, ``w sum(P)``, is not between
        0 and 1 (a target as steep within the fits' noise: a GOTO crop's -0.008, 4.0 px
        beta 3 onto 3.0 px beta 2.9 -0.021; a deconvolution: 3.0 px beta 4 onto 2.5 px
        beta 3.8 gave w = 1.18, ``w sum(P)`` 10.3, the spread's core negative), when
        ``cap`` leaves the spread no wider than the Gaussians' kernel, or when the wing
        is not independent of the Gaussians at that size.
    """
    source, wing = profiles
    if wing.beta >= source.beta:
        return None
    size = min(kernel_size(sigmas, config, wing), cap)
    if size <= kernel_size(sigmas, config):
        return None
    free = make_basis(sigmas, config.degrees, size, wing)
    if len(free) == len(make_basis(sigmas, config.degrees, size)):
        return None
    coef = psf_kernel_coefficients(moffat_model(src_psf, source), moffat_model(tgt_psf, wing), free)
    profile = wing.profile(size)
    zero_sum = profile - profile.sum() * free[0]
    weight = float(coef[-1] / (np.sum(free[-1] * zero_sum) * coef[0]))
    if not 0.0 < weight * float(profile.sum()) < 1.0:
        return None
    spread = weight * zero_sum
    spread[size // 2, size // 2] += 1.0
    return dataclasses.replace(wing, weight=weight), spread


def model_kernel_sum(
    src_psf: PsfEstimate, tgt_psf: PsfEstimate, spread: np.ndarray, gaussians: np.ndarray
) -> float:
    """Sum of the Gaussian kernel that maps the source PSF image, spread, onto the target
    PSF image: the stamps' fit made on the two PSFs (``gaussians``, the basis without
    the wing)."""
    spread_psf = dataclasses.replace(src_psf, image=convolve(src_psf.image, spread, "same"))
    coef = psf_kernel_coefficients(spread_psf, tgt_psf, gaussians)
    return float(np.tensordot(coef, gaussians, axes=1).sum())


def profile_sum_error(
    src_psf: PsfEstimate,
    tgt_psf: PsfEstimate,
    fits: tuple[tuple[Wing, np.ndarray], tuple[Wing, np.ndarray]],
    sigmas: np.ndarray,
    config: KernelConfig,
    cap_spread: tuple[int, np.ndarray],
) -> float:
    """Relative standard error of the kernel sum owing to the two profiles' fits.

    The kernel sum depends on the spread's shape: a profile fitted too steep leaves the
    spread image short of the far wing the target's stars have, and the Gaussians, which
    cannot reach it, fit a lower sum. That dependence is taken on the two PSF images
    (:func:`model_kernel_sum`): each profile's core width and index moved by one of its
    standard errors in turn (forward, or back where forward gives no spread), the spread
    made again (:func:`spread_of`), the sum's change per unit of each, and the variance
    ``g^T C g`` with each fit's covariance ``C``
    (:func:`~diffviewer.engine.kernel_basis.fit_wing`), the two fits independent. On
    issue 12's eight 300^2 Moffat pairs the PSF images' sums moved by -0.27 to -0.35 %
    per +0.1 of the target's index (its core width refitted), the stamps' refitted
    kernels by -0.25 to -0.33 %. Four spreads made again: 0.25 s.

    Parameters
    ----------
    src_psf, tgt_psf : PsfEstimate
        PSFs of the convolved image and of the image it is matched to.
    fits : ((Wing, numpy.ndarray), (Wing, numpy.ndarray))
        The source's and the target's profiles with their (alpha, beta) covariances.
    sigmas, config
        As for :func:`wing_spread`.
    cap_spread : (int, numpy.ndarray)
        The spread's largest side (px, odd) and the spread the fitted profiles give.

    Returns
    -------
    float
        NaN where a moved profile gives no spread either way.
    """
    cap, spread = cap_spread
    shaping = (sigmas, config, cap)
    gaussians = make_basis(sigmas, config.degrees, kernel_size(sigmas, config))
    fitted = (fits[0][0], fits[1][0])
    base = model_kernel_sum(src_psf, tgt_psf, spread, gaussians)
    variance = 0.0
    for which, (_, covariance) in enumerate(fits):
        slopes = np.zeros(2)
        for k, step in enumerate(np.sqrt(np.clip(np.diag(covariance), 0.0, None))):
            slopes[k] = 0.0 if step == 0.0 else np.nan
            for signed in (step, -step) if step > 0.0 else ():
                moved = _moved(fitted, which, k, signed)
                made = None if moved is None else spread_of(src_psf, tgt_psf, moved, *shaping)
                if made is not None:
                    slopes[k] = (
                        model_kernel_sum(src_psf, tgt_psf, made[1], gaussians) - base
                    ) / signed
                    break
        variance += float(slopes @ covariance @ slopes)
    return float(np.sqrt(variance)) / abs(base)


def _moved(
    profiles: tuple[Wing, Wing], which: int, k: int, step: float
) -> tuple[Wing, Wing] | None:
    """``profiles`` with the core width (``k`` 0) or the index (1) of the source's
    (``which`` 0) or the target's (1) moved by ``step``; None where that leaves the
    bounds the fits keep to (:func:`~diffviewer.engine.kernel_basis.fit_wing`)."""
    wing = profiles[which]
    alpha, beta = (wing.alpha + step, wing.beta) if k == 0 else (wing.alpha, wing.beta + step)
    if alpha < WING_ALPHA_MIN or not WING_BETA_LIMITS[0] <= beta <= WING_BETA_LIMITS[1]:
        return None
    moved = Wing(alpha, beta)
    return (moved, profiles[1]) if which == 0 else (profiles[0], moved)


def spread_basis(basis: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Each basis image convolved with the spread: coefficients fitted on the spread image
    give, on these, the kernel ``K_G * S`` that applies to the image itself.

    Parameters
    ----------
    basis : numpy.ndarray
        ``(n_basis, size, size)``.
    spread : numpy.ndarray
        The spread (:func:`wing_spread`).

    Returns
    -------
    numpy.ndarray
        ``(n_basis, size + side - 1, size + side - 1)``, read-only.
    """
    return frozen(convolve(basis, spread[None], axes=(1, 2)))


def spread_solution(solution: KernelSolution, wing: Wing, spread: np.ndarray) -> KernelSolution:
    """The kernel ``K_G * S`` (:func:`spread_basis`; the coefficients unchanged), with the
    wing recorded.

    Parameters
    ----------
    solution : KernelSolution
        The Gaussian kernel fitted to the spread image.
    wing : Wing
        The wing with its weight (:func:`wing_spread`).
    spread : numpy.ndarray
        The spread.

    Returns
    -------
    KernelSolution
    """
    return dataclasses.replace(solution, basis=spread_basis(solution.basis, spread), wing=wing)
