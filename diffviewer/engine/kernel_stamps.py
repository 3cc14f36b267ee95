"""Kernel stamps' own fits: each star's kernel fitted on its stamps with clipping, and
stamp rejection.

Each stamp (:mod:`kernel_design`) is fitted by weighted least squares (weights 1 /
(var_target + K^2 * var_source), with K the stamp's own kernel from a first pass) with a
constant background and a roughness prior (:mod:`kernel_equations`). Where the residual
after a fit, filtered by the PSF, stands out above :data:`kernel_outliers.CLIP_SIGMA`
outside the star's core, something else is there (a source present on one image only, a
variable neighbour, a cosmic ray): those pixels, grown by one FWHM, are masked and the
stamp is refitted, up to :data:`CLIP_ROUNDS` times. Without it, a
3000-count transient 9 px from each of 40 bright stars moved those stamps' backgrounds by
6 counts (sky noise 32) and the spatial background by 1 while every stamp passed the cuts
(its own background centres its residual on zero); with it, by 0.1 and 0.

Stamps are then rejected, iterated, by: residual mean and standard deviation (of the
residual normalised by the propagated noise, over unmasked pixels), kernel sum, background
and chi^2 outliers against the other stamps (:mod:`kernel_outliers`: each deviation from
an iteratively clipped weighted fit, constant for the kernel sum, a plane for the
background, in units of its own error), or a failed fit.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from diffviewer.config import KernelConfig
from diffviewer.engine.field_terms import chebyshev_terms
from diffviewer.engine.kernel_basis import roughness_penalty
from diffviewer.engine.kernel_design import (
    Stamps,
    basis_spectra,
    design_chunks,
    stamp_design,
    stamp_model,
)
from diffviewer.engine.kernel_equations import (
    inverse,
    model_variance,
    solve_with_prior,
    source_variance,
    stamp_equations,
    stamp_prior,
)
from diffviewer.engine.kernel_outliers import (
    clip_mask,
    normalised_residuals,
    outliers,
    residual_power_outliers,
    residual_stats,
    star_power,
)
from diffviewer.engine.lent import lent_map
from diffviewer.engine.progress import Reporter

#: Radius of a star's core, never clipped, in FWHM of the broader PSF: a kernel that does
#: not yet fit the core is a fit to improve, not another source.
CORE_FWHM = 1.5

#: Rounds of pixel clipping and refitting.
CLIP_ROUNDS = 2


@dataclasses.dataclass(frozen=True)
class StampFits:
    """Each stamp's own kernel, its quality figures and its status.

    Every array has one row per candidate (NaN, or False, for stamps never fitted).

    Attributes
    ----------
    coef : numpy.ndarray
        ``(n, nb + 1)`` kernel coefficients and background.
    normal, rhs : numpy.ndarray
        ``(n, nb + 1, nb + 1)`` and ``(n, nb + 1)``: the normal equations (masked pixels
        out, without the prior), which the spatial fit sums.
    target_power : numpy.ndarray
        ``(n,)`` each stamp's ``y^T W y`` over the same weights (held-out chi^2s).
    weight_sum : numpy.ndarray
        ``(n,)`` each stamp's summed weights over the same pixels (the scale of its
        equations' expected noise, :mod:`kernel_noise`).
    var_total : numpy.ndarray
        ``(n, npix)`` the propagated variance of the difference.
    used : numpy.ndarray
        ``(n, npix)`` pixels kept by the clipping.
    chi2, resid_mean, resid_std, kernel_sum, kernel_sum_err, background_err : numpy.ndarray
        ``(n,)``.
    status, reason : numpy.ndarray
        ``(n,)`` object: GOOD/BAD/CONTROL, and why BAD.
    core : CoreEquations or None
        The same stamps' equations over the central part of the region, when asked for
        (:mod:`kernel_region`).
    """

    coef: np.ndarray
    normal: np.ndarray
    rhs: np.ndarray
    target_power: np.ndarray
    weight_sum: np.ndarray
    var_total: np.ndarray
    used: np.ndarray
    chi2: np.ndarray
    resid_mean: np.ndarray
    resid_std: np.ndarray
    kernel_sum: np.ndarray
    kernel_sum_err: np.ndarray
    background_err: np.ndarray
    status: np.ndarray
    reason: np.ndarray
    core: CoreEquations | None = None

    def on_core(self) -> StampFits:
        """These fits with the equations of the core region in place of the whole region's."""
        if self.core is None:
            raise ValueError("the stamps' core equations were not made")
        c = self.core
        return dataclasses.replace(
            self,
            normal=c.normal,
            rhs=c.rhs,
            target_power=c.target_power,
            weight_sum=c.weight_sum,
            core=None,
        )


