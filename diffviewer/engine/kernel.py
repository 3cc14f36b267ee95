"""The PSF-matching kernel, fitted: the order of its steps, and the fallback without stars.

The kernel ``K`` maps the *source* image (the one convolved) onto the *target*:
``target ~ K * source + background``. The steps, each in its own module, in the order the
data flows:

1. :mod:`kernel_direction`: which image to convolve (expected difference noise, PSFs);
2. :mod:`kernel_basis`: the Alard-Lupton basis with its wing, kernel size, fit region;
   :mod:`kernel_spread`: with too few stamps for the wing function, the wing fixed by
   the PSFs, spread over the convolved image before the fit and over the kernel after;
3. :mod:`kernel_design`: stamps around the candidates, and their designs (each source
   stamp convolved with every basis function); a star whose source stamp holds light
   that only the source image has, as bright as the star, is not fitted
   (:meth:`~diffviewer.engine.star_fluxes.UnmatchedLight.spoils`);
4. :mod:`kernel_equations`: each stamp's weighted equations, its prior and solution;
   :mod:`kernel_outliers`: residual statistics, pixel clipping and stamp outlier rules;
5. :mod:`kernel_stamps`: each stamp's own fit with pixel clipping, stamp rejection;
6. :mod:`kernel_noise`: the two images' noise covariances on sky, and the noise they put
   into the stamps' equations (:mod:`kernel_common_signal`: less the faint sources both
   images hold on their sky);
7. :mod:`kernel_region`: the fit region (with the wing: the whole, or its core), chosen
   by the stars held out;
8. :mod:`kernel_degrees`: the basis's polynomial degrees, chosen by the stars held out;
9. :mod:`kernel_spatial`: the spatially varying model from the good stamps' equations less
   that noise, with its prior's strength chosen from the data (:mod:`kernel_prior`);
10. :mod:`kernel_solution`: the result, evaluable at any (x, y);
11. :mod:`kernel_star_sums`: each star's flux ratio under it, the candidate table's
    ``kernel_sum``.

Imports point down this list, but for :mod:`kernel_direction`, which compares the two
directions' kernels from the PSFs (:mod:`kernel_basis`, :mod:`kernel_design`).

With fewer than ``min_stamps`` good stamps (alert cutouts, blank fields) the kernel is
spatially constant: derived from the two PSF images (which :mod:`psf` measures from
stars, takes as given, measures from bright compact sources, or reads from the header),
or, when either PSF is only the default, a delta (a plain scaled difference), with a
warning either way.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from diffviewer.config import KernelConfig
from diffviewer.engine.background import SkyBackground
from diffviewer.engine.candidates import APERTURE_FWHM, CandidateSet
from diffviewer.engine.columns import KERNEL_STAR_COLUMNS, describe
from diffviewer.engine.kernel_basis import (
    WING_MIN_STAMPS,
    BasisPlan,
    make_basis,
    plan_basis,
    psf_only_config,
    size_cap,
)
from diffviewer.engine.kernel_common_signal import without_common_signal
from diffviewer.engine.kernel_degrees import DegreeChoice, choose_degrees, on_degrees
from diffviewer.engine.kernel_design import build_stamps, psf_kernel_coefficients
from diffviewer.engine.kernel_direction import choose_direction
from diffviewer.engine.kernel_noise import (
    MIN_SKY_PIXELS,
    NoiseTerms,
    SharedNoise,
    SkyCovariance,
    measure_sky_covariance,
    noise_terms,
    shared_covariance,
)
from diffviewer.engine.kernel_prior import HeldOut, HeldOutSetting
from diffviewer.engine.kernel_region import RegionChoice, choose_region
from diffviewer.engine.kernel_solution import KernelFit, KernelSolution
from diffviewer.engine.kernel_spatial import fit_spatial, jackknife_error, usable_orders
from diffviewer.engine.kernel_spread import spread_basis, spread_solution, wing_spread
from diffviewer.engine.kernel_stamps import CORE_FWHM, fit_stamps
from diffviewer.engine.kernel_star_sums import star_kernel_sums
from diffviewer.engine.kernel_sum_order import SumOrderChoice, choose_sum_order
from diffviewer.engine.progress import Reporter
from diffviewer.engine.psf import PsfEstimate, frozen
from diffviewer.engine.sky import InputSources
from diffviewer.engine.star_fluxes import aperture_sum
from diffviewer.engine.subtract import convolved
from diffviewer.exposure import Exposure
from diffviewer.stats import median

__all__ = ["KernelFit", "KernelSolution", "fit_kernel"]


def sky_noise(exposure: Exposure) -> float:
    """Sky noise per pixel (image units): the square root of the median usable variance."""
    good = exposure.usable_pixels()
    return float(np.sqrt(median(exposure.variance[good]))) if good.any() else float("nan")


def flux_ratio(candidates: CandidateSet, science: Exposure, template: Exposure) -> float:
    """Science/template flux ratio before the fit: the candidates' median aperture ratio,
    else the zero points', else 1."""
    ratio = _stars_ratio(candidates)
    if ratio is None:
        ratio = _zero_point_ratio(science, template)
    return 1.0 if ratio is None else ratio


