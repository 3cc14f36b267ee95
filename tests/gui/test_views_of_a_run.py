"""What the views say of a run: pixels without data, the matched image's name and the
blink's frames, the residual panel's unit, the parameter panel's and the readout's state
(pytest-qt, offscreen; found by a new user's audit at a real screen)."""

from __future__ import annotations

import numpy as np
import pytest

from diffviewer import display
from diffviewer.exposure import MaskPlane
from diffviewer.gui import model
from diffviewer.gui.model import Pair
from diffviewer.gui.window import MainWindow
from diffviewer.synthetic import make_pair
from tests.gui.helpers import demo, run

#: Columns without data on both images' left (a NaN-padded cutout's edge).
PAD = 24

#: The pair's sky level (counts): far from the 0 the engine holds where there is no data.
SKY = 1000.0


@pytest.fixture(scope="module")
def padded_pair() -> Pair:
    """A synthetic pair on a sky of :data:`SKY` counts whose first :data:`PAD` columns hold
    no data (the engine's 0)."""
    made = make_pair((160, 192), 150, seed=3)
    pads = []
    for exp in (made.science, made.template):
        image, mask = exp.image + np.float32(SKY), exp.mask.copy()
        image[:, :PAD] = 0.0
        mask[:, :PAD] |= int(MaskPlane.NO_DATA)
        pads.append(exp.replace(image=image, mask=mask))
    return Pair(pads[0], pads[1], "padded")


def test_pixels_without_data_are_not_drawn_scaled_or_read_as_values(
    qtbot, window: MainWindow, padded_pair: Pair
) -> None:
    run(qtbot, window, padded_pair)
    assert window.outcome is not None
    result = window.outcome.result
    sci = result.science.image
    for name in ("science", "template", "difference", "score"):
        shown = window.area.panels[name].data
        assert shown is not None
        # drawn transparent over the no-data colour: NaN there, the engine's values elsewhere
        assert np.isnan(shown[:, :PAD]).all(), name
        np.testing.assert_array_equal(
            shown[:, PAD:], display.display_array(model.view_arrays(result)[name])[:, PAD:]
        )
    # the science's levels come from its sky, not from the zeros beside it: with them the
    # zscale's black point was 0 and the sky a flat white (noise ~30 counts)
    lo, hi = window.area.panels["science"].levels()
    assert SKY - 300 < lo < SKY < hi
    panel = window.area.panels["science"]
    assert panel.blank_item.isVisible()
    assert panel.blank_item.rect().width() == sci.shape[1]
    window._on_hover(5.0, 80.0)
    text = window.readout.readout.text()
    for title in ("Science", "Template", "Difference", "Score"):
        assert f"{title}: no data" in text
    assert "Difference / σ" not in text and "NO_DATA" in text
    window._on_hover(120.0, 80.0)
    text = window.readout.readout.text()
    assert "no data" not in text and "Difference / σ" in text


def test_the_matched_view_and_the_blink_name_the_image_the_kernel_convolved(
    qtbot, window: MainWindow
) -> None:
    run(qtbot, window, demo())
    assert window.outcome is not None
    assert window.outcome.result.kernel.convolved == "template"
    assert window.area.panels["matched"].title_text == "Matched template"
    assert window.area.blink_frames == ["science", "matched", "difference"]
    window.params.set_value("kernel", "mode", "science")
    run(qtbot, window)
    assert window.outcome.result.kernel.convolved == "science"
    assert window.area.panels["matched"].title_text == "Matched science"
    # the matched science is blinked against the template it is subtracted from
    assert window.area.blink_frames == ["matched", "template", "difference"]
    window.area.set_mode("blink")
    assert window.area.blink.title_text == "Blink: Matched science"
    window.area.step_blink()
    assert window.area.blink.title_text == "Blink: Template"


def test_residuals_say_their_unit_and_the_panels_say_what_is_on_screen(
    qtbot, window: MainWindow
) -> None:
    assert "No run on screen" in window.params.status.text()
    window.open_pair(demo(), run=False)
    crosshair = window.area.panels["science"].vline
    assert not crosshair.isVisible()  # nothing to point at in an empty view
    window.params.set_value("detection", "threshold", 7.0)
    # no run is on screen: the views show nothing, so no digest is said to be on them
    assert "no run on screen" in window.params.status.text()
    assert "still show" not in window.params.status.text()
    window.params.set_value("detection", "threshold", 5.0)
    window._on_hover(60.0, 181.0)  # the cursor rests on an image while the run goes on
    run(qtbot, window)
    assert "Config on screen" in window.params.status.text() and crosshair.isVisible()
    # the readout follows the run's end under a still cursor
    assert "x</b> 60" in window.readout.readout.text()
    result = window.outcome.result
    window.tabs.setCurrentWidget(window.tabs.residual_panel)
    note = window.tabs.residual_panel.note.text()
    factor = result.renormalisation.variance_factor
    assert result.renormalisation.applied and f"scaled by {factor:.3g}" in note
    assert "correlated" in note


def test_a_matched_science_has_data_in_the_templates_gap(qtbot, window: MainWindow) -> None:
    # The science convolved, the template without data in a band of columns: the matched
    # science has data there (the window's own saved matched_template.fits held it, mask
    # 0), but the view took the difference's mask and read "no data" (audit, pieces with
    # a gap: 515.157 shown as no data).
    made = make_pair((160, 192), 150, seed=3, sci_fwhm=2.5, tmpl_fwhm=4.0)
    image, mask = made.template.image.copy(), made.template.mask.copy()
    image[:, 90:110] = 0.0
    mask[:, 90:110] |= int(MaskPlane.NO_DATA)
    run(qtbot, window, Pair(made.science, made.template.replace(image=image, mask=mask), "gap"))
    result = window.outcome.result
    assert result.kernel.convolved == "science"
    assert np.isnan(window.area.panels["template"].data[:, 95]).all()
    shown = window.area.panels["matched"].data
    assert np.isfinite(shown[20:140, 95]).all()
    window._on_hover(100.0, 80.0)
    text = window.readout.readout.text()
    assert "Template: no data" in text and "Matched science: no data" not in text
