"""What the panels show, without Qt: residual samples and statistics, run metrics, kernel
and stamp views, source summaries and profiles, the pixel readout.

Each function reads a finished run (:class:`~diffviewer.engine.pipeline.SubtractionResult`)
and returns plain arrays or text for one panel; none draws.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from diffviewer.engine.columns import image_unit
from diffviewer.exposure import mask_plane_names
from diffviewer.gui import columns
from diffviewer.gui.model import VIEW_TITLES, matched_title, no_data, view_masks
from diffviewer.gui.verdicts import Verdict
from diffviewer.results import SavedRun
from diffviewer.stats import robust_std

#: The four residual panels of the seed's runDebug: (title, Diagnostics attribute prefix).
RESIDUAL_PANELS: tuple[tuple[str, str], ...] = (
    ("candidates, own kernel", "own"),
    ("candidates, spatial kernel", "spatial"),
    ("held-out stars, kernel fitted without them", "control"),
    ("full image (subsampled)", "image"),
)
#: Residual normalisations: (name shown, Diagnostics attribute suffix).
RESIDUAL_NORMS: tuple[tuple[str, str], ...] = (
    ("difference variance", "by_difference"),
    ("input variances", "by_input"),
)


def residual_samples(result: Any) -> list[tuple[str, dict[str, np.ndarray]]]:
    """The normalised pixel residuals of the four runDebug panels, per normalisation.

    Parameters
    ----------
    result : SubtractionResult

    Returns
    -------
    list of (str, dict of str to numpy.ndarray)
        Panel title and ``{normalisation: values}``.
    """
    diag = result.diagnostics
    return [
        (title, {norm: getattr(diag, f"{prefix}_{suffix}") for norm, suffix in RESIDUAL_NORMS})
        for title, prefix in RESIDUAL_PANELS
    ]


def residual_note(result: Any) -> str:
    """What the residual histograms' unit is and why their width may differ from N(0, 1):
    the one renormalisation sets the variance plane by the noise at PSF scale (what
    detection and PSF fluxes see), and where the noise is correlated (resampled inputs, a
    decorrelated difference) one pixel's scatter is not that.

    Parameters
    ----------
    result : SubtractionResult

    Returns
    -------
    str
    """
    renorm = result.renormalisation
    unit = (
        f"“{RESIDUAL_NORMS[0][0]}”: the difference's variance plane, scaled by "
        f"{renorm.variance_factor:.3g} so that its noise at PSF scale (what detection and "
        "PSF fluxes see) is as predicted"
        if renorm.applied
        else f"“{RESIDUAL_NORMS[0][0]}”: the difference's variance plane, not rescaled "
        f"({renorm.reason.rstrip('.')})"
    )
    return (
        f"{unit}. N(0, 1), in red, is the width of uncorrelated noise; where neighbouring "
        "pixels' noise is correlated (resampled or coadded inputs, a decorrelated "
        "difference), one pixel's scatter differs from the noise at PSF scale."
    )


@dataclasses.dataclass(frozen=True)
class ResidualStats:
    """What a residual histogram holds.

    Attributes
    ----------
    mean : float
        Mean of the finite residuals (NaN when none).
    robust_sigma : float
        1.4826 x the median absolute deviation: the width of the histogram's core.
    std : float
        Plain standard deviation, tails included.
    count : int
        Number of finite residuals.
    """

    mean: float
    robust_sigma: float
    std: float
    count: int


def residual_stats(values: np.ndarray) -> ResidualStats:
    """Mean, robust and plain sigma, and number of the finite residuals (NaN when none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return ResidualStats(float("nan"), float("nan"), float("nan"), 0)
    return ResidualStats(float(np.mean(v)), robust_std(v), float(np.std(v)), int(v.size))


#: Why a residual panel can be empty, by panel title.
EMPTY_RESIDUALS: dict[str, str] = {
    "candidates, own kernel": "no kernel stamp was fitted (too few kernel stars)",
    "candidates, spatial kernel": "no kernel stamp was fitted (too few kernel stars)",
    "held-out stars, kernel fitted without them": (
        "no star was held out (no spatial fit, or fewer than two good kernel stars)"
    ),
    "full image (subsampled)": "no usable pixel on both images",
}

#: Names of the noise-ratio metrics, worded as the warnings banner words them.
NOISE_FINAL = "noise ratio per pixel (final difference)"
NOISE_BEFORE_SCALING = "noise at PSF scale before variance scaling"
#: Its standard error, measured on the sky (how far thresholds and S/N may be off).
NOISE_SCALE_ERROR = "± its standard error (sky)"
NOISE_BEFORE_DECORRELATION = "noise ratio per pixel before decorrelation"
SKY_PULL_MEAN = "sky sources: mean PSF-flux pull"
SKY_PULL_STD = "sky sources: PSF-flux pull scatter"


def run_folder(result: Any) -> Path | None:
    """The folder a run was read back from (None: a run computed here)."""
    return result.folder if isinstance(result, SavedRun) else None


def run_label(result: Any, role: str, *, kept: bool = False) -> str:
    """How the A/B panel names a run: the folder of a run read back from one, else its
    role, and its config digest (a saved run re-run with its config has the same).

    Parameters
    ----------
    result : SubtractionResult or SavedRun
        The run.
    role : str
        What it is to the window ("current run", "previous run").
    kept : bool
        Whether it is the run kept as A: named "kept run" (its role is then left out:
        the title stays short), or "kept saved run <folder>".

    Returns
    -------
    str
        E.g. "saved run goto_out, config 2a011292ea31", "kept run, config 2a011292ea31".
    """
    folder = run_folder(result)
    if folder is not None:
        name = f"{'kept ' if kept else ''}saved run {folder.name}"
    else:
        name = "kept run" if kept else role
    return f"{name}, config {result.config.digest()}"


def effective_values(result: Any) -> dict[str, Any]:
    """The values a run's engine used for the parameters it may choose or lower.

    Parameters
    ----------
    result : SubtractionResult
        A run (computed, or read back from its folder).

    Returns
    -------
    dict of str to Any
        By ``section.name``: the image convolved (``kernel.mode``; 'auto' chooses it), the
        kernel's and background's spatial orders (lowered with few kernel stamps), the
        basis's degrees (chosen by the held-out stars) and whether it has the wing (fixed
        by the PSFs or left out with few stamps), the kernel sum's order (chosen for -1,
        capped at the kernel's), and where the held-out stars chose them the fit region and the
        roughness prior's strength.
    """
    fit = result.kernel
    out: dict[str, Any] = {
        "kernel.mode": fit.convolved,
        "kernel.spatial_order": fit.solution.spatial_order,
        "kernel.background_order": fit.solution.background_order,
        # chosen by the stars held out (kernel.degree_steps), or capped for a kernel fitted
        # to the PSFs alone; the wing left out, or fixed by the PSFs, with too few stamps
        "kernel.degrees": [int(d) for d in fit.solution.degrees],
        "kernel.wing": fit.solution.wing is not None,
    }
    # the sum's order as the spatial fit took it: chosen, else the configured one (0 for
    # -1), capped at the kernel's order (engine.kernel_spatial.fit_spatial's sum_terms)
    wanted = (
        fit.sum_order_choice.chosen
        if fit.sum_order_choice is not None
        else result.config.kernel.fixed_sum_order
    )
    out["kernel.kernel_sum_order"] = min(wanted, fit.solution.spatial_order)
    if fit.region_choice is not None:
        whole = fit.region_choice.chosen == fit.region_choice.halves[0]
        out["kernel.fit_region"] = "whole" if whole else "core"
    if result.config.kernel.regularization < 0 and math.isfinite(fit.regularization):
        out["kernel.regularization"] = float(fit.regularization)  # chosen, as metadata.json
    return out


def run_differences(a: Any, b: Any) -> list[tuple[str, str, str]]:
    """The parameters whose values differ between two runs, as requested or as run.

    Parameters
    ----------
    a, b : SubtractionResult
        The two runs.

    Returns
    -------
    list of (str, str, str)
        ``(section.name, value in a, value in b)``, in config order: each value as
        requested, followed by the value the engine ran where it ran another
        (:func:`effective_values`; "2 (ran as 0)", "auto (ran as science)"). A parameter
        is listed when the requested or the run values differ.
    """
    da, db = a.config.to_dict(), b.config.to_dict()
    ran_a, ran_b = effective_values(a), effective_values(b)
    out = []
    for section, values in da.items():
        for name, value in values.items():
            key = f"{section}.{name}"
            cells = (
                _as_run(value, ran_a.get(key, value)),
                _as_run(db[section][name], ran_b.get(key, db[section][name])),
            )
            if cells[0] != cells[1]:
                out.append((key, *cells))
    return out


def _as_run(requested: Any, ran: Any) -> str:
    """A parameter's value as requested, and as run where that differs."""
    return str(requested) if ran == requested else f"{requested} (ran as {ran})"


def metrics(result: Any) -> dict[str, float]:
    """Figures of merit of a run, for the A/B comparison, the key ones first.

    Parameters
    ----------
    result : SubtractionResult

    Returns
    -------
    dict of str to float
        In this order: the noise ratio of the difference, DIA sources (all, dipoles), the
        sky sources' PSF-flux pulls (mean and scatter:
        :func:`~diffviewer.engine.measure.sky_source_check`; NaN with fewer than two), the
        photometric scale and the mean kernel sum's error (:attr:`KernelFit.kernel_sum_error`,
        when a spatial fit gave one), good/bad/control kernel stamps, the PSF-scale noise before
        the one variance scaling (as the warnings word it) and with decorrelation the
        noise ratio before it, and the robust residual sigma of the four histogram panels
        (normalised by the difference variance).
    """
    from diffviewer.engine.measure import sky_source_check

    status = np.asarray(result.kernel.candidates["status"]).astype(str)
    dia = result.diasources
    check = sky_source_check(dia)
    # The key figures first (a 1280 x 720 screen shows the table's first few rows): the
    # noise, what was found, whether the catalog's errors hold, the scale.
    out: dict[str, float] = {
        NOISE_FINAL: float(result.diagnostics.noise_ratio),
        "DIA sources": float(n_detections(dia)),
        "dipoles": float(np.sum(np.asarray(dia["is_dipole"], bool))) if len(dia) else 0.0,
        SKY_PULL_MEAN: check.mean_pull,
        SKY_PULL_STD: check.pull_std,
        "photometric scale": float(result.kernel.photometric_scale),
    }
    if np.isfinite(result.kernel.kernel_sum_error):
        out["kernel sum error"] = float(result.kernel.kernel_sum_error)
    out |= {
        "good stamps": float(np.sum(status == "GOOD")),
        "bad stamps": float(np.sum(status == "BAD")),
        "control stamps": float(np.sum(status == "CONTROL")),
    }
    renorm = result.renormalisation
    if renorm.applied:  # the one empirical scale of the variance, and its standard error
        out[NOISE_BEFORE_SCALING] = float(renorm.noise_scale)
        if np.isfinite(renorm.noise_scale_error):
            out[NOISE_SCALE_ERROR] = float(renorm.noise_scale_error)
    if result.decorrelation is not None:
        out[NOISE_BEFORE_DECORRELATION] = float(result.diagnostics.noise_ratio_raw)
    for title, values in residual_samples(result):
        out[f"residual σ (robust): {title}"] = residual_stats(
            values[RESIDUAL_NORMS[0][0]]
        ).robust_sigma
    return out


def kernel_views(
    result: Any, n_grid: int = 7, n_shift: int = 16, psf_cell: int | None = None
) -> dict[str, Any]:
    """The kernel panel's content: mosaic, sums, centroid shifts, the differential
    background, basis, the PSFs matched at a mosaic cell (:func:`psf_views`), a description.

    The mosaic and the shift map realise the engine's spatial kernel with
    :func:`diffviewer.engine.diagnostics.kernel_mosaic`; centroids are the first
    moments of those kernel images, relative to the kernel centre. The background map
    is the subtracted background (:func:`diffviewer.engine.subtract.background_at`, in
    the difference's units) at the kernel-sum map's samples, so a saved run's (from
    ``kernel.fits``' ``BGCOEFFS`` and ``KSUMMAP``'s ``STEP``) is the run's.

    Parameters
    ----------
    result : SubtractionResult
    n_grid : int
        Kernels per axis in the mosaic.
    n_shift : int
        Grid points per axis of the centroid-shift map.
    psf_cell : int, optional
        The mosaic cell (row of ``grid``: ``j * n_grid + i``) where the PSFs are matched
        through the kernel; None: the middle one (the image centre for an odd ``n_grid``).

    Returns
    -------
    dict
        Keyword arguments of :meth:`diffviewer.gui.diagnostic_panels.KernelPanel.set_data`.
    """
    from diffviewer.engine.diagnostics import kernel_centroids, kernel_mosaic
    from diffviewer.engine.kernel_solution import map_points
    from diffviewer.engine.subtract import background_at

    sol = result.kernel.solution
    mosaic = kernel_mosaic(sol, n_grid)
    sums = mosaic.kernels.sum(axis=(2, 3))
    dx, dy = kernel_centroids(mosaic.kernels)
    gx, gy = np.meshgrid(mosaic.x, mosaic.y)
    bg = background_at(result.kernel, gx, gy)
    grid = np.column_stack(
        [gx.ravel(), gy.ravel(), sums.ravel(), dx.ravel(), dy.ravel(), bg.ravel()]
    )
    fine = kernel_mosaic(sol, n_shift)
    fdx, fdy = kernel_centroids(fine.kernels)
    # The kernel sum's figures are metadata.json's: over the samples of the sum map
    sampled = np.asarray(result.subtraction.kernel_sum_map, dtype=np.float64)
    info = (
        f"{sol.describe()}; spatial order {sol.spatial_order}, background order "
        f"{sol.background_order}; convolved: {result.kernel.convolved}; photometric scale "
        f"(science / template flux ratio) {result.kernel.photometric_scale:.4f}; kernel "
        f"sum mean {sampled.mean():.4f}"
    )
    if np.isfinite(result.kernel.kernel_sum_error):
        info += f" +- {result.kernel.kernel_sum_error:.4f}"
    # (not the corners': the map samples cell centres, so the image's extremes lie beyond)
    info += (
        f", {sampled.min():.4f} to {sampled.max():.4f} over the sum map's samples (every "
        f"{result.subtraction.kernel_sum_step} px; the mosaic's hover gives the corners')"
    )
    info += f"; centroid shift up to {np.hypot(fdx, fdy).max():.3f} px"
    for choice in (
        result.kernel.region_choice,
        result.kernel.degree_choice,
        result.kernel.sum_order_choice,
    ):
        if choice is not None:
            info += f"; {choice.describe()}"
    if result.kernel.sky_level is not None:
        info += f"; {result.kernel.sky_level.describe()}"
    if psf_cell is None:
        psf_cell = (n_grid // 2) * n_grid + n_grid // 2
    psfs, psf_info = psf_views(result, *grid[psf_cell, :2])
    stars = star_sums(result)
    if len(stars):
        info += (
            f"; the kernel stars' flux ratios (kernel_sum) less the model's sum there, in "
            f"their errors (dots on the sum map, blue below, red above, full colour at 5): "
            f"{int(np.sum(np.abs(stars[:, 5]) <= 3))} of {len(stars)} within 3"
        )
    return {
        "mosaic": mosaic.image,
        "grid": grid,
        "n_grid": n_grid,
        "cell": sol.size,
        "sum_map": result.subtraction.kernel_sum_map,
        "stars": stars,
        "shift_map": np.hypot(fdx, fdy),
        "background_map": background_at(
            result.kernel, *map_points(sol.shape, result.subtraction.kernel_sum_step)
        ),
        "unit": str(image_unit(result.difference.header.get("BUNIT"))),
        "basis": sol.basis,
        "info": info,
        "psfs": psfs,
        "psf_info": psf_info,
        "psf_cell": psf_cell,
    }


#: How a PSF's title names where it came from (:attr:`PsfEstimate.source`); the reason in
#: full is in the line below the PSFs.
PSF_SOURCES: dict[str, str] = {
    "given": "given",
    "measured": "measured",
    "bright sources": "bright stars",
    "header": "header FWHM",
    "default": "default",
}


@dataclasses.dataclass(frozen=True)
class PsfMatch:
    """How the kernel maps the convolved image's PSF onto the other's, at one position.

    Attributes
    ----------
    convolved : str
        The image the run convolved, 'template' or 'science' (``KernelFit.convolved``).
    x, y : float
        Where the kernel was evaluated (0-based science px).
    science, template : numpy.ndarray
        The PSFs the kernel fit used (``KernelFit.science_psf`` and ``template_psf``),
        sum 1, centred on one odd square stamp.
    matched : numpy.ndarray
        The convolved image's PSF convolved with the kernel at (x, y), sum 1
        (:func:`~diffviewer.engine.score_psfs.kernel_matched_psfs`), on the same stamp.
    residual : numpy.ndarray
        ``matched`` less the other image's PSF (the target).
    misfit : float
        ``sum |residual|``: 0 for a kernel that maps one PSF exactly onto the other, 2
        for PSFs that do not overlap.
    matched_fwhm : float
        FWHM (px) of ``matched``, measured as the inputs' PSFs are
        (:func:`~diffviewer.engine.psf.psf_shape`).
    shift : (float, float)
        The kernel's centroid at (x, y) (px;
        :func:`~diffviewer.engine.diagnostics.kernel_centroids`): the misregistration it
        absorbs. Each PSF is centred on its own stars, so this
        shift moves ``matched`` off the target and shows in the residual as a dipole.
    misfit_centred : float
        ``sum |matched - target|`` with ``matched`` shifted back by :attr:`shift`: the
        misfit of the PSFs' shapes alone.
    """

    convolved: str
    x: float
    y: float
    science: np.ndarray
    template: np.ndarray
    matched: np.ndarray
    residual: np.ndarray
    misfit: float
    matched_fwhm: float
    shift: tuple[float, float]
    misfit_centred: float

    @property
    def target(self) -> np.ndarray:
        """The PSF the matched one is compared with: the image's that was not convolved."""
        return self.science if self.convolved == "template" else self.template


def psf_match(fit: Any, x: float | None = None, y: float | None = None) -> PsfMatch:
    """The kernel fit's PSFs, the convolved image's through the kernel, and their residual.

    Parameters
    ----------
    fit : KernelFit
        A run's kernel fit (computed, or read back from ``kernel.fits``: its
        ``SCI_PSF`` and ``TMPL_PSF``).
    x, y : float, optional
        Where the kernel is evaluated (0-based science px); the image centre when None.

    Returns
    -------
    PsfMatch
    """
    from diffviewer.engine.diagnostics import kernel_centroids
    from diffviewer.engine.psf import fourier_shift, psf_shape
    from diffviewer.engine.psf_field import padded
    from diffviewer.engine.score_psfs import kernel_matched_psfs

    ny, nx = fit.solution.shape
    x = (nx - 1) / 2.0 if x is None else float(x)
    y = (ny - 1) / 2.0 if y is None else float(y)
    sci, tmpl = kernel_matched_psfs(fit, x, y)
    matched = sci if fit.convolved == "template" else tmpl
    science, template = (
        np.asarray(est.image, dtype=np.float64) / float(np.sum(est.image))
        for est in (fit.science_psf, fit.template_psf)
    )
    half = max(a.shape[0] for a in (science, template, matched)) // 2
    science, template, matched = (padded(a, (half, half)) for a in (science, template, matched))
    target = science if fit.convolved == "template" else template
    residual = matched - target
    dx, dy = (float(d) for d in kernel_centroids(fit.solution.evaluate(x, y)))
    centred = fourier_shift(matched[None], np.array([-dx]), np.array([-dy]))[0]
    return PsfMatch(
        fit.convolved,
        x,
        y,
        science,
        template,
        matched,
        residual,
        float(np.sum(np.abs(residual))),
        float(psf_shape(matched)[0]),
        (dx, dy),
        float(np.sum(np.abs(centred - target))),
    )


def psf_views(
    result: Any, x: float | None = None, y: float | None = None
) -> tuple[list[tuple[str, np.ndarray]], str]:
    """The Kernel tab's PSF row: the science and template PSFs the run used, the convolved
    one through the kernel at (x, y), and that less the other (:func:`psf_match`).

    Parameters
    ----------
    result : SubtractionResult
        A run, computed or read back from its folder.
    x, y : float, optional
        Where the kernel is evaluated (0-based science px); the image centre when None.

    Returns
    -------
    (list of (str, numpy.ndarray), str)
        Four titled images (the three PSFs, then the residual, signed), and a line saying
        where the kernel was evaluated, the misfit there and where each PSF came from.
    """
    fit = result.kernel
    match = psf_match(fit, x, y)
    ests = {"science": fit.science_psf, "template": fit.template_psf}
    conv = match.convolved
    other = "science" if conv == "template" else "template"
    images = [
        (
            f"{name.capitalize()} PSF ({PSF_SOURCES.get(est.source, est.source)})<br>"
            f"FWHM {est.fwhm:.2f} px",
            getattr(match, name),
        )
        for name, est in ests.items()
    ]
    images.append(
        (f"{conv.capitalize()} PSF ⊛ kernel<br>FWHM {match.matched_fwhm:.2f} px", match.matched)
    )
    images.append(
        (
            f"Residual, ⊛ − {other}<br>Σ|residual| {match.misfit:.4f}",
            match.residual,
        )
    )
    ny, nx = fit.solution.shape
    centre = math.hypot(match.x - (nx - 1) / 2.0, match.y - (ny - 1) / 2.0) < 1e-6
    where = f"{'the image centre ' if centre else ''}({match.x:.1f}, {match.y:.1f}) px"
    peak = float(np.max(np.abs(match.residual))) / float(np.max(match.target))
    info = (
        f"The {conv} PSF (the image convolved) through the kernel at {where} against the "
        f"{other} PSF, both of sum 1: "
        f"Σ|K⊛P_{conv} − P_{other}| = {match.misfit:.4f} (0: an exact match, 2: no "
        f"overlap); largest residual {peak:.1%} of the {other} PSF's peak; FWHM "
        f"{match.matched_fwhm:.2f} px against {ests[other].fwhm:.2f} px. The kernel there "
        f"shifts by ({match.shift[0]:+.3f}, {match.shift[1]:+.3f}) px (the misregistration "
        f"it absorbs; each PSF is centred on its stars), a dipole in the residual: without "
        f"that shift Σ = {match.misfit_centred:.4f}. "
    )
    if not centre:
        info += (
            f"The science and template PSFs are one each for the whole image: where a PSF "
            f"varies across the field, the kernel here follows it, and the residual against "
            f"the one {other} PSF holds that change too. "
        )
    info += " ".join(
        f"{name.capitalize()} PSF {est.source}: {est.reason or 'no reason recorded'}."
        for name, est in ests.items()
    )
    return images, info


def star_sums(result: Any) -> np.ndarray:
    """Each kernel star's measured flux ratio (its ``kernel_sum``) beside the spatial
    model's kernel sum at the star, placed on the kernel-sum map (LSST's
    ``plotKernelSpatialModel`` compares the two).

    Parameters
    ----------
    result : SubtractionResult

    Returns
    -------
    numpy.ndarray
        Rows of (map column, map row, the star's ``kernel_sum``, its ``kernel_sum_err``,
        the model's sum at the star, their difference in that error) for the GOOD and
        CONTROL stars with a finite ratio and a positive error; the map samples the sum
        every ``kernel_sum_step`` px from half a step (``KSUMMAP``'s ``SAMPLE0``).
    """
    table = result.kernel.candidates
    if not len(table) or not {"kernel_sum", "kernel_sum_err"} <= set(table.colnames):
        return np.zeros((0, 6))
    status = np.asarray(table["status"]).astype(str)
    x, y = np.asarray(table["x"], float), np.asarray(table["y"], float)
    own, err = np.asarray(table["kernel_sum"], float), np.asarray(table["kernel_sum_err"], float)
    keep = np.isin(status, ("GOOD", "CONTROL")) & np.isfinite(own) & (err > 0)
    step = float(result.subtraction.kernel_sum_step)
    model = np.asarray(result.kernel.solution.kernel_sum(x[keep], y[keep]), float)
    return np.column_stack(
        [
            (x[keep] - step / 2) / step,
            (y[keep] - step / 2) / step,
            own[keep],
            err[keep],
            model,
            (own[keep] - model) / err[keep],
        ]
    )


def stamp_views(result: Any, index: int) -> tuple[dict[str, np.ndarray | None], str]:
    """The stamp panel's images and text for kernel candidate ``index`` (None: an image
    that does not exist, the own kernel's of a star without an own fit).

    Parameters
    ----------
    result : SubtractionResult
    index : int
        Row of the candidates table.

    Returns
    -------
    (dict of str to numpy.ndarray, str)
        Images keyed by :attr:`diffviewer.gui.panels.StampPanel.TITLES`, and the summary.
    """
    from diffviewer.engine.diagnostics import stamp_views as engine_stamp_views

    v = engine_stamp_views(result.science, result.template.exposure, result.kernel, index)
    images = {
        "science": v.science,
        "template": v.template,
        "diff (own kernel)": v.difference_own,
        "diff (spatial)": v.difference_spatial,
        "residual (spatial) / sigma": v.residual_spatial,
        "own kernel": v.kernel_own,
        "spatial kernel": v.kernel_spatial,
    }
    return images, candidate_summary(result, index)


def dipole_segments(catalog: Table) -> np.ndarray:
    """Line segments joining the two lobes of every dipole, for a ``connect='pairs'`` plot.

    Parameters
    ----------
    catalog : astropy.table.Table
        DIA sources with ``is_dipole``, ``pos_x``, ``pos_y``, ``neg_x``, ``neg_y``.

    Returns
    -------
    numpy.ndarray
        ``(2 * n_dipoles, 2)`` points: positive lobe, negative lobe, ... (0 rows when none).
    """
    needed = {"is_dipole", "pos_x", "pos_y", "neg_x", "neg_y"}
    if len(catalog) == 0 or not needed <= set(catalog.colnames):
        return np.zeros((0, 2))
    rows = np.flatnonzero(np.asarray(catalog["is_dipole"], dtype=bool))
    pts = np.empty((2 * rows.size, 2))
    for name, offset in (("pos", 0), ("neg", 1)):
        pts[offset::2, 0] = np.asarray(catalog[f"{name}_x"], float)[rows]
        pts[offset::2, 1] = np.asarray(catalog[f"{name}_y"], float)[rows]
    return pts[np.all(np.isfinite(pts.reshape(-1, 4)), axis=1).repeat(2)]


@dataclasses.dataclass(frozen=True)
class SourceProfile:
    """The difference around a DIA source against its PSF model (what makes it real).

    Attributes
    ----------
    radius : numpy.ndarray
        Distance of each pixel within :data:`PROFILE_RADIUS` from the source (px).
    value : numpy.ndarray
        The difference at those pixels (image units).
    model_radius, model : numpy.ndarray
        The same for the PSF its flux was fitted with, times that flux (:func:`source_profile`).
    flux : float
        The source's forced PSF flux (image units; NaN when not measured).
    unit : str
        The difference's pixel unit (its ``BUNIT``; ct: image units), the catalog's
        fluxes' too.
    """

    radius: np.ndarray
    value: np.ndarray
    model_radius: np.ndarray
    model: np.ndarray
    flux: float
    unit: str


#: Largest distance (px) of the pixels in a source's radial profile.
PROFILE_RADIUS = 10.0


def source_profile(result: Any, x: float, y: float, flux: float) -> SourceProfile:
    """Radial profile of the difference around (x, y) and of the PSF its flux was fitted
    with, times ``flux``, both against distance from (x, y).

    Parameters
    ----------
    result : SubtractionResult
    x, y : float
        Source position (0-based px).
    flux : float
        The source's PSF flux (image units).

    Returns
    -------
    SourceProfile
        The model is the catalog's PSF at (x, y) on the same pixels (``psf_flux`` times
        the PSF it was fitted with: a point source follows it); a run saved before the
        catalog's PSFs were (no ``CAT_PSF``) gives the difference's PSF at the image
        centre, centred on its own centre.
    """
    image = result.difference.image
    ny, nx = image.shape
    r = int(np.ceil(PROFILE_RADIUS))
    ys, xs = np.mgrid[
        max(0, round(y) - r) : min(ny, round(y) + r + 1),
        max(0, round(x) - r) : min(nx, round(x) + r + 1),
    ]
    dist = np.hypot(xs - x, ys - y)
    near = dist <= PROFILE_RADIUS
    model = getattr(result, "catalog_psf", None)
    if model is not None:
        psf, x0, y0 = model.stamp(x, y)
        py, px = np.mgrid[y0 : y0 + psf.shape[0], x0 : x0 + psf.shape[1]]
        pdist = np.hypot(px - x, py - y).ravel()
        scaled = (psf * flux).ravel()
    else:
        psf = (
            result.decorrelation.psf if result.decorrelation is not None else result.subtraction.psf
        )
        psf = np.asarray(psf, dtype=np.float64)
        total = psf.sum()
        py, px = np.mgrid[: psf.shape[0], : psf.shape[1]]
        cy, cx = (np.array(psf.shape) - 1) / 2.0
        pdist = np.hypot(px - cx, py - cy).ravel()
        scaled = (psf / total * flux).ravel() if total else np.zeros(psf.size)
    keep = pdist <= PROFILE_RADIUS
    return SourceProfile(
        dist[near],
        image[ys[near], xs[near]].astype(np.float64),
        pdist[keep],
        scaled[keep],
        flux,
        str(image_unit(result.difference.header.get("BUNIT"))),
    )


def source_summary(catalog: Table, source_id: int, verdicts: Mapping[int, Verdict]) -> str:
    """One DIA source in words: its most used columns with units (as the table shows them),
    and its verdict."""
    rows = np.flatnonzero(np.asarray(catalog["id"]) == source_id)
    if not rows.size:
        return ""
    row = catalog[int(rows[0])]
    parts = []
    for key in columns.FIRST_COLUMNS:
        if key in catalog.colnames:
            text = columns.format_value(key, row[key], str(catalog[key].unit or ""))
            if text:  # no "ra deg" without a WCS: a value that is not there is left out
                unit = columns.unit_text(key, catalog[key].unit)  # the table header's
                parts.append(f"{key} {text} {unit}".rstrip())
    text = ", ".join(parts)
    verdict = verdicts.get(int(source_id))
    if verdict is not None:
        text += f" · verdict: <b>{verdict.label}</b>" + (
            f" ({verdict.comment})" if verdict.comment else ""
        )
    return text


def candidate_summary(result: Any, index: int) -> str:
    """One kernel candidate in words: status (with reason), chi^2, kernel sum and its error,
    residuals (its own kernel's, the spatial model's, a kernel's fitted without it)."""
    row = result.kernel.candidates[index]
    names = row.colnames
    text = f"kernel source {index} at ({row['x']:.1f}, {row['y']:.1f}): {row['status']}"
    if row["status"] == "BAD" and "reason" in names:
        text += f" ({row['reason']})"
    if row["status"] == "CONTROL":
        text += (
            "\nheld out of the fit: no kernel of its own (resid_mean and resid_std are "
            "the spatial model's)"
        )
    elif not np.all(np.isfinite(result.kernel.own_coefficients[index])):
        text += "\nits stamp could not be fitted: no kernel of its own"
    for key in (
        "chi2",
        "kernel_sum",
        "kernel_sum_err",
        "resid_mean",
        "resid_std",
        "spatial_resid_mean",
        "spatial_resid_std",
        "held_out_chi2",
        "held_out_std",
        "snr",
    ):
        if key in names:
            value = columns.format_value(key, row[key])
            text += f"\n{key} = {value or '— (not measured for this stamp)'}"
    return text


def n_detections(diasources: Table) -> int:
    """The catalog's detections: its rows less the sky sources (sign 0, blank sky)."""
    if "sky_source" not in diasources.colnames:
        return len(diasources)
    return len(diasources) - int(np.sum(np.asarray(diasources["sky_source"], bool)))


def _view_value(result: Any, array: np.ndarray, name: str, blank: bool, iy: int, ix: int) -> str:
    """One view's value at a pixel for the readout: "no data" where the view's mask says
    so (the engine holds 0 there), "undefined" where the score's own mask does (no
    measurement, as the catalog's ``score_peak``, :func:`measure.score_at`, is NaN)."""
    from diffviewer.engine.measure import score_at

    if blank:
        return "no data"
    if name == "score" and result.score is not None and np.isnan(score_at(result.score, iy, ix)):
        return "undefined (the score's mask)"
    return f"{float(array[iy, ix]):.5g}"


def pixel_readout(result: Any, arrays: Mapping[str, np.ndarray], x: float, y: float) -> str:
    """What the cursor points at: position, sky coordinates, the value in every view, mask bits.

    Parameters
    ----------
    result : SubtractionResult
        The run on screen.
    arrays : mapping of str to numpy.ndarray
        The engine arrays of the views (:func:`view_arrays`).
    x, y : float
        Cursor position (0-based px).

    Returns
    -------
    str
        Rich text; empty outside the image.
    """
    ix, iy = round(x), round(y)
    ny, nx = result.science.shape
    if not (0 <= ix < nx and 0 <= iy < ny):
        return ""
    # 0-based as the catalog's x and y; DS9's image coordinates count from 1.
    lines = [f"<b>x</b> {ix}  <b>y</b> {iy} (0-based; DS9 {ix + 1}, {iy + 1})"]
    if result.science.has_celestial_wcs:
        ra, dec = result.science.wcs.pixel_to_world_values(float(ix), float(iy))
        lines.append(f"<b>RA</b> {float(ra):.6f}°  <b>Dec</b> {float(dec):+.6f}°")
    masks = view_masks(result)
    blank = {name: bool(no_data(mask[iy, ix])) for name, mask in masks.items()}
    titles = VIEW_TITLES | {"matched": matched_title(result.kernel.convolved)}
    for name, title in titles.items():
        if name in arrays and name != "mask":
            lines.append(f"{title}: {_view_value(result, arrays[name], name, blank[name], iy, ix)}")
    if "difference" in arrays and "variance" in arrays and not blank["difference"]:
        variance = float(arrays["variance"][iy, ix])
        if variance > 0:
            snr = float(arrays["difference"][iy, ix]) / np.sqrt(variance)
            lines.append(f"Difference / σ: {snr:+.2f}")
    bits = int(arrays["mask"][iy, ix]) if "mask" in arrays else 0
    names = mask_plane_names(bits)
    lines.append(f"mask {bits}: {', '.join(names) if names else '(none)'}")
    return "<br>".join(lines)
