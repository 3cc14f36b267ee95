"""File paths of a run: exposure specs, the files to protect, the output folder, pairs lists.

Nothing here needs numpy or astropy, so the command line checks every path it was
given (and answers a mistyped one) before the heavy modules are imported.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from diffviewer.errors import InputError, OutputError


class NameVersion(NamedTuple):
    """An HDU named by its EXTNAME and EXTVER, as in ``file.fits[SCI,2]`` (astropy's
    ``hdul["SCI", 2]``): the files of HST and others repeat a name with a new version."""

    name: str
    version: int

    def __str__(self) -> str:
        """The bracket text of a spec, ``SCI,2``."""
        return f"{self.name},{self.version}"


#: An HDU named by its EXTNAME, by EXTNAME and EXTVER, by its index, or not named (the
#: first 2-D image). Written in a spec's brackets, each is its ``str``.
Extension = str | NameVersion | int | None

_SPEC = re.compile(r"^(?P<path>.+)\[(?P<ext>[^\[\]]*)\]$")
_NAME_VERSION = re.compile(r"^(?P<name>.*\S)\s*,\s*(?P<version>\d+)$")


def parse_spec(spec: str | Path) -> tuple[Path, Extension]:
    """Split an exposure spec into a path and an optional extension.

    Parameters
    ----------
    spec : str or Path
        ``file.fits``, ``file.fits[SCI]`` (by EXTNAME), ``file.fits[SCI,2]`` (by
        EXTNAME and EXTVER) or ``file.fits[3]`` (by index: digits alone are always an
        index; an EXTNAME of digits is named with its EXTVER, ``file.fits[2,1]``).
        A path that exists as written is never split, even if it ends in brackets.

    Returns
    -------
    (Path, str or NameVersion or int or None)
        The file and the extension (None when not named).

    Raises
    ------
    InputError
        When the brackets are empty.
    """
    text = str(spec)
    match = _SPEC.match(text)
    if match is None or Path(text).exists():
        return Path(text), None
    ext = match.group("ext").strip()
    if not ext:
        raise InputError(
            f"{text}: empty extension in brackets; write file.fits[SCI], file.fits[SCI,2] "
            "or file.fits[1]"
        )
    return Path(match.group("path")), _extension(ext)


def _extension(text: str) -> str | NameVersion | int:
    """The extension a spec's (stripped, non-empty) bracket text names."""
    if text.isdigit():
        return int(text)
    named = _NAME_VERSION.match(text)
    if named is None:
        return text
    return NameVersion(named.group("name"), int(named.group("version")))


def hdu_index(hdus: Sequence[tuple[str, int]], ext: str | NameVersion | int) -> int | None:
    """Which HDU of a file an extension reads: the first of its name (and version).

    Parameters
    ----------
    hdus : sequence of (str, int)
        Each HDU's EXTNAME and EXTVER, in the file's order (astropy's ``hdu.name`` and
        ``hdu.ver``: ``PRIMARY`` and 1 when the header has none).
    ext : str or NameVersion or int
        A name (any case), a name and version, or an index.

    Returns
    -------
    int or None
        The HDU's index, or None when the file has no such HDU.
    """
    if isinstance(ext, int):
        return ext if 0 <= ext < len(hdus) else None
    for i, (name, version) in enumerate(hdus):
        if isinstance(ext, NameVersion):
            if name.upper() == ext.name.upper() and version == ext.version:
                return i
        elif name.upper() == ext.upper():
            return i
    return None


def extension_text(hdus: Sequence[tuple[str, int]], index: int) -> str:
    """The bracket text of a spec that reads HDU ``index`` of a file, and no other.

    Its name when no other HDU has it (``SCI``), else its name and version
    (``SCI,2``), else its index: for a name of digits (which a spec reads as an index),
    an HDU without a name, or a name and version that another HDU has too.

    Parameters
    ----------
    hdus : sequence of (str, int)
        Each HDU's EXTNAME and EXTVER, as for :func:`hdu_index`.
    index : int
        The HDU to read.

    Returns
    -------
    str
        ``SCI``, ``SCI,2`` or ``3``: :func:`parse_spec` and :func:`hdu_index` read it
        back as HDU ``index``.
    """
    name, version = hdus[index]
    candidates = []
    if name and name.strip() == name and not name.isdigit() and not {"[", "]"} & set(name):
        if [n.upper() for n, _ in hdus].count(name.upper()) == 1:
            candidates.append(name)
        candidates.append(str(NameVersion(name, version)))
    candidates.append(str(index))
    return next(text for text in candidates if hdu_index(hdus, _extension(text)) == index)


