"""DS9 region text: structure, 1-based coordinates, colour and shape per class."""

from __future__ import annotations

import re

import numpy as np
from astropy.table import Table

from diffviewer.regions import ds9_regions

SHAPE_RE = re.compile(r"^(circle|box|line|point)\(([^)]*)\)\s*#\s*(.*)$")


def parse(text: str) -> list[tuple[str, list[float], dict[str, str], list[str]]]:
    """A small DS9 parser: (shape, numbers, properties, tags) per region line.

    Checks the header lines DS9 needs (format comment, global, coordinate system).
    """
    lines = text.splitlines()
    assert lines[0] == "# Region file format: DS9 version 4.1"
    assert any(line.startswith("global ") for line in lines)
    body_start = lines.index("image") + 1
    regions = []
    for line in lines[body_start:]:
        match = SHAPE_RE.match(line)
        assert match, f"not a DS9 region line: {line!r}"
        shape, args, props = match.groups()
        numbers = [float(v) for v in args.split(",")]
        tags = re.findall(r"tag=\{([^}]*)\}", props)
        pairs = dict(re.findall(r"(\w+)=([^\s{]+)", re.sub(r"tag=\{[^}]*\}", "", props)))
        regions.append((shape, numbers, pairs, tags))
    return regions


def catalog() -> Table:
    """Five sources: positive, negative, flagged positive, dipole, sky source."""
    nan = np.nan
    table = Table(
        {
            "x": [10.0, 20.0, 30.0, 40.25, 50.0],
            "y": [5.0, 15.0, 25.0, 35.0, 45.0],
            "sign": np.array([1, -1, 1, 1, 0], dtype=np.int8),
            "is_dipole": [False, False, False, True, False],
            "flagged": [False, False, True, False, False],
            "sky_source": [False, False, False, False, True],
            "pos_x": [nan, nan, nan, 40.5, nan],
            "pos_y": [nan, nan, nan, 35.0, nan],
            "neg_x": [nan, nan, nan, 40.0, nan],
            "neg_y": [nan, nan, nan, 35.0, nan],
        }
    )
    table.meta["diff_psf_fwhm"] = 4.0
    return table


def test_region_text_structure_and_legend() -> None:
    regions = parse(ds9_regions(catalog()))
    shapes = [r[0] for r in regions]
    # positive circle, negative box, flagged circle, dipole circle+box+line, sky point.
    assert shapes == ["circle", "box", "circle", "circle", "box", "line", "point"]
    pos, neg, flagged, lobe_p, lobe_n, line, sky = regions
    # 1-based: DS9 puts pixel (0, 0) at (1, 1).
    assert pos[1][:2] == [11.0, 6.0] and pos[1][2] == 6.0  # radius 1.5 FWHM
    # the GUI's legend colours (diffviewer.legend)
    assert pos[2]["color"] == "#00ff00" and pos[3] == ["positive"]
    assert neg[1][:2] == [21.0, 16.0] and neg[2]["color"] == "#ff00ff" and neg[3] == ["negative"]
    assert flagged[2]["color"] == "#ff8c00" and flagged[2]["dash"] == "1"
    assert set(flagged[3]) == {"positive", "flagged"}
    for region in (lobe_p, lobe_n, line):
        assert region[2]["color"] == "#ffdc00" and "dipole" in region[3]
    assert lobe_p[1][:2] == [41.5, 36.0] and lobe_n[1][:2] == [41.0, 36.0]
    assert line[1] == [41.5, 36.0, 41.0, 36.0]
    assert sky[1] == [51.0, 46.0] and sky[2]["color"] == "#aaaaaa" and sky[2]["point"] == "x"


def test_minimal_catalog_and_empty_catalog() -> None:
    # Only x, y, sign: every source is drawn, with the default size.
    regions = parse(ds9_regions(Table({"x": [1.0, 2.0], "y": [3.0, 4.0], "sign": [1, -1]})))
    assert [r[0] for r in regions] == ["circle", "box"]
    assert parse(ds9_regions(Table({"x": [], "y": [], "sign": []}))) == []
