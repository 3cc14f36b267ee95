"""Catalog table: column order, headers with units, number formats, hidden columns, tooltips."""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy.table import Table
from PyQt6.QtCore import Qt

from diffviewer.gui import columns
from diffviewer.gui.catalog import VERDICT_COLUMNS, CatalogPanel


def test_numbers_are_formatted_per_column() -> None:
    assert columns.significant(160840.3) == "160840"  # integer digits never become zeros
    assert columns.significant(-68.4213) == "-68.42"
    assert columns.significant(1167300.0) == "1.167e+06"
    assert columns.significant(0.000123456) == "1.235e-04"
    assert columns.format_value("snr", np.float64(214.2371)) == "214.2"
    assert columns.format_value("psf_flux", np.float64(160840.3), u.ct) == "160840"
    assert columns.format_value("x", np.float64(1736.4172), u.pix) == "1736.42"
    assert columns.format_value("ra", np.float64(188.51234567), u.deg) == "188.512346"
    assert columns.format_value("dipole_orientation", np.float64(33.333), u.deg) == "33.3"
    assert columns.format_value("psf_flux", np.float64(np.nan), u.ct) == ""
    assert columns.format_value("is_dipole", np.bool_(True)) == "yes"
    assert columns.format_value("flagged", np.bool_(False)) == "no"
    assert columns.format_value("sign", np.int8(-1)) == "-"
    assert columns.format_value("sign", np.int8(0)) == "0"
    assert columns.format_value("id", np.uint64(2**40 + 7)) == str(2**40 + 7)  # exact
    assert columns.header("psf_flux", u.ct) == "psf_flux [ct]"
    assert columns.header("snr", None) == "snr"
    # peaks in units of their image's noise say so (the catalog's unit is dimensionless)
    assert columns.header("peak_value", None) == "peak_value [σ]"
    assert columns.header("score_peak", None) == "score_peak [σ]"


def _catalog() -> Table:
    table = Table(
        {
            "label": [1, 2, 3],
            "psf_flux": [160840.3, -68.4213, np.nan],
            "id": np.array([3, 1, 2], np.uint64),
            "x": [1.0, 2.0, 3.0],
            "y": [4.0, 5.0, 6.0],
            "snr": [214.24, -9.06, 3.3],
            "flag_edge": [False, True, False],
            "flag_cr_center": [False, True, False],
            "flagged": [False, True, False],
            "sign": np.array([1, -1, 1], np.int8),
        }
    )
    table["psf_flux"].unit = u.ct
    table["x"].unit = table["y"].unit = u.pix
    return table


def test_table_orders_columns_shows_units_and_formats_but_sorts_on_values(qtbot) -> None:
    panel = CatalogPanel()
    qtbot.addWidget(panel)
    panel.set_table(_catalog())
    model = panel.model
    names = model.columns
    # most used first, then the verdicts, then the rest in catalog order
    assert names[:7] == ["id", "x", "y", "sign", "snr", "psf_flux", "flagged"]
    assert names[7:9] == list(VERDICT_COLUMNS)
    assert names[9:] == ["label", "flag_edge", "flag_cr_center"]
    headers = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(len(names))]
    assert headers[1] == "x [pix, 0-based]" and headers[5] == "psf_flux [ct]"
    flux = names.index("psf_flux")
    assert model.index(0, flux).data() == "160840"
    assert model.index(0, flux).data(Qt.ItemDataRole.UserRole) == 160840.3  # exact value
    assert model.index(2, flux).data() == ""  # NaN shows blank
    assert model.index(1, names.index("sign")).data() == "-"
    # the single flags are hidden; the flagged cell names the ones set
    hidden = [n for c, n in enumerate(names) if panel.view.isColumnHidden(c)]
    assert hidden == ["label", "flag_edge", "flag_cr_center"]
    tip = model.index(1, names.index("flagged")).data(Qt.ItemDataRole.ToolTipRole)
    assert tip == "flags: edge, cr_center"
    # the header menu shows a hidden column
    menu = panel.column_menu()
    action = next(a for a in menu.actions() if a.text() == "flag_edge")
    assert not action.isChecked()
    action.setChecked(True)
    assert not panel.view.isColumnHidden(names.index("flag_edge"))
    # sorting on values, with the NaN (no measurement) at the bottom either way
    for order, expected in (
        (Qt.SortOrder.DescendingOrder, [160840.3, -68.4213]),
        (Qt.SortOrder.AscendingOrder, [-68.4213, 160840.3]),
    ):
        panel.view.sortByColumn(flux, order)
        values = [panel.proxy.index(r, flux).data(Qt.ItemDataRole.UserRole) for r in range(3)]
        assert values[:2] == expected and np.isnan(values[2])


