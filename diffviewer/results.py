"""Reading a saved output folder back: the inverse of :mod:`diffviewer.outputs`.

A folder written by ``diffviewer run``, a batch or the GUI's Save describes its run
completely; this module reads it back into a :class:`SavedRun` (what the inspector
shows, without re-running), checks that a folder is complete (a batch rerun skips
such pairs), and keeps the per-pair verdict (good / bad subtraction, with a comment)
a reviewer gives it. No Qt.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from diffviewer.atomic import atomic_write_text
from diffviewer.companions import NO_COMPANIONS, Companions, absolute
from diffviewer.config import SubtractionConfig, config_files, load_toml
from diffviewer.engine.diagnostics import Diagnostics
from diffviewer.engine.kernel import KernelFit, KernelSolution
from diffviewer.engine.kernel_basis import Wing
from diffviewer.engine.kernel_degrees import DegreeChoice
from diffviewer.engine.kernel_direction import Direction
from diffviewer.engine.kernel_region import RegionChoice
from diffviewer.engine.kernel_sum_order import SumOrderChoice
from diffviewer.engine.photometry import PsfModel
from diffviewer.engine.psf import PsfEstimate
from diffviewer.engine.psf_field import field_from_nodes
from diffviewer.engine.register import Registration
from diffviewer.engine.register_fit import PolynomialTransform
from diffviewer.engine.renormalise import Renormalisation
from diffviewer.engine.sky import SkyLevel
from diffviewer.engine.warp import Piece
from diffviewer.errors import InputError
from diffviewer.exposure import Exposure
from diffviewer.io import read_exposure
from diffviewer.outputs import DIAGNOSTIC_SAMPLES, OUTPUT_NAMES, PRODUCTS
from diffviewer.paths import (
    METADATA,
    TEMPLATE_SEPARATOR,
    file_problem,
    input_file_states,
    parse_spec,
    require_run_folder,
    resolved_spec,
    template_specs,
)

#: The per-pair verdict file, beside the per-source ``verdicts.json``.
PAIR_VERDICT_FILE = "pair_verdict.json"
PAIR_VERDICTS = ("good", "bad")
#: FITS files are whole 2880-byte records; a truncated one is not.
FITS_RECORD = 2880


def _recorded_pieces(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of the template's inputs: its pieces' (``warp.pieces``), else the one
    template's (``inputs.template``)."""
    return metadata.get("warp", {}).get("pieces") or [metadata["inputs"]["template"]]


def saved_template_specs(metadata: dict[str, Any]) -> list[str]:
    """The template specs a run read: its pieces' (``warp.pieces``), else the one template."""
    return [str(p["source"]) for p in _recorded_pieces(metadata)]


def recorded_companions(metadata: dict[str, Any]) -> tuple[Companions, tuple[Companions, ...]]:
    """The files a run read beside its science image and beside each template piece (in
    the order of :func:`saved_template_specs`), and their masks' bit maps (none from an
    older run, which recorded none).

    Parameters
    ----------
    metadata : dict
        The run's ``metadata.json``.

    Returns
    -------
    (Companions, tuple of Companions)
        The science's, and each template piece's.
    """
    return (
        Companions.from_dict(metadata["inputs"]["science"].get("companions")),
        tuple(Companions.from_dict(p.get("companions")) for p in _recorded_pieces(metadata)),
    )


def recorded_specs(metadata: dict[str, Any]) -> tuple[str, str]:
    """The science and template specs a run read, as a pair is given to run it again.

    The template is its pieces' specs joined by ``;`` (:func:`saved_template_specs`): the
    metadata's ``inputs.template.source`` names the template on the science grid, "... warped
    to ..." when it was warped, which no file holds.

    Parameters
    ----------
    metadata : dict
        The run's ``metadata.json``.

    Returns
    -------
    (str, str)
        Science spec, template spec.
    """
    science = str(metadata["inputs"]["science"]["source"])
    return science, TEMPLATE_SEPARATOR.join(saved_template_specs(metadata))


def changed_input(metadata: dict[str, Any]) -> str | None:
    """The first input file (image or star list) replaced or changed in place since the run
    (its size or modification time is not the one the metadata recorded; a file gone
    counts), or None; an older run recorded none, and none is found changed.

    Parameters
    ----------
    metadata : dict
        The run's ``metadata.json``.

    Returns
    -------
    str or None
        The file's path as recorded.
    """
    recorded = metadata["inputs"].get("files") or {}
    now = input_file_states(list(recorded))
    return next((path for path in recorded if now.get(path) != recorded[path]), None)


