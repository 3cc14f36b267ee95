"""Each kernel stamp's equations and their solution: the weighted least-squares normal
equations of a stamp's design (:mod:`kernel_design`), the small roughness prior that
steadies a stamp's own fit, and the variances the weights come from (the target's, its
sources' Poisson term taken from a first model, and the source's through the stamp's
kernel).

The stamps' own fits (:mod:`kernel_stamps`) solve these a stamp at a time; the spatial
fit (:mod:`kernel_spatial`) sums the good stamps' equations, without this module's prior.
"""

from __future__ import annotations

import numpy as np

from diffviewer.engine.kernel_design import Stamps, convolve_pairs, pair_batches


def source_variance(
    stamps: Stamps, idx: np.ndarray, coef: np.ndarray, basis: np.ndarray
) -> np.ndarray:
    """``K_i^2 * var_source`` over each stamp's fit region, with each stamp's kernel ``coef``."""
    out = np.empty((len(idx), stamps.target.shape[1]), dtype=np.float32)
    for sl in pair_batches(stamps, len(idx)):
        kern = np.tensordot(coef[sl, : basis.shape[0]], basis, axes=1) ** 2  # (n, size, size)
        conv = convolve_pairs(stamps.var_source[idx[sl]], kern, stamps.fit_half)
        out[sl] = np.clip(conv.reshape(len(conv), -1), 0, None)
    return out


def model_variance(target: np.ndarray, variance: np.ndarray, model: np.ndarray) -> np.ndarray:
    """Each stamp's variance with its sources' Poisson term taken from the fitted model.

    A variance plane estimated from the image itself is ``sky + max(image - level, 0) /
    gain``: each pixel's own noise is in it, and inverse-variance weights then favour the
    pixels that fluctuated low, biasing every fitted flux (and the kernel sum) low. Over a
    stamp the plane is regressed on the target, ``variance = v0 + c * target`` on the
    pixels above the stamp's lowest variance (the source term; exact for such planes, a
    linear variance-counts relation for others), and evaluated on the model instead, never
    below that lowest variance (ip_diffim's ``iterateSingleKernel`` remakes the variance
    after a first fit for the same reason). A stamp without such pixels keeps its plane.

    Parameters
    ----------
    target, variance, model : numpy.ndarray
        ``(n, npix)`` each stamp's target pixels, their variance plane and the model of
        the target from a first fit.

    Returns
    -------
    numpy.ndarray
        ``(n, npix)`` float32.
    """
    floor = variance.min(axis=1, keepdims=True)
    active = variance > floor * (1.0 + 1e-6)
    n = active.sum(axis=1)
    t = np.where(active, target, 0.0).astype(np.float64)
    v = np.where(active, variance, 0.0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        tm, vm = t.sum(axis=1) / n, v.sum(axis=1) / n
        dt = np.where(active, target - tm[:, None], 0.0)
        slope = (dt * (variance - vm[:, None])).sum(axis=1) / (dt**2).sum(axis=1)
    fitted = (n >= 10) & np.isfinite(slope) & (slope > 0)
    intercept = vm - slope * tm
    out = np.maximum(intercept[:, None] + slope[:, None] * model, floor)
    return np.where(fitted[:, None], out, variance).astype(np.float32)


def stamp_equations(
    design: np.ndarray, target: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each stamp's weighted least-squares normal equations (masked pixels have weight 0).

    Parameters
    ----------
    design : numpy.ndarray
        ``(n, npix, nb + 1)`` the stamps' design (:func:`kernel_design.stamp_design`).
    target, weights : numpy.ndarray
        ``(n, npix)`` their target pixels and weights.

    Returns
    -------
    normal : (n, nb + 1, nb + 1) normal matrices ``A^T W A``
    rhs : (n, nb + 1) right-hand sides ``A^T W y``
    target_power : (n,) ``y^T W y``, the chi^2 of a zero model (for held-out chi^2s)
    """
    aw = design * weights[:, :, None]
    normal = np.matmul(aw.transpose(0, 2, 1), design).astype(np.float64)
    rhs = np.einsum("npk,np->nk", aw, target).astype(np.float64)
    t = target.astype(np.float64)
    return normal, rhs, np.einsum("np,np,np->n", weights, t, t)


#: Strength of the roughness prior in a stamp's own fit, as a fraction of that stamp's
#: information (``tr(M_i) / tr(R)``). Those fits only judge the stamps (rejection), so
#: the prior is a stabiliser that shrinks every stamp alike and the cuts compare like with
#: like; the spatial fit, which makes the kernel, adds its own prior once, its strength
#: chosen from the data (:mod:`kernel_prior`), to the stamps' equations without this one.
STAMP_PRIOR = 1e-3


def stamp_prior(normal: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    """Each stamp's prior, :data:`STAMP_PRIOR` of its own information times ``R``.

    Parameters
    ----------
    normal : numpy.ndarray
        ``(n, nb + 1, nb + 1)`` the stamps' normal matrices.
    penalty : numpy.ndarray
        ``(nb + 1, nb + 1)`` :func:`kernel_basis.roughness_penalty`.

    Returns
    -------
    numpy.ndarray
        ``(n, nb + 1, nb + 1)``.
    """
    nb = penalty.shape[0] - 1
    info = np.trace(normal[:, :nb, :nb], axis1=1, axis2=2) / np.trace(penalty)
    return STAMP_PRIOR * info[:, None, None] * penalty[None]


def solve_with_prior(
    normal: np.ndarray, rhs: np.ndarray, prior: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each stamp's coefficients with its prior (``prior[i]``, :func:`stamp_prior`) added
    once to its normal matrix.

    Returns
    -------
    coef : (n, nb + 1) solutions (NaN where singular)
    ok : (n,) bool
    """
    coef = np.full(rhs.shape, np.nan)
    ok = np.zeros(len(rhs), dtype=bool)
    if len(rhs):
        posterior = normal + prior
        try:
            coef = np.linalg.solve(posterior, rhs[..., None])[..., 0]
            ok = np.all(np.isfinite(coef), axis=1)
        except np.linalg.LinAlgError:
            for i in range(len(rhs)):
                try:
                    coef[i] = np.linalg.solve(posterior[i], rhs[i])
                    ok[i] = np.all(np.isfinite(coef[i]))
                except np.linalg.LinAlgError:
                    ok[i] = False
    return coef, ok


def inverse(matrices: np.ndarray) -> np.ndarray:
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