def companion_files(path: str | Path) -> dict[str, Path]:
    """The weight and mask files that sit beside a community-pipeline image.

    A file whose name holds ``_ooi_`` (image) has its inverse-variance weight in the
    same name with ``_oow_`` and its data-quality mask with ``_ood_``.

    Parameters
    ----------
    path : str or Path
        The image file.

    Returns
    -------
    dict
        ``{"weight": path, "mask": path}`` for the siblings that exist (may be empty).
    """
    path = Path(path)
    if "_ooi_" not in path.name:
        return {}
    found = {}
    for role, tag in (("weight", "_oow_"), ("mask", "_ood_")):
        sibling = path.with_name(path.name.replace("_ooi_", tag, 1))
        if sibling.is_file():
            found[role] = sibling
    return found


def require_file(path: Path, role: str) -> None:
    """Refuse a path that does not exist, is a folder or is not a file.

    Parameters
    ----------
    path : Path
        The file to read.
    role : str
        What the file is, for the message ("image", "science", ...).

    Raises
    ------
    InputError
        Naming the path and what to do.
    """
    problem = file_problem(path)
    if problem == DOES_NOT_EXIST:
        raise InputError(f"{role} file {path} {problem}; check the path")
    if problem is not None:
        raise InputError(f"{role} {path} {problem}; give a FITS file")


#: What :func:`file_problem` says of a path that names nothing.
DOES_NOT_EXIST = "does not exist"


def file_problem(path: Path) -> str | None:
    """Why ``path`` is no file to read ("does not exist", "is a folder, not a file", "is
    not a file": a device, a socket), or None: the one check of every file an input
    names (images, star lists, a saved run's recorded inputs)."""
    if not path.exists():
        return DOES_NOT_EXIST
    if path.is_dir():
        return "is a folder, not a file"
    if not path.is_file():
        return "is not a file"
    return None


#: The file that makes a folder a saved run's (:mod:`diffviewer.results`).
METADATA = "metadata.json"


def _how_to_open(folder: Path) -> str:
    """How a saved run's folder is opened: the command, and the window's menu."""
    return f"`diffviewer open {folder}` (File > Open results… in a window)"


def _how_to_review(folder: Path) -> str:
    """How a batch folder is reviewed: the command, and the window's menu."""
    return f"`diffviewer review {folder}` (File > Open batch… in a window)"


def require_run_folder(path: str | Path) -> Path:
    """Refuse a path that is not a saved run's folder, saying what it is instead.

    Parameters
    ----------
    path : str or Path
        What was given as a run's output folder (``diffviewer open OUTDIR``, File > Open
        results…, a batch's pair).

    Returns
    -------
    Path
        ``path``, a folder holding :data:`METADATA`.

    Raises
    ------
    InputError
        When it does not exist, is a file, is a batch's folder (with the command to review
        it) or holds no metadata.
    """
    folder = Path(path).expanduser()
    wanted = (
        "give the folder a run wrote (diffviewer run --out, a batch's pair folder or Save "
        f"all outputs; it holds {METADATA})"
    )
    if not folder.exists():
        raise InputError(f"{folder} does not exist; {wanted}")
    if not folder.is_dir():
        if folder.name == METADATA:
            raise InputError(f"{folder} is a run's {METADATA}; give its folder, {folder.parent}")
        if folder.name == SUMMARY_ECSV:
            return require_run_folder(folder.parent)  # says it is a batch's
        raise InputError(f"{folder} is a file, not a folder; {wanted}")
    if (folder / METADATA).is_file():
        return folder
    if (folder / SUMMARY_ECSV).is_file():
        raise InputError(
            f"{folder} is a batch folder (it holds {SUMMARY_ECSV}), not a run's: review it with "
            f"{_how_to_review(folder)}, or open one of its pairs' folders"
        )
    raise InputError(
        f"{folder} holds no {METADATA}: it is not a run's output folder, or its run did not "
        f"finish; {wanted}, or run the pair again"
    )