def read_metadata(out_dir: str | Path) -> dict[str, Any]:
    """The ``metadata.json`` of an output folder.

    Parameters
    ----------
    out_dir : str or Path
        An output folder.

    Returns
    -------
    dict

    Raises
    ------
    InputError
        When ``out_dir`` is not a saved run's folder (:func:`~diffviewer.paths.require_run_folder`
        says what it is), or its metadata is not a JSON object.
    """
    path = require_run_folder(out_dir) / METADATA
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} cannot be read as JSON ({exc}); rerun the pair") from None
    if not isinstance(doc, dict) or "inputs" not in doc:
        raise InputError(f"{path} is not the metadata of a diffviewer run; rerun the pair")
    return doc


def expected_outputs(metadata: dict[str, Any]) -> list[str]:
    """The files a run with this metadata wrote (as its ``outputs.files`` records).

    Metadata without that record (older runs) implies every file of the full products,
    ``score.fits`` only with a score.
    """
    files = metadata.get("outputs", {}).get("files")
    if files is not None:
        return [str(name) for name in files]
    has_score = metadata.get("score", {}).get("method", "none") != "none"
    return [n for n in OUTPUT_NAMES if has_score or n != "score.fits"]


def incomplete_reason(
    out_dir: str | Path,
    science: str,
    template: str,
    config_digest: str,
    products: tuple[str, bool] | None = None,
    companions: tuple[Companions, Sequence[Companions]] | None = None,
) -> str | None:
    """Why an output folder is not the complete result of a pair, or None when it is.

    Checked, not assumed: the metadata must name the same inputs (the files they resolve
    to: a run records its inputs as absolute specs, and an older run's relative ones are
    read from the current folder), whose files, and the files the config names (the
    star list), have the size and modification time it recorded (none recorded by an
    older version: not checked), and the same config digest; every output the run writes
    must be present, and every FITS file must be whole records.

    Parameters
    ----------
    out_dir : str or Path
        The pair's output folder.
    science, template : str
        The pair's image specs (the template's pieces joined by ``;``).
    config_digest : str
        :meth:`SubtractionConfig.digest` of the config the pair is run with.
    products : (str, bool), optional
        The outputs asked for (``--products``) and whether mask planes are compressed
        (``--compress``): a folder written with others is not this run's result.
    companions : (Companions, sequence of Companions), optional
        The files given beside the science image and each template piece, and the bit
        map: a folder made with others is not this run's result (not checked when None).

    Returns
    -------
    str or None
        A one-line reason, or None for a complete folder.
    """
    out = Path(out_dir)
    if not out.is_dir():
        return "no output folder"
    if not (out / METADATA).is_file():  # a cause: read_metadata's refusal says what to open
        return f"{out / METADATA} is missing"
    try:
        meta = read_metadata(out)
    except InputError as exc:
        return str(exc)
    saved = str(meta["inputs"].get("science", {}).get("source", ""))
    if resolved_spec(saved) != resolved_spec(science):
        return f"made from another science image ({saved})"
    pieces = saved_template_specs(meta)
    if [resolved_spec(p) for p in pieces] != [resolved_spec(p) for p in template_specs(template)]:
        return f"made from another template ({TEMPLATE_SEPARATOR.join(pieces)})"
    if companions is not None and recorded_companions(meta) != absolute(companions):
        return "made with other mask, variance or weight files, or another mask bit map"
    changed = changed_input(meta)
    if changed is not None:
        return f"its input {changed} was replaced or changed since the run"
    if meta.get("config_digest") != config_digest:
        return f"made with another config (digest {meta.get('config_digest')})"
    if products is not None:
        written = meta.get("outputs", {})
        compressed = written.get("compression", "none") != "none"
        if (written.get("products"), compressed) != products:
            return f"written with --products {written.get('products')}" + (
                " --compress" if compressed else ""
            )
    for name in expected_outputs(meta):
        path = out / name
        if not path.is_file() or path.stat().st_size == 0:
            return f"{name} is missing or empty"
        if name.endswith(".fits") and path.stat().st_size % FITS_RECORD:
            return f"{name} is truncated"
    return None


