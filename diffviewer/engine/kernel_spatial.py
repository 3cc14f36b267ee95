"""The spatial model: every kernel coefficient and the background as polynomials in x, y.

Each coefficient, and the background, is a Chebyshev polynomial in x and y over the image
(scaled to [-1, 1]), solved from the sum of the good stamps' normal equations (as
ip_diffim's spatial kernel solution does) with the roughness prior added once, its
strength chosen by cross-validation over the stamps (:mod:`kernel_prior`); the first
coefficient, which alone carries the kernel sum, has its own (default constant) order.
Stamps whose residual against the spatial model fails the per-stamp limits are rejected
and the model refitted. Orders are lowered until there are :data:`STAMPS_PER_TERM` good
stamps per spatial term. The stamps' equations are summed less their expected noise
(:mod:`kernel_noise`) when its terms are given, unless with the prior they are not
positive definite (noise the stars cannot be told from): the fit then uses them as
measured and says so (:attr:`SpatialFit.noise_note`). The final fit is made again
without each fold of the cross-validation (:func:`fold_solutions`), and each good stamp
is judged against the fit that did not see it (:attr:`SpatialFit.held_out`; without it
alone where the good stamps are few, :data:`LEAVE_ONE_OUT`), as a control star is
against the spatial model.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from diffviewer.config import KernelConfig
from diffviewer.engine.field_terms import chebyshev_terms, n_terms
from diffviewer.engine.kernel_basis import roughness_penalty
from diffviewer.engine.kernel_design import Stamps
from diffviewer.engine.kernel_equations import source_variance
from diffviewer.engine.kernel_noise import NoiseTerms, corrected_equations
from diffviewer.engine.kernel_outliers import kernel_residual_stats
from diffviewer.engine.kernel_prior import (
    FOLDS,
    free_parameters,
    information_scale,
    prior_strength,
    solve_equations,
    spatial_equations,
    spatial_prior,
    stamp_folds,
    term_moments,
)
from diffviewer.engine.kernel_stamps import StampFits

#: Good stamps needed per spatial term before an order is used; below it the order is
#: lowered (with 2 per term, 14 DECam stamps at order 2 left 100-sigma galaxy residuals).
STAMPS_PER_TERM = 5

#: Good stamps up to which each is judged against the fit without it alone: where the
#: stars are few one star moves the kernel, and a star judged by its fold's fit is judged
#: on its fold-mates' absence too (the demo stacks' 12, in folds of two: 30.2 for a star
#: that pulls the kernel, 26.5 without it alone). Beyond, a fold of three stars or more
#: judges them.
LEAVE_ONE_OUT = 3 * FOLDS


def usable_orders(n_good: int, config: KernelConfig) -> tuple[int, int]:
    """Kernel and background orders that ``n_good`` stamps support (at most the config's)."""
    order, bg_order = config.spatial_order, config.background_order
    while order > 0 and n_good < max(config.min_stamps, STAMPS_PER_TERM * n_terms(order)):
        order -= 1
    while bg_order > 0 and n_good < max(config.min_stamps, STAMPS_PER_TERM * n_terms(bg_order)):
        bg_order -= 1
    return order, bg_order


def spatial_solve(
    normal: np.ndarray,
    rhs: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    sum_terms: int,
    prior: np.ndarray,
) -> np.ndarray:
    """Solve the spatial model from the stamps' normal equations and the prior, once.

    Parameters
    ----------
    normal, rhs : numpy.ndarray
        ``(n, nb + 1, nb + 1)`` and ``(n, nb + 1)`` the stamps' equations without the
        prior; the last parameter is the background.
    p, q : numpy.ndarray
        ``(n, ns)`` kernel and ``(n, nq)`` background spatial terms at the stamps.
    sum_terms : int
        Spatial terms of the first coefficient (the kernel sum): the first ``sum_terms``
        of ``p``; the others are held at zero.
    prior : numpy.ndarray
        ``(nb * ns + nq, nb * ns + nq)`` the prior's matrix at its strength
        (:func:`kernel_prior.spatial_prior` times ``lam``).

    Returns
    -------
    numpy.ndarray
        ``nb * ns`` kernel coefficients (basis-major) then ``nq`` background coefficients.
    """
    big, vec = spatial_equations(normal, rhs, p, q)
    free = free_parameters(len(vec), p.shape[1], sum_terms)
    out = np.zeros(len(free))
    out[free] = solve_equations((big + prior)[np.ix_(free, free)], vec[free])
    return out


def fold_solutions(
    normal: np.ndarray,
    rhs: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    sum_terms: int,
    prior: np.ndarray,
    fold: np.ndarray,
) -> np.ndarray:
    """:func:`spatial_solve` without each fold's stamps (``fold``: each stamp's fold,
    :func:`kernel_prior.stamp_folds`): ``(folds, nb * ns + nq)``, a delete-a-group
    jackknife's replicates, whose spread is the solution's sampling error over the stars."""
    return np.array(
        [
            spatial_solve(normal[keep], rhs[keep], p[keep], q[keep], sum_terms, prior)
            for keep in (fold[None, :] != np.arange(int(fold.max()) + 1)[:, None])
        ]
    )


def jackknife_error(replicates: np.ndarray) -> float:
    """Standard error of an estimate from its delete-a-group jackknife ``replicates``
    (one a group, the groups of about equal size): ``sqrt((k - 1) / k * sum((t_f - mean)^2))``
    (Efron & Tibshirani 1993, ch. 11); NaN with fewer than two."""
    k = len(replicates)
    if k < 2:
        return float("nan")
    return float(np.sqrt((k - 1) / k * np.sum((replicates - np.mean(replicates)) ** 2)))


def positive_posterior(
    normal: np.ndarray, p: np.ndarray, q: np.ndarray, sum_terms: int, prior: np.ndarray
) -> bool:
    """Whether the spatial model's summed equations plus ``prior`` are positive definite
    over its free parameters (the arguments of :func:`spatial_solve`)."""
    big, vec = spatial_equations(normal, np.zeros(normal.shape[:2]), p, q)
    free = free_parameters(len(vec), p.shape[1], sum_terms)
    a = (big + prior)[np.ix_(free, free)]
    scale = np.sqrt(np.clip(np.diag(a), 1e-300, None))
    try:
        np.linalg.cholesky(a / scale[:, None] / scale[None, :])
    except np.linalg.LinAlgError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class SpatialFit:
    """The spatial model's coefficients and each usable stamp's fit against it.

    Attributes
    ----------
    coefficients : numpy.ndarray
        ``(n_basis, n_terms(order))``.
    bg_coefficients : numpy.ndarray
        ``(n_terms(bg_order),)``, in the sense target side minus source side.
    order, bg_order : int
        The orders used.
    stamp_coef : numpy.ndarray
        ``(n, n_basis + 1)`` the model's kernel and background at every candidate
        (NaN where the stamp is unusable).
    resid_chi2, resid_mean, resid_std : numpy.ndarray
        ``(n,)`` each usable stamp's normalised residual against the model: chi^2 per
        degree of freedom, mean and standard deviation. :func:`kernel.fit_kernel` takes
        the control stars' from here (made again there, they cost a further convolution
        a stamp: 0.12 s of the 2048 x 4096 pair's kernel fit, by cProfile).
    status, reason : numpy.ndarray
        The stamps' status after the spatial rejection.
    var_total : numpy.ndarray
        ``(n, npix)`` propagated variance, the control stars' with the model's kernel.
    strength : float
        The roughness prior's strength in mean stamps (:mod:`kernel_prior`), chosen by
        cross-validation over the final good stamps unless ``kernel.regularization`` gives it.
    noise_corrected : bool
        Whether the stamps' equations were summed less their expected noise.
    noise_trace_ratio : float
        The trace of that noise over the trace of the equations as measured, over the
        kernel block of the final good stamps (NaN without noise terms).
    noise_note : str
        Why the noise terms given were not used ('' when they were, or none were given).
    fold_coefficients : numpy.ndarray
        ``(folds, n_basis, n_terms(order))`` the kernel coefficients fitted without each
        fold of the final good stamps (:func:`fold_solutions`; empty with fewer than two
        good stamps).
    held_out : numpy.ndarray
        ``(3, n)`` each stamp's normalised residual against a fit it had no part in:
        chi^2 per degree of freedom, mean and standard deviation; a good stamp's against
        the fit without its fold (without it alone up to :data:`LEAVE_ONE_OUT` good
        stamps), a control star's against the spatial model (NaN for the rest, and for
        every stamp with fewer than two good ones).
    held_out_coefficients : numpy.ndarray
        ``(n, n_basis + 1)`` the kernel and background each good stamp was judged with
        (the fit without it, as in :attr:`held_out`, at the stamp; NaN for the rest).
    """

    coefficients: np.ndarray
    bg_coefficients: np.ndarray
    order: int
    bg_order: int
    stamp_coef: np.ndarray
    resid_chi2: np.ndarray
    resid_mean: np.ndarray
    resid_std: np.ndarray
    status: np.ndarray
    reason: np.ndarray
    var_total: np.ndarray
    strength: float
    noise_corrected: bool = False
    noise_trace_ratio: float = float("nan")
    noise_note: str = ""
    fold_coefficients: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0, 0)))
    held_out: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((3, 0)))
    held_out_coefficients: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))