@dataclasses.dataclass(frozen=True)
class CoreEquations:
    """Each stamp's equations over the central part of its fit region alone, with the
    weights and clipping of its fit over the whole region (:func:`fit_chunk`).

    Attributes
    ----------
    half : int
        Half-width (px) of the central part.
    normal, rhs, target_power, weight_sum : numpy.ndarray
        As :class:`StampFits`' (one row per candidate, zeros for stamps never fitted).
    """

    half: int
    normal: np.ndarray
    rhs: np.ndarray
    target_power: np.ndarray
    weight_sum: np.ndarray


@dataclasses.dataclass(frozen=True)
class _ChunkFit:
    """The own fits of a chunk of stamps (:func:`fit_chunk`); one row per stamp."""

    coef: np.ndarray
    ok: np.ndarray
    normal: np.ndarray
    rhs: np.ndarray
    target_power: np.ndarray
    weight_sum: np.ndarray
    var_total: np.ndarray
    used: np.ndarray
    chi2: np.ndarray
    resid_mean: np.ndarray
    resid_std: np.ndarray
    dof: np.ndarray
    power: np.ndarray
    core: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None


def central_pixels(fit_half: int, half: int) -> np.ndarray:
    """Flat indices, in a fit region of half-width ``fit_half``, of its central square of
    half-width ``half``.

    Parameters
    ----------
    fit_half, half : int
        Half-widths (px), ``half <= fit_half``.

    Returns
    -------
    numpy.ndarray
    """
    side = 2 * fit_half + 1
    inner = np.arange(fit_half - half, fit_half + half + 1)
    return (inner[:, None] * side + inner[None, :]).ravel()


