"""DS9 region text for a DIA source catalog (pure: builds the text, never writes files).

Colours are the GUI's, from :mod:`diffviewer.legend` (one legend everywhere); the
shape repeats the sign for a reader without colour. Legend:

============================  ================================================
region                        meaning
============================  ================================================
green circle                  positive source (brighter in the science image)
magenta box                   negative source (brighter in the template)
orange circle / box, dashed   flagged source (edge, no data, saturated, bad, ...)
yellow circle + box + line    dipole: circle on the positive lobe, box on the
                              negative lobe, a line joining them (dashed when flagged)
grey x point                  sky source (blank-sky position)
============================  ================================================

Sizes are 1.5 times the difference PSF's FWHM (``meta['diff_psf_fwhm']``, 5 px when
absent). Coordinates are image pixels, 1-based as DS9 counts them. Every region
carries tags (``positive``, ``negative``, ``dipole``, ``flagged``, ``sky``) so DS9
can select or hide a group.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from diffviewer import legend

POSITIVE, NEGATIVE, FLAGGED, DIPOLE, SKY = (
    legend.hex_colour(c)
    for c in (
        legend.POSITIVE_COLOUR,
        legend.NEGATIVE_COLOUR,
        legend.FLAGGED_COLOUR,
        legend.DIPOLE_COLOUR,
        legend.SKY_COLOUR,
    )
)

HEADER = (
    "# Region file format: DS9 version 4.1\n"
    "# diffviewer DIA sources. green circle: positive; magenta box: negative; orange dashed:\n"
    "# flagged; yellow: dipole (circle on the positive lobe, box on the negative, line joining\n"
    "# them); grey x: sky source. Image coordinates, 1-based.\n"
    f'global color={POSITIVE} dashlist=8 3 width=1 font="helvetica 10 normal roman" select=1 '
    "highlite=1 dash=0 fixed=0 edit=1 move=1 delete=1 include=1 source=1\n"
    "image\n"
)

#: Marker size (px) when the catalog does not give the difference PSF's FWHM.
DEFAULT_FWHM = 10.0 / 3.0


def _column(table: Table, name: str, default: float | bool) -> np.ndarray:
    """A column as a plain array, or ``default`` for every row when it is absent."""
    if name in table.colnames:
        return np.asarray(table[name])
    return np.full(len(table), default)


def _shape(sign: float, x: float, y: float, size: float) -> str:
    """A circle for a positive source, a box for a negative one (1-based coordinates)."""
    if sign < 0:
        side = 2.0 * size
        return f"box({x + 1:.3f},{y + 1:.3f},{side:.2f},{side:.2f},0)"
    return f"circle({x + 1:.3f},{y + 1:.3f},{size:.2f})"


def _properties(color: str, tags: list[str], dashed: bool) -> str:
    """The properties after a region's ``#``."""
    text = f"color={color}"
    if dashed:
        text += " dash=1"
    return text + "".join(f" tag={{{t}}}" for t in tags)


def ds9_regions(table: Table) -> str:
    """DS9 region text drawing every DIA source of a catalog (legend in the module docstring).

    Parameters
    ----------
    table : astropy.table.Table
        A DIA source catalog with ``x``, ``y`` (0-based px) and ``sign``; optional
        ``is_dipole`` with ``pos_x``, ``pos_y``, ``neg_x``, ``neg_y``, ``flagged``,
        ``sky_source``; ``meta['diff_psf_fwhm']`` sets the marker size.

    Returns
    -------
    str
        The region file's text (a header, then one line per region).
    """
    size = 1.5 * float(table.meta.get("diff_psf_fwhm", DEFAULT_FWHM))
    xs, ys = _column(table, "x", np.nan), _column(table, "y", np.nan)
    signs = _column(table, "sign", 1)
    dipoles = _column(table, "is_dipole", False).astype(bool)
    flagged = _column(table, "flagged", False).astype(bool)
    sky = _column(table, "sky_source", False).astype(bool)
    lobes = [_column(table, name, np.nan) for name in ("pos_x", "pos_y", "neg_x", "neg_y")]
    lines = [HEADER]
    for i in range(len(table)):
        x, y = float(xs[i]), float(ys[i])
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        if sky[i]:
            lines.append(f"point({x + 1:.3f},{y + 1:.3f}) # point=x color={SKY} tag={{sky}}\n")
            continue
        extra = ["flagged"] if flagged[i] else []
        px, py, nx, ny = (float(c[i]) for c in lobes)
        if dipoles[i] and np.all(np.isfinite([px, py, nx, ny])):
            tags = ["dipole", *extra]
            props = _properties(DIPOLE, tags, bool(flagged[i]))
            lines.append(f"{_shape(1, px, py, size / 2)} # {props}\n")
            lines.append(f"{_shape(-1, nx, ny, size / 2)} # {props}\n")
            lines.append(
                f"line({px + 1:.3f},{py + 1:.3f},{nx + 1:.3f},{ny + 1:.3f}) # line=0 0 {props}\n"
            )
            continue
        tags = ["positive" if signs[i] >= 0 else "negative", *extra]
        color = FLAGGED if flagged[i] else (POSITIVE if signs[i] >= 0 else NEGATIVE)
        props = _properties(color, tags, bool(flagged[i]))
        lines.append(f"{_shape(float(signs[i]), x, y, size)} # {props}\n")
    return "".join(lines)