def require_batch_folder(path: str | Path) -> Path:
    """The batch folder a path names (the folder, or its :data:`SUMMARY_ECSV`), refusing
    anything else with what it is instead.

    Parameters
    ----------
    path : str or Path
        What was given as a batch (``diffviewer review DIR``, File > Open batch…).

    Returns
    -------
    Path
        The folder holding :data:`SUMMARY_ECSV`.

    Raises
    ------
    InputError
        When it does not exist, is another file, is a saved run's folder (with the command
        to open it) or holds no summary.
    """
    given = Path(path).expanduser()
    folder = given.parent if given.name == SUMMARY_ECSV and given.is_file() else given
    wanted = f"give the folder diffviewer batch wrote (its --out, holding {SUMMARY_ECSV})"
    if not folder.exists():
        raise InputError(f"{folder} does not exist; {wanted}")
    if not folder.is_dir():
        if folder.name == METADATA:
            return require_batch_folder(folder.parent)  # says it is a run's
        raise InputError(f"{folder} is a file, not a batch folder; {wanted}")
    if (folder / SUMMARY_ECSV).is_file():
        return folder
    if (folder / METADATA).is_file():
        batch = folder.parent if (folder.parent / SUMMARY_ECSV).is_file() else None
        raise InputError(
            f"{folder} is a saved run's folder (it holds {METADATA}), not a batch's: open it "
            f"with {_how_to_open(folder)}"
            + (f", or review its batch with `diffviewer review {batch}`" if batch else "")
        )
    raise InputError(
        f"{folder} holds no {SUMMARY_ECSV}: it is not a batch folder, or its batch wrote no "
        f"summary; {wanted}, or run the batch again (it skips the pairs already done)"
    )