def _stars_ratio(candidates: CandidateSet) -> float | None:
    """Science/template flux ratio from the candidates' aperture fluxes: the median over
    at least three stars measured on both images, else None."""
    fs = np.asarray(candidates.table["flux_sci"], dtype=float)
    ft = np.asarray(candidates.table["flux_tmpl"], dtype=float)
    ok = (fs > 0) & (ft > 0)
    return float(np.median(fs[ok] / ft[ok])) if ok.sum() >= 3 else None


def _aperture_share(psf: PsfEstimate, radius: float) -> float:
    """The share of a PSF image within ``radius`` px of its centre pixel (the candidates'
    aperture, :func:`~diffviewer.engine.star_fluxes.aperture_sum`)."""
    image = psf.image
    return float(aperture_sum(image[None], np.zeros(1), radius)[0] / image.sum())


def _zero_point_ratio(science: Exposure, template: Exposure) -> float | None:
    """Science/template flux ratio from the zero points, when both are known."""
    if science.zero_point is None or template.zero_point is None:
        return None
    return float(10 ** (0.4 * (science.zero_point - template.zero_point)))


def _beyond_border(kernel: np.ndarray, shape: tuple[int, int]) -> str:
    """The phrase saying how much of a kernel larger than :func:`size_cap` lies beyond the
    EDGE border it is given, or '' when it fits."""
    half = size_cap(shape) // 2
    centre = kernel.shape[0] // 2
    if centre <= half:
        return ""
    weight = np.abs(kernel)
    inside = weight[centre - half : centre + half + 1, centre - half : centre + half + 1].sum()
    return (
        f", used whole on this {min(shape)} px image: EDGE is a {half} px border, beyond "
        f"which {1 - inside / weight.sum():.1%} of its weight lies (the image's median "
        "level stands in for pixels beyond the edge), and wherever a source the edge cuts "
        "could move a PSF flux by a sigma"
    )


