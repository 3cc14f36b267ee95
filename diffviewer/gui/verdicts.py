"""Verdicts on DIA sources: what a person said about each, saved beside the pair's outputs.

A verdict carries its source's position, so it follows the source when a re-run
renumbers the catalog; :func:`rekey_verdicts` says which verdicts kept their id,
which moved to another id and which found no source (those are kept in the file,
never dropped). No Qt here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.table import Table

from diffviewer.errors import InputError, OutputError

if TYPE_CHECKING:
    from diffviewer.gui.model import Pair


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


def save_verdicts(
    path: Path,
    verdicts: Mapping[int, Verdict],
    pair: Pair,
    digest: str,
    unmatched: Sequence[Verdict] = (),
) -> None:
    """Write verdicts as JSON (atomically), with the pair and the config digest.

    Parameters
    ----------
    path : Path
        The JSON file; never one of the pair's input files.
    verdicts : mapping of int to Verdict
        Keyed by DIA source id.
    pair : Pair
        The pair judged (stored as its resolved specs, :attr:`Pair.identity`).
    digest : str
        ``config.digest()`` of the run judged.
    unmatched : sequence of Verdict
        Verdicts whose source the run judged no longer has (kept, and tried again on
        the next run).

    Raises
    ------
    OutputError
        When ``path`` is an input file of the pair or cannot be written.
    """
    from diffviewer.atomic import atomic_write_text

    rows = [{"id": int(k), **dataclasses.asdict(v)} for k, v in sorted(verdicts.items())]
    science, template = pair.identity
    doc = {
        "science": science,
        "template": template,
        "config_digest": digest,
        "verdicts": rows,
        "unmatched": [dataclasses.asdict(v) for v in unmatched],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n", protect=pair.files)


@dataclasses.dataclass(frozen=True)
class SavedVerdicts:
    """The content of a verdicts file.

    Attributes
    ----------
    verdicts : dict of int to Verdict
        Keyed by DIA source id.
    digest : str
        ``config.digest()`` of the run judged.
    science, template : str
        The pair judged, as :attr:`Pair.identity` at saving.
    unmatched : tuple of Verdict
        Verdicts without a source in the run judged.
    """

    verdicts: Mapping[int, Verdict]
    digest: str
    science: str
    template: str
    unmatched: tuple[Verdict, ...] = ()

    def belongs_to(self, pair: Pair) -> bool:
        """Whether these verdicts were made on ``pair`` (same files and extensions)."""
        return (self.science, self.template) == pair.identity


def load_verdicts(path: Path) -> SavedVerdicts:
    """Read a verdicts file written by :func:`save_verdicts`.

    Parameters
    ----------
    path : Path

    Returns
    -------
    SavedVerdicts

    Raises
    ------
    InputError
        When the file is not a verdicts file.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        verdicts = {int(v["id"]): _verdict(v) for v in doc["verdicts"]}
        return SavedVerdicts(
            verdicts,
            str(doc.get("config_digest", "")),
            str(doc["science"]),
            str(doc["template"]),
            tuple(_verdict(v) for v in doc.get("unmatched", [])),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"verdicts file {path} cannot be read ({exc}); move it aside to start afresh"
        ) from None


def check_verdicts_owner(path: Path, pair: Pair) -> None:
    """Refuse to replace a verdicts file that holds the verdicts of another pair.

    Two pairs can share a folder (pairs lists of two nights that both name a pair
    ``field1``); their verdicts are a person's work and are never written over.

    Parameters
    ----------
    path : Path
        The verdicts file about to be written (missing or unreadable: nothing to keep).
    pair : Pair
        The pair whose verdicts would be written.

    Raises
    ------
    OutputError
        When ``path`` holds the verdicts of another pair.
    """
    if not path.is_file():
        return
    try:
        found = load_verdicts(path)
    except InputError:
        return
    if not found.belongs_to(pair):
        raise OutputError(
            f"{path} holds the verdicts of {found.science} - {found.template}; not written "
            "over: move it aside, or choose another output folder for this pair"
        )


def _verdict(row: Mapping[str, object]) -> Verdict:
    """A verdict from its JSON object."""
    return Verdict(
        str(row["label"]),
        float(row["x"]),  # type: ignore[arg-type]
        float(row["y"]),  # type: ignore[arg-type]
        str(row.get("comment", "")),
    )


