"""What the window runs, without Qt: pairs, their output folders, the run job, view arrays.

What each panel shows of a run is in :mod:`diffviewer.gui.content`; verdicts are in
:mod:`diffviewer.gui.verdicts`.

The window keeps no science of its own: a run's :class:`RunOutcome` holds the
engine's :class:`~diffviewer.engine.pipeline.SubtractionResult` together with the
display-ready arrays and levels that the worker prepared off the GUI thread.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffviewer import display
from diffviewer.companions import NO_COMPANIONS, Companions, companion_paths
from diffviewer.config import SubtractionConfig
from diffviewer.engine.progress import CancelToken, ProgressCallback
from diffviewer.errors import InputError
from diffviewer.exposure import Exposure, MaskPlane
from diffviewer.log_notes import collected_warnings

#: Image views in display order, with their titles (template: warped to the science grid;
#: matched: the PSF-matched image; variance and mask: the difference's planes).
VIEW_TITLES: dict[str, str] = {
    "science": "Science",
    "template": "Template",
    "matched": "Matched",
    "difference": "Difference",
    "score": "Score",
    "variance": "Difference variance",
    "mask": "Difference mask",
}


def matched_title(convolved: str) -> str:
    """The matched view's title, naming the image the kernel convolved (``template`` or
    ``science``): "matched" alone reads as the template's to a HOTPANTS or LSST user."""
    return f"Matched {convolved}"


