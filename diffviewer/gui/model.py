"""What the window shows, without Qt: pairs, the run job, view arrays, metrics, verdicts.

The window keeps no science of its own: a run's :class:`RunOutcome` holds the
engine's :class:`~diffviewer.engine.pipeline.SubtractionResult` together with the
display-ready arrays and levels that the worker prepared off the GUI thread.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from diffviewer import display
from diffviewer.config import SubtractionConfig
from diffviewer.engine.progress import CancelToken, ProgressCallback
from diffviewer.errors import InputError
from diffviewer.exposure import Exposure, mask_plane_names
from diffviewer.gui import columns
from diffviewer.gui.verdicts import Verdict
from diffviewer.stats import robust_std

#: Image views in display order, with their titles (template: warped to the science grid;
#: matched: the PSF-matched image; variance and mask: the difference's planes).
VIEW_TITLES: dict[str, str] = {
    "science": "Science",
    "template": "Template",
    "matched": "Matched",
    "difference": "Difference",
    "score": "Score",
    "variance": "Variance",
    "mask": "Mask",
}

#: Views shown from the start; the others on demand.
MAIN_VIEWS: tuple[str, ...] = ("science", "template", "matched", "difference", "score")

#: Verdict labels and the keys that set them.
VERDICT_KEYS: dict[str, str] = {"R": "real", "B": "bogus", "U": "unsure"}

Runner = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class Pair:
    """A science/template pair to subtract: file specs or exposures in memory.

    Attributes
    ----------
    science, template : str or Exposure
        Specs as ``file.fits``, ``file.fits[SCI]``, ``file.fits[3]``, or exposures.
    name : str
        Short name (titles, output folder): a plain name, no folder.

    Raises
    ------
    InputError
        When ``name`` holds a path separator, is ``.`` or ``..``, or is absolute.
    """

    science: str | Exposure
    template: str | Exposure
    name: str = ""

    def __post_init__(self) -> None:
        check_pair_name(self.name)

    @property
    def identity(self) -> tuple[str, str]:
        """The resolved science and template specs (see :func:`spec_identity`)."""
        return spec_identity(self.science), spec_identity(self.template)

    @property
    def label(self) -> str:
        """A name for titles: ``name``, or the two specs."""
        if self.name:
            return self.name
        return f"{_describe(self.science)} - {_describe(self.template)}"

    @property
    def files(self) -> list[Path]:
        """The input files (empty for exposures in memory)."""
        from diffviewer.io import parse_spec

        return [Path(parse_spec(s)[0]) for s in (self.science, self.template) if isinstance(s, str)]

    def load(self) -> tuple[Exposure, Exposure]:
        """Read both exposures (specs are read with :func:`diffviewer.io.read_exposure`)."""
        from diffviewer.io import read_exposure

        def read(spec: str | Exposure) -> Exposure:
            return spec if isinstance(spec, Exposure) else read_exposure(spec)

        return read(self.science), read(self.template)


def _describe(spec: str | Exposure) -> str:
    """Short description of a spec or exposure."""
    return Path(spec).name if isinstance(spec, str) else spec.source


def check_pair_name(name: str) -> None:
    """Refuse a pair name that is not a plain folder name (it names the output folder).

    Parameters
    ----------
    name : str
        The name (empty: no name).

    Raises
    ------
    InputError
        When ``name`` holds ``/`` or ``\\``, is ``.`` or ``..``, or is absolute.
    """
    if not name:
        return
    if "/" in name or "\\" in name or name in (".", "..") or Path(name).is_absolute():
        raise InputError(
            f"pair name {name!r} is not a plain name; names become output folders, so "
            "use letters, digits, spaces, '-', '_' or '.' without '/', '\\' or '..'"
        )


def spec_identity(spec: str | Exposure) -> str:
    """What a spec reads, independent of how it was written: the resolved file and extension.

    Parameters
    ----------
    spec : str or Exposure
        ``file.fits``, ``file.fits[SCI]``, ``file.fits[3]``, or an exposure in memory.

    Returns
    -------
    str
        ``/abs/file.fits``, ``/abs/file.fits[SCI]``, or ``memory:<source>``.
    """
    from diffviewer.io import parse_spec

    if isinstance(spec, Exposure):
        return f"memory:{spec.source}"
    path, ext = parse_spec(spec)
    resolved = str(path.expanduser().resolve())
    return resolved if ext is None else f"{resolved}[{ext}]"


def default_output_dir(pair: Pair, root: Path) -> Path:
    """Output folder of a pair under ``root``: its name, or
    ``<science stem>__<template stem>__<hash8>``.

    The hash (8 hex digits of the SHA-256 of the resolved specs) keeps apart pairs whose
    files share their names, e.g. ``/n1/sci.fits`` and ``/n2/sci.fits`` against one template.

    Parameters
    ----------
    pair : Pair
        The pair.
    root : Path
        Parent folder of all outputs.

    Returns
    -------
    Path
    """
    from diffviewer.io import parse_spec

    if pair.name:
        return root / pair.name
    stems = [
        parse_spec(s)[0].stem if isinstance(s, str) else "memory"
        for s in (pair.science, pair.template)
    ]
    return root / "__".join([*stems, pair_digest(pair)[:8]])


def pair_digest(pair: Pair) -> str:
    """SHA-256 (hex) of a pair's resolved specs: the same two inputs, the same digest."""
    return hashlib.sha256("\n".join(pair.identity).encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """A finished run with everything the views need.

    Attributes
    ----------
    pair : Pair
        What was subtracted.
    result : SubtractionResult
        The engine's result.
    images : dict of str to numpy.ndarray
        Display-ready (float32, NaN-free) image of every view.
    levels : dict of str to (float, float)
        Default display levels of every view.
    elapsed : float
        Seconds from start of the job to the result (s).
    stages : dict of str to float
        Seconds spent reading the pair, in the engine and preparing the display.
    """

    pair: Pair
    result: Any
    images: Mapping[str, np.ndarray]
    levels: Mapping[str, tuple[float, float]]
    elapsed: float
    stages: Mapping[str, float] = dataclasses.field(default_factory=dict)


def view_arrays(result: Any) -> dict[str, np.ndarray]:
    """The engine array behind each view (the one place that maps views to results).

    Parameters
    ----------
    result : SubtractionResult
        A finished run.

    Returns
    -------
    dict of str to numpy.ndarray
        Keyed by the names of :data:`VIEW_TITLES` (score is absent when not computed).
    """
    arrays = {
        "science": result.science.image,
        "template": result.template.exposure.image,
        "matched": result.subtraction.matched.image,
        "difference": result.difference.image,
        "variance": result.difference.variance,
        "mask": result.difference.mask,
    }
    if result.score is not None:
        arrays["score"] = result.score.image
    return arrays


def prepare_views(
    arrays: Mapping[str, np.ndarray],
) -> dict[str, tuple[np.ndarray, tuple[float, float]]]:
    """Display array and default levels of each named image (run in the worker).

    Parameters
    ----------
    arrays : mapping of str to numpy.ndarray
        Engine images keyed by view name.

    Returns
    -------
    dict of str to (numpy.ndarray, (float, float))
    """
    out = {}
    for name, array in arrays.items():
        image = display.display_array(array)
        out[name] = (image, display.compute_levels(image, display.default_settings(name)))
    return out


def prepare_display(result: Any) -> tuple[dict[str, np.ndarray], dict[str, tuple[float, float]]]:
    """Display arrays and default levels of every view (run in the worker).

    Parameters
    ----------
    result : SubtractionResult

    Returns
    -------
    (dict, dict)
        Images and levels keyed by view name.
    """
    images: dict[str, np.ndarray] = {}
    levels: dict[str, tuple[float, float]] = {}
    for name, array in view_arrays(result).items():
        images[name] = display.display_array(array)
        levels[name] = (
            display.compute_levels(images[name], display.default_settings(name))
            if name != "mask"
            else (0.0, float(max(int(array.max()), 1)))
        )
    return images, levels


def run_job(
    pair: Pair, config: SubtractionConfig, runner: Runner | None = None
) -> Callable[[ProgressCallback, CancelToken], RunOutcome]:
    """A worker job that reads a pair, runs the engine and prepares the display.

    Each image is sent to the window as soon as it exists (science when read, template
    after the warp, matched and difference after the subtraction, score after scoring)
    through the worker's ``progress.partial``, as ``{view: (display array, levels)}``.

    Parameters
    ----------
    pair : Pair
        What to subtract.
    config : SubtractionConfig
        The config of the run.
    runner : callable, optional
        ``runner(science, template, config, progress=, cancel=)``; the engine's
        :func:`~diffviewer.engine.pipeline.run_subtraction` when None.

    Returns
    -------
    callable
        ``job(progress, token) -> RunOutcome``.
    """

    def job(progress: ProgressCallback, token: CancelToken) -> RunOutcome:
        t0 = time.perf_counter()
        progress("read", 0.0)
        sci, tmpl = pair.load()
        t1 = time.perf_counter()
        partial = getattr(progress, "partial", None)  # the GUI's worker shows stages
        sent: set[str] = set()

        def stage(name: str, products: Mapping[str, np.ndarray]) -> None:
            new = {k: v for k, v in products.items() if k not in sent}
            if partial is not None and new:
                sent.update(new)
                partial(prepare_views(new))

        stage("read", {"science": sci.image})
        if runner is None:
            from diffviewer.engine.pipeline import run_subtraction

            result = run_subtraction(
                sci, tmpl, config, progress=progress, cancel=token, stage=stage
            )
        else:
            result = runner(sci, tmpl, config, progress=progress, cancel=token)
        t2 = time.perf_counter()
        progress("display", 1.0)
        images, levels = prepare_display(result)
        t3 = time.perf_counter()
        stages = {"read": t1 - t0, "engine": t2 - t1, "display": t3 - t2}
        return RunOutcome(pair, result, images, levels, t3 - t0, stages)

    return job


def levels_job(
    image: np.ndarray, settings: display.DisplaySettings
) -> Callable[[ProgressCallback, CancelToken], tuple[float, float]]:
    """A worker job computing display levels of one image."""

    def job(progress: ProgressCallback, token: CancelToken) -> tuple[float, float]:
        return display.compute_levels(image, settings)

    return job


#: The four residual panels of the seed's runDebug: (title, Diagnostics attribute prefix).
RESIDUAL_PANELS: tuple[tuple[str, str], ...] = (
    ("candidates, own kernel", "own"),
    ("candidates, spatial kernel", "spatial"),
    ("control sample, spatial kernel", "control"),
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
    "control sample, spatial kernel": (
        "no control stars were held out (candidates.control_every = 0, or too few candidates)"
    ),
    "full image (subsampled)": "no usable pixel on both images",
}

#: Names of the noise-ratio metrics, worded as the warnings banner words them.
NOISE_FINAL = "noise ratio (final difference)"
NOISE_BEFORE_SCALING = "noise ratio before variance scaling"
NOISE_BEFORE_DECORRELATION = "noise ratio before decorrelation"


def config_differences(a: SubtractionConfig, b: SubtractionConfig) -> list[tuple[str, str, str]]:
    """The parameters whose values differ between two configs.

    Returns
    -------
    list of (str, str, str)
        ``(section.name, value in a, value in b)``, in config order.
    """
    da, db = a.to_dict(), b.to_dict()
    out = []
    for section, values in da.items():
        for name, value in values.items():
            other = db.get(section, {}).get(name)
            if value != other:
                out.append((f"{section}.{name}", str(value), str(other)))
    return out


def metrics(result: Any) -> dict[str, float]:
    """Figures of merit of a run, for the A/B comparison.

    Parameters
    ----------
    result : SubtractionResult

    Returns
    -------
    dict of str to float
        Noise ratio of the difference (and, with decorrelation, before the variance
        scaling and before decorrelation, named as the warnings name them), good/bad/
        control kernel stamps, DIA sources (all, dipoles), and the robust residual
        sigma of the four histogram panels (normalised by the difference variance).
    """
    status = np.asarray(result.kernel.candidates["status"]).astype(str)
    dia = result.diasources
    out: dict[str, float] = {NOISE_FINAL: float(result.diagnostics.noise_ratio)}
    if result.decorrelation is not None:
        if result.decorrelation.variance_rescale != 1.0:  # the variance was scaled
            out[NOISE_BEFORE_SCALING] = float(np.sqrt(result.decorrelation.variance_rescale))
        out[NOISE_BEFORE_DECORRELATION] = float(result.diagnostics.noise_ratio_raw)
    out |= {
        "good stamps": float(np.sum(status == "GOOD")),
        "bad stamps": float(np.sum(status == "BAD")),
        "control stamps": float(np.sum(status == "CONTROL")),
        "DIA sources": float(len(dia)),
        "dipoles": float(np.sum(np.asarray(dia["is_dipole"], bool))) if len(dia) else 0.0,
    }
    for title, values in residual_samples(result):
        out[f"residual σ (robust): {title}"] = residual_stats(
            values[RESIDUAL_NORMS[0][0]]
        ).robust_sigma
    return out


def kernel_views(result: Any, n_grid: int = 7, n_shift: int = 16) -> dict[str, Any]:
    """The kernel panel's content: mosaic, sums, centroid shifts, basis, a description.

    The mosaic and the shift map realise the engine's spatial kernel with
    :func:`diffviewer.engine.diagnostics.kernel_mosaic`; centroids are the first
    moments of those kernel images, relative to the kernel centre.

    Parameters
    ----------
    result : SubtractionResult
    n_grid : int
        Kernels per axis in the mosaic.
    n_shift : int
        Grid points per axis of the centroid-shift map.

    Returns
    -------
    dict
        Keyword arguments of :meth:`diffviewer.gui.diagnostic_panels.KernelPanel.set_data`.
    """
    from diffviewer.engine.diagnostics import kernel_centroids, kernel_mosaic

    sol = result.kernel.solution
    mosaic = kernel_mosaic(sol, n_grid)
    sums = mosaic.kernels.sum(axis=(2, 3))
    dx, dy = kernel_centroids(mosaic.kernels)
    gx, gy = np.meshgrid(mosaic.x, mosaic.y)
    grid = np.column_stack([gx.ravel(), gy.ravel(), sums.ravel(), dx.ravel(), dy.ravel()])
    fine = kernel_mosaic(sol, n_shift)
    fdx, fdy = kernel_centroids(fine.kernels)
    info = (
        f"{sol.describe()}; spatial order {sol.spatial_order}, background order "
        f"{sol.background_order}; convolved: {result.kernel.convolved}; photometric scale "
        f"{result.kernel.photometric_scale:.4f}; kernel sum {sums.min():.4f} to "
        f"{sums.max():.4f}; centroid shift up to {np.hypot(fdx, fdy).max():.3f} px"
    )
    return {
        "mosaic": mosaic.image,
        "grid": grid,
        "n_grid": n_grid,
        "cell": sol.size,
        "sum_map": result.subtraction.kernel_sum_map,
        "shift_map": np.hypot(fdx, fdy),
        "basis": sol.basis,
        "info": info,
    }


def stamp_views(result: Any, index: int) -> tuple[dict[str, np.ndarray], str]:
    """The stamp panel's images and text for kernel candidate ``index``.

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
        "normalised residual": v.residual_spatial,
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
        The same for the difference's PSF scaled to the source's PSF flux.
    flux : float
        The source's forced PSF flux (image units; NaN when not measured).
    """

    radius: np.ndarray
    value: np.ndarray
    model_radius: np.ndarray
    model: np.ndarray
    flux: float


#: Largest distance (px) of the pixels in a source's radial profile.
PROFILE_RADIUS = 10.0


def source_profile(result: Any, x: float, y: float, flux: float) -> SourceProfile:
    """Radial profile of the difference around (x, y) and of the difference's PSF times
    ``flux``, both against distance from (x, y) (the PSF centred on its own centre).

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
    psf = result.decorrelation.psf if result.decorrelation is not None else result.subtraction.psf
    psf = np.asarray(psf, dtype=np.float64)
    total = psf.sum()
    py, px = np.mgrid[: psf.shape[0], : psf.shape[1]]
    cy, cx = (np.array(psf.shape) - 1) / 2.0
    pdist = np.hypot(px - cx, py - cy).ravel()
    scaled = (psf / total * flux).ravel() if total else np.zeros(psf.size)
    keep = pdist <= PROFILE_RADIUS
    return SourceProfile(
        dist[near], image[ys[near], xs[near]].astype(np.float64), pdist[keep], scaled[keep], flux
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
            unit = str(catalog[key].unit or "")
            text = columns.format_value(key, row[key], unit)
            if text:  # no "ra deg" without a WCS: a value that is not there is left out
                parts.append(f"{key} {text} {unit}".rstrip())
    text = ", ".join(parts)
    verdict = verdicts.get(int(source_id))
    if verdict is not None:
        text += f" · verdict: <b>{verdict.label}</b>" + (
            f" ({verdict.comment})" if verdict.comment else ""
        )
    return text


def candidate_summary(result: Any, index: int) -> str:
    """One kernel candidate in words: status (with reason), chi^2, kernel sum, residuals."""
    row = result.kernel.candidates[index]
    names = row.colnames
    text = f"kernel source {index} at ({row['x']:.1f}, {row['y']:.1f}): {row['status']}"
    if row["status"] == "BAD" and "reason" in names:
        text += f" ({row['reason']})"
    for key in (
        "chi2",
        "kernel_sum",
        "resid_mean",
        "resid_std",
        "spatial_resid_mean",
        "spatial_resid_std",
        "snr",
    ):
        if key in names:
            value = columns.format_value(key, row[key])
            text += f"\n{key} = {value or '— (not measured for this stamp)'}"
    return text


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
    lines = [f"<b>x</b> {ix}  <b>y</b> {iy}"]
    if result.science.has_celestial_wcs:
        ra, dec = result.science.wcs.pixel_to_world_values(float(ix), float(iy))
        lines.append(f"<b>RA</b> {float(ra):.6f}°  <b>Dec</b> {float(dec):+.6f}°")
    for name, title in VIEW_TITLES.items():
        if name in arrays and name != "mask":
            lines.append(f"{title}: {float(arrays[name][iy, ix]):.5g}")
    if "difference" in arrays and "variance" in arrays:
        variance = float(arrays["variance"][iy, ix])
        if variance > 0:
            snr = float(arrays["difference"][iy, ix]) / np.sqrt(variance)
            lines.append(f"Difference / σ: {snr:+.2f}")
    bits = int(arrays["mask"][iy, ix]) if "mask" in arrays else 0
    names = mask_plane_names(bits)
    lines.append(f"mask {bits}: {', '.join(names) if names else '(none)'}")
    return "<br>".join(lines)