def _kept_equations(
    design: np.ndarray, target: np.ndarray, keep: np.ndarray, var_fit: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stamps' normal equations, right-hand sides and target powers
    (:func:`kernel_equations.stamp_equations`) weighted by ``1 / var_fit`` on the pixels
    ``keep`` holds (0 elsewhere), and the weights' sums."""
    weights = np.where(keep, 1.0 / var_fit, 0.0).astype(np.float32)
    return (*stamp_equations(design, target, weights), weights.sum(axis=1, dtype=np.float64))


def fit_chunk(
    stamps: Stamps,
    idx: np.ndarray,
    design: np.ndarray,
    basis: np.ndarray,
    penalty: np.ndarray,
    fwhm: float,
    core_half: int | None = None,
) -> _ChunkFit:
    """Fit the stamps ``idx`` (with their design) each with its own kernel, with clipping.

    Each stamp's fit depends on that stamp alone, so the stamps are fitted a chunk at a
    time and only a chunk's design is ever held (:data:`kernel_design.STAMP_BATCH_BYTES`).

    Parameters
    ----------
    stamps : Stamps
        The stamps.
    idx : numpy.ndarray
        Which.
    design : numpy.ndarray
        ``(len(idx), npix, nb + 1)`` their design (:func:`kernel_design.stamp_design`).
    basis : numpy.ndarray
        The basis images.
    penalty : numpy.ndarray
        Their :func:`kernel_basis.roughness_penalty`, made once for all the chunks (made
        for each of the 44 chunks of the 2048 x 4096 pair, 0.07-0.1 s by cProfile).
    fwhm : float
        FWHM (px) of the broader PSF (:func:`kernel_outliers.clip_mask`, :data:`CORE_FWHM`).
    core_half : int, optional
        Also make each stamp's equations over the central square of this half-width,
        with the final weights of the whole region's fit (:class:`CoreEquations`).

    Returns
    -------
    _ChunkFit
    """
    nb = basis.shape[0]
    target, var_target, usable = stamps.target[idx], stamps.var_target[idx], stamps.usable[idx]
    m = stamps.var_source.shape[-1]
    c, h = m // 2, stamps.fit_half
    vs0 = stamps.var_source[idx, c - h : c + h + 1, c - h : c + h + 1]
    w0 = np.where(usable, 1.0 / (var_target + vs0.reshape(len(idx), -1)), 0.0)
    nrm, rh, _ = stamp_equations(design, target, w0)
    coef, ok0 = solve_with_prior(nrm, rh, stamp_prior(nrm, penalty))
    coef[~ok0] = 0.0
    coef[~ok0, 0] = 1.0
    var_src = source_variance(stamps, idx, coef, basis)
    var_total = var_target + var_src
    model = stamp_model(design, coef, nb + 1)
    var_fit = model_variance(target, var_target, model) + var_src
    keep = usable
    yy, wsum, okf = np.zeros(len(idx)), np.zeros(len(idx)), np.zeros(len(idx), dtype=bool)
    refit: np.ndarray | slice = slice(None)
    for clip_round in range(CLIP_ROUNDS + 1):
        # only the stamps whose mask changed are refitted: the others' equations, fit and
        # model are those of the last round (each stamp's fit is its own)
        part = design[refit]  # a copy when only some are refitted: made once a round
        nrm[refit], rh[refit], yy[refit], wsum[refit] = _kept_equations(
            part, target[refit], keep[refit], var_fit[refit]
        )
        coef[refit], okf[refit] = solve_with_prior(
            nrm[refit], rh[refit], stamp_prior(nrm[refit], penalty)
        )
        model[refit] = stamp_model(part, np.nan_to_num(coef[refit]), nb + 1)
        if clip_round == CLIP_ROUNDS:
            break  # the mask stays the one this last fit used: the figures below use it
        # an unusable pixel's residual (a cosmic ray's) is none: it is not clipped around
        new = usable & clip_mask(
            np.where(usable, normalised_residuals(target, model, var_total), 0.0),
            stamps.fit_half,
            CORE_FWHM * fwhm,
            fwhm,
        )
        refit = np.nonzero(np.any(new != keep, axis=1))[0]
        if len(refit) == 0:
            break
        keep = new
    c2, mu, sd = residual_stats(normalised_residuals(target, model, var_total), keep, nb + 1)
    star = stamp_model(design, np.nan_to_num(coef), nb)
    dof, power = star_power(star, var_total, keep, nb + 1)
    core = None
    if core_half is not None:
        at = central_pixels(stamps.fit_half, core_half)
        core = _kept_equations(design[:, at], target[:, at], keep[:, at], var_fit[:, at])
    return _ChunkFit(coef, okf, nrm, rh, yy, wsum, var_total, keep, c2, mu, sd, dof, power, core)


def fit_stamps(
    stamps: Stamps,
    x: np.ndarray,
    y: np.ndarray,
    control: np.ndarray,
    basis: np.ndarray,
    fwhm: float,
    shape: tuple[int, int],
    config: KernelConfig,
    reporter: Reporter,
    core_half: int | None = None,
) -> StampFits:
    """Fit each stamp's own kernel (with clipping) and reject the outliers.

    Parameters
    ----------
    stamps : Stamps
        The stamps.
    x, y : numpy.ndarray
        Candidate positions (science px).
    control : numpy.ndarray
        Control stars (never fitted).
    basis : numpy.ndarray
        The basis images.
    fwhm : float
        FWHM (px) of the broader PSF: sets the clipping's filter, growth and the star's
        core (:data:`CORE_FWHM`), never clipped.
    shape : (int, int)
        Image shape (scales positions for the background outliers' plane).
    config : KernelConfig
        Rejection limits.
    reporter : Reporter
        Progress and cancellation.
    core_half : int, optional
        Also make the stamps' equations over their central square of this half-width
        (:class:`CoreEquations`).

    Returns
    -------
    StampFits
    """
    n, nb = len(x), basis.shape[0]
    npix = stamps.target.shape[1]
    status = np.where(control, "CONTROL", "GOOD").astype(object)
    reason = np.full(n, "", dtype=object)
    ok = stamps.ok
    reason[~ok] = "edge or masked in the fit stamp"
    status[~ok & ~control] = "BAD"
    fitted = np.nonzero(ok & ~control)[0]
    chi2, rmean, rstd, ksum, ksum_err, bg_err, dof, power = (np.full(n, np.nan) for _ in range(8))
    coef_all = np.full((n, nb + 1), np.nan)
    normal = np.zeros((n, nb + 1, nb + 1))
    rhs = np.zeros((n, nb + 1))
    target_power, weight_sum = np.zeros(n), np.zeros(n)
    core = None
    if core_half is not None:
        core = CoreEquations(
            core_half, np.zeros_like(normal), np.zeros_like(rhs), np.zeros(n), np.zeros(n)
        )
    var_total = np.zeros((n, npix), dtype=np.float32)
    used = stamps.usable.copy()
    fit_ok = np.zeros(n, dtype=bool)
    penalty = roughness_penalty(basis)
    spectra = basis_spectra(stamps, basis)
    chunks = design_chunks(stamps, len(fitted), basis)

    def fit(chunk: slice) -> _ChunkFit:
        design = stamp_design(stamps, fitted[chunk], spectra)
        return fit_chunk(stamps, fitted[chunk], design, basis, penalty, fwhm, core_half)

    # Each chunk's stamps are fitted alone: on the run's lent threads when it has some.
    for chunk, f in zip(chunks, lent_map()(fit, chunks), strict=True):
        i = fitted[chunk]
        coef_all[i], fit_ok[i], normal[i], rhs[i] = f.coef, f.ok, f.normal, f.rhs
        target_power[i], weight_sum[i] = f.target_power, f.weight_sum
        var_total[i], used[i] = f.var_total, f.used
        chi2[i], rmean[i], rstd[i] = f.chi2, f.resid_mean, f.resid_std
        dof[i], power[i] = f.dof, f.power
        if core is not None and f.core is not None:
            core.normal[i], core.rhs[i], core.target_power[i], core.weight_sum[i] = f.core
        reporter.update(0.05 + 0.6 * chunk.stop / len(fitted))
    if len(fitted):
        sums = np.append(basis.sum(axis=(1, 2)), 0.0)
        ksum[fitted] = coef_all[fitted] @ sums
        nrm = normal[fitted]
        with np.errstate(all="ignore"):
            cov = inverse(nrm + stamp_prior(nrm, penalty))
            ksum_err[fitted] = np.sqrt(np.clip(np.einsum("k,nkl,l->n", sums, cov, sums), 0, None))
            bg_err[fitted] = np.sqrt(np.clip(cov[:, nb, nb], 0, None))
        bad_fit = fitted[~fit_ok[fitted]]
        status[bad_fit], reason[bad_fit] = "BAD", "fit failed"
        _reject(
            status,
            reason,
            rmean,
            rstd,
            ksum,
            ksum_err,
            coef_all[:, nb],
            bg_err,
            (chi2, dof, power),
            x,
            y,
            shape,
            config,
        )
    return StampFits(
        coef_all,
        normal,
        rhs,
        target_power,
        weight_sum,
        var_total,
        used,
        chi2,
        rmean,
        rstd,
        ksum,
        ksum_err,
        bg_err,
        status,
        reason,
        core,
    )


def _reject(
    status: np.ndarray,
    reason: np.ndarray,
    rmean: np.ndarray,
    rstd: np.ndarray,
    ksum: np.ndarray,
    ksum_err: np.ndarray,
    bg: np.ndarray,
    bg_err: np.ndarray,
    residual: tuple[np.ndarray, np.ndarray, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    shape: tuple[int, int],
    config: KernelConfig,
) -> None:
    """Mark BAD (in place, on this function's own arrays) the stamps failing a cut, iterated.

    ``residual`` is each stamp's chi^2 per degree of freedom, degrees of freedom and
    star power (:func:`kernel_outliers.residual_power_outliers`)."""
    chi2, dof, power = residual
    plane = chebyshev_terms(x, y, 1, shape)
    for _ in range(config.max_iterations):
        good = np.nonzero(status == "GOOD")[0]
        new = np.zeros(len(status), dtype=bool)
        nsig = config.max_stamp_outlier_sigma
        for mask_, why in (
            (np.abs(rmean[good]) > config.max_residual_mean, "residual mean"),
            (rstd[good] > config.max_residual_std, "residual std"),
            (
                outliers(
                    ksum[good], ksum_err[good], np.ones((len(good), 1)), config.max_kernel_sum_sigma
                ),
                "own kernel sum outlier",
            ),
            (outliers(bg[good], bg_err[good], plane[good], nsig), "background outlier"),
            (
                residual_power_outliers(chi2[good], dof[good], power[good], nsig),
                "residual power outlier",
            ),
        ):
            hit = good[mask_ & ~new[good]]
            reason[hit] = why
            new[hit] = True
        if not new.any():
            break
        status[new] = "BAD"
