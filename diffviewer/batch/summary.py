"""The batch summary: one row per pair, built from its saved outputs, always valid on disk.

``DIR/summary.ecsv`` and ``DIR/summary.fits`` hold the same table, rewritten
atomically as results arrive, so a killed batch leaves the last valid one. Every QA
figure comes from the pair's own ``metadata.json`` (the same numbers ``diffviewer
open`` shows), so a fresh row and the row of a skipped, already finished pair agree.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import MaskedColumn, Table

from diffviewer.errors import InputError
from diffviewer.fits_write import write_table
from diffviewer.paths import RESERVED_NAMES, require_batch_folder
from diffviewer.results import read_metadata, read_pair_verdict

#: The batch folder's own files (names no pair may take: diffviewer.paths.read_pairs_csv).
SUMMARY_ECSV, SUMMARY_FITS = RESERVED_NAMES
STATUSES = ("ok", "failed", "skipped", "refused")
#: Kinds of failure, most serious first (the exit status follows the first one found).
ERROR_KINDS = ("internal", "input", "no_coverage", "guard")

#: (name, type, unit, description) of every column, in order.
COLUMNS: tuple[tuple[str, type, str, str], ...] = (
    ("name", str, "", "pair name (its output folder under the batch folder)"),
    ("science", str, "", "science image spec"),
    ("template", str, "", "template image spec"),
    (
        "status",
        str,
        "",
        "ok, failed, skipped (complete outputs found) or refused (not run: its folder holds "
        "another run's outputs, which the row describes; error says why)",
    ),
    (
        "error_kind",
        str,
        "",
        "internal, input, no_coverage or guard (--strict); input when refused; empty if ok",
    ),
    ("error", str, "", "one-line reason of a failure or a refusal"),
    (
        "config_digest",
        str,
        "",
        "digest of the config of the run the figures come from (the pair's metadata.json); "
        "of the config it was tried with when it failed without outputs",
    ),
    (
        "seconds",
        float,
        "s",
        "wall-clock time of the pair on its worker (a pair not run: the previous summary's "
        "figure for the run its folder holds; NaN when none holds it, or for a pair finished "
        "after an interrupt or landed by another task)",
    ),
    (
        "peak_memory",
        float,
        "MB",
        "peak resident memory of the worker process during the pair, 10^6 bytes (NaN: as seconds)",
    ),
    ("noise_ratio", float, "", "measured / predicted noise of the difference (1 is right)"),
    (
        "noise_scale",
        float,
        "",
        "the difference's noise at PSF scale over its propagated prediction, on sky "
        "(the renormalisation's; NaN when not measured)",
    ),
    (
        "noise_scale_err",
        float,
        "",
        "its standard error, measured on the same sky (how far the pair's thresholds and "
        "S/N may be off; NaN when not measured)",
    ),
    (
        "sky_pull_std",
        float,
        "",
        "scatter of the sky sources' PSF-flux pulls (1: the catalog's errors describe the noise)",
    ),
    (
        "sky_level",
        float,
        "",
        "the raw difference's level on sky taken out of its background (image units; 0: none)",
    ),
    ("n_good", int, "", "kernel stamps used"),
    ("n_bad", int, "", "kernel stamps rejected"),
    ("n_control", int, "", "control stamps held out"),
    ("kernel_sum", float, "", "mean kernel sum (photometric scale)"),
    (
        "kernel_sum_err",
        float,
        "",
        "standard error of the mean kernel sum over the kernel stars (a jackknife over "
        "them; with a wing fixed by the PSFs, and its profiles' fits; NaN without a "
        "spatial fit)",
    ),
    (
        "held_out_chi2",
        float,
        "",
        "median chi^2 per degree of freedom of the kernel stars against kernels fitted "
        "without them (NaN without a spatial fit)",
    ),
    ("convolved", str, "", "which image the kernel convolved"),
    ("n_positive", int, "", "positive DIA sources (dipoles with a positive net flux included)"),
    ("n_negative", int, "", "negative DIA sources (dipoles with a negative net flux included)"),
    ("n_dipoles", int, "", "dipoles (among the positive and negative DIA sources)"),
    ("detected_fraction", float, "", "fraction of the image covered by detections"),
    ("guard_tripped", bool, "", "bad-subtraction guard tripped (detected_fraction too high)"),
    ("n_warnings", int, "", "warnings of the run"),
    ("badness", float, "", "review order, worst first (diffviewer.batch.summary.badness)"),
    ("verdict", str, "", "a reviewer's verdict on the pair: good, bad or empty"),
    ("comment", str, "", "the reviewer's comment"),
    ("output", str, "", "output folder of the pair"),
)
COLUMN_NAMES = tuple(c[0] for c in COLUMNS)

_MISSING: dict[type, Any] = {str: "", float: math.nan, int: -1, bool: False}


#: The largest weight of a ratio's term in the badness: 5 |log2| of a factor 4 off.
RATIO_WEIGHT_MAX = 10.0


def badness(row: Mapping[str, Any]) -> float:
    """How much a pair needs a human, for the review order (larger is worse).

    The sum of: 100 for a failed pair (nothing to inspect, but someone must look);
    10 when the bad-subtraction guard tripped; 5 |log2(noise ratio)| and 5 |log2(sky
    sources' pull scatter)| (each 5 at 2 or 1/2: the difference's noise, and the
    catalog's errors, off by that factor; at most :data:`RATIO_WEIGHT_MAX`, a factor 4);
    (10 - good stamps) / 2 for fewer than 10 good kernel stamps; and 2 log10(1 +
    detections), positive and negative (4 at 100; the dipoles are among them, and were
    counted twice).

    A figure not measured (a ratio NaN or not positive, a count of good stamps missing)
    is unknown, and weighs as the worst its term gives (10, 5): a pair whose noise
    nobody measured scored 5.0, ranked as better than one measured at 5.1. Detection
    counts are in every pair's outputs; a failed pair without outputs counts none.

    Parameters
    ----------
    row : mapping
        A summary row (a figure it lacks is unknown, as a NaN one).

    Returns
    -------
    float
    """
    score = 100.0 if row.get("status") == "failed" else 0.0
    score += 10.0 if row.get("guard_tripped") else 0.0
    for name in ("noise_ratio", "sky_pull_std"):
        ratio = float(row.get(name, math.nan))
        known = math.isfinite(ratio) and ratio > 0
        score += min(5.0 * abs(math.log2(ratio)), RATIO_WEIGHT_MAX) if known else RATIO_WEIGHT_MAX
    n_good = int(row.get("n_good", -1))
    score += max(0, 10 - n_good) / 2.0 if n_good >= 0 else 5.0
    detections = sum(max(0, int(row.get(k, 0))) for k in ("n_positive", "n_negative"))
    return score + 2.0 * math.log10(1.0 + detections)


def has_outputs(row: Mapping[str, Any]) -> bool:
    """Whether a row's figures come from outputs in the pair's folder: it ran, was skipped
    or refused, or failed only by ``--strict``'s guard (which writes every output)."""
    return row["status"] != "failed" or row.get("error_kind") == "guard"


def row_of_outputs(
    name: str, science: str, template: str, folder: str | Path, status: str, strict: bool
) -> dict[str, Any]:
    """The row of a pair whose outputs are complete, read from them.

    Parameters
    ----------
    name, science, template : str
        The pair.
    folder : str or Path
        Its output folder.
    status : str
        ``ok``, ``skipped`` or ``refused``.
    strict : bool
        ``--strict``: a tripped bad-subtraction guard fails the pair (``guard``).

    Returns
    -------
    dict
        The row, without timings.
    """
    row = {"name": name, "science": science, "template": template, "output": str(folder)}
    row |= row_from_outputs(folder)
    row["status"] = status
    if strict and row["guard_tripped"]:
        row |= {"status": "failed", "error_kind": "guard", "error": "bad-subtraction guard tripped"}
    return row


def row_from_outputs(out_dir: str | Path) -> dict[str, Any]:
    """The QA figures of a summary row, read from a pair's saved outputs.

    Parameters
    ----------
    out_dir : str or Path
        The pair's output folder.

    Returns
    -------
    dict
        The QA columns (config digest, noise ratio through warnings count, verdict and
        comment).
    """
    meta = read_metadata(out_dir)
    kernel, det = meta["kernel"], meta["detection"]
    level = kernel.get("sky_level") or {}
    return {
        "config_digest": str(meta.get("config_digest", "")),
        "noise_ratio": _number(meta["difference"]["noise_ratio"]),
        "noise_scale": _number(meta["renormalisation"].get("noise_scale")),
        "noise_scale_err": _number(meta["renormalisation"].get("noise_scale_error")),
        "sky_pull_std": _number(det.get("sky_sources", {}).get("pull_std")),
        "sky_level": float(level["level"]) if level.get("applied") else 0.0,
        "n_good": int(kernel["candidates"]["good"]),
        "n_bad": int(kernel["candidates"]["bad"]),
        "n_control": int(kernel["candidates"]["control"]),
        "kernel_sum": float(kernel["kernel_sum"]["mean"]),
        "kernel_sum_err": _number(kernel["kernel_sum"].get("error")),
        "held_out_chi2": _number(kernel["candidates"].get("held_out_chi2_median")),
        "convolved": str(kernel["convolved"]),
        "n_positive": int(det["n_positive"]),
        "n_negative": int(det["n_negative"]),
        "n_dipoles": int(det["n_dipoles"]),
        "detected_fraction": float(det["detected_fraction"]),
        "guard_tripped": bool(det["guard_tripped"]),
        "n_warnings": len(meta.get("warnings", [])),
        **verdict_columns(out_dir),
    }


def verdict_columns(out_dir: str | Path) -> dict[str, str]:
    """The ``verdict`` and ``comment`` columns of a pair, from its verdict file as it is now.

    Parameters
    ----------
    out_dir : str or Path
        The pair's output folder.

    Returns
    -------
    dict
        Empty strings when the pair has no verdict (or a stale one).

    Raises
    ------
    InputError
        When the verdict file cannot be read.
    """
    verdict = read_pair_verdict(out_dir)
    return {
        "verdict": verdict.verdict if verdict else "",
        "comment": verdict.comment if verdict else "",
    }


def _number(value: float | None) -> float:
    """A metadata figure as float: NaN where the metadata has none (null or absent)."""
    return math.nan if value is None else float(value)


def complete_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with every column (missing ones blank / NaN / -1) and its badness."""
    full = {name: row.get(name, _MISSING[kind]) for name, kind, _, _ in COLUMNS}
    full["badness"] = badness(full)
    return full


#: The text columns folded onto one line: an error's text and a reviewer's comment.
ONE_LINE = ("error", "comment")


def summary_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """The summary as a table, with units and column descriptions.

    Parameters
    ----------
    rows : sequence of mapping
        Rows (completed with :func:`complete_row`).

    Returns
    -------
    astropy.table.Table
    """
    full = [complete_row(r) for r in rows]
    columns = []
    for name, kind, unit, doc in COLUMNS:
        values = [r[name] for r in full]
        dtype = {str: "U", float: "f8", int: "i8", bool: "?"}[kind]
        if kind is str:
            # free text on one line; names and paths as they are (a folder "a  b" is not "a b")
            values = [" ".join(str(v).split()) if name in ONE_LINE else str(v) for v in values]
            dtype = f"U{max([1, *map(len, values)])}"
        data = np.array(values, dtype=dtype)
        columns.append(Table.Column(data, name=name, unit=unit or None, description=doc))
    table = Table(columns)
    table.meta["comments"] = [
        "diffviewer batch summary: one row per pair; badness orders the review, worst first"
    ]
    return table


def write_summary(out_dir: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``summary.ecsv``, then ``summary.fits``, into the batch folder, each atomically.

    The ECSV file (the one a rerun and the review window read) comes first, so a FITS
    file that cannot be written never holds it back. FITS tables hold ASCII text only:
    the FITS file's text columns are the UTF-8 bytes of the text (astropy decodes them
    back on reading), so a path, a pair name or a reviewer's comment in any script is kept.

    Parameters
    ----------
    out_dir : str or Path
        The batch folder.
    rows : sequence of mapping
        The rows so far.

    Returns
    -------
    Path
        The ECSV file.

    Raises
    ------
    OutputError
        When a file cannot be written (the message names it and the cause).
    """
    table = summary_table(rows)
    out = Path(out_dir)
    ecsv = write_table(out / SUMMARY_ECSV, table)
    write_table(out / SUMMARY_FITS, utf8_text_columns(table))
    return ecsv


@contextlib.contextmanager
def summary_lock(out_dir: str | Path) -> Iterator[None]:
    """Hold the batch folder's summary lock while in the block: an advisory ``flock`` on
    the folder itself (no file left in it; none where the platform has no ``fcntl``, the
    file system takes no lock, or the folder cannot be opened, whose summary cannot be
    written either).

    A summary write that rests on what is on disk (a verdict's read-modify-write, a
    batch's rows with the verdicts their folders hold) reads and writes inside it: two
    review windows judging pairs of one batch at once lost 17 of 48 verdicts from the
    summary, each writing back the table it had read before the other's write.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    try:
        folder = os.open(out_dir, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):  # a file system without locks (some NFS): none
            fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # the lock goes with it


def set_summary_verdict(out_dir: str | Path, name: str, verdict: str, comment: str) -> Path:
    """Set one pair's verdict and comment in the summary on disk; every other row as it is.

    The summary is read afresh, under :func:`summary_lock`, so rows a batch still running
    wrote since a reader loaded it, and verdicts another window gave, are kept.

    Parameters
    ----------
    out_dir : str or Path
        The batch folder.
    name : str
        The pair.
    verdict, comment : str
        The verdict (``good``, ``bad``) and the reviewer's comment.

    Returns
    -------
    Path
        The ECSV file.

    Raises
    ------
    InputError
        When the summary cannot be read or has no row of that name.
    OutputError
        When it cannot be written.
    """
    with summary_lock(out_dir):
        rows = rows_of(read_summary(out_dir))
        found = [row for row in rows if row["name"] == name]
        if not found:
            raise InputError(
                f"{Path(out_dir) / SUMMARY_ECSV} has no row {name!r}; the verdict is saved in "
                "the pair's folder, and the next batch run into this folder lists it"
            )
        for row in found:
            row.update(verdict=verdict, comment=comment)
        return write_summary(out_dir, rows)


def utf8_text_columns(table: Table) -> Table:
    """A copy of ``table`` whose text columns hold the UTF-8 bytes of their text (for FITS).

    Parameters
    ----------
    table : astropy.table.Table

    Returns
    -------
    astropy.table.Table
        The copy, with a header comment saying how the text is encoded.
    """
    encoded = table.copy(copy_data=False)
    for name in table.colnames:
        column = table[name]
        if column.dtype.kind == "U":
            data = np.char.encode(np.asarray(column), "utf-8")
            encoded[name] = Table.Column(
                data, name=name, unit=column.unit, description=column.description
            )
    encoded.meta["comments"] = [*table.meta.get("comments", []), "text columns are UTF-8"]
    return encoded


def read_summary(path: str | Path) -> Table:
    """Read a batch summary (``summary.ecsv``, or the batch folder holding it).

    Raises
    ------
    InputError
        When it is not a batch folder (:func:`~diffviewer.paths.require_batch_folder` says
        what it is), or its summary cannot be read or lacks the summary's columns.
    """
    path = require_batch_folder(path) / SUMMARY_ECSV
    try:
        table = Table.read(path, format="ascii.ecsv")
    except Exception as exc:  # astropy raises many kinds on a damaged file
        raise InputError(f"{path} cannot be read as ECSV ({exc}); rerun the batch") from None
    for name in table.colnames:  # ECSV reads an empty string back as a masked value
        column = table[name]
        if isinstance(column, MaskedColumn) and column.dtype.kind in "US":
            table[name] = column.filled("")
    missing = [n for n in ("name", "status", "output") if n not in table.colnames]
    if missing:
        raise InputError(f"{path} is not a batch summary (no column {', '.join(missing)})")
    return table


def rows_of(table: Table) -> list[dict[str, Any]]:
    """The rows of a summary table as plain dicts (Python scalars)."""
    return [{name: row[name].item() for name in table.colnames} for row in table]
