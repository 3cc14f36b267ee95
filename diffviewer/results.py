"""Reading a saved output folder back: the inverse of :mod:`diffviewer.outputs`.

A folder written by ``diffviewer run``, a batch or the GUI's Save describes its run
completely; this module checks that a folder is complete (a batch rerun skips such
pairs), reads its metadata, and keeps the per-pair verdict (good / bad subtraction,
with a comment) a reviewer gives it. No Qt.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from pathlib import Path
from typing import Any

from diffviewer.errors import InputError
from diffviewer.io import atomic_write_text
from diffviewer.outputs import OUTPUT_NAMES

METADATA = "metadata.json"
#: The per-pair verdict file, beside the per-source ``verdicts.json``.
PAIR_VERDICT_FILE = "pair_verdict.json"
PAIR_VERDICTS = ("good", "bad")
#: FITS files are whole 2880-byte records; a truncated one is not.
FITS_RECORD = 2880


def absolute_spec(spec: str) -> str:
    """An image spec with its path made absolute (an extension in brackets is kept).

    Parameters
    ----------
    spec : str
        ``file.fits``, ``file.fits[SCI]`` or ``file.fits[1]``, relative or absolute.

    Returns
    -------
    str
    """
    return os.path.abspath(os.path.expanduser(spec))


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
        When the file is missing or is not a JSON object.
    """
    path = Path(out_dir) / METADATA
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{path} is missing: {out_dir} is not a diffviewer output folder (or is unfinished)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} cannot be read as JSON ({exc}); rerun the pair") from None
    if not isinstance(doc, dict) or "inputs" not in doc:
        raise InputError(f"{path} is not the metadata of a diffviewer run; rerun the pair")
    return doc


def expected_outputs(metadata: dict[str, Any]) -> list[str]:
    """The files a run with this metadata wrote (``score.fits`` only with a score)."""
    has_score = metadata.get("score", {}).get("method", "none") != "none"
    return [n for n in OUTPUT_NAMES if has_score or n != "score.fits"]


def incomplete_reason(
    out_dir: str | Path, science: str, template: str, config_digest: str
) -> str | None:
    """Why an output folder is not the complete result of a pair, or None when it is.

    Checked, not assumed: the metadata must name the same inputs (absolute specs) and
    the same config digest, every output the run writes must be present, and every FITS
    file must be whole records.

    Parameters
    ----------
    out_dir : str or Path
        The pair's output folder.
    science, template : str
        The pair's image specs.
    config_digest : str
        :meth:`SubtractionConfig.digest` of the config the pair is run with.

    Returns
    -------
    str or None
        A one-line reason, or None for a complete folder.
    """
    out = Path(out_dir)
    if not out.is_dir():
        return "no output folder"
    try:
        meta = read_metadata(out)
    except InputError as exc:
        return str(exc)
    inputs = meta["inputs"]
    for role, spec in (("science", science), ("template", template)):
        saved = inputs.get(role, {}).get("source", "")
        if absolute_spec(saved) != absolute_spec(spec):
            return f"made from another {role} image ({saved})"
    if meta.get("config_digest") != config_digest:
        return f"made with another config (digest {meta.get('config_digest')})"
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
    """

    verdict: str
    comment: str = ""
    time: str = ""


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
    read_metadata(out_dir)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    saved = PairVerdict(verdict, " ".join(comment.split()), now)
    text = json.dumps(dataclasses.asdict(saved), indent=2) + "\n"
    atomic_write_text(Path(out_dir) / PAIR_VERDICT_FILE, text)
    return saved


def read_pair_verdict(out_dir: str | Path) -> PairVerdict | None:
    """The saved verdict on a pair, or None when it has none.

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
        saved = PairVerdict(str(doc["verdict"]), str(doc.get("comment", "")), str(doc["time"]))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{path} cannot be read ({exc}); move it aside to start afresh") from None
    if saved.verdict not in PAIR_VERDICTS:
        raise InputError(f"{path} holds the unknown verdict {saved.verdict!r}")
    return saved