@dataclasses.dataclass(frozen=True)
class PairVerdict:
    """A reviewer's verdict on a whole subtraction.

    Attributes
    ----------
    verdict : str
        ``"good"`` or ``"bad"``.
    comment : str
        Free text (one line in tables).
    time : str
        When it was given (ISO 8601, UTC).
    run : str
        The run it was given on (:func:`run_identity`; empty from an older version).
    """

    verdict: str
    comment: str = ""
    time: str = ""
    run: str = ""


def run_identity(metadata: dict[str, Any]) -> str:
    """What makes a saved run the one a verdict was given on: its inputs and config.

    Parameters
    ----------
    metadata : dict
        The run's ``metadata.json``.

    Returns
    -------
    str
        ``<config digest> <science> <template pieces joined by ;> <inputs' states>``,
        the states each input file's size and modification time (``size@mtime_ns``, in
        the order of their paths): an input replaced in place under its name is another
        input, as the batch judges it (a verdict given on a clean subtraction stayed on
        the guard-tripped run of a rewritten science frame).
    """
    files = metadata["inputs"].get("files", {})
    states = ";".join(
        f"{files[path].get('size')}@{files[path].get('mtime_ns')}" for path in sorted(files)
    )
    return f"{_named_run(metadata)} {states}"


def _named_run(metadata: dict[str, Any]) -> str:
    """A run's config digest and input names: its identity before the inputs' states were
    part of it (verdicts saved then still match their run)."""
    science = str(metadata["inputs"].get("science", {}).get("source", ""))
    template = TEMPLATE_SEPARATOR.join(saved_template_specs(metadata))
    return f"{metadata.get('config_digest', '')} {science} {template}"


def write_pair_verdict(out_dir: str | Path, verdict: str, comment: str = "") -> PairVerdict:
    """Save the verdict on a pair in its output folder (atomically).

    Parameters
    ----------
    out_dir : str or Path
        The pair's output folder.
    verdict : str
        ``"good"`` or ``"bad"``.
    comment : str
        Free text.

    Returns
    -------
    PairVerdict

    Raises
    ------
    InputError
        On another verdict, or when the folder is not an output folder.
    """
    if verdict not in PAIR_VERDICTS:
        raise InputError(f"pair verdict {verdict!r} is not one of {', '.join(PAIR_VERDICTS)}")
    run = run_identity(read_metadata(out_dir))
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    saved = PairVerdict(verdict, " ".join(comment.split()), now, run)
    text = json.dumps(dataclasses.asdict(saved), indent=2) + "\n"
    atomic_write_text(Path(out_dir) / PAIR_VERDICT_FILE, text)
    return saved


def read_pair_verdict(out_dir: str | Path) -> PairVerdict | None:
    """The saved verdict on a pair's current run, or None when it has none.

    A verdict given on another run of the pair (the folder since overwritten with other
    inputs or another config: its :func:`run_identity` differs) is stale, and None is
    returned; the next verdict replaces its file.

    Raises
    ------
    InputError
        When the verdict file exists but cannot be read.
    """
    path = Path(out_dir) / PAIR_VERDICT_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        saved = PairVerdict(
            str(doc["verdict"]),
            str(doc.get("comment", "")),
            str(doc["time"]),
            str(doc.get("run", "")),
        )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{path} cannot be read ({exc}); move it aside to start afresh") from None
    if saved.verdict not in PAIR_VERDICTS:
        raise InputError(f"{path} holds the unknown verdict {saved.verdict!r}")
    metadata = read_metadata(out_dir)
    if saved.run and saved.run not in (run_identity(metadata), _named_run(metadata)):
        return None
    return saved


# --------------------------------------------------------------------------- a saved run


@dataclasses.dataclass(frozen=True, eq=False)
class SavedProducts:
    """What a saved run keeps of the subtraction step besides the difference.

    Attributes
    ----------
    matched : Exposure
        The matched (convolved) image.
    kernel_sum_map : numpy.ndarray
        Kernel sum on a coarse grid.
    kernel_sum_step : int
        Its grid step (px).
    psf : numpy.ndarray
        PSF of the difference before decorrelation.
    """

    matched: Exposure
    kernel_sum_map: np.ndarray
    kernel_sum_step: int
    psf: np.ndarray

    @property
    def matched_image(self) -> np.ndarray:
        """The matched image's pixels (as ``SubtractionProducts.matched_image``)."""
        return self.matched.image