def _shown_with_x_widened(qtbot) -> CatalogPanel:
    """A panel showing :func:`_catalog`, its ``x`` column widened by the user to 333 px."""
    panel = CatalogPanel()
    qtbot.addWidget(panel)
    panel.set_table(_catalog())
    panel.view.setColumnWidth(panel.model.columns.index("x"), 333)
    return panel


def test_a_rerun_with_longer_ids_widens_the_id_column_alone(qtbot) -> None:
    # The exposure id in the ids' high bits is derived from the pair and the config
    # (measurement.exposure_id -1): a re-run under another config can bring ids of more
    # digits, which a column kept at the last run's width cut to "2298520807233552...".
    panel = _shown_with_x_widened(qtbot)
    col, x = panel.model.columns.index("id"), panel.model.columns.index("x")
    narrow = panel.view.columnWidth(col)
    longer = _catalog()
    longer["id"] = np.array([2**63 - 3, 2**63 - 2, 2**63 - 1], np.uint64)
    panel.set_table(longer)
    assert panel.view.columnWidth(col) > narrow
    assert panel.view.columnWidth(col) >= panel.view.sizeHintForColumn(col)
    assert panel.view.columnWidth(x) == 333  # the user's width elsewhere kept
    panel.set_table(_catalog())  # shorter ids again: never narrowed under the user
    assert panel.view.columnWidth(col) >= panel.view.sizeHintForColumn(col)


def test_header_tooltips_give_each_column_its_description_and_unit(qtbot) -> None:
    panel = CatalogPanel()
    qtbot.addWidget(panel)
    table = _catalog()
    table["psf_flux"].description = "PSF flux of the source on the difference"
    table["x"].description = "x position (column) of the centroid"
    panel.set_table(table)
    names = panel.model.columns

    def tip(name: str) -> str:
        col = names.index(name)
        return panel.model.headerData(col, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole)

    assert "<b>psf_flux</b>: PSF flux of the source on the difference" in tip("psf_flux")
    assert "Unit: ct" in tip("psf_flux") and "Unit: pix, 0-based" in tip("x")
    assert "real (R), bogus (B) or unsure (U)" in tip("verdict")
    assert "Right-click" in tip("snr") and "Unit" not in tip("snr")


def test_a_rerun_keeps_the_columns_the_user_chose_and_their_widths(qtbot) -> None:
    panel = _shown_with_x_widened(qtbot)
    shown, x = panel.model.columns.index("flag_edge"), panel.model.columns.index("x")
    panel.view.setColumnHidden(shown, False)  # the user shows a flag too
    panel.set_table(_catalog()[::-1])  # a re-run: other rows, the same columns
    assert not panel.view.isColumnHidden(shown) and panel.view.columnWidth(x) == 333
    assert panel.model.rowCount() == len(_catalog())
    other = _catalog()
    other.remove_column("flag_cr_center")
    panel.set_table(other)  # other columns: the defaults again, widths fitted
    assert panel.view.isColumnHidden(panel.model.columns.index("flag_edge"))
    assert panel.view.columnWidth(panel.model.columns.index("x")) != 333