def blink_frames(convolved: str) -> list[str]:
    """The views blinked, in turn: the two images the difference subtracts, the matched
    one in the image's own place (science first), then the difference."""
    first, second = ("science", "matched") if convolved == "template" else ("matched", "template")
    return [first, second, "difference"]


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
        Specs as ``file.fits``, ``file.fits[SCI]``, ``file.fits[3]``, or exposures; a
        template in pieces holds their specs joined by ``;`` (``a.fits;b.fits``), each
        piece registered on its own and the pieces combined by the engine.
    name : str
        Short name (titles, output folder): a plain name, no folder.
    companions : (Companions, tuple of Companions)
        The files read beside the science image and beside each template piece
        (:class:`~diffviewer.companions.Companions`: its mask, variance or weight, and the
        masks' bit map), as a saved run records them; none given by default.

    Raises
    ------
    InputError
        When ``name`` holds a path separator, is ``.`` or ``..``, or is absolute.
    """

    science: str | Exposure
    template: str | Exposure
    name: str = ""
    companions: tuple[Companions, tuple[Companions, ...]] = (NO_COMPANIONS, ())

    def __post_init__(self) -> None:
        check_pair_name(self.name)

    @property
    def pieces(self) -> tuple[str | Exposure, ...]:
        """The template's pieces (one for a whole template)."""
        from diffviewer.paths import template_specs

        if isinstance(self.template, Exposure):
            return (self.template,)
        return template_specs(self.template)

    @property
    def identity(self) -> tuple[str, str]:
        """The resolved science and template specs (see :func:`spec_identity`; template
        pieces joined by ``;``)."""
        return spec_identity(self.science), ";".join(spec_identity(p) for p in self.pieces)

    @property
    def label(self) -> str:
        """A name for titles: ``name``, or the two specs."""
        if self.name:
            return self.name
        return f"{_describe(self.science)} - {describe_template(self.pieces)}"

    @property
    def files(self) -> list[Path]:
        """The input files (empty for exposures in memory)."""
        from diffviewer.paths import parse_spec

        images = [
            Path(parse_spec(s)[0]) for s in (self.science, *self.pieces) if isinstance(s, str)
        ]
        return images + companion_paths([self.companions[0], *self.companions[1]])

    @property
    def piece_companions(self) -> list[tuple[str, Companions]]:
        """Each template piece's companions, named as the log names the piece."""
        pieces = self.companions[1]
        if len(pieces) == 1:
            return [("template", pieces[0])]
        return [(f"template piece {i + 1}", c) for i, c in enumerate(pieces)]

    def read_science(self) -> Exposure:
        """The science exposure (a spec is read with :func:`diffviewer.io.read_exposure`)."""
        return _read(self.science, self.companions[0])

    def read_template(self) -> Exposure | list[Exposure]:
        """The template, or the list of its pieces when it has several."""
        from diffviewer.io import pooled_saturation

        given = self.companions[1] or (NO_COMPANIONS,) * len(self.pieces)
        pieces = [_read(p, c) for p, c in zip(self.pieces, given, strict=True)]
        return pieces[0] if len(pieces) == 1 else pooled_saturation(pieces)


def _read(spec: str | Exposure, companions: Companions) -> Exposure:
    """An exposure as given, or read from its spec with its companions."""
    from diffviewer.io import read_exposure

    return spec if isinstance(spec, Exposure) else read_exposure(spec, companions=companions)


def _describe(spec: str | Exposure) -> str:
    """Short description of a spec or exposure."""
    return Path(spec).name if isinstance(spec, str) else spec.source


def describe_template(pieces: Sequence[str | Exposure]) -> str:
    """A template for titles: its file name, or ``N template pieces``."""
    return _describe(pieces[0]) if len(pieces) == 1 else f"{len(pieces)} template pieces"


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
        ``/abs/file.fits``, ``/abs/file.fits[SCI]`` (:func:`diffviewer.paths.resolved_spec`),
        or ``memory:<source>``.
    """
    from diffviewer.paths import resolved_spec

    return f"memory:{spec.source}" if isinstance(spec, Exposure) else resolved_spec(spec)


def default_output_dir(pair: Pair, root: Path) -> Path:
    """Output folder of a pair under ``root``: its name, or
    ``<science stem>__<template stem>__<hash8>`` (:func:`diffviewer.paths.default_pair_name`,
    the name a batch gives the pair too; the first piece's stem for a template in pieces,
    the hash covering every piece).

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
    from diffviewer.paths import default_pair_name, parse_spec

    if pair.name:
        return root / pair.name
    stems = [
        parse_spec(s)[0].stem if isinstance(s, str) else "memory"
        for s in (pair.science, pair.pieces[0])
    ]
    return root / default_pair_name(stems, pair.identity)


def pair_digest(pair: Pair) -> str:
    """SHA-256 (hex) of a pair's resolved specs: the same two inputs, the same digest."""
    from diffviewer.paths import identity_digest

    return identity_digest(pair.identity)


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
    read_notes : tuple of str
        What reading the inputs said of them (a saturation level taken from the data,
        which image of a file was read: :mod:`diffviewer.log_notes`), shown after the
        run's warnings.
    """

    pair: Pair
    result: Any
    images: Mapping[str, np.ndarray]
    levels: Mapping[str, tuple[float, float]]
    elapsed: float
    stages: Mapping[str, float] = dataclasses.field(default_factory=dict)
    read_notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ABRuns:
    """The two runs the A/B panel compares.

    Attributes
    ----------
    a : RunOutcome or None
        The baseline: the run kept as A, else the previous run on the pair (None for a
        pair's first run).
    b : RunOutcome or None
        The run on screen, compared with A (None while the run on screen is the one kept
        as A: the next run will be B).
    kept : bool
        Whether A is a kept run (it stays A for every later run until it is released or
        another pair is opened), rather than the previous run.
    """

    a: RunOutcome | None
    b: RunOutcome | None
    kept: bool


def ab_runs(current: RunOutcome, previous: RunOutcome | None, kept: RunOutcome | None) -> ABRuns:
    """Which runs the A/B panel compares: the kept run, else the previous one, as A; the
    run on screen as B.

    Parameters
    ----------
    current : RunOutcome
        The run on screen.
    previous : RunOutcome or None
        The run before it on the same pair.
    kept : RunOutcome or None
        The run kept as A (the window's), if any.

    Returns
    -------
    ABRuns
        A is ``kept`` when there is one, else ``previous``; B is ``current``, unless it is
        itself the kept run (then there is no B until the next run).
    """
    return ABRuns(
        a=kept if kept is not None else previous,
        b=None if current is kept else current,
        kept=kept is not None,
    )


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
        # not .matched: that exposure's mask is grown by the kernel footprint on each read
        "matched": result.subtraction.matched_image,
        "difference": result.difference.image,
        "variance": result.difference.variance,
        "mask": result.difference.mask,
    }
    if result.score is not None:
        arrays["score"] = result.score.image
    return arrays


def view_masks(result: Any) -> dict[str, np.ndarray]:
    """The mask plane behind each of a finished run's image views (:func:`view_arrays`'
    keys but ``mask``, which has none of its own): the science's, the warped template's,
    the convolved image's for the matched view (its data are where that image's are: a
    template's gap is no gap of a matched science), and the difference's for the views
    made from both. The one place that maps views to masks."""
    science, template = result.science.mask, result.template.exposure.mask
    difference = result.difference.mask
    matched = template if result.kernel.convolved == "template" else science
    masks = {"science": science, "template": template, "matched": matched}
    return masks | {name: difference for name in ("difference", "score", "variance")}


def no_data(mask: np.ndarray) -> np.ndarray:
    """Where a mask has its ``NO_DATA`` plane: pixels without data (the engine holds 0
    there, a value no view should show or scale by)."""
    return (mask & int(MaskPlane.NO_DATA)) != 0


#: A view ready to draw: its display array and default levels.
PreparedView = tuple[np.ndarray, tuple[float, float]]


def prepare_view(name: str, array: np.ndarray, blank: np.ndarray | None = None) -> PreparedView:
    """Display array and default levels of one view's engine image (run in the worker).

    Parameters
    ----------
    name : str
        The view (a key of :data:`VIEW_TITLES`): its default display settings; the mask
        view's levels span its bit values.
    array : numpy.ndarray
        The engine image.
    blank : numpy.ndarray, optional
        Its pixels without data (:func:`no_data`): not drawn (their NO_DATA colour shows
        through) and left out of the levels, so a NaN-padded cutout's sky is scaled by
        its own pixels, not by the zeros the engine holds beyond them.

    Returns
    -------
    (numpy.ndarray, (float, float))
    """
    if name == "mask":
        return display.display_array(array), (0.0, float(max(int(array.max()), 1)))
    image = display.display_array(array, blank)
    return image, display.compute_levels(image, display.default_settings(name))


#: A view prepared while its run went on: the engine array it was made from, the view, and
#: whether its pixels without data were known then (the science's, from its mask).
EarlyView = tuple[np.ndarray, PreparedView, bool]


def prepare_display(
    result: Any, ready: Mapping[str, EarlyView] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, tuple[float, float]]]:
    """Display arrays and default levels of every view (run in the worker).

    Parameters
    ----------
    result : SubtractionResult
    ready : mapping, optional
        Views prepared while the run went on, by name (:data:`EarlyView`). One is reused
        when the result holds that very array (engine arrays are read-only) and its blank
        pixels were known or it has none, so what a view showed before the run ended is
        what it shows after.

    Returns
    -------
    (dict, dict)
        Images and levels keyed by view name.
    """
    ready = ready or {}
    images: dict[str, np.ndarray] = {}
    levels: dict[str, tuple[float, float]] = {}
    masks = view_masks(result)
    blanks: dict[int, np.ndarray] = {}  # the views made from both share one mask
    for name, array in view_arrays(result).items():
        mask = masks.get(name)
        if mask is not None and id(mask) not in blanks:
            blanks[id(mask)] = no_data(mask)
        blank = None if mask is None else blanks[id(mask)]
        early = ready.get(name)
        if early is not None and early[0] is array and (early[2] or not np.any(blank)):
            images[name], levels[name] = early[1]
        else:
            images[name], levels[name] = prepare_view(name, array, blank)
    return images, levels


def run_job(
    pair: Pair, config: SubtractionConfig, runner: Runner | None = None
) -> Callable[[ProgressCallback, CancelToken], RunOutcome]:
    """A worker job that reads a pair, runs the engine and prepares the display.

    Each image is sent to the window as soon as it exists (science when read, template
    after the warp, matched after the subtraction, the difference once its pixels are
    final, score after scoring) through the worker's ``progress.partial``, as
    ``{view: (display array, levels)}``; the outcome reuses those very arrays.

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
        partial = getattr(progress, "partial", None)  # the GUI's worker shows stages
        ready: dict[str, EarlyView] = {}

        def stage(name: str, products: Mapping[str, np.ndarray]) -> None:
            if partial is None:
                return
            new = {k: v for k, v in products.items() if k not in ready or ready[k][0] is not v}
            # the engine's stages hand over images, not masks: blank pixels are known when
            # the outcome is prepared (prepare_display)
            views = {k: prepare_view(k, v) for k, v in new.items()}
            ready.update({k: (new[k], views[k], False) for k in views})
            if views:
                partial(views)

        with collected_warnings() as read_notes:
            sci = pair.read_science()
            # on screen while the template is read, its blank pixels known from its mask
            if partial is not None:
                view = prepare_view("science", sci.image, no_data(sci.mask))
                ready["science"] = (sci.image, view, True)
                partial({"science": view})
            tmpl = pair.read_template()
        t1 = time.perf_counter()
        if runner is None:
            from diffviewer.engine.pipeline import run_subtraction

            # The engine's FFTs on this thread alone, as in ``diffviewer run`` (faster than
            # on both cores: see cli.run_pair); its tiles and stamp chunks on the threads the
            # worker lends.
            result = run_subtraction(
                sci,
                tmpl,
                config,
                progress=progress,
                cancel=token,
                stage=stage,
                executor=getattr(progress, "executor", None),
            )
        else:
            result = runner(sci, tmpl, config, progress=progress, cancel=token)
        t2 = time.perf_counter()
        progress("display", 1.0)
        images, levels = prepare_display(result, ready)
        t3 = time.perf_counter()
        stages = {"read": t1 - t0, "engine": t2 - t1, "display": t3 - t2}
        return RunOutcome(pair, result, images, levels, t3 - t0, stages, tuple(read_notes))

    return job


def levels_job(
    image: np.ndarray, settings: display.DisplaySettings
) -> Callable[[ProgressCallback, CancelToken], tuple[float, float]]:
    """A worker job computing display levels of one image."""

    def job(progress: ProgressCallback, token: CancelToken) -> tuple[float, float]:
        return display.compute_levels(image, settings)

    return job