@dataclasses.dataclass(frozen=True, eq=False)
class SavedTemplate:
    """The template on the science grid and the warp's figures, as saved.

    Attributes
    ----------
    exposure : Exposure
        ``warped_template.fits``, or the input template when nothing was warped.
    warped : bool
        Whether the template was warped.
    max_offset : float
        Largest offset of the warp (px).
    coverage : float
        Fraction of the science image the template covers with data.
    registration : Registration or None
        How the (first) template was registered (None: the run predates registration).
    pieces : tuple of Piece
        Each template piece's registration and coverage.
    """

    exposure: Exposure
    warped: bool
    max_offset: float
    coverage: float
    registration: Registration | None = None
    pieces: tuple[Piece, ...] = ()


@dataclasses.dataclass(frozen=True, eq=False)
class SavedDecorrelation:
    """What a saved run keeps of the decorrelation.

    Attributes
    ----------
    psf : numpy.ndarray
        PSF of the decorrelated difference.
    """

    psf: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class SavedScore:
    """The saved score image.

    Attributes
    ----------
    image : numpy.ndarray
        Score (sigma units).
    mask : numpy.ndarray
        Mask planes of the score.
    method : str
        ``'zogy'`` or ``'al'``.
    """

    image: np.ndarray
    mask: np.ndarray
    method: str


@dataclasses.dataclass(frozen=True, eq=False)
class SavedRun:
    """A run read back from its output folder (attribute names as ``SubtractionResult``).

    Attributes
    ----------
    folder : Path
        The output folder.
    metadata : dict
        ``metadata.json``: every figure the run recorded.
    config : SubtractionConfig
        The run's config (``config.toml``).
    science : Exposure
        The science image, read from its file (the outputs do not copy the inputs).
    template : SavedTemplate
        The template on the science grid and the warp's figures.
    kernel : KernelFit
        The kernel solution, candidates, own fits and PSFs (``kernel.fits``,
        ``kernel_candidates.ecsv``).
    subtraction : SavedProducts
        Matched image and kernel-sum map.
    difference : Exposure
        The difference that was measured.
    decorrelation : SavedDecorrelation or None
        The decorrelation's PSF, when the difference was decorrelated.
    renormalisation : Renormalisation
        The one empirical scale of the difference's variance (``metadata.json``).
    score : SavedScore or None
        The score image, when the run made one.
    diasources : astropy.table.Table
        The DIA source catalog.
    diagnostics : Diagnostics
        The residual samples of the runDebug histograms and the noise ratios.
    timings : dict of str to float
        Seconds per step.
    warnings : tuple of str
        The run's warnings.
    catalog_psf : PsfModel or None
        The PSFs the catalog's fluxes were fitted with (``kernel.fits`` ``CAT_PSF``);
        None in a folder written before it was saved.
    """

    folder: Path
    metadata: dict[str, Any]
    config: SubtractionConfig
    science: Exposure
    template: SavedTemplate
    kernel: KernelFit
    subtraction: SavedProducts
    difference: Exposure
    decorrelation: SavedDecorrelation | None
    renormalisation: Renormalisation
    score: SavedScore | None
    diasources: Table
    diagnostics: Diagnostics
    timings: dict[str, float]
    warnings: tuple[str, ...]
    catalog_psf: PsfModel | None = None

    @property
    def science_psf(self) -> PsfEstimate:
        """The science PSF the kernel fit used."""
        return self.kernel.science_psf

    @property
    def template_psf(self) -> PsfEstimate:
        """The template PSF the kernel fit used."""
        return self.kernel.template_psf


def _float(value: Any) -> float:
    """A header value as float (an undefined card, written for NaN, reads as NaN)."""
    return float(value) if isinstance(value, int | float) else float("nan")


def registration_from_summary(summary: dict[str, Any]) -> Registration:
    """A registration as ``metadata.json`` records it under ``warp`` (the inverse of
    :func:`diffviewer.outputs.registration_summary`).

    Parameters
    ----------
    summary : dict
        The recorded registration.

    Returns
    -------
    Registration
    """
    matrix = summary.get("transform")
    transform = (
        PolynomialTransform(int(summary["transform_order"]), np.asarray(matrix, dtype=np.float64))
        if matrix is not None
        else None
    )
    return Registration(
        method=str(summary["method"]),
        transform=transform,
        n_science_stars=int(summary["n_science_stars"]),
        n_template_stars=int(summary["n_template_stars"]),
        n_matched=int(summary["n_matched"]),
        rms=_float(summary.get("rms_px")),
        position_error=_float(summary.get("position_error_px")),
        notes=tuple(str(n) for n in summary.get("notes", [])),
        # runs before the key applied their star fit but for a WCS kept
        applied=bool(summary.get("transform_applied", summary["method"] != "wcs")),
    )