@dataclasses.dataclass(frozen=True)
class Rekeyed:
    """Verdicts attached to the sources of a catalog.

    Attributes
    ----------
    verdicts : dict of int to Verdict
        Keyed by the catalog's ids.
    moved : tuple of (int, int)
        (saved id, new id) of the verdicts that moved to another id.
    unmatched : tuple of Verdict
        Verdicts with no source within the radius.
    """

    verdicts: dict[int, Verdict]
    moved: tuple[tuple[int, int], ...]
    unmatched: tuple[Verdict, ...]

    def describe(self) -> str:
        """What changed, in words (empty when every verdict kept its id)."""
        parts = []
        if self.moved:
            ids = ", ".join(f"{a}→{b}" for a, b in self.moved[:8])
            more = " …" if len(self.moved) > 8 else ""
            parts.append(f"{len(self.moved)} moved to the source now at their place ({ids}{more})")
        if self.unmatched:
            parts.append(
                f"{len(self.unmatched)} have no source of their own within 1.5 px in this run "
                "(kept in the verdicts file, shown again when a run finds their source)"
            )
        return "; ".join(parts)


def rekey_verdicts(
    verdicts: Mapping[int, Verdict],
    catalog: Table,
    unmatched: Sequence[Verdict] = (),
    radius: float = 1.5,
) -> Rekeyed:
    """Attach saved verdicts to the sources of a (possibly re-run) catalog.

    A verdict keeps its source id when a source of that id lies within ``radius``;
    otherwise it moves to the nearest source within ``radius`` pixels, or is unmatched.
    Previously unmatched verdicts are tried again. A source takes one verdict: those that
    kept their id first, then the others in order; a verdict whose nearest source holds
    one already is unmatched (kept, never written over).

    Parameters
    ----------
    verdicts : mapping of int to Verdict
        Saved verdicts keyed by id.
    catalog : astropy.table.Table
        DIA sources with ``id``, ``x``, ``y``.
    unmatched : sequence of Verdict
        Verdicts that had no source in an earlier run.
    radius : float
        Largest distance (px) between the saved and the catalog position.

    Returns
    -------
    Rekeyed
    """
    out: dict[int, Verdict] = {}
    moved: list[tuple[int, int]] = []
    lost: list[Verdict] = []
    ids = np.asarray(catalog["id"], dtype=np.int64) if len(catalog) else np.zeros(0, np.int64)
    xy = (
        np.column_stack([np.asarray(catalog["x"], float), np.asarray(catalog["y"], float)])
        if len(catalog)
        else np.zeros((0, 2))
    )
    others: list[tuple[int, Verdict]] = []
    for key, verdict in verdicts.items():
        same = np.flatnonzero(ids == key)
        if same.size and _distance(xy[same[0]], verdict) <= radius:
            out[int(key)] = verdict
        else:
            others.append((int(key), verdict))
    for key, verdict in [*others, *((-1, v) for v in unmatched)]:
        d = _distance(xy, verdict)
        new = int(ids[int(np.argmin(d))]) if d.size and d.min() <= radius else None
        if new is None or new in out:
            lost.append(verdict)
            continue
        out[new] = verdict
        if key >= 0:
            moved.append((key, new))
    return Rekeyed(out, tuple(moved), tuple(lost))


def _distance(xy: np.ndarray, verdict: Verdict) -> np.ndarray:
    """Distance (px) of a verdict's position from ``xy`` (one position, or one per row)."""
    return np.hypot(xy[..., 0] - verdict.x, xy[..., 1] - verdict.y)


def verdicts_on_run(folder: Path, saved: SavedVerdicts) -> Rekeyed:
    """Source verdicts saved in a pair's output folder, attached to the catalog now there
    (a batch re-run with another config renumbers it; the file keeps the ids of the run
    judged until the pair is opened again).

    Parameters
    ----------
    folder : Path
        The pair's output folder (its ``diasources.ecsv``).
    saved : SavedVerdicts
        Its verdicts file's content (:func:`load_verdicts`), of this pair
        (:meth:`SavedVerdicts.belongs_to`).

    Returns
    -------
    Rekeyed
        Every verdict unmatched when the folder holds no catalog (a failed run).

    Raises
    ------
    InputError
        When the catalog cannot be read.
    """
    catalog_path = folder / "diasources.ecsv"
    try:
        catalog = (
            Table.read(catalog_path, format="ascii.ecsv")
            if catalog_path.is_file()
            else Table(names=("id", "x", "y"))
        )
    except (OSError, ValueError) as exc:
        raise InputError(
            f"catalog {catalog_path} cannot be read ({exc}), so the verdicts of "
            f"{folder / VERDICTS_FILE} cannot be matched to its sources; re-run the pair"
        ) from None
    return rekey_verdicts(saved.verdicts, catalog, saved.unmatched)


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