def fit_spatial(
    stamps: Stamps,
    fits: StampFits,
    x: np.ndarray,
    y: np.ndarray,
    control: np.ndarray,
    basis: np.ndarray,
    shape: tuple[int, int],
    orders: tuple[int, int],
    config: KernelConfig,
    noise: NoiseTerms | None = None,
    first_strength: float | None = None,
) -> SpatialFit:
    """Fit the spatial model, rejecting the stamps whose residual against it fails the limits.

    Parameters
    ----------
    stamps : Stamps
        The stamps.
    fits : StampFits
        The per-stamp fits.
    x, y : numpy.ndarray
        Candidate positions (science px).
    control : numpy.ndarray
        Control stars.
    basis : numpy.ndarray
        The basis images.
    shape : (int, int)
        Image shape.
    orders : (int, int)
        Kernel and background orders (:func:`usable_orders`).
    config : KernelConfig
        Limits and the kernel-sum order.
    noise : NoiseTerms, optional
        The expected noise of the stamps' equations per unit weight (:mod:`kernel_noise`),
        subtracted before they are summed, the prior's cross-validation included.
    first_strength : float, optional
        The prior's strength for the first fit, already chosen by the same
        cross-validation over the same good stamps and equations (the degrees' choice,
        :mod:`kernel_degrees`); chosen here when None, and after any stamp is rejected.

    Returns
    -------
    SpatialFit
    """
    nb = basis.shape[0]
    order, bg_order = orders
    status, reason, var_total = fits.status.copy(), fits.reason.copy(), fits.var_total.copy()
    n = len(x)
    schi2, smean, sstd = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    usable = np.nonzero(stamps.ok)[0]
    coef_all = np.full((n, nb + 1), np.nan)
    pa = chebyshev_terms(x[usable], y[usable], order, shape)
    qa = chebyshev_terms(x[usable], y[usable], bg_order, shape)
    ctrl = control[usable]
    penalty = roughness_penalty(basis)
    moments = term_moments(order, shape)
    sum_terms = n_terms(min(config.fixed_sum_order, order))
    measured = (fits.normal, fits.rhs, fits.target_power)
    equations = measured
    if noise is not None:
        equations = corrected_equations(*measured, fits.weight_sum, noise)
    note = ""
    # Each of the max_iterations rounds of rejection is followed by a fit without the
    # stamps it rejected: the kernel never holds a stamp the table calls BAD.
    for rejections in range(config.max_iterations + 1):
        gi = np.nonzero(status == "GOOD")[0]
        p = chebyshev_terms(x[gi], y[gi], order, shape)
        q = chebyshev_terms(x[gi], y[gi], bg_order, shape)
        try:
            strength, prior = _prior(
                equations, gi, p, q, sum_terms, penalty, moments, config, first_strength
            )
            if equations is not measured and not positive_posterior(
                equations[0][gi], p, q, sum_terms, prior
            ):
                raise np.linalg.LinAlgError("not positive definite")
        except np.linalg.LinAlgError:
            if equations is measured:
                raise
            note = (
                "the kernel fit's equations less the images' shared noise measured on sky "
                "are not positive definite with the prior (the noise swamps the stars "
                "there): the kernel is fitted to the equations as measured, biased toward "
                "the kernel that cancels the shared noise"
            )
            equations = measured
            strength, prior = _prior(equations, gi, p, q, sum_terms, penalty, moments, config)
        first_strength = None
        normal, rhs = equations[0][gi], equations[1][gi]
        sol = spatial_solve(normal, rhs, p, q, sum_terms, prior)
        solved = (gi, normal, rhs, p, q, prior, equations[2][gi])
        coefs = sol[: nb * n_terms(order)].reshape(nb, n_terms(order))
        bgc = sol[nb * n_terms(order) :]
        coef_sp = np.column_stack([pa @ coefs.T, qa @ bgc])
        if ctrl.any():
            cu = usable[ctrl]
            var_total[cu] = stamps.var_target[cu] + source_variance(
                stamps, cu, coef_sp[ctrl], basis
            )
        c2, mu, sd = kernel_residual_stats(
            stamps, usable, coef_sp, basis, var_total[usable], fits.used[usable]
        )
        schi2[usable], smean[usable], sstd[usable] = c2, mu, sd
        good = np.nonzero(status == "GOOD")[0]
        hit_mean = good[np.abs(smean[good]) > config.max_residual_mean]
        hit_std = good[(sstd[good] > config.max_residual_std) & ~np.isin(good, hit_mean)]
        n_hit = len(hit_mean) + len(hit_std)
        if (
            rejections == config.max_iterations
            or n_hit == 0
            or len(good) - n_hit < max(config.min_stamps, STAMPS_PER_TERM * n_terms(order))
        ):
            break
        status[hit_mean], reason[hit_mean] = "BAD", "spatial residual mean"
        status[hit_std], reason[hit_std] = "BAD", "spatial residual std"
    coef_all[usable] = coef_sp
    # The jackknife's replicates: the last solve without each fold of its stamps; each
    # of those stamps judged against the replicate without it.
    folds = np.zeros((0, nb, n_terms(order)))
    held, held_coef = np.full((3, n), np.nan), np.full((n, nb + 1), np.nan)
    held[:, usable[ctrl]] = schi2[usable[ctrl]], smean[usable[ctrl]], sstd[usable[ctrl]]
    gi, normal, rhs, p, q, prior, power = solved
    if len(power) > 1:
        nk = nb * n_terms(order)
        fold = stamp_folds(power)
        replicates = fold_solutions(normal, rhs, p, q, sum_terms, prior, fold)
        folds = replicates[:, :nk].reshape(-1, nb, n_terms(order))
        # Each stamp judged by the replicate without it: its fold's, or its own alone.
        judge, judges = fold, replicates
        if len(power) <= LEAVE_ONE_OUT:
            judge = np.arange(len(power))
            judges = fold_solutions(normal, rhs, p, q, sum_terms, prior, judge)
        at_stamps = np.column_stack(
            [
                np.einsum("is,ibs->ib", p, judges[judge, :nk].reshape(-1, nb, n_terms(order))),
                np.einsum("is,is->i", q, judges[judge, nk:]),
            ]
        )
        # Weighed as a control star is: the target's variance plus the source's through
        # the kernel it is judged with.
        still_good = status[gi] == "GOOD"
        judged = gi[still_good]
        held_coef[judged] = at_stamps[still_good]
        var = stamps.var_target[judged] + source_variance(stamps, judged, held_coef[judged], basis)
        held[:, judged] = kernel_residual_stats(
            stamps, judged, held_coef[judged], basis, var, fits.used[judged]
        )
    ratio = float("nan")
    if noise is not None:
        gi = np.nonzero(status == "GOOD")[0]
        kern = slice(0, nb)
        ratio = float(
            np.sum(fits.weight_sum[gi])
            * np.trace(noise.normal[kern, kern])
            / np.sum(np.trace(fits.normal[gi][:, kern, kern], axis1=1, axis2=2))
        )
    return SpatialFit(
        coefs,
        bgc,
        order,
        bg_order,
        coef_all,
        schi2,
        smean,
        sstd,
        status,
        reason,
        var_total,
        strength,
        equations is not measured,
        ratio,
        note,
        folds,
        held,
        held_coef,
    )


def _prior(
    equations: tuple[np.ndarray, np.ndarray, np.ndarray],
    gi: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    sum_terms: int,
    penalty: np.ndarray,
    moments: np.ndarray,
    config: KernelConfig,
    known: float | None = None,
) -> tuple[float, np.ndarray]:
    """The roughness prior's strength (:func:`kernel_prior.prior_strength`, or ``known``
    when given) and matrix for the stamps ``gi`` of ``equations`` (normal, rhs, target
    power)."""
    normal, rhs, power = (e[gi] for e in equations)
    strength = known
    if strength is None:
        strength = prior_strength(
            config.regularization, normal, rhs, power, p, q, sum_terms, penalty, moments
        )
    prior = (
        strength * information_scale(normal, penalty) * spatial_prior(penalty, moments, q.shape[1])
    )
    return strength, prior
