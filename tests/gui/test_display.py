"""Display levels, stretches, LUTs, overlays and cutouts (pure numpy, no Qt)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from diffviewer import display
from diffviewer.errors import ConfigError
from diffviewer.exposure import MaskPlane


def _noise(seed: int = 0, shape: tuple[int, int] = (256, 256)) -> np.ndarray:
    return np.random.default_rng(seed).normal(100.0, 10.0, shape).astype(np.float32)


def test_display_array_replaces_non_finite_with_median_and_keeps_clean_input() -> None:
    img = _noise()
    assert display.display_array(img) is img  # already float32, contiguous, finite: no copy
    bad = img.astype(np.float64)
    bad[0, :10] = np.nan
    bad[1, 0] = np.inf
    out = display.display_array(bad)
    assert out.dtype == np.float32 and out.flags.c_contiguous and np.isfinite(out).all()
    assert np.all(np.isnan(bad[0, :10]))  # input untouched
    # the fill is the median of the finite pixels: within 0.1 sigma of the mean 100
    assert out[0, 0] == pytest.approx(100.0, abs=1.0)


def test_pixels_without_data_are_nan_and_left_out_of_the_fill_and_the_levels() -> None:
    img = _noise()
    img[:, :64] = 0.0  # the engine's value where there is no data: a quarter of the image
    img[5, 100] = np.nan
    blank = np.zeros(img.shape, dtype=bool)
    blank[:, :64] = True
    out = display.display_array(img, blank)
    assert np.isnan(out[blank]).all() and np.isfinite(out[~blank]).all()
    assert out[5, 100] == pytest.approx(100.0, abs=1.0)  # filled from the pixels with data
    lo, hi = display.compute_levels(out, display.DisplaySettings())
    # zscale of the sky alone (100 +- 10); the zeros had put the black point near 0
    assert 60.0 < lo < 100.0 < hi < 140.0
    assert display.display_array(_noise(), np.zeros(img.shape, dtype=bool)).dtype == np.float32


def test_percentile_levels_bracket_the_right_fraction_of_pixels() -> None:
    img = _noise()
    for mode, frac in (("99", 0.99), ("99.5", 0.995), ("99.9", 0.999)):
        lo, hi = display.compute_levels(img, display.DisplaySettings(levels=mode))
        inside = np.mean((img >= lo) & (img <= hi))
        # 65536 pixels: the binomial sd of the inside fraction is < 0.0004
        assert inside == pytest.approx(frac, abs=0.002)


def test_zscale_of_gaussian_noise_spans_a_few_sigma_and_minmax_spans_all() -> None:
    img = _noise()
    lo, hi = display.compute_levels(img, display.DisplaySettings(levels="zscale"))
    # zscale with contrast 0.25 on pure noise spans roughly +-2..6 sigma around the median
    assert 100 - 60 < lo < 100 - 10 and 100 + 10 < hi < 100 + 60
    lo, hi = display.compute_levels(img, display.DisplaySettings(levels="minmax"))
    assert (lo, hi) == (pytest.approx(float(img.min())), pytest.approx(float(img.max())))


def test_symmetric_levels_are_centred_on_zero_and_manual_levels_are_kept() -> None:
    img = _noise() - 100.0
    img[5, 5] = 1e4
    lo, hi = display.compute_levels(img, display.default_settings("difference"))
    assert lo == -hi and 10 < hi < 100  # one hot pixel does not set a zscale range
    manual = display.DisplaySettings(levels="manual", manual=(3.0, 7.0))
    assert display.compute_levels(img, manual) == (3.0, 7.0)


def test_levels_of_an_empty_or_flat_image_are_usable() -> None:
    nan = np.full((8, 8), np.nan)
    assert display.compute_levels(nan, display.DisplaySettings()) == (0.0, 1.0)
    lo, hi = display.compute_levels(np.ones((8, 8)), display.DisplaySettings(levels="minmax"))
    assert hi > lo


def test_settings_validate_their_names() -> None:
    with pytest.raises(ConfigError, match="stretch"):
        display.DisplaySettings(stretch="cubic")
    with pytest.raises(ConfigError, match="manual"):
        display.DisplaySettings(levels="manual")


@pytest.mark.parametrize("stretch", display.STRETCHES)
def test_stretches_are_monotonic_from_0_to_1(stretch: str) -> None:
    t = np.linspace(0, 1, 101)
    s = display.stretch_curve(stretch, t)
    assert s[0] == pytest.approx(0.0) and s[-1] == pytest.approx(1.0)
    assert np.all(np.diff(s) > 0)
    if stretch != "linear":  # the others lift faint values
        assert s[10] > t[10]


def test_lut_applies_stretch_then_colour_map() -> None:
    lut = display.make_lut("linear", "gray")
    assert lut.shape == (256, 4) and lut.dtype == np.uint8
    assert np.array_equal(lut[:, 0], np.arange(256)) and np.all(lut[:, 3] == 255)
    sqrt = display.make_lut("sqrt", "gray")
    assert sqrt[64, 0] == round(255 * np.sqrt(64 / 255))


def test_symmetric_lut_is_neutral_in_the_middle_and_stretches_both_sides_alike() -> None:
    lut = display.make_lut("asinh", "coolwarm", symmetric=True).astype(int)
    mid = lut[127:129, :3].mean(axis=0)
    assert np.all(np.abs(mid - 221) < 6)  # coolwarm's grey centre (Moreland 2009)
    # the ends are the map's ends (coolwarm's blue and red anchors)
    assert tuple(lut[0, :3]) == (59, 76, 192) and tuple(lut[-1, :3]) == (180, 4, 38)
    # the stretch is odd around the centre: grey levels at +-d sum to white
    a = display.make_lut("asinh", "gray", symmetric=True).astype(int)[:, 0]
    assert np.all(np.abs(a + a[::-1] - 255) <= 1)


def test_mask_overlay_colours_only_the_chosen_planes() -> None:
    mask = np.zeros((4, 4), np.int32)
    mask[0, 0] = int(MaskPlane.SAT)
    mask[1, 1] = int(MaskPlane.DETECTED)
    mask[2, 2] = int(MaskPlane.SAT | MaskPlane.DETECTED)
    rgba = display.mask_overlay(mask, {MaskPlane.SAT: True}, 0.5)
    assert rgba[0, 0, 3] == 128 and tuple(rgba[0, 0, :3]) == display.PLANE_COLOURS[MaskPlane.SAT]
    assert rgba[1, 1, 3] == 0 and rgba[2, 2, 3] == 128 and rgba[3, 3, 3] == 0


def test_cutout_is_centred_and_padded_with_nan() -> None:
    img = np.arange(100, dtype=np.float32).reshape(10, 10)
    c = display.cutout(img, 5.2, 4.8, 2)
    assert c.shape == (5, 5) and c[2, 2] == img[5, 5]
    edge = display.cutout(img, 0, 0, 2)
    assert np.isnan(edge[0, 0]) and edge[2, 2] == img[0, 0]


def _star(peak: float, x: float = 15.0, y: float = 15.0, seed: int = 1) -> np.ndarray:
    """A 31 x 31 cutout: sky 100 with sigma 10 and a Gaussian star (sigma 1.5 px)."""
    yy, xx = np.mgrid[:31, :31]
    star = peak * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
    return np.random.default_rng(seed).normal(100.0, 10.0, (31, 31)) + star


def test_cutout_levels_run_from_the_sky_to_the_source_peak() -> None:
    sci, tmpl = _star(50_000.0), _star(20_000.0, seed=2)
    lo, hi = display.cutout_levels([sci, tmpl], symmetric=False)
    # black point 2 sigma below the sky (100 - 2 x 10, within the MAD's ~10% scatter on
    # ~1900 pixels); white point the brightest core pixel: the star is not saturated
    assert lo == pytest.approx(80.0, abs=3.0)
    assert hi == pytest.approx(float(np.max(sci)))
    # a brighter neighbour away from the centre does not set the white point
    crowded = _star(500.0) + _star(1e5, x=2.0, y=2.0) - 100.0
    assert display.cutout_levels([crowded], symmetric=False)[1] < 1000.0
    # a cutout of sky alone: the white point is 5 sigma above the sky (noise, not a source)
    blank = display.cutout_levels([_star(0.0)], symmetric=False)
    assert blank[1] == pytest.approx(150.0, abs=3.0)


def test_cutout_levels_symmetric_reach_the_extreme_of_the_source() -> None:
    rng = np.random.default_rng(3)
    diff = rng.normal(0.0, 10.0, (31, 31))
    diff[15, 15], diff[15, 17] = -800.0, 300.0  # a dipole's two lobes
    assert display.cutout_levels([diff], symmetric=True) == (-800.0, 800.0)
    noise = display.cutout_levels([rng.normal(0.0, 1.0, (31, 31))], symmetric=True)
    assert noise[1] == -noise[0] and noise[1] == pytest.approx(5.0, rel=0.15)
    assert display.cutout_levels([np.full((5, 5), np.nan)], symmetric=True) == (-1.0, 1.0)


def test_display_imports_no_qt() -> None:
    code = (
        "import sys, diffviewer.display; "
        "sys.exit(any(m.startswith(('PyQt', 'pyqtgraph')) for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def _grey(lut: np.ndarray, t: float) -> int:
    """The grey level a view shows at fraction ``t`` of its interval (pyqtgraph's mapping)."""
    return int(lut[min(int(t * len(lut)), len(lut) - 1), 0])


def test_nonlinear_stretches_lift_the_sky_under_min_max_levels() -> None:
    # GOTO-like: sky 1000 with sigma 10 under a star of 6e4, levels from min to max
    lo, hi, sky, sigma = 960.0, 60000.0, 1000.0, 10.0
    below, above = ((sky + k * sigma - lo) / (hi - lo) for k in (-1.0, 1.0))
    short = display.make_lut("log", "gray")  # 256 entries: the sky falls in one entry
    assert _grey(short, below) == _grey(short, above)
    lut = display.make_lut("log", "gray", n=display.VIEW_LUT_SIZE)
    assert _grey(lut, above) - _grey(lut, below) >= 3  # +-1 sigma: visibly different
    # asinh with a softer knee lifts the same sky further
    soft = display.make_lut("asinh", "gray", n=display.VIEW_LUT_SIZE, softening=0.001)
    hard = display.make_lut("asinh", "gray", n=display.VIEW_LUT_SIZE, softening=0.1)
    assert _grey(soft, above) > _grey(hard, above) + 10
    with pytest.raises(ConfigError, match="softening"):
        display.DisplaySettings(softening=0.0)


def test_a_view_applies_its_softening(qtbot) -> None:
    from diffviewer.gui.views import ImagePanel

    panel = ImagePanel("science", "Science")
    qtbot.addWidget(panel)
    panel.stretch_box.setCurrentText("asinh")
    assert not panel.soft_box.isHidden()
    panel.soft_box.setValue(0.01)
    assert panel.settings.softening == pytest.approx(0.01)
    expected = display.make_lut("asinh", "gray", n=display.VIEW_LUT_SIZE, softening=0.01)
    np.testing.assert_array_equal(panel.lut(), expected)
    panel.stretch_box.setCurrentText("linear")
    assert panel.soft_box.isHidden()
