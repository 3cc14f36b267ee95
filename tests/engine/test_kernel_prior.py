"""The kernel's roughness prior: counted once in the spatial fit, its strength from the data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from diffviewer.config import KernelConfig, SubtractionConfig
from diffviewer.engine import kernel_basis, kernel_prior, pipeline
from diffviewer.engine.field_terms import chebyshev_terms, n_terms
from diffviewer.engine.kernel_design import Stamps, basis_spectra, stamp_design
from diffviewer.engine.kernel_equations import stamp_equations
from diffviewer.engine.kernel_outliers import kernel_residual_stats
from diffviewer.engine.kernel_spatial import SpatialFit, fit_spatial, spatial_solve, usable_orders
from diffviewer.engine.kernel_stamps import StampFits, fit_stamps
from diffviewer.engine.progress import null_reporter
from diffviewer.outputs import build_metadata
from diffviewer.synthetic import make_pair
from tests.engine.kernel_stars import moffat_kernel_stars


@dataclasses.dataclass(frozen=True)
class Fitted:
    """A synthetic pair's kernel stamps and their own fits (the template convolved)."""

    stamps: Stamps
    fits: StampFits
    x: np.ndarray
    y: np.ndarray
    control: np.ndarray
    basis: np.ndarray
    shape: tuple[int, int]
    orders: tuple[int, int]


@pytest.fixture(scope="module")
def fitted() -> Fitted:
    stars = moffat_kernel_stars()
    config = KernelConfig()
    stamps = stars.stamps()
    shape = stars.target.shape
    fits = fit_stamps(
        stamps,
        stars.x,
        stars.y,
        stars.control,
        stars.basis,
        stars.fwhm,
        shape,
        config,
        null_reporter(),
    )
    orders = usable_orders(int(np.sum(fits.status == "GOOD")), config)
    return Fitted(stamps, fits, stars.x, stars.y, stars.control, stars.basis, shape, orders)


def spatial(f: Fitted, strength: float) -> SpatialFit:
    """The spatial fit of ``f`` with the prior's strength given."""
    config = KernelConfig(regularization=strength)
    return fit_spatial(f.stamps, f.fits, f.x, f.y, f.control, f.basis, f.shape, f.orders, config)


def doubled(f: Fitted) -> Fitted:
    """``f`` with every star observed twice: the same information twice over."""

    def twice(obj: object) -> object:
        return dataclasses.replace(
            obj,  # type: ignore[type-var]
            **{
                k.name: np.concatenate([getattr(obj, k.name)] * 2)
                for k in dataclasses.fields(obj)  # type: ignore[arg-type]
                if isinstance(getattr(obj, k.name), np.ndarray)
            },
        )

    return dataclasses.replace(
        f,
        stamps=twice(f.stamps),
        fits=twice(f.fits),
        x=np.concatenate([f.x] * 2),
        y=np.concatenate([f.y] * 2),
        control=np.concatenate([f.control] * 2),
    )


def test_the_prior_is_counted_once_however_many_stars(fitted: Fitted) -> None:
    # A prior enters a fit once: twice the stars (each one's equations twice) halve its
    # weight against the data, so the same strength on twice the stars gives the fit of
    # half the strength on the stars once. Before, each stamp's prior was summed with its
    # equations: the prior grew with the stars and twice the stars changed nothing.
    # The mean stamp (the strength's unit) is the same in both.
    twice = doubled(fitted)
    once = spatial(fitted, 0.05)
    again = spatial(twice, 0.1)
    assert np.array_equal(again.status[: len(fitted.x)], once.status)
    np.testing.assert_allclose(again.coefficients, once.coefficients, rtol=1e-6, atol=1e-9)
    # ... and the prior matters at that strength: the same strength on twice the stars
    # moves the kernel by far more than that tolerance.
    same = spatial(twice, 0.05)
    assert np.max(np.abs(same.coefficients - once.coefficients)) > 1e-4 * np.max(
        np.abs(once.coefficients)
    )


def control_chi2(f: Fitted, strengths: np.ndarray) -> np.ndarray:
    """chi^2 of the control stars (never fitted) against the spatial model solved from the
    good stamps with each strength; weights from the model's propagated variance."""
    auto = spatial(f, -1.0)
    good = np.nonzero(auto.status == "GOOD")[0]
    cu = np.nonzero(f.control & f.stamps.ok)[0]
    design = stamp_design(f.stamps, cu, basis_spectra(f.stamps, f.basis))
    normal_c, rhs_c, power_c = stamp_equations(
        design, f.stamps.target[cu], 1.0 / auto.var_total[cu]
    )
    order, bg_order = f.orders
    p = chebyshev_terms(f.x[good], f.y[good], order, f.shape)
    q = chebyshev_terms(f.x[good], f.y[good], bg_order, f.shape)
    pc = chebyshev_terms(f.x[cu], f.y[cu], order, f.shape)
    qc = chebyshev_terms(f.x[cu], f.y[cu], bg_order, f.shape)
    penalty = kernel_basis.roughness_penalty(f.basis)
    unit = kernel_prior.information_scale(
        f.fits.normal[good], penalty
    ) * kernel_prior.spatial_prior(penalty, kernel_prior.term_moments(order, f.shape), q.shape[1])
    nb = f.basis.shape[0]
    out = []
    for t in strengths:
        sol = spatial_solve(f.fits.normal[good], f.fits.rhs[good], p, q, n_terms(0), t * unit)
        coefs = sol[: nb * p.shape[1]].reshape(nb, p.shape[1])
        a = np.column_stack([pc @ coefs.T, qc @ sol[nb * p.shape[1] :]])
        chi2 = (
            power_c
            - 2 * np.einsum("nk,nk->n", a, rhs_c)
            + np.einsum("nk,nkl,nl->n", a, normal_c, a)
        )
        out.append(float(np.sum(chi2)))
    return np.array(out)


