"""The one legend of the overlay markers: colours and shapes shared by the GUI and DS9 regions.

Kernel sources are squares (they are square stamps) coloured by their fit status;
DIA sources are circles coloured by sign, dipoles diamonds, flagged sources dashed
orange, sky sources grey crosses. :mod:`diffviewer.regions` writes DS9 regions in
the same colours, and the README's legend is this table. No Qt here.
"""

from __future__ import annotations

import dataclasses

RGB = tuple[int, int, int]

#: Kernel candidates by status.
STATUS_COLOURS: dict[str, RGB] = {
    "GOOD": (0, 230, 0),
    "BAD": (255, 40, 40),
    "CONTROL": (0, 200, 255),
}
#: A kernel candidate whose status is none of the above.
OTHER_STATUS_COLOUR: RGB = (200, 200, 200)
POSITIVE_COLOUR: RGB = (0, 255, 0)
NEGATIVE_COLOUR: RGB = (255, 0, 255)
DIPOLE_COLOUR: RGB = (255, 220, 0)
FLAGGED_COLOUR: RGB = (255, 140, 0)
SKY_COLOUR: RGB = (170, 170, 170)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One kind of marker.

    Attributes
    ----------
    key : str
        Short name (also the DS9 region tag).
    colour : (int, int, int)
        RGB, 0-255.
    glyph : str
        The shape as one character, for text legends.
    text : str
        What the marker means.
    dashed : bool
        Drawn with a dashed line.
    """

    key: str
    colour: RGB
    glyph: str
    text: str
    dashed: bool = False


#: Kernel-source markers (squares), by status.
KERNEL_ENTRIES: tuple[Entry, ...] = tuple(
    Entry(status.lower(), colour, "□", f"kernel source, {status.lower()}")
    for status, colour in STATUS_COLOURS.items()
)
#: DIA-source markers.
DIA_ENTRIES: tuple[Entry, ...] = (
    Entry("positive", POSITIVE_COLOUR, "○", "positive (brighter in the science)"),
    Entry("negative", NEGATIVE_COLOUR, "○", "negative (brighter in the template)"),
    Entry("dipole", DIPOLE_COLOUR, "◇", "dipole (a line joins its lobes)"),
    Entry("flagged", FLAGGED_COLOUR, "○", "flagged (edge, saturated, no data, ...)", True),
    Entry("sky", SKY_COLOUR, "×", "sky source (blank-sky measurement)"),
)


def hex_colour(colour: RGB) -> str:
    """``#rrggbb`` of an RGB colour (DS9 and HTML accept it)."""
    return "#{:02x}{:02x}{:02x}".format(*colour)


def legend_html() -> str:
    """The legend as rich text, each shape in its colour (the GUI's marker legend)."""

    def mark(entry: Entry) -> str:
        style = f"color: {hex_colour(entry.colour)}"
        return f"<span style='{style}'><b>{entry.glyph}</b></span> {entry.key}"

    return "<br>".join(
        (
            "<b>Markers</b>",
            "kernel sources: " + ", ".join(mark(e) for e in KERNEL_ENTRIES),
            "DIA sources: " + ", ".join(mark(e) for e in DIA_ENTRIES) + " (flagged: dashed)",
        )
    )


def legend_markdown() -> str:
    """The legend as a Markdown table (the README's)."""
    rows = ["| marker | colour | meaning |", "| --- | --- | --- |"]
    for entry in (*KERNEL_ENTRIES, *DIA_ENTRIES):
        line = "dashed " if entry.dashed else ""
        rows.append(f"| {entry.glyph} {line}| `{hex_colour(entry.colour)}` | {entry.text} |")
    return "\n".join(rows)
