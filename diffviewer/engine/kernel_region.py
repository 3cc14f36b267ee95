"""The kernel's fit region, chosen by the kernel stars held out: the whole region or its core.

With the wing function the stamps are fitted over a wide region (:data:`kernel_basis.
FIT_HALF_FWHM` of the broader PSF, and as far as a star's model reaches,
:func:`kernel_basis.wing_fit_half`): the far pixels constrain the wing's flux, which a
region cut close to the core leaves to each stamp's background (on the Moffat pairs of
issue 12 the kernel sum came out 0.1-0.2 % lower with 3 FWHM). On real images the same
pixels hold what no kernel model describes (crowded neighbours, the true wing's departure
from the model's) and a fit over them can match the stars' cores worse: on the crowded
pyDIA frame 0060 the wide region left 5.7 % more bright-star rms than HOTPANTS's
difference, its 3 FWHM core 0.6 % less.

Which one a pair's kernel is fitted on is decided as the basis's degrees are
(:mod:`kernel_degrees`): the spatial fit is made on either region's equations of all but
one fold of the good stamps and scored on the held-out fold's equations over the *core*
(:data:`kernel_basis.CORE_FIT_HALF_FWHM`), where a star's residual is what a user sees
and detection meets; both on the same folds, each at its best prior strength. The core's
equations come from the same stamp fits (their weights and clipping over the whole
region), so the choice costs one more product over the core's pixels a stamp and two
cross-validations (one when the whole region is kept: its cross-validation is then the
degree choice's first candidate's). The whole region is kept unless the core predicts
the held-out cores better by more than a standard error of the difference
(:func:`~diffviewer.engine.kernel_prior.paired_margin`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from diffviewer.engine.kernel_basis import roughness_penalty
from diffviewer.engine.kernel_prior import (
    HeldOut,
    HeldOutSetting,
    held_out_risks,
    paired_margin,
    stamp_folds,
)
from diffviewer.engine.kernel_stamps import StampFits


@dataclasses.dataclass(frozen=True)
class RegionChoice:
    """The fit regions compared and the one the kernel was fitted on.

    Attributes
    ----------
    halves : (int, int)
        Half-widths (px) of the whole fit region and of its core.
    held_out_chi2 : (float, float)
        Held-out chi^2 per stamp over the held-out stamps' cores of the spatial fit made
        on each region (best prior strength each).
    margin : float
        One standard error of their difference
        (:func:`~diffviewer.engine.kernel_prior.paired_margin`): the core is chosen when
        it is lower by more.
    chosen : int
        Half-width (px) of the region the kernel was fitted on.
    n_stamps : int
        Good stamps compared on.
    """

    halves: tuple[int, int]
    held_out_chi2: tuple[float, float]
    margin: float
    chosen: int
    n_stamps: int

    def as_dict(self) -> dict[str, object]:
        """The record for ``metadata.json``."""
        return {
            "fit_half_px": list(self.halves),
            "held_out_chi2_per_stamp": [round(v, 3) for v in self.held_out_chi2],
            "standard_error_per_stamp": round(self.margin, 3),
            "chosen_fit_half_px": self.chosen,
            "stamps": self.n_stamps,
            "scored_on": "the held-out stamps' cores",
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> RegionChoice:
        """The inverse of :meth:`as_dict` (a saved run's record)."""
        whole, core = record["fit_half_px"]
        chi2_whole, chi2_core = record["held_out_chi2_per_stamp"]
        return cls(
            (int(whole), int(core)),
            (float(chi2_whole), float(chi2_core)),
            float(record["standard_error_per_stamp"]),
            int(record["chosen_fit_half_px"]),
            int(record["stamps"]),
        )

    def describe(self) -> str:
        """One line for the GUI's Kernel tab."""
        (whole, core), (c_whole, c_core) = self.halves, self.held_out_chi2
        which = "whole region" if self.chosen == whole else "core"
        return (
            f"fit region: the {which} ({2 * self.chosen + 1} px) by {self.n_stamps} stamps "
            f"held out (chi^2 of their cores per stamp: whole {2 * whole + 1} px "
            f"{c_whole:.1f}, core {2 * core + 1} px {c_core:.1f}, standard error of the "
            f"difference {self.margin:.1f})"
        )


def choose_region(
    fits: StampFits, basis: np.ndarray, fit_half: int, setting: HeldOutSetting
) -> tuple[RegionChoice, HeldOut | None] | None:
    """Compare the kernel fitted on the whole region and on its core, on held-out cores.

    Both regions' spatial fits are cross-validated on the folds the whole region's
    equations deal (:func:`kernel_prior.stamp_folds`), as the degree choice deals them
    when that region is kept.

    Parameters
    ----------
    fits : StampFits
        The stamps' fits over the whole region, with their core's equations.
    basis : numpy.ndarray
        The basis the stamps were fitted on.
    fit_half : int
        Half-width (px) of the whole region.
    setting : HeldOutSetting
        The stamps' positions, the spatial model, the strengths and the noise.

    Returns
    -------
    (RegionChoice, HeldOut or None) or None
        The choice, and the whole region's held-out chi^2 on its own equations when it is
        kept (the degree choice's first candidate, on the same folds:
        :func:`kernel_degrees.choose_degrees`). None without core equations, with fewer
        than two good stamps, or where neither set of equations gives both a proper
        posterior.
    """
    core = fits.core
    good = np.nonzero(fits.status == "GOOD")[0]
    if core is None or len(good) < 2:
        return None
    p, q, sum_terms, moments = setting.terms(good)
    setup = (p, q, sum_terms, roughness_penalty(basis), moments)
    strengths = setting.strengths()
    regions = [
        (fits.normal[good], fits.rhs[good], fits.target_power[good], fits.weight_sum[good]),
        (core.normal[good], core.rhs[good], core.target_power[good], core.weight_sum[good]),
    ]
    for corrected, (whole, inner) in setting.equation_sets(regions):
        fold = stamp_folds(whole[2])
        try:
            on_core, on_whole = held_out_risks(
                whole[0], whole[1], *setup, fold, strengths, [inner, whole]
            )
            (core_on_core,) = held_out_risks(inner[0], inner[1], *setup, fold, strengths, [inner])
        except np.linalg.LinAlgError:
            continue
        per_stamp = [r.sum(axis=0) / len(good) for r in (on_core, core_on_core)]
        best = [int(np.argmin(r)) for r in per_stamp]
        least = (float(per_stamp[0][best[0]]), float(per_stamp[1][best[1]]))
        if not np.isfinite(least).all():
            continue
        margin = paired_margin(on_core[:, best[0]], core_on_core[:, best[1]], len(good))
        take_core = least[0] - least[1] > margin
        choice = RegionChoice(
            (fit_half, core.half), least, margin, core.half if take_core else fit_half, len(good)
        )
        return choice, None if take_core else HeldOut(corrected, on_whole)
    return None