def test_the_chosen_strength_predicts_the_control_stars(fitted: Fitted) -> None:
    # The control stars are never fitted and never seen by the cross-validation: their
    # chi^2 against the model is the predictive risk the strength should minimise. On
    # this Moffat pair (68k control pixels) it rises by 1-2 a quarter decade away from
    # its least; the cross-validation chooses a strength within 2 of it (the least
    # itself, t = 0.032, with the 6, 4, 2 basis). Before, each stamp's prior (1e-3 of its
    # information) was summed with its equations: t = 1e-3 times the good stamps (0.069
    # here), whose control chi^2 is above the chosen one's by 4.8 with 6, 4, 2, 8.1 with
    # 5, 3, 2 and 29 with 4, 2, 2 (best t 0.032, 0.018, 0.0056: the richer basis wants, and
    # loses less to, a stronger prior); a difference of 2 is the bar both ways.
    grid = kernel_prior.STRENGTH_GRID
    auto = spatial(fitted, -1.0)
    old = 1e-3 * int(np.sum(auto.status == "GOOD"))
    chi2 = control_chi2(fitted, np.append(grid, [auto.strength, old]))
    best = chi2[: len(grid)].min()
    print(
        f"\nchosen strength {auto.strength:.3g}: control chi^2 {chi2[-2] - best:+.1f} from the "
        f"best of the grid (t = {grid[int(np.argmin(chi2[: len(grid)]))]:.3g}); old "
        f"({old:.3g}) {chi2[-1] - best:+.1f}"
    )
    assert chi2[-2] - best < 2.0
    assert chi2[-1] - chi2[-2] > 2.0


def test_metadata_states_the_chosen_strength() -> None:
    pair = make_pair((256, 256), 150, seed=2)
    result = pipeline.run_subtraction(pair.science, pair.template, SubtractionConfig())
    kernel_meta = build_metadata(result)["kernel"]
    stated = kernel_meta["regularization"]
    assert stated == result.kernel.regularization
    assert stated in kernel_prior.STRENGTH_GRID
    # And the stars' chi^2 against kernels fitted without them.
    held = np.asarray(result.kernel.candidates["held_out_chi2"])
    assert kernel_meta["candidates"]["held_out_chi2_median"] == float(
        np.median(held[np.isfinite(held)])
    )
    given = SubtractionConfig(kernel=KernelConfig(regularization=0.25))
    result = pipeline.run_subtraction(pair.science, pair.template, given)
    assert build_metadata(result)["kernel"]["regularization"] == 0.25
    # The kernel fit's allowance for the images' noise (kernel_noise) is stated with it:
    # this pair's noise is independent.
    shared = build_metadata(result)["kernel"]["shared_noise"]
    assert shared["applied"] and shared["terms"] == "shared"
    assert abs(shared["correlation"]) < 0.05 and abs(shared["trace_ratio"]) < 0.01
    # And the kernel sum's standard error over the stars (a jackknife over the folds).
    ksum = build_metadata(result)["kernel"]["kernel_sum"]
    assert ksum["error"] == result.kernel.kernel_sum_error and 0 < ksum["error"] < 0.01


def test_the_spatial_fits_residual_statistics_are_each_stamps_against_the_model(
    fitted: Fitted,
) -> None:
    # fit_kernel takes the control stars' chi^2, mean and std against the spatial model
    # from the spatial fit (they were made again there): they must be those of each
    # usable stamp's residual against the model's kernel, alone.
    sp = spatial(fitted, -1.0)
    usable = np.nonzero(fitted.stamps.ok)[0]
    for i in usable[:: max(1, len(usable) // 7)]:
        one = np.array([i])
        c2, mu, sd = kernel_residual_stats(
            fitted.stamps,
            one,
            sp.stamp_coef[one],
            fitted.basis,
            sp.var_total[one],
            fitted.fits.used[one],
        )
        np.testing.assert_allclose(
            [sp.resid_chi2[i], sp.resid_mean[i], sp.resid_std[i]],
            [c2[0], mu[0], sd[0]],
            rtol=1e-6,
        )
    unusable = ~fitted.stamps.ok
    assert np.isnan(sp.resid_chi2[unusable]).all()