def _fallback_solution(
    science: Exposure,
    template: Exposure,
    src_psf: PsfEstimate,
    tgt_psf: PsfEstimate,
    mode: str,
    size: int,
    config: KernelConfig,
    stars: tuple[float | None, float] = (None, 0.0),
) -> tuple[KernelSolution, str]:
    """The spatially constant kernel used when too few stamps survive, and why.

    With both PSFs known (measured, given, from bright sources or the header) the kernel
    maps the source PSF image onto the target's, at the size the PSFs call for even on a
    cutout narrower than twice that (no stamp has to hold it): cut to half the cutout,
    its wing renormalised into its core, it moved a neighbour's light (a source 8 px away
    left -12 sigma of PSF flux). Its weight beyond the EDGE border then
    (:func:`~diffviewer.engine.subtract.edge_half_width`) is said. When either is only the
    default, nothing is known of the PSF mismatch: the kernel maps one PSF onto itself (a
    delta, within the basis's reach), and the difference is a plain scaled difference. The
    kernel sum is the zero points' flux ratio when both are known, else the kernel
    candidates' aperture-flux ratio (``stars``: :func:`_stars_ratio` and the apertures'
    radius, px) with the share of each PSF the aperture holds taken out (an aperture of
    1.5 science FWHM holds all of a 2.5 px science PSF and 91 % of a 4 px template's: a
    ratio 1.43 for a true 1.3), else 1; its background is none, the difference's sky
    level is taken out after the subtraction
    (:func:`~diffviewer.engine.subtract.sky_corrected`), as any kernel's is.
    """
    stars_ratio, stars_radius = stars
    known = [e for e in (src_psf, tgt_psf) if e.source != "default"]
    delta = len(known) < 2
    if delta:
        src_psf = tgt_psf = known[0] if known else src_psf
    config = psf_only_config(config)
    plan = plan_basis(src_psf, tgt_psf, config, 0)
    basis = make_basis(plan.sigmas, config.degrees, size, plan.wing)
    sums = basis.sum(axis=(1, 2))
    coef = psf_kernel_coefficients(src_psf, tgt_psf, basis)
    ratio, whence = _zero_point_ratio(science, template), "the zero points"
    if ratio is None and stars_ratio is not None:
        ratio, whence = stars_ratio, "the kernel stars' aperture fluxes (no zero points)"
        if not delta:
            sci_psf, tmpl_psf = (tgt_psf, src_psf) if mode == "template" else (src_psf, tgt_psf)
            ratio *= _aperture_share(tmpl_psf, stars_radius) / _aperture_share(
                sci_psf, stars_radius
            )
            whence += ", each PSF's share of the aperture taken out"
    scale = 1.0 if ratio is None else (ratio if mode == "template" else 1.0 / ratio)
    coef *= scale / float(coef @ sums)
    if delta:
        why = (
            "no PSF is known for "
            + ("either image" if not known else "one image")
            + ": the kernel is a delta (a plain difference, no PSF matching; expect "
            "residuals at every star)"
        )
    else:
        why = (
            f"the {size} x {size} px kernel is derived from the two PSF images "
            f"({src_psf.source} {mode}, {tgt_psf.source} other image), spatially constant"
        ) + _beyond_border(np.tensordot(coef, basis, axes=1), science.shape)
    why += ", with kernel sum " + (
        f"{scale:.4g} from {whence}"
        if ratio is not None
        else "1 (no zero points, fewer than 3 kernel stars measured on both images)"
    )
    solution = KernelSolution(
        frozen(basis),
        frozen(coef[:, None]),
        frozen([0.0]),
        0,
        0,
        science.shape,
        frozen(plan.sigmas),
        config.degrees,
        plan.wing,
    )
    return solution, why


def fitted_on_stars(n_good: int, config: KernelConfig) -> bool:
    """Whether ``n_good`` good kernel stamps make a fitted kernel (``kernel.min_stamps`` or
    more); with fewer it is derived from the PSFs, or a delta (:func:`_fallback_solution`),
    and its sum is set, not measured."""
    return n_good >= config.min_stamps


def _stamp_plan(plan: BasisPlan, shape: tuple[int, int]) -> tuple[BasisPlan, list[str]]:
    """The basis plan the stamps are fitted on: its kernel cut to half the image side
    (:func:`size_cap`) when it would be larger."""
    notes = []
    cap = size_cap(shape)
    if plan.size > cap:
        notes.append(
            f"the {plan.size} px kernel the PSFs call for was cut to {cap} px, half the "
            f"{min(shape)} px image; its widest Gaussian and wing are truncated"
        )
        plan = dataclasses.replace(plan, size=cap)
    return plan, notes


def _noise_terms(
    cov: SkyCovariance, basis: np.ndarray, which: str
) -> tuple[NoiseTerms | None, str]:
    """The noise terms of ``kernel.noise_correction`` ``which`` ('shared' or 'all'), or
    None and why, with fewer than :data:`MIN_SKY_PIXELS` sky pixels."""
    if cov.n_pixels < MIN_SKY_PIXELS:
        return None, (
            "the kernel is fitted to its equations as measured, without allowing for the "
            f"images' noise in them: {cov.n_pixels} sky pixels to measure it on, fewer than "
            f"{MIN_SKY_PIXELS}"
        )
    return noise_terms(cov if which == "all" else shared_covariance(cov), basis), ""