def _saved_pieces(warp: dict[str, Any]) -> tuple[Registration | None, tuple[Piece, ...]]:
    """The registration and pieces ``metadata.json`` records (none from an older run)."""
    if "registration" not in warp:
        return None, ()
    pieces = tuple(
        Piece(
            str(p["source"]),
            registration_from_summary(p["registration"]),
            float(p["coverage_fraction"]),
            None if p.get("zero_point") is None else float(p["zero_point"]),
            float(p.get("flux_scale", 1.0)),
            float(p.get("sky_offset", 0.0)),
            float(p.get("sky_offset_error", 0.0)),
            bool(p.get("warped", False)),
            _float(p.get("fwhm_px")),
            Companions.from_dict(p.get("companions")),
        )
        for p in warp.get("pieces", [])
    )
    return registration_from_summary(warp["registration"]), pieces


def _wing(header: fits.Header) -> Wing | None:
    """The kernel's wing as ``kernel.fits`` records it in its BASIS header, if any."""
    if "WALPHA" not in header:
        return None
    weight = header.get("WWEIGHT")
    return Wing(
        _float(header["WALPHA"]),
        _float(header["WBETA"]),
        None if weight is None else _float(weight),
    )


def _psf(hdu: fits.ImageHDU) -> PsfEstimate:
    """A PSF estimate from its kernel.fits HDU."""
    h = hdu.header
    image = np.array(hdu.data, dtype=np.float64)
    image.flags.writeable = False
    return PsfEstimate(
        _float(h["FWHM"]),
        _float(h["ELLIP"]),
        image,
        int(h["NSTARS"]),
        str(h["PSFSRC"]),
        str(h.get("PSFWHY", "")),
    )


def read_kernel_fit(
    path: str | Path, candidates: Table, warnings: tuple[str, ...], direction: Direction
) -> KernelFit:
    """Rebuild the kernel fit from ``kernel.fits`` and the candidates table.

    Parameters
    ----------
    path : str or Path
        ``kernel.fits``.
    candidates : astropy.table.Table
        ``kernel_candidates.ecsv``.
    warnings : tuple of str
        The run's warnings (kept with the fit).
    direction : Direction
        Which image was convolved and why (from the metadata).

    Returns
    -------
    KernelFit
    """
    with fits.open(path) as hdul:
        basis_hdu, coeffs_hdu = hdul["BASIS"], hdul["COEFFS"]
        n_basis = len(basis_hdu.data)
        sigmas, degrees = [], []
        i = 0
        while f"SIGMA{i}" in basis_hdu.header:
            sigmas.append(_float(basis_hdu.header[f"SIGMA{i}"]))
            degrees.append(int(basis_hdu.header[f"DEGREE{i}"]))
            i += 1
        solution = KernelSolution(
            np.array(basis_hdu.data, dtype=np.float64).reshape(n_basis, *basis_hdu.data.shape[1:]),
            np.array(coeffs_hdu.data, dtype=np.float64),
            np.array(hdul["BGCOEFFS"].data, dtype=np.float64),
            int(coeffs_hdu.header["SPORDER"]),
            int(coeffs_hdu.header["BGORDER"]),
            (int(coeffs_hdu.header["IMNY"]), int(coeffs_hdu.header["IMNX"])),
            np.array(sigmas, dtype=np.float64),
            tuple(degrees),
            _wing(basis_hdu.header),
        )
        own = hdul["OWNCOEFS"]
        stamp_basis = (
            np.array(hdul["OWNBASIS"].data, dtype=np.float64)
            if "OWNBASIS" in hdul
            else solution.basis
        )
        return KernelFit(
            solution,
            candidates,
            str(hdul[0].header["CONVOLV"]),
            _float(hdul[0].header["PHOTSCAL"]),
            warnings,
            _psf(hdul["SCI_PSF"]),
            _psf(hdul["TMPL_PSF"]),
            np.array(own.data, dtype=np.float64),
            stamp_basis,
            int(own.header["FITHALF"]),
            direction=direction,
            kernel_sum_error=_float(hdul[0].header.get("KSUMERR")),
        )