def _input_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Resolved input files, with the weight/mask siblings read along with them."""
    files: list[Path] = []
    for spec in inputs:
        path = parse_spec(spec)[0]
        files.append(path.expanduser().resolve())
        files.extend(p.resolve() for p in companion_files(path).values())
    return files


def input_file_states(specs: Sequence[str | Path]) -> dict[str, dict[str, int]]:
    """Size and modification time of the files a run reads, to tell when one is replaced.

    Parameters
    ----------
    specs : sequence of str or Path
        Image specs or paths (their weight/mask siblings are included).

    Returns
    -------
    dict
        ``{resolved path: {"size": bytes, "mtime_ns": ns}}`` for the files that exist.
    """
    states = {}
    for path in _input_files(specs):
        try:
            stat = path.stat()
        except OSError:
            continue
        states[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return states


def ensure_not_input(path: str | Path, inputs: Sequence[str | Path]) -> None:
    """Refuse to write ``path`` when it is one of the input files.

    Parameters
    ----------
    path : str or Path
        The file about to be written.
    inputs : sequence of str or Path
        Input specs or paths (their ``ooi`` siblings are protected too).

    Raises
    ------
    OutputError
        When ``path`` is (or links to) an input file.
    """
    target = Path(path).expanduser().resolve()
    for source in _input_files(inputs):
        same = target == source or (
            target.exists() and source.exists() and os.path.samefile(target, source)
        )
        if same:
            raise OutputError(
                f"refusing to write {target}: it is the input file {source}; "
                "choose another output folder"
            )


def check_output_dir(out_dir: str | Path, inputs: Sequence[str | Path], overwrite: bool) -> Path:
    """Check the output folder before anything is computed; leave nothing behind.

    A run writes its outputs into a hidden folder beside the output folder, then renames
    it into place (:func:`diffviewer.atomic.staged_output_dir`): the folder the outputs
    go to is replaced whole, and the one that holds it must take a new folder. Both are
    checked here, the second by creating and removing a trial folder in it.

    Parameters
    ----------
    out_dir : str or Path
        The output folder (it may not exist yet).
    inputs : sequence of str or Path
        Input specs or paths.
    overwrite : bool
        Allow an existing, non-empty folder (its files of the same names are replaced).

    Returns
    -------
    Path
        The resolved folder.

    Raises
    ------
    OutputError
        When the folder holds an input file (at any depth), is an input file or another
        file, is the working folder or holds it, exists and is not empty without
        ``overwrite`` (or with it, but is not writable), cannot be looked into, or when
        no folder can be created where it is to be staged.
    """
    try:
        out = Path(out_dir).expanduser().resolve()
    except FileNotFoundError:
        raise OutputError(
            f"output folder {out_dir} is relative to the working folder, which no longer "
            "exists; give an absolute output folder"
        ) from None
    try:
        _check_folder(out, inputs, overwrite)
    except PermissionError as exc:
        raise OutputError(
            f"cannot look into {exc.filename or out} ({exc.strerror}) to check the output "
            f"folder {out}; choose an output folder you can write into"
        ) from None
    return out


def _check_folder(out: Path, inputs: Sequence[str | Path], overwrite: bool) -> None:
    """:func:`check_output_dir`'s checks of the resolved folder ``out``."""
    sources = _input_files(inputs)
    for source in sources:
        if out in source.parents:
            raise OutputError(
                f"output folder {out} holds the input file {source}; "
                "choose an output folder that holds no input file"
            )
    here = _working_folder()
    if here is not None and (out == here or out in here.parents):
        raise OutputError(
            f"output folder {out} is the working folder or holds it: a run replaces its "
            "output folder whole, which cannot be done to the folder it runs in; choose a "
            f"new output folder, e.g. {here / 'diffviewer-out'}"
        )
    if out.exists():
        if not out.is_dir():
            what = "an input file" if out in sources else "a file"
            raise OutputError(
                f"output path {out} is {what}, not a folder; choose a folder for --out"
            )
        if os.path.ismount(out):
            raise OutputError(
                f"output folder {out} is a mount point (a disk's top folder): a run writes "
                "its outputs beside the output folder and renames them into place, which "
                f"a mount point cannot take; give a folder inside it, e.g. {out / 'run1'}"
            )
        holds = any(out.iterdir())
        if holds and not overwrite:
            raise OutputError(
                f"output folder {out} already exists and is not empty; "
                "pass --overwrite to replace its files, or choose another folder"
            )
        if holds and not os.access(out, os.W_OK | os.X_OK):
            raise OutputError(
                f"output folder {out} is not writable: its earlier files could not be "
                "replaced; make it writable, or choose another output folder"
            )
    _check_stageable(out)


def _working_folder() -> Path | None:
    """The process's working folder, resolved (None when it was removed)."""
    try:
        return Path.cwd().resolve()
    except FileNotFoundError:
        return None


def _check_stageable(out: Path) -> None:
    """Raise :class:`OutputError` unless a folder can be created where ``out``'s staging
    folder will be (beside ``out``, or in the nearest existing folder above it): a trial
    folder is made there and removed."""
    existing = next(p for p in out.parents if p.exists())
    if not existing.is_dir():
        raise OutputError(
            f"cannot create the output folder {out}: {existing} is a file; choose another "
            "output folder"
        )
    try:
        _trial_folder(existing, out.name)
    except OSError as exc:
        raise OutputError(
            f"cannot create a folder in {existing} ({exc.strerror or exc}): a run writes its "
            f"outputs into a new folder there before it becomes {out}; make {existing} "
            "writable, or choose another output folder"
        ) from None


def _trial_folder(folder: Path, name: str) -> None:
    """Make a hidden folder for ``name`` in ``folder`` and remove it: whether a folder can
    be created there (raises OSError when not)."""
    os.rmdir(tempfile.mkdtemp(prefix=f".{name}.trial-", dir=folder))