def fit_kernel(
    science: Exposure,
    template: Exposure,
    candidates: CandidateSet,
    sci_psf: PsfEstimate,
    tmpl_psf: PsfEstimate,
    backgrounds: tuple[SkyBackground, SkyBackground],
    sources: InputSources,
    config: KernelConfig,
    reporter: Reporter,
) -> KernelFit:
    """Fit the spatially varying PSF-matching kernel and differential background.

    Parameters
    ----------
    science, template : Exposure
        The pair on one pixel grid.
    candidates : CandidateSet
        Kernel stars (control stars are never fitted).
    sci_psf, tmpl_psf : PsfEstimate
        PSFs of the two images (size the basis; the fallback kernel uses their images).
    backgrounds : (SkyBackground, SkyBackground)
        The science's and the template's sky (:func:`~diffviewer.engine.sky.sky_backgrounds`),
        for the noise the two put into the stamps' equations (:mod:`kernel_noise`).
    sources : InputSources
        Where either shows a source (:func:`~diffviewer.engine.sky.input_sources`): what
        bounds the sky of those noise terms.
    config : KernelConfig
        Basis, orders, rejection limits, mode.
    reporter : Reporter
        Progress and cancellation.

    Returns
    -------
    KernelFit

    Notes
    -----
    With fewer than ``config.min_stamps`` good stamps the kernel falls back to one derived
    from the PSF images, or to a delta when a PSF is only the default
    (:func:`_fallback_solution`; the reason is in ``warnings``). Inputs without a pixel
    usable on both have no ``backgrounds`` (:func:`~diffviewer.engine.sky.input_backgrounds`
    raises).
    """
    direction, notes = choose_direction(
        config,
        sci_psf,
        tmpl_psf,
        sky_noise(science),
        sky_noise(template),
        flux_ratio(candidates, science, template),
    )
    mode = direction.convolved
    source, target = (template, science) if mode == "template" else (science, template)
    src_psf, tgt_psf = (tmpl_psf, sci_psf) if mode == "template" else (sci_psf, tmpl_psf)
    src_bkg, tgt_bkg = backgrounds[::-1] if mode == "template" else backgrounds
    shape = science.shape
    control = np.asarray(candidates.table["control"], dtype=bool)
    whole = plan_basis(src_psf, tgt_psf, config, int(np.sum(~control)))
    plan, cut = _stamp_plan(whole, shape)
    basis = plan.basis(config.degrees)
    spread = None
    if whole.wing is None:
        # the kernel K_G * S within the sizes a kernel may have
        cap = min(size_cap(shape), config.max_size) - plan.size + 1
        spread = wing_spread(src_psf, tgt_psf, plan.sigmas, config, cap)
    nb = basis.shape[0]
    for name, est in (("science", sci_psf), ("template", tmpl_psf)):
        if est.source == "default":
            notes.append(
                f"the {name} PSF was neither measured nor given; the default "
                f"{est.fwhm:.1f} px Gaussian sized the kernel basis"
            )

    table = candidates.table.copy(copy_data=True)
    x = np.asarray(table["x"], dtype=float)
    y = np.asarray(table["y"], dtype=float)
    # With a spread, the stamps' own kernels apply to the spread image: on the spread
    # basis, to the image itself.
    stamp_basis = frozen(basis) if spread is None else spread_basis(basis, spread.image)
    fitted = source if spread is None else convolved(source, spread.image)
    fwhm = max(sci_psf.fwhm, tmpl_psf.fwhm)
    stamps = build_stamps(fitted, target, x, y, basis.shape[-1], plan.fit_half, CORE_FWHM * fwhm)
    core_half = None if config.fit_region == "whole" else plan.core_half
    # A star beside light on the convolved image only is not fitted (nor read, as a
    # masked stamp is not).
    spoiled = stamps.ok & candidates.unmatched.spoils(x, y, plan.stamp_half, mode)
    stamps = dataclasses.replace(stamps, ok=stamps.ok & ~spoiled)
    fits = fit_stamps(
        stamps, x, y, control, basis, fwhm, shape, config, reporter, core_half=core_half
    )
    reporter.update(0.7)

    status, reason = fits.status, fits.reason
    reason[spoiled] = "unmatched neighbour"
    chi2, rmean, rstd = fits.chi2, fits.resid_mean, fits.resid_std
    smean = sstd = np.full(len(x), np.nan)
    # The stamps' own backgrounds in the difference's sense (science minus template).
    sign = 1.0 if mode == "template" else -1.0
    own = fits.coef.copy()
    own[:, nb] *= sign
    strength = float("nan")
    shared: SharedNoise | None = None
    choice: DegreeChoice | None = None
    region: RegionChoice | None = None
    sum_choice: SumOrderChoice | None = None
    fold_coefficients = np.zeros((0, 0, 0))
    held = np.full((3, len(x)), np.nan)
    held_coef = np.zeros((0, 0))
    n_good = int(np.sum(status == "GOOD"))
    order, bg_order = usable_orders(n_good, config)
    if (order, bg_order) != (
        config.spatial_order,
        config.background_order,
    ) and fitted_on_stars(n_good, config):
        notes.append(
            f"only {n_good} kernel stamps passed their own fits' cuts: spatial order "
            f"lowered to {order} (kernel) and {bg_order} (background)"
        )
    on_stars = fitted_on_stars(n_good, config)
    if not on_stars:
        solution, why = _fallback_solution(
            science,
            template,
            src_psf,
            tgt_psf,
            mode,
            whole.size,
            config,
            (_stars_ratio(candidates), APERTURE_FWHM * candidates.fwhm),
        )
        notes.append(
            f"only {n_good} kernel stamps passed their own fits' cuts "
            f"(kernel.min_stamps = {config.min_stamps}): {why}"
        )
    else:
        notes.extend(cut)
        cov, terms, why, common = None, None, "", float("nan")
        if config.noise_correction != "none":
            cov = measure_sky_covariance(
                fitted,
                target,
                (src_bkg, tgt_bkg),
                sources,
                fwhm,
                basis.shape[-1] - 1,
                source_lags=config.noise_correction == "all",
            )
            cov, common = without_common_signal(cov, src_psf.image, tgt_psf.image, fwhm)
            terms, why = _noise_terms(cov, basis, config.noise_correction)
        known: HeldOut | None = None
        # The region and the degrees are compared with the sum as configured, constant
        # when it is to be chosen; the sum's order is chosen on the chosen ones.
        setting = HeldOutSetting(
            (x, y),
            shape,
            (order, bg_order),
            config.fixed_sum_order,
            config.regularization,
            terms,
        )
        if config.fit_region == "choose":
            compared = choose_region(fits, basis, plan.fit_half, setting)
            if compared is not None:
                region, known = compared
        if fits.core is not None and (
            config.fit_region == "core" or (region is not None and region.chosen != plan.fit_half)
        ):
            fits = fits.on_core()
        choice = choose_degrees(
            plan, basis, config.degrees, config.degree_steps, fits, setting, known
        )
        degrees = choice.chosen if choice is not None else config.degrees
        spatial_basis, spatial_fits, terms = on_degrees(
            plan, degrees, basis, config.degrees, fits, terms
        )
        first_strength = None if choice is None else choice.strength
        if config.kernel_sum_order < 0:
            sum_choice = choose_sum_order(
                spatial_fits,
                spatial_basis,
                dataclasses.replace(setting, noise=terms),
                None if choice is None else choice.held_out,
            )
            if sum_choice is not None:
                first_strength = sum_choice.strength
            config = dataclasses.replace(
                config, kernel_sum_order=0 if sum_choice is None else sum_choice.chosen
            )
        sp = fit_spatial(
            stamps,
            spatial_fits,
            x,
            y,
            control,
            spatial_basis,
            shape,
            (order, bg_order),
            config,
            terms,
            first_strength,
        )
        status, reason, smean, sstd = sp.status, sp.reason, sp.resid_mean, sp.resid_std
        strength = sp.strength
        fold_coefficients, held = sp.fold_coefficients, sp.held_out
        held_coef = sp.held_out_coefficients.copy()
        held_coef[:, -1] *= sign
        if cov is not None:
            why = sp.noise_note or why
            if why:
                notes.append(why)
            shared = SharedNoise(
                cov.correlation,
                common,
                float(np.sqrt(cov.source_variance)),
                float(np.sqrt(cov.target_variance)),
                cov.n_pixels,
                config.noise_correction,
                sp.noise_trace_ratio,
                sp.noise_corrected,
                why,
            )
        cu = np.nonzero(control & stamps.ok)[0]
        if len(cu):
            chi2, rmean, rstd = chi2.copy(), rmean.copy(), rstd.copy()
            chi2[cu], rmean[cu], rstd[cu] = sp.resid_chi2[cu], sp.resid_mean[cu], sp.resid_std[cu]
        solution = KernelSolution(
            frozen(spatial_basis),
            frozen(sp.coefficients),
            frozen(sign * sp.bg_coefficients),
            sp.order,
            sp.bg_order,
            shape,
            frozen(plan.sigmas),
            tuple(degrees),
            plan.wing,
        )
    reporter.update(0.95)
    ksum, ksum_err = np.full(len(x), np.nan), np.full(len(x), np.nan)
    rows = np.nonzero(stamps.ok)[0]
    if solution.size == basis.shape[-1] and len(rows):
        kernels = np.tensordot(solution.coefficients_at(x[rows], y[rows]), solution.basis, axes=1)
        ksum[rows], ksum_err[rows] = star_kernel_sums(stamps, rows, kernels, x, y, fwhm, fits.used)

    step = max(16, min(shape) // 16)
    mean_sum = float(np.mean(solution.kernel_sum_map(step=step), dtype=np.float64))
    scale = mean_sum if mode == "template" else 1.0 / mean_sum
    # The mean kernel sum refitted without each fold of the good stamps: its error over
    # the stars (which stars are fitted and which held out moves it, as noise does).
    replicates = [
        np.mean(
            dataclasses.replace(solution, coefficients=frozen(c)).kernel_sum_map(step=step),
            dtype=np.float64,
        )
        for c in fold_coefficients
    ]
    sum_error = jackknife_error(np.array(replicates))
    n_good = int(np.sum(status == "GOOD"))
    if 0 < n_good < 10:
        notes.append(f"only {n_good} good kernel stamps: the kernel is poorly constrained")
    if spread is not None and on_stars:
        # the wing's index from 9-16 stars moved issue 12's eight 300^2 draws' sums
        # -0.6 % to +0.2 % (test_kernel_science.py): its error is the sum's too
        wing_error = spread.sum_error * abs(mean_sum)
        over_stars = sum_error
        if np.isfinite(wing_error):
            sum_error = float(np.hypot(over_stars, wing_error))
            parts = f"holds the wing profiles' {wing_error:.4f} and the stars' {over_stars:.4f}"
        else:
            parts = "leaves out the wing's (its profiles moved by their errors gave no spread)"
        solution = spread_solution(solution, spread.wing, spread.image)
        notes.append(
            f"the kernel's wing (Moffat beta {spread.wing.beta:.2f}) is fixed by the two "
            f"PSFs at {spread.wing.weight:.4f} per unit kernel sum: fewer than "
            f"{WING_MIN_STAMPS} stamps to fit it; the kernel sum's error {sum_error:.4f} " + parts
        )
    table["status"] = status.astype(str)
    table["reason"] = reason.astype(str)
    table["chi2"] = chi2
    table["kernel_sum"] = ksum
    table["kernel_sum_err"] = ksum_err
    table["resid_mean"] = rmean
    table["resid_std"] = rstd
    table["spatial_resid_mean"] = smean
    table["spatial_resid_std"] = sstd
    table["held_out_chi2"], table["held_out_mean"], table["held_out_std"] = held
    describe(table, KERNEL_STAR_COLUMNS)
    return KernelFit(
        solution,
        table,
        mode,
        scale,
        tuple(notes),
        sci_psf,
        tmpl_psf,
        frozen(own),
        stamp_basis,
        plan.fit_half,
        direction,
        strength,
        shared,
        choice,
        region,
        sum_order_choice=sum_choice,
        kernel_sum_error=sum_error,
        held_out_coefficients=frozen(held_coef),
    )