def read_diagnostics(path: str | Path) -> Diagnostics:
    """The residual samples and noise ratios of ``diagnostics.fits``."""
    with fits.open(path) as hdul:
        samples = {}
        for name in DIAGNOSTIC_SAMPLES:
            values = np.array(hdul[name.upper()].data, dtype=np.float32)
            values.flags.writeable = False
            samples[name] = values
        head = hdul[0].header
        return Diagnostics(
            **samples,
            noise_ratio=_float(head["NOISERAT"]),
            noise_ratio_raw=_float(head["NOISERAW"]),
        )


def _read_table(path: Path) -> Table:
    """An ECSV catalog of the folder."""
    return Table.read(path, format="ascii.ecsv")


def read_saved_run(out_dir: str | Path) -> SavedRun:
    """Read a saved run back: what the inspector shows, without re-running anything.

    The science image, and the template when it was not warped, are read from the
    files the metadata names (the outputs do not copy the inputs); everything else
    comes from the folder.

    Parameters
    ----------
    out_dir : str or Path
        An output folder of ``diffviewer run``, a batch pair or the GUI's Save.

    Returns
    -------
    SavedRun

    Raises
    ------
    InputError
        When the folder is not a complete output folder of this version, or the
        science image it was made from cannot be read.
    """
    out = Path(out_dir).expanduser().resolve()
    meta = read_metadata(out)
    missing = missing_products(out, meta)
    if missing:
        raise InputError(
            f"{out} lacks {', '.join(missing)}: it is unfinished, written with "
            "--products minimal or by an older diffviewer; rerun the pair with full products"
        )
    warnings = tuple(str(w) for w in meta.get("warnings", []))
    try:
        saved = meta["kernel"]["direction"]
        direction = Direction(
            str(meta["kernel"]["convolved"]),
            str(saved["requested"]),
            _float(saved["expected_noise_template_convolved"]),
            _float(saved["expected_noise_science_convolved"]),
            str(saved["why"]),
        )
        kernel = read_kernel_fit(
            out / "kernel.fits", _read_table(out / "kernel_candidates.ecsv"), warnings, direction
        )
        strength = meta["kernel"].get("regularization")
        choice = meta["kernel"].get("degree_choice")
        region = meta["kernel"].get("region_choice")
        sum_order = meta["kernel"].get("sum_order_choice")
        level = meta["kernel"].get("sky_level")
        kernel = dataclasses.replace(
            kernel,
            regularization=_float(strength),
            degree_choice=None if choice is None else DegreeChoice.from_dict(choice),
            region_choice=None if region is None else RegionChoice.from_dict(region),
            sum_order_choice=None if sum_order is None else SumOrderChoice.from_dict(sum_order),
            sky_level=None if level is None else SkyLevel.from_dict(level),
        )
        diagnostics = read_diagnostics(out / "diagnostics.fits")
        renormalisation = Renormalisation.from_dict(meta["renormalisation"])
        with fits.open(out / "kernel.fits") as hdul:
            ksum = np.array(hdul["KSUMMAP"].data)
            step = int(hdul["KSUMMAP"].header["STEP"])
            sub_psf = np.array(hdul["SUB_PSF"].data, dtype=np.float64)
            decorrelation = None
            if "DIFF_PSF" in hdul:
                diff_psf = hdul["DIFF_PSF"]
                decorrelation = SavedDecorrelation(np.array(diff_psf.data, dtype=np.float64))
            ny, nx = kernel.solution.shape
            catalog_psf = (
                _catalog_psf(hdul["CAT_PSF"], ((nx - 1) / 2.0, (ny - 1) / 2.0))
                if "CAT_PSF" in hdul
                else None
            )
    except (KeyError, OSError, ValueError) as exc:
        raise InputError(
            f"{out}: kernel.fits, diagnostics.fits or metadata.json cannot be read back ({exc}); "
            "they are from an older diffviewer or damaged; rerun the pair"
        ) from None
    warp = meta["warp"]
    # Not warped: the input template is the template on the science grid (not copied).
    warped = out / "warped_template.fits"
    science_companions, piece_companions = recorded_companions(meta)
    specs = [str(warped)] if warped.is_file() else saved_template_specs(meta)
    if len(specs) != 1:
        raise InputError(
            f"{out} lacks warped_template.fits, and its template came in {len(specs)} pieces; "
            "rerun the pair with full products"
        )
    template = SavedTemplate(
        read_exposure(
            specs[0],
            companions=NO_COMPANIONS if warped.is_file() else piece_companions[0],
            saved=warped.is_file(),
        ),
        bool(warp["warped"]),
        _float(warp["max_offset_px"]),
        float(warp["coverage_fraction"]),
        *_saved_pieces(warp),
    )
    score = None
    if meta.get("score", {}).get("method", "none") != "none":
        saved = read_exposure(str(out / "score.fits"), saved=True)
        score = SavedScore(saved.image, saved.mask, str(meta["score"]["method"]))
    return SavedRun(
        folder=out,
        metadata=meta,
        config=load_toml(out / "config.toml"),
        science=read_exposure(meta["inputs"]["science"]["source"], companions=science_companions),
        template=template,
        kernel=kernel,
        subtraction=SavedProducts(
            read_exposure(str(out / "matched_template.fits"), saved=True), ksum, step, sub_psf
        ),
        difference=read_exposure(str(out / "difference.fits"), saved=True),
        decorrelation=decorrelation,
        renormalisation=renormalisation,
        score=score,
        diasources=_read_table(out / "diasources.ecsv"),
        diagnostics=diagnostics,
        timings={k: float(v) for k, v in meta.get("timings_s", {}).items()},
        warnings=warnings,
        catalog_psf=catalog_psf,
    )