@contextlib.contextmanager
def batch_folder(out: Path) -> Iterator[None]:
    """Create a batch's folder (and the folders above it) for the block, and check, before
    any pair runs, that a pair's folder can be made in it (a trial folder, made and
    removed). When the block raises, the folders made here that are still empty are
    removed again: a batch refused before it wrote anything (no scheduler at the address
    given, Ctrl-C while the workers start) left an empty ``--out`` folder behind. A
    folder holding anything (a pair's outputs, a summary, the user's files) is kept.

    Parameters
    ----------
    out : Path
        The batch folder (``--out``).

    Raises
    ------
    OutputError
        When the folder cannot be created or written into (a read-only file system or
        folder, no permission).
    """
    created = [p for p in (out, *out.parents) if not p.exists()]  # innermost first
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
            _trial_folder(out, "pair")
        except OSError as exc:
            raise OutputError(
                f"cannot write into the batch folder {out} ({exc.strerror or exc}): every "
                "pair writes its folder there; make it writable, or choose another --out"
            ) from None
        yield
    except BaseException:
        for folder in created:
            with contextlib.suppress(OSError):  # not empty: kept, and so are those above
                folder.rmdir()
        raise


#: Separates the pieces of a template in one spec (a pairs list's template column).
TEMPLATE_SEPARATOR = ";"


def template_specs(spec: str | Sequence[str]) -> tuple[str, ...]:
    """The template piece specs of a template spec: ``a.fits;b.fits[1]`` or a list of specs.

    Parameters
    ----------
    spec : str or sequence of str
        One spec, several separated by :data:`TEMPLATE_SEPARATOR`, or a sequence of
        such strings.

    Returns
    -------
    tuple of str
        The non-empty specs, stripped, in order.

    Raises
    ------
    InputError
        When no spec is left.
    """
    parts = [spec] if isinstance(spec, str) else list(spec)
    specs = tuple(
        piece.strip() for part in parts for piece in part.split(TEMPLATE_SEPARATOR) if piece.strip()
    )
    if not specs:
        raise InputError(
            f"no template spec in {spec!r}; give one template, or its pieces as a.fits;b.fits"
        )
    return specs


def absolute_spec(spec: str) -> str:
    """An image spec with its path made absolute (an extension in brackets is kept).

    What a run records of its inputs: a spec as typed is relative to the folder the run
    was started in, and read back from another folder it names another file.

    Parameters
    ----------
    spec : str
        ``file.fits``, ``file.fits[SCI]`` or ``file.fits[1]``, relative or absolute.

    Returns
    -------
    str
    """
    return os.path.abspath(os.path.expanduser(spec))


def resolved_spec(spec: str) -> str:
    """What a spec reads, however it was written: the resolved file, and its extension.

    Parameters
    ----------
    spec : str
        ``file.fits``, ``file.fits[SCI]``, ``file.fits[SCI,2]`` or ``file.fits[3]``,
        relative or absolute.

    Returns
    -------
    str
        ``/abs/file.fits``, ``/abs/file.fits[SCI]``, ``/abs/file.fits[SCI,2]`` (spaces
        around the comma dropped) or ``/abs/file.fits[3]``.
    """
    path, ext = parse_spec(spec)
    resolved = str(path.expanduser().resolve())
    return resolved if ext is None else f"{resolved}[{ext}]"


def identity_digest(identity: Sequence[str]) -> str:
    """SHA-256 (hex) of a pair's identity (its resolved science and template specs)."""
    return hashlib.sha256("\n".join(identity).encode("utf-8")).hexdigest()


def default_pair_name(stems: Sequence[str], identity: Sequence[str]) -> str:
    """The name of an unnamed pair: ``<science stem>__<template stem>__<hash8>``, the
    stems cut to fit :data:`MAX_NAME_BYTES`.

    The hash (8 hex digits of :func:`identity_digest`) keeps apart pairs whose files
    share their names, e.g. ``/n1/sci.fits`` and ``/n2/sci.fits`` against one template.
    The name depends on the pair alone, never on its place in a list: the GUI and a batch
    give the same pair the same output folder, and editing a pairs list renames no pair.

    Parameters
    ----------
    stems : sequence of str
        The science file's stem and the (first) template piece's.
    identity : sequence of str
        The resolved science spec and template specs (pieces joined by ``;``).

    Returns
    -------
    str
    """
    name = "__".join([*stems, identity_digest(identity)[:8]])
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    # long file names: each stem cut to its share (the hash keeps the pairs apart)
    share = (MAX_NAME_BYTES - 12) // len(stems)
    cut = [stem.encode("utf-8")[:share].decode("utf-8", errors="ignore") for stem in stems]
    return "__".join([*cut, identity_digest(identity)[:8]])


