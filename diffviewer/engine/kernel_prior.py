"""The kernel's roughness prior in the spatial fit: counted once, its strength chosen from the data.

The kernel fit is regularised by a penalty on the kernel's roughness (its squared
Laplacian, :func:`kernel_basis.roughness_penalty`), a Gaussian prior on the kernel. A
prior enters a fit once, however many stamps the data come in: the spatial fit sums the
stamps' normal equations (without the stabiliser of their own fits,
:data:`kernel_equations.STAMP_PRIOR`) and adds ``lam * R (x) S`` once, ``S`` the mean over
the image of the products of the spatial terms, so a spatially constant kernel is
penalised as in a single fit, and the penalty is the kernel's roughness averaged over the
image, not over where the stars happen to be. Before, each stamp's prior was summed with
its equations: the prior was counted once a stamp (~135 times on a 1024^2 pair).

The strength is given as the prior's weight in units of the mean stamp's information,
``t = lam tr(R) / mean_i tr(M_i)`` (``M_i`` the kernel block of stamp ``i``'s normal
matrix): ``t = 1`` weighs as one average stamp. It is chosen by K-fold cross-validation
over the stamps (:func:`prior_strength`): each fold of stars is predicted by
the spatial model fitted to the others, and ``t`` minimises the held-out chi^2 summed
over the folds. That is the predictive risk the strength trades (noise against the
penalty's bias) measured on stars the fit never saw, with whatever the model misses
(PSF mismatch, colour terms) included; ip_diffim estimates the same risk analytically
for one stamp (``lambdaType = minimizeUnbiasedRisk``), which assumes the noise model is
complete. With the stamps' normal equations and each stamp's weighted target power
``y^T W y`` the held-out chi^2 is exact without touching a pixel. With those less their
expected noise (:mod:`kernel_noise`) it is the held-out chi^2 of the stars' signal, the
noise's own part taken out, and strengths whose posterior is not positive definite for a
fold are not candidates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np
import scipy.linalg

from diffviewer.engine.field_terms import chebyshev_terms, n_terms
from diffviewer.engine.kernel_noise import NoiseTerms, corrected_equations
from diffviewer.engine.lent import lent_map

#: Candidate strengths ``t`` (prior weight in mean stamps), a quarter decade apart; the
#: lowest barely touches a 1000-stamp fit, the highest is ten stamps' worth.
STRENGTH_GRID = 10.0 ** np.arange(-6.0, 1.01, 0.25)

#: Folds of the cross-validation (leave-one-out with fewer stamps).
FOLDS = 10

#: The strength with a single stamp, where nothing can be held out (a thousandth of it).
SINGLE_STAMP_STRENGTH = 1e-3

#: Points per axis of the grid over which :func:`term_moments` averages.
MOMENT_POINTS = 65


def term_moments(order: int, shape: tuple[int, int]) -> np.ndarray:
    """``S[s, t]``: the mean over the image of ``P_s P_t``, the Chebyshev terms of ``order``.

    Parameters
    ----------
    order : int
        Spatial order.
    shape : (int, int)
        Image shape (ny, nx).

    Returns
    -------
    numpy.ndarray
        ``(n_terms(order), n_terms(order))``; ``S[0, 0] = 1``.
    """
    ny, nx = shape
    gx, gy = np.meshgrid(
        np.linspace(0.0, nx - 1.0, MOMENT_POINTS), np.linspace(0.0, ny - 1.0, MOMENT_POINTS)
    )
    p = chebyshev_terms(gx.ravel(), gy.ravel(), order, shape)
    return np.asarray(p.T @ p / len(p))


def spatial_equations(
    normal: np.ndarray, rhs: np.ndarray, p: np.ndarray, q: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The spatial model's normal equations, summed over the stamps.

    Parameters
    ----------
    normal, rhs : numpy.ndarray
        ``(n, nb + 1, nb + 1)`` and ``(n, nb + 1)`` the stamps' equations (no prior); the
        last parameter is the background.
    p, q : numpy.ndarray
        ``(n, ns)`` kernel and ``(n, nq)`` background spatial terms at the stamps.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(nb * ns + nq, nb * ns + nq)`` matrix and right-hand side: kernel coefficients
        basis-major, then the background's.
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
    return big, vec


def spatial_prior(penalty: np.ndarray, moments: np.ndarray, nq: int) -> np.ndarray:
    """The prior's matrix over the spatial parameters at unit strength: ``R (x) S``, and
    nothing on the background.

    Parameters
    ----------
    penalty : numpy.ndarray
        ``(nb + 1, nb + 1)`` :func:`kernel_basis.roughness_penalty` (background row zero).
    moments : numpy.ndarray
        ``(ns, ns)`` :func:`term_moments`.
    nq : int
        Background terms.

    Returns
    -------
    numpy.ndarray
        ``(nb * ns + nq, nb * ns + nq)``.
    """
    nb = penalty.shape[0] - 1
    kern = np.kron(penalty[:nb, :nb], moments)
    out = np.zeros((kern.shape[0] + nq, kern.shape[0] + nq))
    out[: kern.shape[0], : kern.shape[0]] = kern
    return out


def information_scale(normal: np.ndarray, penalty: np.ndarray) -> float:
    """``mean_i tr(M_i) / tr(R)``: the absolute strength of a prior weighing as one mean
    stamp (``M_i`` the kernel block of ``normal[i]``, ``R`` of ``penalty``)."""
    nb = penalty.shape[0] - 1
    traces = np.trace(normal[:, :nb, :nb], axis1=1, axis2=2)
    return float(np.mean(traces) / np.trace(penalty[:nb, :nb]))


def free_parameters(n_params: int, ns: int, sum_terms: int) -> np.ndarray:
    """Which spatial parameters are fitted: all but the first basis function's spatial
    terms beyond ``sum_terms`` (the kernel sum's order), held at zero."""
    free = np.ones(n_params, dtype=bool)
    free[sum_terms:ns] = False
    return free


def solve_equations(big: np.ndarray, vec: np.ndarray) -> np.ndarray:
    """Solve symmetric positive (semi-)definite equations, scaled to unit diagonal; least
    squares when they are singular."""
    scale = np.sqrt(np.clip(np.diag(big), 1e-300, None))
    a, b = big / scale[:, None] / scale[None, :], vec / scale
    try:
        sol = scipy.linalg.solve(a, b, assume_a="pos")
    except (np.linalg.LinAlgError, ValueError):
        sol = np.linalg.lstsq(a, b, rcond=1e-10)[0]
    return np.asarray(sol / scale)


@dataclasses.dataclass(frozen=True)
class HeldOutSetting:
    """What every comparison of spatial fits by the stamps held out shares (the fit
    region's, the degrees'): where the stamps are, the spatial model, the prior's
    strengths tried and the stamps' expected noise.

    Attributes
    ----------
    xy : (numpy.ndarray, numpy.ndarray)
        Candidate positions (science px).
    shape : (int, int)
        Image shape.
    orders : (int, int)
        Kernel and background spatial orders.
    sum_order : int
        The kernel sum's spatial order (``KernelConfig.fixed_sum_order``, or each order
        :func:`~diffviewer.engine.kernel_sum_order.choose_sum_order` compares).
    regularization : float
        ``kernel.regularization``: the strength compared at when 0 or more, else every
        strength of :data:`STRENGTH_GRID`.
    noise : NoiseTerms or None
        The stamps' expected noise per unit weight (:mod:`kernel_noise`): candidates are
        compared on their equations less it, or as measured where that leaves none a
        proper posterior (as the spatial fit then does).
    """

    xy: tuple[np.ndarray, np.ndarray]
    shape: tuple[int, int]
    orders: tuple[int, int]
    sum_order: int
    regularization: float
    noise: NoiseTerms | None

    def strengths(self) -> np.ndarray:
        """The prior strengths compared at."""
        return STRENGTH_GRID if self.regularization < 0 else np.array([self.regularization])

    def terms(self, good: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
        """The kernel's and the background's spatial terms at the stamps ``good``, the
        kernel sum's terms and the kernel terms' moments (:func:`held_out_risks`)."""
        x, y = (v[good] for v in self.xy)
        kernel_order, bg_order = self.orders
        return (
            chebyshev_terms(x, y, kernel_order, self.shape),
            chebyshev_terms(x, y, bg_order, self.shape),
            n_terms(min(self.sum_order, kernel_order)),
            term_moments(kernel_order, self.shape),
        )

    def equation_sets(
        self, stamps: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    ) -> list[tuple[bool, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]]:
        """The stamps' equations to compare on, in turn: less their expected noise (when
        known; ``True``), then as measured.

        Parameters
        ----------
        stamps : sequence of (numpy.ndarray, numpy.ndarray, numpy.ndarray, numpy.ndarray)
            Sets of the same stamps' normal matrices, right-hand sides, target powers and
            weight sums.

        Returns
        -------
        list of (bool, list of (numpy.ndarray, numpy.ndarray, numpy.ndarray))
            Whether corrected, and each set's (normal, rhs, target power).
        """
        sets = [(False, [eq[:3] for eq in stamps])]
        if self.noise is not None:
            sets.insert(0, (True, [corrected_equations(*eq, self.noise) for eq in stamps]))
        return sets


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """One candidate's held-out chi^2 of each fold at each strength of
    :data:`STRENGTH_GRID` (or the one configured), on its own equations, as a later choice
    would make it again.

    Attributes
    ----------
    corrected : bool
        Whether the equations were those less their expected noise (:mod:`kernel_noise`).
    folds : numpy.ndarray
        ``(folds, len(strengths))`` each fold's held-out chi^2, summed over its stamps.
    """

    corrected: bool
    folds: np.ndarray


def figures_to_json(values: Iterable[float]) -> list[float | None]:
    """Held-out figures for ``metadata.json``: a non-finite one (no strength gave every
    fold a proper posterior) as None."""
    return [float(v) if np.isfinite(v) else None for v in values]


def figures_from_json(values: Iterable[float | None]) -> tuple[float, ...]:
    """The inverse of :func:`figures_to_json` (a saved run's record): None as infinite."""
    return tuple(float("inf") if v is None else float(v) for v in values)


def stamp_folds(target_power: np.ndarray) -> np.ndarray:
    """Each stamp's cross-validation fold: the stamps, ordered by their weighted target
    power ``y^T W y`` (their stars' brightness, whatever the basis), dealt into
    :data:`FOLDS` folds in turn (leave-one-out with fewer), so that every fold holds
    bright and faint stars alike and every basis is held out on the same folds."""
    n = len(target_power)
    fold = np.empty(n, dtype=int)
    fold[np.argsort(-target_power, kind="stable")] = np.arange(n) % min(FOLDS, n)
    return fold


def candidate_folds(
    equations: tuple[np.ndarray, np.ndarray],
    power: np.ndarray,
    terms: tuple[np.ndarray, np.ndarray],
    sum_terms: int,
    penalty: np.ndarray,
    moments: np.ndarray,
    fold: np.ndarray,
    strengths: np.ndarray,
) -> np.ndarray:
    """A candidate's held-out chi^2 of each fold at each of ``strengths``
    (:func:`held_out_risks`), on its own ``equations`` (normal, rhs) and target
    ``power``, fitted and scored; infinite where no strength gives a proper posterior or
    the prior cannot make the equations positive definite."""
    try:
        (per_fold,) = held_out_risks(
            *equations,
            *terms,
            sum_terms,
            penalty,
            moments,
            fold,
            strengths,
            [(*equations, power)],
        )
    except np.linalg.LinAlgError:
        return np.full((int(fold.max()) + 1, len(strengths)), np.inf)
    return per_fold


def paired_margin(first: np.ndarray, second: np.ndarray, n_stamps: int) -> float:
    """One standard error of the difference of two candidates' held-out chi^2 per stamp,
    from their paired folds: the margin by which one must predict better to be chosen.

    The one-standard-error rule of cross-validation (Breiman et al. 1984, *Classification
    and Regression Trees*, section 3.4.3; Hastie, Tibshirani & Friedman 2009, *The
    Elements of Statistical Learning*, section 7.10): of two models whose held-out errors
    differ by less than the difference's own noise, the one the data do not single out
    is kept (the whole fit region, whose wing flux the synthetic pairs need:
    :mod:`kernel_region`; the constant kernel sum: :mod:`kernel_sum_order`).

    Parameters
    ----------
    first, second : numpy.ndarray
        ``(folds,)`` each fold's held-out chi^2 (summed over its stamps) of the two
        candidates, at each one's best strength, on the same folds.
    n_stamps : int
        Stamps over all folds.

    Returns
    -------
    float
        ``sqrt(folds) * std(first - second) / n_stamps`` (the folds' differences taken as
        independent draws).
    """
    diff = first - second
    return float(np.sqrt(diff.size) * np.std(diff, ddof=1) / n_stamps)


def held_out_risks(
    normal: np.ndarray,
    rhs: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    sum_terms: int,
    penalty: np.ndarray,
    moments: np.ndarray,
    fold: np.ndarray,
    strengths: np.ndarray,
    scored: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> list[np.ndarray]:
    """Each fold's held-out chi^2 at each prior strength ``t``, on each scored set.

    For each fold, the spatial model is fitted to the other folds' equations with the
    prior ``t * scale * R (x) S`` (:func:`strength_path`), and the fold's chi^2
    ``y^T W y - 2 a^T b + a^T M a`` is found on each of ``scored``: the same stamps'
    equations (normal, rhs, target power) over the pixels to be predicted. One fit a fold
    serves every scored set.

    Parameters
    ----------
    normal, rhs : numpy.ndarray
        ``(n, nb + 1, nb + 1)``, ``(n, nb + 1)`` the stamps' equations without the prior.
    p, q : numpy.ndarray
        ``(n, ns)``, ``(n, nq)`` the spatial terms at the stamps.
    sum_terms : int
        Spatial terms of the kernel sum (:func:`free_parameters`).
    penalty : numpy.ndarray
        ``(nb + 1, nb + 1)`` the roughness matrix.
    moments : numpy.ndarray
        ``(ns, ns)`` :func:`term_moments` of ``p``'s order.
    fold : numpy.ndarray
        ``(n,)`` each stamp's fold (:func:`stamp_folds`; at least two folds).
    strengths : numpy.ndarray
        The ``t`` (in mean stamps) to try.
    scored : sequence of (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        The equations the held-out stamps are scored on.

    Returns
    -------
    list of numpy.ndarray
        One ``(folds, len(strengths))`` array a scored set, infinite at a strength where
        a fold's posterior is not positive definite.
    """
    k = int(fold.max()) + 1

    def by_fold(n_eq: np.ndarray, r_eq: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        return [
            spatial_equations(n_eq[fold == f], r_eq[fold == f], p[fold == f], q[fold == f])
            for f in range(k)
        ]

    parts = by_fold(normal, rhs)
    held = [
        parts if n_eq is normal and r_eq is rhs else by_fold(n_eq, r_eq) for n_eq, r_eq, _ in scored
    ]
    total_big = np.sum([b for b, _ in parts], axis=0)
    total_vec = np.sum([v for _, v in parts], axis=0)
    free = free_parameters(len(total_vec), p.shape[1], sum_terms)
    prior = information_scale(normal, penalty) * spatial_prior(penalty, moments, q.shape[1])
    prior = prior[np.ix_(free, free)]

    def fold_risks(f: int) -> tuple[list[np.ndarray], np.ndarray]:
        big_f, vec_f = parts[f]
        a, proper = strength_path(
            (total_big - big_f)[np.ix_(free, free)], (total_vec - vec_f)[free], prior, strengths
        )
        return [
            float(np.sum(power[fold == f]))
            - 2.0 * vec_h[free] @ a
            + np.einsum("ij,ik,kj->j", a, big_h[np.ix_(free, free)], a)
            for (_, _, power), (big_h, vec_h) in zip(scored, (s[f] for s in held), strict=True)
        ], proper

    # The folds' fits are independent: on lent threads two run at once (their LAPACK and
    # BLAS calls release the interpreter): GOTO's four cross-validations (40 fits) took
    # 0.50-0.51 s one fold at a time by scipy's driver, 0.34-0.35 s two at a time
    # (in-process, BLAS on one thread, in turn).
    per_fold = list(lent_map()(fold_risks, range(k)))
    proper = np.all([ok for _, ok in per_fold], axis=0)
    risks = [np.array([fits[i] for fits, _ in per_fold]) for i in range(len(scored))]
    for risk in risks:
        risk[:, ~proper] = np.inf
    return risks


def strength_path(
    big: np.ndarray, vec: np.ndarray, prior: np.ndarray, strengths: np.ndarray = STRENGTH_GRID
) -> tuple[np.ndarray, np.ndarray]:
    """Solutions of ``(big + t * prior) a = vec`` for every ``t`` of ``strengths``.

    One generalised eigendecomposition serves every ``t``: with ``B = big + prior``
    (positive definite: ``prior`` is on every kernel parameter, ``big`` on the
    background's) and ``big V = B V diag(nu)``, ``V^T B V = I``, the matrix is
    ``V^-T diag(nu + t (1 - nu)) V^-1``. Equations less their expected noise
    (:mod:`kernel_noise`) can have ``nu < 0`` where the noise swamps the stars: the
    posterior is proper (positive definite) only for ``t > -nu / (1 - nu)``.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(len(vec), len(strengths))`` the solutions, and ``(len(strengths),)``
        bool: whether the posterior at that ``t`` is proper (elsewhere the solution is
        meaningless).

    Raises
    ------
    numpy.linalg.LinAlgError
        When ``big + prior`` is not positive definite.
    """
    both = big + prior
    d = 1.0 / np.sqrt(np.clip(np.diag(both), 1e-300, None))
    # Reduced to a standard one by B's Cholesky factor L (C = L^-1 big L^-T, V = L^-T W),
    # all in numpy, whose LAPACK calls release the interpreter (scipy's generalised
    # driver holds it), so two folds run at once on lent threads. Per fold at 300
    # parameters: BLAS on one thread (``diffviewer run``, the GUI, batch workers) 8.8 ms
    # two at a time against 11.7 ms for scipy's driver (17.6 ms one at a time); BLAS on
    # its default threads (the test suite) 18.8 against 21.4 ms. Mixing scipy's
    # triangular solves in was 12.7 / 7.4 ms on one BLAS thread but 47.6 ms on the
    # default threads: numpy's and scipy's two OpenBLAS pools spin against each other.
    lower_inverse = np.linalg.inv(np.linalg.cholesky(both * d[:, None] * d[None, :]))
    nu, w = np.linalg.eigh(lower_inverse @ (big * d[:, None] * d[None, :]) @ lower_inverse.T)
    v = lower_inverse.T @ w
    nu = np.minimum(nu, 1.0)
    v = v * d[:, None]
    denominator = nu[:, None] + strengths[None, :] * (1.0 - nu[:, None])
    proper = np.all(denominator > 0.0, axis=0)
    weights = 1.0 / np.where(denominator > 0.0, denominator, np.inf)
    return np.asarray(v @ (weights * (v.T @ vec)[:, None])), proper


def prior_strength(
    requested: float,
    normal: np.ndarray,
    rhs: np.ndarray,
    target_power: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    sum_terms: int,
    penalty: np.ndarray,
    moments: np.ndarray,
) -> float:
    """The strength ``t`` to use: ``requested`` when it is 0 or more (``kernel.regularization``),
    else the ``t`` of :data:`STRENGTH_GRID` that best predicts the stamps held out, of least
    :func:`held_out_risks` over the folds of :func:`stamp_folds` (with one stamp nothing can
    be held out: :data:`SINGLE_STAMP_STRENGTH`).

    Parameters, after ``requested``: the stamps' equations and target powers, which are
    both fitted and scored, then those of :func:`held_out_risks` up to the folds.

    Returns
    -------
    float
        ``t``, in mean stamps (:func:`information_scale` converts it to ``lam``).

    Raises
    ------
    numpy.linalg.LinAlgError
        When no ``t`` makes every fold's posterior positive definite (equations less
        their expected noise only).
    """
    if requested >= 0.0:
        return requested
    if len(normal) < 2:
        return SINGLE_STAMP_STRENGTH
    fold = stamp_folds(target_power)
    (per_fold,) = held_out_risks(
        normal,
        rhs,
        p,
        q,
        sum_terms,
        penalty,
        moments,
        fold,
        STRENGTH_GRID,
        [(normal, rhs, target_power)],
    )
    risk = per_fold.sum(axis=0) / len(normal)
    if not np.isfinite(risk).any():
        raise np.linalg.LinAlgError("no strength makes every fold's posterior proper")
    return float(STRENGTH_GRID[int(np.argmin(risk))])