def _catalog_psf(hdu: fits.ImageHDU, centre: tuple[float, float]) -> PsfModel:
    """The catalog's PSF model from ``kernel.fits`` ``CAT_PSF`` (nodes, ``NODEX``/``NODEY``,
    ``ENCLOSED``; :func:`diffviewer.engine.psf_field.field_from_nodes`), for an image of
    centre ``centre`` (x, y; px)."""
    cube = np.asarray(hdu.data, dtype=np.float64)
    header = hdu.header
    xs = tuple(float(header[f"NODEX{i}"]) for i in range(1, cube.shape[1] + 1))
    ys = tuple(float(header[f"NODEY{j}"]) for j in range(1, cube.shape[0] + 1))
    images = tuple(tuple(cube[j, i] for i in range(len(xs))) for j in range(len(ys)))
    return field_from_nodes(xs, ys, images, float(header["ENCLOSED"]), centre)


# --------------------------------------------------------------------------- a difference alone

#: What every output folder holds, ``--products minimal`` included.
MINIMAL_PRODUCTS = PRODUCTS["minimal"]


def missing_products(out_dir: str | Path, metadata: dict[str, Any]) -> list[str]:
    """The files a saved run lacks to be read back whole (:func:`read_saved_run`): those
    its metadata says it wrote, and every product but the optional warped template and
    score.

    Parameters
    ----------
    out_dir : str or Path
        The output folder.
    metadata : dict
        Its ``metadata.json``.

    Returns
    -------
    list of str
        File names, in the order of :data:`~diffviewer.outputs.OUTPUT_NAMES` (none: the
        folder is whole).
    """
    out = Path(out_dir)
    needed = [n for n in OUTPUT_NAMES if n not in ("warped_template.fits", "score.fits")]
    names = [*expected_outputs(metadata), *needed]
    return [n for n in dict.fromkeys(names) if not (out / n).is_file()]


def difference_only(out_dir: str | Path) -> bool:
    """Whether an output folder holds a difference and its catalog but not every product
    the inspector shows (``--products minimal``, or an older diffviewer's folder): it is
    shown as :class:`SavedDifference`, and its pair can be run again from its inputs.

    Parameters
    ----------
    out_dir : str or Path
        The output folder.

    Returns
    -------
    bool
        False for a whole folder, and for one without the minimal products (unfinished,
        or not an output folder: :func:`read_saved_run` says what it lacks).
    """
    out = Path(out_dir)
    if not all((out / name).is_file() for name in MINIMAL_PRODUCTS):
        return False
    try:
        return bool(missing_products(out, read_metadata(out)))
    except InputError:
        return False


