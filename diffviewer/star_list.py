"""The star list a config names for the kernel stars (``candidates.source_list``).

A catalog file (ECSV, CSV, FITS or another table astropy reads) with ``x, y`` columns
(0-based science pixels) or ``ra, dec`` columns (degrees). It is checked before any image
is read: :func:`require_star_list_file` (the path alone, at once) and
:func:`read_star_list` (its table: readable, the columns, numbers, at least one finite
position); ``diffviewer run`` hands the list so read to the engine, which otherwise reads
it through the same function, and :func:`diffviewer.engine.candidates.star_positions`
refuses a list none of whose stars falls on the science image. Every refusal names the
config field and the file, and says what to do. No Qt.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from diffviewer.errors import InputError
from diffviewer.paths import DOES_NOT_EXIST, file_problem

#: The config field that names the list, as every message gives it.
FIELD = "candidates.source_list"
#: What a star list is, for the messages.
WANTED = "give an ECSV, CSV or FITS table with x,y (0-based px) or ra,dec (deg) columns"
#: The way back to the kernel stars found on the image.
OR_NONE = f'or set {FIELD} = "" to find the kernel stars on the image'


@dataclasses.dataclass(frozen=True)
class StarList:
    """The positions a star list gives.

    Attributes
    ----------
    path : Path
        The file.
    sky : bool
        True for ``ra, dec`` columns (deg), False for ``x, y`` (0-based science px).
    first, second : numpy.ndarray
        x and y (px), or ra and dec (deg), one per row (NaN where a row gives none).
    """

    path: Path
    sky: bool
    first: np.ndarray
    second: np.ndarray

    @property
    def finite(self) -> np.ndarray:
        """Whether each row gives a finite position."""
        return np.isfinite(self.first) & np.isfinite(self.second)


def require_star_list_file(path: str | Path) -> Path:
    """Refuse a star list path that does not exist or is not a file (no file is read).

    Parameters
    ----------
    path : str or Path
        ``candidates.source_list`` (a relative path is from the current folder).

    Returns
    -------
    Path
        The path, ``~`` expanded.

    Raises
    ------
    InputError
        Naming the field, the path and what to do.
    """
    p = Path(path).expanduser()
    problem = file_problem(p)
    if problem == DOES_NOT_EXIST:
        raise InputError(
            f"{FIELD} {p} {problem} (a relative path is from the folder the command "
            f"runs in, {Path.cwd()}); check the path, {OR_NONE}"
        )
    if problem is not None:
        raise InputError(f"{FIELD} {p} {problem}; {WANTED}")
    return p


def _table_format(path: Path) -> str | None:
    """The astropy format to read ``path`` with: by its suffix or content, else ``ascii``
    (astropy guesses a text table's layout) where astropy's own guess finds none."""
    from astropy.io.registry import identify_format
    from astropy.table import Table

    name = path.name.lower()
    if name.endswith(".csv"):
        return "ascii.csv"
    if identify_format("read", Table, str(path), None, [], {}):
        return None
    return "ascii"


def _binary(path: Path) -> bool:
    """Whether the file's first KiB is not UTF-8 text (a FITS file is read as FITS before)."""
    with path.open("rb") as f:
        head = f.read(1024)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(head) - 4  # a character cut by the 1 KiB end is still text
    return b"\0" in head


def read_star_list(path: str | Path) -> StarList:
    """Read and check a star list (before any image is read: no image is needed).

    Parameters
    ----------
    path : str or Path
        ``candidates.source_list``.

    Returns
    -------
    StarList
        At least one row with a finite position.

    Raises
    ------
    InputError
        When the file is missing, a folder, not a table, lacks the columns, holds words
        where numbers belong, has no rows, or no row with a finite position.
    """
    from astropy.table import Table

    p = require_star_list_file(path)
    try:
        fmt = _table_format(p)
        if fmt == "ascii" and _binary(p):
            raise InputError(f"{FIELD} {p} is neither a FITS table nor text; {WANTED}")
        table = Table.read(p, format=fmt)
    except InputError:
        raise
    except Exception as exc:  # astropy raises many types for unreadable files
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(
            f"{FIELD} {p}: cannot read it as a table ({first_line}); {WANTED}"
        ) from None
    cols = {c.lower(): c for c in table.colnames}
    names = next((pair for pair in (("x", "y"), ("ra", "dec")) if set(pair) <= set(cols)), None)
    if names is None:
        raise InputError(
            f"{FIELD} {p} has columns {table.colnames}; it needs x,y (0-based pixels) "
            "or ra,dec (degrees)"
        )

    def numbers(name: str) -> np.ndarray:
        try:  # a blank cell (masked) gives no position
            values: np.ndarray = np.ma.filled(np.ma.asarray(table[cols[name]], dtype=float), np.nan)
        except (TypeError, ValueError):
            raise InputError(
                f"{FIELD} {p}: column {cols[name]!r} is not numeric; give numbers "
                "(x,y in 0-based pixels or ra,dec in degrees)"
            ) from None
        return values

    stars = StarList(p, names == ("ra", "dec"), numbers(names[0]), numbers(names[1]))
    if not len(table):
        raise InputError(
            f"{FIELD} {p}: 0 stars (columns {', '.join(table.colnames)}, no rows); list the "
            f"kernel stars in it, {OR_NONE}"
        )
    if not np.any(stars.finite):
        raise InputError(
            f"{FIELD} {p}: 0 of {len(table)} stars have a finite position (NaN or blank "
            f"{','.join(cols[n] for n in names)}); give numbers, {OR_NONE}"
        )
    return stars
