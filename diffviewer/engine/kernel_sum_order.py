"""The kernel sum's spatial order, chosen by the kernel stars held out of the fit.

The kernel sum is the two images' flux ratio. HOTPANTS and ip_diffim's Alard-Lupton fit
hold it constant over the image, and where both images are flat-fielded onto one
photometric system it is. Where they are not (a transparency, extinction or illumination
difference across a wide field) the ratio follows the field and a constant sum leaves
every source a residual of its own flux times the departure. On GOTO the kernel stars'
total fluxes (within 3.4 FWHM, less the median of an annulus 7-9.8 FWHM out) give a
template/science ratio of 0.990 on the lowest third of the image, 1.008 on the middle
one and 1.024 on the highest (errors 0.005-0.006); the bright galaxy near (1230, 620)
reads 0.998, as its neighbour stars do, where the constant sum is 1.0057
(``benchmarks/SCIENCE.md``).

Whether a pair's sum varies is decided as the fit region and the degrees are
(:mod:`kernel_region`, :mod:`kernel_degrees`): the spatial fit with the sum constant
and with it a plane (:data:`MAX_CHOSEN_ORDER`) is made on all but one fold of the good
stamps and scored on the held-out fold, both on the same folds of the same equations,
each at its best prior strength. The one-standard-error rule keeps the lowest order
whose held-out chi^2 is within a standard error of the best
(:func:`~diffviewer.engine.kernel_prior.paired_margin`): a varying sum is taken only
where the stars held out ask for it beyond the noise of the comparison. Its cost is two
free terms, fitted from every good stamp.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from diffviewer.engine.kernel_basis import roughness_penalty
from diffviewer.engine.kernel_prior import (
    HeldOut,
    HeldOutSetting,
    candidate_folds,
    figures_from_json,
    figures_to_json,
    paired_margin,
    stamp_folds,
)
from diffviewer.engine.kernel_stamps import StampFits

#: The highest order compared: a plane. The photometric differences a pair's flat fields,
#: transparency or airmass leave are smooth over one detector; a richer sum takes up what
#: the kernel's shape leaves instead. On the synthetic 2048 x 4096 pair (varying PSF, true
#: sum 1.30 everywhere) order 2 predicted the held-out stars better by 1.8 standard errors
#: (0.0095 of 771 chi^2 per stamp) and its sum spanned 1.2933-1.2996.
MAX_CHOSEN_ORDER = 1


@dataclasses.dataclass(frozen=True)
class SumOrderChoice:
    """The kernel sum's spatial orders compared and the one chosen.

    Attributes
    ----------
    orders : tuple of int
        The orders compared, 0 (constant) first.
    held_out_chi2 : tuple of float
        Each order's held-out chi^2 per stamp at its best prior strength (infinite where
        no strength gives every fold a proper posterior).
    margins : tuple of float
        One standard error of each order's difference from the best one
        (:func:`~diffviewer.engine.kernel_prior.paired_margin`; 0 for the best, infinite
        for an order without a held-out chi^2).
    chosen : int
        The lowest order within its margin of the best.
    n_stamps : int
        Good stamps compared on.
    strength : float or None
        The chosen order's best prior strength (in mean stamps), which the spatial fit
        takes for its first fit; None when the orders were compared on the equations as
        measured (as :attr:`~diffviewer.engine.kernel_degrees.DegreeChoice.strength`).
    """

    orders: tuple[int, ...]
    held_out_chi2: tuple[float, ...]
    margins: tuple[float, ...]
    chosen: int
    n_stamps: int
    strength: float | None = None

    def as_dict(self) -> dict[str, object]:
        """The record for ``metadata.json`` (non-finite figures as None)."""
        return {
            "orders": list(self.orders),
            "held_out_chi2_per_stamp": _rounded(self.held_out_chi2),
            "standard_error_per_stamp": _rounded(self.margins),
            "chosen": self.chosen,
            "stamps": self.n_stamps,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> SumOrderChoice:
        """The inverse of :meth:`as_dict` (a saved run's record; its strength unknown)."""
        return cls(
            tuple(int(v) for v in record["orders"]),
            figures_from_json(record["held_out_chi2_per_stamp"]),
            figures_from_json(record["standard_error_per_stamp"]),
            int(record["chosen"]),
            int(record["stamps"]),
        )

    def describe(self) -> str:
        """One line for the GUI's Kernel tab."""
        which = "constant" if self.chosen == 0 else f"a polynomial of order {self.chosen}"
        scores = ", ".join(
            f"order {o} {c:.1f}" for o, c in zip(self.orders, self.held_out_chi2, strict=True)
        )
        error = max((m for m in self.margins if np.isfinite(m)), default=0.0)
        return (
            f"kernel sum: {which} over the image, by {self.n_stamps} stamps held out "
            f"(chi^2 per stamp: {scores}; one standard error {error:.1f})"
        )


def _rounded(values: tuple[float, ...]) -> list[float | None]:
    """Figures rounded to 3 decimals, for JSON
    (:func:`~diffviewer.engine.kernel_prior.figures_to_json`)."""
    return figures_to_json(round(v, 3) for v in values)


def choose_sum_order(
    fits: StampFits, basis: np.ndarray, setting: HeldOutSetting, known: HeldOut | None = None
) -> SumOrderChoice | None:
    """Compare the kernel sum held constant and varying, up to a plane.

    Parameters
    ----------
    fits : StampFits
        The stamps' fits on ``basis`` (the chosen degrees and region).
    basis : numpy.ndarray
        The basis of the spatial fit.
    setting : HeldOutSetting
        The stamps' positions, the spatial model, the strengths and the noise; its
        ``sum_order`` is replaced by each order compared.
    known : HeldOut, optional
        The constant sum's held-out chi^2 on these equations and folds, already made
        (:attr:`~diffviewer.engine.kernel_degrees.DegreeChoice.held_out`): used, not made
        again.

    Returns
    -------
    SumOrderChoice or None
        None with a kernel of spatial order 0 (no varying sum to fit), fewer than two
        good stamps, or where no order gives every fold a proper posterior.
    """
    good = np.nonzero(fits.status == "GOOD")[0]
    kernel_order = setting.orders[0]
    if kernel_order < 1 or len(good) < 2:
        return None
    orders = tuple(range(min(kernel_order, MAX_CHOSEN_ORDER) + 1))
    stamps = (fits.normal[good], fits.rhs[good], fits.target_power[good], fits.weight_sum[good])
    penalty = roughness_penalty(basis)
    strengths = setting.strengths()
    for corrected, ((normal, rhs, power),) in setting.equation_sets([stamps]):
        fold = stamp_folds(power)
        per_fold, best_strengths = [], []
        for order in orders:
            p, q, sum_terms, moments = dataclasses.replace(setting, sum_order=order).terms(good)
            folds = (
                known.folds
                if order == 0 and known is not None and known.corrected == corrected
                else candidate_folds(
                    (normal, rhs), power, (p, q), sum_terms, penalty, moments, fold, strengths
                )
            )
            at = int(np.argmin(folds.sum(axis=0)))
            per_fold.append(folds[:, at])
            best_strengths.append(float(strengths[at]))
        totals = np.array([r.sum() / len(good) for r in per_fold])
        if not np.isfinite(totals).any():
            continue
        best = int(np.argmin(totals))
        margins = tuple(
            0.0
            if k == best
            else paired_margin(per_fold[k], per_fold[best], len(good))
            if np.isfinite(totals[k])
            else float("inf")
            for k in range(len(orders))
        )
        chosen = next(k for k in range(len(orders)) if totals[k] - totals[best] <= margins[k])
        return SumOrderChoice(
            orders,
            tuple(float(t) for t in totals),
            margins,
            orders[chosen],
            len(good),
            best_strengths[chosen] if setting.noise is None or corrected else None,
        )
    return None
