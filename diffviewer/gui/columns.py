"""How DIA source catalog columns are shown to people: order, headers with units, numbers.

The catalog itself is never changed (tables, sorting and exports use the exact values);
these functions only decide the text of a table cell or a summary line.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Columns shown first, most used first; the rest follow in catalog order.
FIRST_COLUMNS: tuple[str, ...] = (
    "id",
    "x",
    "y",
    "sign",
    "snr",
    "psf_flux",
    "psf_flux_err",
    "is_dipole",
    "flagged",
    "score_peak",
    "ra",
    "dec",
)

# Columns shown with one decimal: signal-to-noise ratios and peaks in sigma units (a
# tenth of a sigma is below the noise of the estimate itself).
_ONE_DECIMAL = ("snr", "peak_value", "score_peak")
# Sky coordinates in degrees with 6 decimals: 1e-6 deg = 3.6 mas, below any astrometry
# here; other angles (dipole orientation) with one decimal.
_SKY = ("ra", "dec")
# Significant digits of fluxes and other measured values: a PSF flux is rarely known
# better than 0.1 per cent.
_DIGITS = 4


def order_columns(names: Sequence[str]) -> list[str]:
    """Column names with :data:`FIRST_COLUMNS` first, then the others in their order."""
    first = [c for c in FIRST_COLUMNS if c in names]
    return first + [c for c in names if c not in first]


#: Pixel positions, 0-based as the engine's (DS9's image coordinates are these plus 1).
_ZERO_BASED = ("x", "y", "pos_x", "pos_y", "neg_x", "neg_y")


#: Peaks of an image in units of its own noise: dimensionless in the catalog, in sigma to
#: a reader (``snr``, a ratio, stays bare).
_SIGMAS = ("peak_value", "score_peak")


def unit_text(name: str, unit: Any) -> str:
    """A column's unit as shown: ``ct``; a position ``pix, 0-based``; a peak in noise
    units ``σ``; empty without unit."""
    text = str(unit) if unit is not None else ""
    if name in _ZERO_BASED and text:
        text += ", 0-based"
    if name in _SIGMAS and not text:
        text = "σ"
    return text


def header(name: str, unit: Any) -> str:
    """A column header: the name and its unit in brackets (``psf_flux [ct]``; a position
    ``x [pix, 0-based]``)."""
    text = unit_text(name, unit)
    return f"{name} [{text}]" if text else name


def tooltip(name: str, unit: Any, description: str | None) -> str:
    """A column header's tooltip: what the column holds and its unit.

    Parameters
    ----------
    name : str
        Column name.
    unit : astropy unit, str or None
        The column's unit (None: a number without unit, a flag or a text).
    description : str or None
        The column's description (the catalog's own, :mod:`diffviewer.engine.columns`).

    Returns
    -------
    str
        Rich text (so Qt wraps a long description): the name in bold and the description,
        and a line with the unit (0-based pixel positions say so).
    """
    lines = [f"<b>{name}</b>: {html.escape(description)}" if description else f"<b>{name}</b>"]
    if text := unit_text(name, unit):
        lines.append(f"Unit: {html.escape(text)}")
    return "<br>".join(lines)


def significant(value: float, digits: int = _DIGITS) -> str:
    """A number with ``digits`` significant digits, fixed-point from 1e-3 to 1e6.

    Integer digits are never replaced by zeros (160840 stays ``160840``); outside that
    range the exponent form is used (``1.167e+06``).
    """
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    exponent = math.floor(math.log10(abs(value)))
    if -3 <= exponent < 6:
        return f"{value:.{max(digits - 1 - exponent, 0)}f}"
    return f"{value:.{digits - 1}e}"


def format_value(name: str, value: Any, unit: Any = None) -> str:
    """The text of one catalog value.

    Parameters
    ----------
    name : str
        Column name (decides the format: S/N one decimal, RA/Dec 6 decimals, ...).
    value : object
        The value (numpy scalar or Python).
    unit : astropy unit or str, optional
        The column's unit (pixel positions get 2 decimals).

    Returns
    -------
    str
        Blank for NaN; ``yes``/``no`` for booleans; ``+``/``-`` for the sign.
    """
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if name == "sign":
        return {1: "+", -1: "-"}.get(int(value), str(int(value)))
    if isinstance(value, np.integer | int):
        return str(int(value))
    if not isinstance(value, np.floating | float):
        return str(value)
    number = float(value)
    if not math.isfinite(number):
        return ""
    unit_text = str(unit) if unit is not None else ""
    if name in _SKY:
        return f"{number:.6f}"
    if name in _ONE_DECIMAL:
        return f"{number:.1f}"
    if unit_text == "pix":
        return f"{number:.2f}"
    if unit_text == "deg":
        return f"{number:.1f}"
    return significant(number)
