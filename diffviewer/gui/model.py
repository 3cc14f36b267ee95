"""What the window shows, without Qt: pairs, the run job, view arrays, metrics, verdicts.

The window keeps no science of its own: a run's :class:`RunOutcome` holds the
engine's :class:`~diffviewer.engine.pipeline.SubtractionResult` together with the
display-ready arrays and levels that the worker prepared off the GUI thread.
"""

from __future__ import annotations

import dataclasses
import json
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

#: Image views in display order, with their titles.
VIEW_TITLES: dict[str, str] = {
    "science": "Science",
    "template": "Template (warped)",
    "matched": "Matched template",
    "difference": "Difference",
    "score": "Score",
    "variance": "Difference variance",
    "mask": "Difference mask",
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
        Short name (titles, output folder).
    """

    science: str | Exposure
    template: str | Exposure
    name: str = ""

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

        sci = self.science if isinstance(self.science, Exposure) else read_exposure(self.science)
        tmpl = self.template if isinstance(self.template, Exposure) else read_exposure(self.template)
        return sci, tmpl


def _describe(spec: str | Exposure) -> str:
    """Short description of a spec or exposure."""
    return Path(spec).name if isinstance(spec, str) else spec.source


def default_output_dir(pair: Pair, root: Path) -> Path:
    """Output folder of a pair under ``root``: its name, or ``<science stem>__<template stem>``.

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
    if pair.name:
        return root / pair.name
    stems = [Path(str(s).split("[")[0]).stem if isinstance(s, str) else "memory"
             for s in (pair.science, pair.template)]
    return root / "__".join(stems)


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
    """

    pair: Pair
    result: Any
    images: Mapping[str, np.ndarray]
    levels: Mapping[str, tuple[float, float]]
    elapsed: float


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
        levels[name] = (display.compute_levels(images[name], display.default_settings(name))
                        if name != "mask" else (0.0, float(max(int(array.max()), 1))))
    return images, levels


def run_job(pair: Pair, config: SubtractionConfig, runner: Runner | None = None
            ) -> Callable[[ProgressCallback, CancelToken], RunOutcome]:
    """A worker job that reads a pair, runs the engine and prepares the display.

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
        run = runner
        if run is None:
            from diffviewer.engine.pipeline import run_subtraction as run
        result = run(sci, tmpl, config, progress=progress, cancel=token)
        progress("display", 1.0)
        images, levels = prepare_display(result)
        return RunOutcome(pair, result, images, levels, time.perf_counter() - t0)

    return job


def levels_job(image: np.ndarray, settings: display.DisplaySettings
               ) -> Callable[[ProgressCallback, CancelToken], tuple[float, float]]:
    """A worker job computing display levels of one image."""

    def job(progress: ProgressCallback, token: CancelToken) -> tuple[float, float]:
        return display.compute_levels(image, settings)

    return job


def metrics(result: Any) -> dict[str, float]:
    """Figures of merit of a run, for the A/B comparison.

    Parameters
    ----------
    result : SubtractionResult

    Returns
    -------
    dict of str to float
        Noise ratio of the difference, good/bad/control kernel stamps, DIA sources
        (all, positive, dipoles), residual sigma of the four histogram panels.
    """
    from diffviewer.engine.diagnostics import noise_ratio

    status = np.asarray(result.kernel.candidates["status"]).astype(str)
    dia = result.diasources
    out: dict[str, float] = {
        "noise ratio": float(noise_ratio(result.difference)),
        "good stamps": float(np.sum(status == "GOOD")),
        "bad stamps": float(np.sum(status == "BAD")),
        "control stamps": float(np.sum(status == "CONTROL")),
        "DIA sources": float(len(dia)),
    }
    if len(dia) and "is_dipole" in dia.colnames:
        out["dipoles"] = float(np.sum(np.asarray(dia["is_dipole"], bool)))
    for panel in result.diagnostics.residuals:
        out[f"sigma: {panel.name}"] = float(panel.std)
    return out


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A person's judgement of one DIA source.

    Attributes
    ----------
    label : str
        ``real``, ``bogus`` or ``unsure``.
    x, y : float
        Position of the source (0-based px), to match it again after a re-run.
    comment : str
        Free text.
    """

    label: str
    x: float
    y: float
    comment: str = ""


VERDICTS_FILE = "verdicts.json"


def save_verdicts(path: Path, verdicts: Mapping[int, Verdict], pair: Pair, digest: str) -> None:
    """Write verdicts as JSON (atomically), with the pair and the config digest.

    Parameters
    ----------
    path : Path
        The JSON file.
    verdicts : mapping of int to Verdict
        Keyed by DIA source id.
    pair : Pair
        The pair judged.
    digest : str
        ``config.digest()`` of the run judged.
    """
    from diffviewer.io import atomic_write_text

    doc = {"science": _describe(pair.science) if not isinstance(pair.science, str) else pair.science,
           "template": (_describe(pair.template) if not isinstance(pair.template, str)
                        else pair.template),
           "config_digest": digest,
           "verdicts": [{"id": int(k), **dataclasses.asdict(v)} for k, v in sorted(verdicts.items())]}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def load_verdicts(path: Path) -> tuple[dict[int, Verdict], str]:
    """Read a verdicts file written by :func:`save_verdicts`.

    Parameters
    ----------
    path : Path

    Returns
    -------
    (dict of int to Verdict, str)
        The verdicts and the config digest they were made with.

    Raises
    ------
    InputError
        When the file is not a verdicts file.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        verdicts = {int(v["id"]): Verdict(str(v["label"]), float(v["x"]), float(v["y"]),
                                          str(v.get("comment", ""))) for v in doc["verdicts"]}
        return verdicts, str(doc.get("config_digest", ""))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"verdicts file {path} cannot be read ({exc}); move it aside to start "
                         "afresh") from None