#: Longest pair name (UTF-8 bytes): an output folder's, whose staging folder adds
#: :func:`diffviewer.atomic.staging_name`'s ~40 characters and the host's name, within the
#: 255 bytes a file name may have.
MAX_NAME_BYTES = 160


#: Names a pair cannot take: the batch folder's own files (diffviewer.batch.summary).
RESERVED_NAMES = ("summary.ecsv", "summary.fits")
#: The batch folder's summary, the file that makes a folder a batch's.
SUMMARY_ECSV = RESERVED_NAMES[0]


def read_pairs_csv(path: str | Path) -> list[tuple[str, str, str]]:
    """The pairs of a CSV list of pairs (:func:`read_pairs_rows`, without the other columns)."""
    return [pair for pair, _ in read_pairs_rows(path)]


def read_pairs_rows(path: str | Path) -> list[tuple[tuple[str, str, str], dict[str, str]]]:
    """Read a CSV list of pairs (columns ``science``, ``template``, optional ``name``).

    Relative specs are resolved against the CSV file's folder. A template given in
    pieces holds their specs separated by ``;`` (each resolved; pass the string to
    :func:`template_specs`, to ``io.read_templates`` or on to ``cli.run_pair``). A name
    becomes an output folder name, so it must be a plain, unique name (no path
    separator, not ``..``, not starting with ``.``: a hidden folder, named as the batch's
    staging folders are); a pair without one is named by its files
    (:func:`default_pair_name`), so the same pair twice is refused. A value holding a NUL
    byte is refused: no path can hold one (a worker's ``open`` raised ValueError).

    Parameters
    ----------
    path : str or Path
        The CSV file.

    Returns
    -------
    list of ((str, str, str), dict)
        Science spec, template spec (pieces joined by ``;``) and a name per pair, and
        the row's other columns that hold a value (stripped; see
        :func:`diffviewer.companions.read_pairs_with_companions`).

    Raises
    ------
    InputError
        When the file cannot be read as UTF-8 CSV, lacks the columns, is empty, or has a
        row with an empty spec, a NUL byte, or a name that is not a plain unique folder
        name.
    """
    path = Path(path)
    try:
        # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            reader.fieldnames = [f.strip() for f in reader.fieldnames or []]
            rows = [(reader.line_num, row) for row in reader if not _skipped(row)]
    except FileNotFoundError:
        raise InputError(f"pairs list {path} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(
            f"pairs list {path} cannot be read as a UTF-8 CSV file ({reason}); "
            "give a CSV file with columns science,template[,name]"
        ) from None
    columns = list(reader.fieldnames or [])
    if not rows or not {"science", "template"} <= set(columns):
        other = next((d for d in ("\t", ";") if any(d in c for c in columns)), None)
        raise InputError(
            f"pairs list {path} needs a header line with columns science,template "
            f"and at least one row (its header has {columns or 'no columns'}, "
            f"{len(rows)} rows)"
            + (
                f"; its fields are separated by {'tabs' if other == chr(9) else 'semicolons'}: "
                "separate them with commas"
                if other
                else ""
            )
        )
    pairs: list[tuple[tuple[str, str, str], dict[str, str]]] = []
    lines: dict[str, int] = {}
    for line, row in rows:
        values = [value for value in row.values() if isinstance(value, str)]
        extra = row.get(None)  # DictReader's surplus fields (its restkey)
        if extra:
            raise InputError(
                f"pairs list {path}, line {line}: {len(columns) + len(extra)} fields where the "
                f"header has {len(columns)} ({','.join(columns)}); a template in pieces "
                f"separates them with '{TEMPLATE_SEPARATOR}' (a.fits{TEMPLATE_SEPARATOR}b.fits), "
                'and a value holding a comma is quoted ("a,b.fits")'
            )
        if any("\n" in value for value in values):
            # lines the row's values run over (an unclosed quote's hold the file's last
            # newline too)
            start = line - sum(value.rstrip("\r\n").count("\n") for value in values)
            runs = f"a value runs on to line {line}, as when" if start < line else "in it,"
            raise InputError(
                f'pairs list {path}, line {start}: {runs} a quote (") is opened and not '
                "closed; close or remove the quote"
            )
        nul = next(
            (k for k, value in row.items() if isinstance(value, str) and "\0" in value), None
        )
        if nul is not None:
            raise InputError(
                f"pairs list {path}, line {line}: the {nul} column holds a NUL byte (\\x00), "
                "which no file or folder name can hold; the list is damaged or not plain "
                "text: remove the byte, or save the list again as a UTF-8 CSV file"
            )
        specs = [(row.get(k) or "").strip() for k in ("science", "template")]
        if not all(specs):
            raise InputError(
                f"pairs list {path}, line {line}: the science or template spec is empty; "
                "give both on every line"
            )
        try:
            sci = resolve_spec(specs[0], path.parent)
            pieces = [resolve_spec(piece, path.parent) for piece in template_specs(specs[1])]
        except InputError as exc:
            raise InputError(f"pairs list {path}, line {line}: {exc}") from None
        tmpl = TEMPLATE_SEPARATOR.join(pieces)
        name = (row.get("name") or "").strip()
        if not name:
            stems = [parse_spec(spec)[0].stem for spec in (sci, pieces[0])]
            identity = [resolved_spec(sci), TEMPLATE_SEPARATOR.join(map(resolved_spec, pieces))]
            name = default_pair_name(stems, identity)
            if name in lines:
                raise InputError(
                    f"pairs list {path}, line {line}: the same pair as line {lines[name]} "
                    f"({specs[0]}, {specs[1]}); remove one, or name both in a name column"
                )
        if name in lines:
            raise InputError(
                f"pairs list {path}, line {line}: name {name!r} is already the name of line "
                f"{lines[name]}; give each pair a name of its own"
            )
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise InputError(
                f"pairs list {path}, line {line}: name {name[:40]!r}... is "
                f"{len(name.encode('utf-8'))} bytes long; a pair's output folder name (and "
                f"the staging folder named after it) must fit the file system: give a name "
                f"of at most {MAX_NAME_BYTES} bytes"
            )
        if Path(name).name != name or name in (".", "..", *RESERVED_NAMES):
            raise InputError(
                f"pairs list {path}, line {line}: name {name!r} is not a plain folder name; "
                "use letters, digits, '-', '_' (no '/' or '..', not "
                f"{' or '.join(RESERVED_NAMES)})"
            )
        if name.startswith("."):
            raise InputError(
                f"pairs list {path}, line {line}: name {name!r} starts with '.', which makes "
                "its output folder hidden (and is how a batch names its staging folders); "
                "give a name that does not start with '.'"
            )
        lines[name] = line
        others = {
            str(k): v.strip()
            for k, v in row.items()
            if k not in (None, "science", "template", "name") and isinstance(v, str) and v.strip()
        }
        pairs.append(((sci, tmpl, name), others))
    return pairs


