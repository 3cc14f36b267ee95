"""The basis's polynomial degrees, chosen by the kernel stars held out of the fit.

A richer basis (HOTPANTS's 6, 4, 2 Gaussian degrees against LSST's 4, 2, 2) holds the
structure of real PSF mismatches that a poorer one leaves at every bright star, and costs
variance where the stars do not call for it: on the pyDIA frames against AKB13475I0012,
with the same run otherwise, the bright stars' rms over HOTPANTS's was 1.064 (6, 4, 2)
and 1.226 (4, 2, 2) for frame 0018, 1.056 and 1.038 for frame 0060
(``benchmarks/SCIENCE.md``). Which one a pair needs is the predictive question the
prior's strength already answers by cross-validation over the stars
(:mod:`kernel_prior`), so the degrees are chosen the same
way: the spatial fit's held-out chi^2 per stamp, at each candidate's best strength, on the
same folds of the same good stamps, and the least wins (:func:`choose_degrees`).

The candidates are ``kernel.degrees`` lowered by 0 to ``kernel.degree_steps`` steps, no
degree below 2 (:func:`candidate_degrees`; a Gaussian of degree 2 still moves and widens
the image it convolves). Each candidate's basis has the same widths, size and wing, so it
lies in the richest one's span: the stamps' equations, fitted once on the richest basis,
are mapped onto it (:func:`basis_map`, :func:`project_equations`) without touching a
pixel, and the comparison is exact for every candidate but up to the few functions the
richer basis dropped as dependent on others (:data:`kernel_basis.INDEPENDENT`, a 1e-4 part
of their norm).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from diffviewer.engine.kernel_basis import BasisPlan, roughness_penalty
from diffviewer.engine.kernel_noise import NoiseTerms
from diffviewer.engine.kernel_prior import (
    HeldOut,
    HeldOutSetting,
    candidate_folds,
    figures_from_json,
    figures_to_json,
    stamp_folds,
)
from diffviewer.engine.kernel_stamps import StampFits

#: The lowest degree a candidate gives any Gaussian (unless configured lower).
MIN_DEGREE = 2


@dataclasses.dataclass(frozen=True)
class DegreeChoice:
    """The degrees compared and the one chosen.

    Attributes
    ----------
    candidates : tuple of tuple of int
        The degrees tried, richest first.
    held_out_chi2 : tuple of float
        Each candidate's held-out chi^2 per stamp at its best prior strength (infinite
        where no strength makes every fold's posterior proper).
    chosen : tuple of int
        The degrees of least held-out chi^2.
    n_stamps : int
        The good stamps held out in turn.
    strength : float or None
        The chosen candidate's best prior strength (in mean stamps), which the spatial
        fit takes for its first fit over the same stamps; None when the candidates were
        compared on the equations as measured, those less their noise having no proper
        posterior (the spatial fit then chooses its own).
    held_out : HeldOut or None
        The chosen candidate's held-out chi^2 by fold and strength, which the kernel
        sum's choice compares a varying sum with (:mod:`kernel_sum_order`); not recorded.
    """

    candidates: tuple[tuple[int, ...], ...]
    held_out_chi2: tuple[float, ...]
    chosen: tuple[int, ...]
    n_stamps: int
    strength: float | None
    held_out: HeldOut | None = dataclasses.field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict[str, object]:
        """For ``metadata.json`` (non-finite figures as None; the strength is the run's
        ``kernel.regularization`` unless a stamp was rejected after the choice)."""
        return {
            "candidates": [list(c) for c in self.candidates],
            "held_out_chi2_per_stamp": figures_to_json(self.held_out_chi2),
            "chosen": list(self.chosen),
            "n_stamps": self.n_stamps,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> DegreeChoice:
        """The inverse of :meth:`as_dict` (a saved run's record; its strength unknown)."""
        return cls(
            tuple(tuple(int(d) for d in c) for c in record["candidates"]),
            figures_from_json(record["held_out_chi2_per_stamp"]),
            tuple(int(d) for d in record["chosen"]),
            int(record["n_stamps"]),
            None,
        )

    def describe(self) -> str:
        """One line for a user: each candidate's held-out chi^2 and the one chosen."""
        figures = ", ".join(
            f"{list(c)} {v:.1f}" for c, v in zip(self.candidates, self.held_out_chi2, strict=True)
        )
        return (
            f"degrees {list(self.chosen)} chosen by the {self.n_stamps} kernel stars held out "
            f"in turn (held-out chi^2 per stamp: {figures})"
        )


def candidate_degrees(degrees: tuple[int, ...], steps: int) -> list[tuple[int, ...]]:
    """``degrees`` lowered by 0 to ``steps`` steps, none below :data:`MIN_DEGREE` (nor
    below its own configured degree), richest first, without repeats."""
    out: list[tuple[int, ...]] = []
    for k in range(steps + 1):
        lowered = tuple(max(d - k, min(d, MIN_DEGREE)) for d in degrees)
        if lowered not in out:
            out.append(lowered)
    return out


def basis_map(full: np.ndarray, sub: np.ndarray) -> np.ndarray:
    """``C`` with ``sub[i] = sum_k C[i, k] full[k]``, by least squares over the pixels.

    Parameters
    ----------
    full, sub : numpy.ndarray
        ``(nf, size, size)`` and ``(ns, size, size)`` bases of one side, ``sub`` in the
        span of ``full``.

    Returns
    -------
    numpy.ndarray
        ``(ns, nf)``.
    """
    a = full.reshape(len(full), -1).T
    b = sub.reshape(len(sub), -1).T
    return np.asarray(np.linalg.lstsq(a, b, rcond=None)[0].T)


def project_equations(
    normal: np.ndarray, rhs: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Equations on the basis ``full`` (with the background as last parameter) mapped onto
    ``sub = C full``: ``E N E^T`` and ``E b``, ``E`` being ``C`` with the background's 1.

    Parameters
    ----------
    normal, rhs : numpy.ndarray
        ``(..., nf + 1, nf + 1)`` and ``(..., nf + 1)``.
    c : numpy.ndarray
        ``(ns, nf)`` :func:`basis_map`.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(..., ns + 1, ns + 1)`` and ``(..., ns + 1)``.
    """
    ns, nf = c.shape
    e = np.zeros((ns + 1, nf + 1))
    e[:ns, :nf] = c
    e[ns, nf] = 1.0
    return e @ normal @ e.T, rhs @ e.T


def project_fits(fits: StampFits, c: np.ndarray) -> StampFits:
    """The stamps' equations mapped onto ``sub = C full`` (:func:`project_equations`);
    their own coefficients stay on ``full``."""
    normal, rhs = project_equations(fits.normal, fits.rhs, c)
    return dataclasses.replace(fits, normal=normal, rhs=rhs)


def project_noise(terms: NoiseTerms, c: np.ndarray) -> NoiseTerms:
    """Noise terms mapped onto ``sub = C full`` (:func:`project_equations`)."""
    normal, rhs = project_equations(terms.normal, terms.rhs, c)
    return NoiseTerms(normal, rhs, terms.target_power)


def on_degrees(
    plan: BasisPlan,
    degrees: tuple[int, ...],
    basis: np.ndarray,
    basis_degrees: tuple[int, ...],
    fits: StampFits,
    noise: NoiseTerms | None,
) -> tuple[np.ndarray, StampFits, NoiseTerms | None]:
    """The basis of ``degrees`` and the stamps' equations and noise terms on it, from
    those on ``basis`` (:func:`project_fits`, :func:`project_noise`); as given when
    ``basis`` is already that basis.

    Parameters
    ----------
    plan : BasisPlan
        Widths, size and wing.
    degrees : tuple of int
        The degrees wanted.
    basis : numpy.ndarray
        The basis ``fits`` and ``noise`` are on.
    basis_degrees : tuple of int
        Its degrees.
    fits : StampFits
        The stamps' fits.
    noise : NoiseTerms or None
        Their expected noise per unit weight.

    Returns
    -------
    (numpy.ndarray, StampFits, NoiseTerms or None)
    """
    if tuple(degrees) == tuple(basis_degrees):
        return basis, fits, noise
    sub = plan.basis(degrees)
    c = basis_map(basis, sub)
    return sub, project_fits(fits, c), None if noise is None else project_noise(noise, c)


def choose_degrees(
    plan: BasisPlan,
    full: np.ndarray,
    degrees: tuple[int, ...],
    steps: int,
    fits: StampFits,
    setting: HeldOutSetting,
    known: HeldOut | None = None,
) -> DegreeChoice | None:
    """The degrees whose spatial fit best predicts the good stamps held out of it.

    Parameters
    ----------
    plan : BasisPlan
        Widths, size and wing of every candidate's basis.
    full : numpy.ndarray
        The basis of ``degrees``, on which ``fits`` were made.
    degrees : tuple of int
        ``kernel.degrees``.
    steps : int
        ``kernel.degree_steps`` (:func:`candidate_degrees`).
    fits : StampFits
        The stamps' own fits and equations.
    setting : HeldOutSetting
        The stamps' positions, the spatial model, the strengths and the noise.
    known : HeldOut, optional
        The held-out chi^2 of ``degrees`` on these equations and folds, already made
        (:func:`kernel_region.choose_region`): used, not made again.

    Returns
    -------
    DegreeChoice or None
        None with one candidate or fewer than two good stamps (nothing to compare or hold
        out).
    """
    candidates = candidate_degrees(degrees, steps)
    good = np.nonzero(fits.status == "GOOD")[0]
    if len(candidates) < 2 or len(good) < 2:
        return None
    p, q, sum_terms, moments = setting.terms(good)
    strengths = setting.strengths()
    stamps = (fits.normal[good], fits.rhs[good], fits.target_power[good], fits.weight_sum[good])
    subs = [plan.basis(c) for c in candidates]
    maps = [basis_map(full, sub) for sub in subs]
    for corrected, ((normal, rhs, power),) in setting.equation_sets([stamps]):
        fold = stamp_folds(power)
        folds = [
            known.folds
            if k == 0 and known is not None and known.corrected == corrected
            else candidate_folds(
                project_equations(normal, rhs, c),
                power,
                (p, q),
                sum_terms,
                roughness_penalty(sub),
                moments,
                fold,
                strengths,
            )
            for k, (c, sub) in enumerate(zip(maps, subs, strict=True))
        ]
        risks = [f.sum(axis=0) / len(good) for f in folds]
        least = [float(np.min(r)) for r in risks]
        if np.isfinite(least).any():
            best = int(np.argmin(least))
            strength = float(strengths[int(np.argmin(risks[best]))])
            return DegreeChoice(
                tuple(candidates),
                tuple(least),
                candidates[best],
                len(good),
                strength if setting.noise is None or corrected else None,
                HeldOut(corrected, folds[best]),
            )
    return None