def match_verdicts(verdicts: Mapping[int, Verdict], catalog: Table, radius: float = 1.5
                   ) -> dict[int, Verdict]:
    """Attach saved verdicts to the sources of a (possibly re-run) catalog.

    A verdict keeps its source id when a source of that id lies within ``radius``;
    otherwise it moves to the nearest source within ``radius`` pixels, or is dropped.

    Parameters
    ----------
    verdicts : mapping of int to Verdict
        Saved verdicts keyed by id.
    catalog : astropy.table.Table
        DIA sources with ``id``, ``x``, ``y``.
    radius : float
        Largest distance (px) between the saved and the catalog position.

    Returns
    -------
    dict of int to Verdict
        Verdicts keyed by the catalog's ids.
    """
    if len(catalog) == 0:
        return {}
    ids = np.asarray(catalog["id"], dtype=np.int64)
    xy = np.column_stack([np.asarray(catalog["x"], float), np.asarray(catalog["y"], float)])
    out: dict[int, Verdict] = {}
    for key, verdict in verdicts.items():
        d = np.hypot(xy[:, 0] - verdict.x, xy[:, 1] - verdict.y)
        same = np.flatnonzero(ids == key)
        if same.size and d[same[0]] <= radius:
            out[int(key)] = verdict
        elif d.min() <= radius:
            out[int(ids[int(np.argmin(d))])] = verdict
    return out


def catalog_with_verdicts(catalog: Table, verdicts: Mapping[int, Verdict]) -> Table:
    """A copy of the catalog with ``verdict`` and ``comment`` columns (for export).

    Parameters
    ----------
    catalog : astropy.table.Table
        DIA sources with an ``id`` column.
    verdicts : mapping of int to Verdict

    Returns
    -------
    astropy.table.Table
    """
    out = catalog.copy()
    ids = [int(i) for i in np.asarray(catalog["id"])]
    out["verdict"] = [verdicts[i].label if i in verdicts else "" for i in ids]
    out["comment"] = [verdicts[i].comment if i in verdicts else "" for i in ids]
    return out


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


def _fmt(value: Any) -> str:
    """A table value for humans."""
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return str(value)


def source_summary(catalog: Table, source_id: int, verdicts: Mapping[int, Verdict]) -> str:
    """One DIA source in words: id, position, flux, S/N, sign, dipole, flags, verdict."""
    rows = np.flatnonzero(np.asarray(catalog["id"]) == source_id)
    if not rows.size:
        return ""
    row = catalog[int(rows[0])]
    keys = [k for k in ("id", "x", "y", "psf_flux", "psf_flux_err", "snr", "sign", "is_dipole",
                        "flags", "ra", "dec") if k in catalog.colnames]
    text = ", ".join(f"{k} {_fmt(row[k])}" for k in keys)
    verdict = verdicts.get(int(source_id))
    if verdict is not None:
        text += f" · verdict: <b>{verdict.label}</b>" + (f" ({verdict.comment})"
                                                         if verdict.comment else "")
    return text


def candidate_summary(result: Any, index: int) -> str:
    """One kernel candidate in words: status (with reason), chi^2, kernel sum, residuals."""
    row = result.kernel.candidates[index]
    names = row.colnames
    text = f"kernel source {index} at ({row['x']:.1f}, {row['y']:.1f}): {row['status']}"
    if row["status"] == "BAD" and "reason" in names:
        text += f" ({row['reason']})"
    for key in ("chi2", "kernel_sum", "resid_mean", "resid_std", "spatial_resid_mean",
                "spatial_resid_std", "snr"):
        if key in names:
            text += f"\n{key} = {_fmt(row[key])}"
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
    bits = int(arrays["mask"][iy, ix]) if "mask" in arrays else 0
    names = mask_plane_names(bits)
    lines.append(f"mask {bits}: {', '.join(names) if names else '(none)'}")
    return "<br>".join(lines)