def _skipped(row: dict[str, str | None]) -> bool:
    """A pairs-list row that holds nothing (whitespace only) or a comment (``#`` first)."""
    values = [str(v).strip() for v in row.values() if v is not None]
    return not any(values) or values[0].startswith("#")


def resolve_spec(spec: str, folder: Path) -> str:
    """Make a relative spec relative to ``folder``, ``~`` expanded first (extension
    suffixes are kept).

    Raises
    ------
    InputError
        When ``~user`` names no user this machine knows (:func:`expand_user`).
    """
    spec = expand_user(spec, "or relative to the list's folder")
    return spec if Path(spec).is_absolute() else str(folder / spec)


def expand_user(spec: str, otherwise: str = "") -> str:
    """``spec`` with a leading ``~`` or ``~user`` expanded, as a shell would.

    Parameters
    ----------
    spec : str
        A path or spec, as typed.
    otherwise : str
        What else the message offers (e.g. "or relative to the list's folder").

    Raises
    ------
    InputError
        When ``~user`` names no user this machine knows (no home folder to expand to).
    """
    if not spec.startswith("~"):
        return spec
    try:
        return str(Path(spec).expanduser())
    except RuntimeError:
        user = spec.split("/", 1)[0]
        raise InputError(
            f"{spec}: {user} is no user of this machine, so it has no home folder; give "
            f"the path in full{' ' + otherwise if otherwise else ''}"
        ) from None