@dataclasses.dataclass(frozen=True, eq=False)
class SavedDifference:
    """What every output folder holds: the difference, its catalog, config and metadata.

    Attributes
    ----------
    folder : Path
        The output folder.
    metadata : dict
        ``metadata.json``.
    config : SubtractionConfig
        The run's config (``config.toml``).
    difference : Exposure
        ``difference.fits``: image, variance and mask planes.
    diasources : astropy.table.Table
        ``diasources.ecsv``.
    warnings : tuple of str
        The run's warnings.
    products : str
        The products written (``full``, ``minimal``; ``unknown`` for an older run).
    """

    folder: Path
    metadata: dict[str, Any]
    config: SubtractionConfig
    difference: Exposure
    diasources: Table
    warnings: tuple[str, ...]
    products: str


def read_saved_difference(out_dir: str | Path) -> SavedDifference:
    """Read the difference, catalog, config and metadata of an output folder (a folder of
    ``--products minimal`` holds no more); the inputs are not read.

    Parameters
    ----------
    out_dir : str or Path
        An output folder.

    Returns
    -------
    SavedDifference

    Raises
    ------
    InputError
        When a file of :data:`MINIMAL_PRODUCTS` is missing or cannot be read.
    """
    out = Path(out_dir).expanduser().resolve()
    meta = read_metadata(out)
    missing = [n for n in MINIMAL_PRODUCTS if not (out / n).is_file()]
    if missing:
        raise InputError(
            f"{out} lacks {', '.join(missing)}: it is unfinished or damaged; rerun the pair"
        )
    try:
        catalog = _read_table(out / "diasources.ecsv")
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{out / 'diasources.ecsv'} cannot be read as an ECSV table ({exc}); rerun the pair"
        ) from None
    return SavedDifference(
        folder=out,
        metadata=meta,
        config=load_toml(out / "config.toml"),
        difference=read_exposure(str(out / "difference.fits"), saved=True),
        diasources=catalog,
        warnings=tuple(str(w) for w in meta.get("warnings", [])),
        products=str(meta.get("outputs", {}).get("products", "unknown")),
    )


@dataclasses.dataclass(frozen=True)
class RecordedRun:
    """What runs a saved pair again: the inputs its metadata names and its own config.

    Attributes
    ----------
    folder : Path
        The output folder.
    science, template : str
        The specs read (:func:`recorded_specs`; template pieces joined by ``;``).
    companions : (Companions, tuple of Companions)
        The files read beside them (:func:`recorded_companions`).
    config : SubtractionConfig
        The folder's ``config.toml``.
    changed : str or None
        An input replaced or changed in place since the run (:func:`changed_input`): run
        again, it gives another difference; None when none was.
    """

    folder: Path
    science: str
    template: str
    companions: tuple[Companions, tuple[Companions, ...]]
    config: SubtractionConfig
    changed: str | None = None


def recorded_run(out_dir: str | Path) -> RecordedRun:
    """The inputs and config that run the pair of an output folder again, every file they
    name checked to be there.

    Parameters
    ----------
    out_dir : str or Path
        An output folder.

    Returns
    -------
    RecordedRun

    Raises
    ------
    InputError
        When the metadata or config cannot be read, or an input file it names (an image,
        a template piece, the star list of ``candidates.source_list``) is no longer there:
        the message names the file, where it is recorded and what to do.
    """
    out = Path(out_dir).expanduser().resolve()
    meta = read_metadata(out)
    config = load_toml(out / "config.toml")
    science, template = recorded_specs(meta)
    companions = recorded_companions(meta)
    pieces = template_specs(template)
    inputs = [("science image", science, companions[0])]
    inputs += [
        ("template" if len(pieces) == 1 else f"template piece {i + 1}", spec, c)
        for i, (spec, c) in enumerate(zip(pieces, companions[1], strict=True))
    ]
    roles = [(role, spec) for role, spec, _ in inputs]
    roles += [(f"{role}'s {kind}", spec) for role, _, c in inputs for kind, spec in c.named]
    files = [(role, parse_spec(spec)[0], METADATA) for role, spec in roles]
    files += [
        ("star list (candidates.source_list)", path, "config.toml") for path in config_files(config)
    ]
    for role, path, named_in in files:
        cause = file_problem(path)
        if cause is not None:
            raise InputError(
                f"the {role} {path}, named in {out / named_in}, {cause} (moved, renamed or "
                "deleted since the run), so the pair cannot be run again: put it back there, "
                "or run the pair from where it is now (diffviewer run SCIENCE TEMPLATE "
                f"--config {out / 'config.toml'})"
            )
    return RecordedRun(out, science, template, companions, config, changed_input(meta))
