"""The Kernel tab's PSFs: the science and template PSFs a run used, the convolved one
through the kernel, and its residual against the other, live and read back."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from diffviewer.engine.diagnostics import kernel_centroids
from diffviewer.engine.kernel_solution import KernelFit, KernelSolution
from diffviewer.engine.psf import PsfEstimate, fourier_shift, gaussian_image, psf_shape
from diffviewer.gui import content, model
from diffviewer.gui.model import Pair
from diffviewer.gui.window import MainWindow
from diffviewer.stats import FWHM_PER_SIGMA
from diffviewer.synthetic import make_pair
from tests.gui.helpers import Click, run


def _gaussian_psf(fwhm: float, source: str) -> PsfEstimate:
    """A PSF estimate of a circular Gaussian of ``fwhm`` px (sum 1)."""
    image = gaussian_image(fwhm, int(np.ceil(3 * fwhm)))
    image.flags.writeable = False
    return PsfEstimate(fwhm, 0.0, image, 0, source, f"a Gaussian of {fwhm} px")


def _gaussian_fit(
    fit: KernelFit,
    narrow: float,
    broad: float,
    kernel_fwhm: float,
    convolved: str,
    shift: tuple[float, float] = (0.0, 0.0),
) -> KernelFit:
    """``fit`` with Gaussian PSFs (the convolved image's of FWHM ``narrow`` px, the other's
    ``broad``) and a constant kernel of one Gaussian of ``kernel_fwhm`` px, moved by
    ``shift`` px, of sum 1.2 (a flux ratio: the PSFs compared are of sum 1 whatever it is)."""
    half = int(np.ceil(3 * kernel_fwhm))
    basis = 1.2 * fourier_shift(
        gaussian_image(kernel_fwhm, half)[None], np.array([shift[0]]), np.array([shift[1]])
    )
    solution = KernelSolution(
        basis,
        np.ones((1, 1)),
        np.zeros(1),
        0,
        0,
        fit.solution.shape,
        np.array([kernel_fwhm / FWHM_PER_SIGMA]),
        (0,),
    )
    narrow_psf, broad_psf = _gaussian_psf(narrow, "given"), _gaussian_psf(broad, "header")
    sci, tmpl = (broad_psf, narrow_psf) if convolved == "template" else (narrow_psf, broad_psf)
    return dataclasses.replace(
        fit, solution=solution, convolved=convolved, science_psf=sci, template_psf=tmpl
    )


@pytest.mark.parametrize("convolved", ["template", "science"])
def test_an_exact_kernel_matches_the_psfs_and_a_wrong_one_does_not(
    demo_window: MainWindow, convolved: str
) -> None:
    # Gaussians of FWHM 3 and 5 px: the kernel that maps one onto the other is a Gaussian
    # of sqrt(5^2 - 3^2) = 4 px; the image convolved is the narrower one's either way round
    fit = demo_window.outcome.result.kernel
    exact = content.psf_match(_gaussian_fit(fit, 3.0, 5.0, 4.0, convolved))
    other = "science" if convolved == "template" else "template"
    assert exact.convolved == convolved
    # the target is the other image's PSF, on the stamp of the matched one (its larger)
    target = getattr(exact, other)
    assert exact.target is target
    assert target.shape == exact.matched.shape == exact.residual.shape
    assert exact.matched.shape[0] % 2 == 1
    for image in (exact.science, exact.template, exact.matched):
        assert image.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(exact.residual, exact.matched - target)
    assert exact.misfit == pytest.approx(np.abs(exact.matched - target).sum(), rel=1e-12)
    assert exact.misfit < 2e-3
    assert exact.matched_fwhm == pytest.approx(5.0, rel=0.01)
    assert exact.shift == (pytest.approx(0.0, abs=1e-12), pytest.approx(0.0, abs=1e-12))
    assert exact.misfit_centred == pytest.approx(exact.misfit, abs=1e-9)
    # where the kernel is evaluated: the image centre
    ny, nx = fit.solution.shape
    assert (exact.x, exact.y) == ((nx - 1) / 2.0, (ny - 1) / 2.0)
    # a kernel 25 % too narrow leaves a matched PSF too narrow, and a ring in the residual
    narrow = content.psf_match(_gaussian_fit(fit, 3.0, 5.0, 3.0, convolved))
    assert narrow.misfit > 50 * exact.misfit
    assert narrow.matched_fwhm == pytest.approx(np.hypot(3.0, 3.0), rel=0.01)
    centre = narrow.residual.shape[0] // 2
    assert narrow.residual[centre, centre] > 0  # too much light in the core
    # the exact kernel moved by (0.6, -0.3) px (a misregistration it absorbs): a dipole
    # in the residual, which the misfit counts and the centred misfit does not
    moved = content.psf_match(_gaussian_fit(fit, 3.0, 5.0, 4.0, convolved, (0.6, -0.3)))
    assert moved.shift == (pytest.approx(0.6, abs=1e-3), pytest.approx(-0.3, abs=1e-3))
    assert moved.misfit > 0.1
    assert moved.misfit_centred < 2e-3
    assert moved.residual[centre, centre + 2] > 0 > moved.residual[centre, centre - 2]


def test_the_psf_views_say_where_each_psf_came_from(demo_window: MainWindow) -> None:
    fit = demo_window.outcome.result.kernel
    result = dataclasses.replace(
        demo_window.outcome.result, kernel=_gaussian_fit(fit, 3.0, 5.0, 4.0, "template")
    )
    images, info = content.psf_views(result)
    titles = [title for title, _ in images]
    assert titles[0] == "Science PSF (header FWHM)<br>FWHM 5.00 px"
    assert titles[1] == "Template PSF (given)<br>FWHM 3.00 px"
    assert titles[2].startswith("Template PSF ⊛ kernel<br>FWHM 5.0")
    match = content.psf_match(result.kernel)
    assert titles[3] == f"Residual, ⊛ − science<br>Σ|residual| {match.misfit:.4f}"
    np.testing.assert_array_equal(images[3][1], match.matched - match.science)
    assert f"Σ|K⊛P_template − P_science| = {match.misfit:.4f}" in info
    assert "Science PSF header: a Gaussian of 5.0 px." in info
    assert "Template PSF given: a Gaussian of 3.0 px." in info


def test_the_kernel_tab_shows_the_run_s_psfs_live_and_read_back(
    qtbot, demo_window: MainWindow, tmp_path: Path
) -> None:
    from diffviewer.gui.diagnostic_panels import KernelPanel
    from diffviewer.io import demo_pair
    from diffviewer.outputs import write_outputs
    from diffviewer.results import read_saved_run

    result = demo_window.outcome.result
    fit = result.kernel
    match = content.psf_match(fit)
    # the demo convolves the template (its PSF the narrower, 4.0 px against 5.4): its
    # PSF through the kernel comes within a few per cent of the science's
    assert fit.convolved == "template"
    np.testing.assert_array_equal(match.residual, match.matched - match.science)
    # its kernel moves the template by (+0.77, +0.38) px (the demo pair's misregistration),
    # two thirds of its misfit (0.33; 0.10 without the shift)
    ny, nx = fit.solution.shape
    want = kernel_centroids(fit.solution.evaluate((nx - 1) / 2.0, (ny - 1) / 2.0))
    assert match.shift == pytest.approx(want)
    assert np.hypot(*match.shift) > 0.5
    assert 0.0 < match.misfit_centred < 0.5 * match.misfit < 0.5
    assert match.matched_fwhm == pytest.approx(fit.science_psf.fwhm, rel=0.05)
    assert match.matched_fwhm == pytest.approx(psf_shape(match.matched)[0])
    panel = demo_window.tabs.kernel_panel
    demo_window.tabs.setCurrentWidget(panel)
    panel.pages.setCurrentIndex(1)
    shown = [item.image for item in panel.psf_items]
    for image, want in zip(
        shown, (match.science, match.template, match.matched, match.residual), strict=True
    ):
        np.testing.assert_allclose(image, want, rtol=1e-6, atol=1e-9)  # float32 on screen
    titles = [title.text for title in panel.psf_titles]
    assert titles[0] == f"Science PSF (measured)<br>FWHM {fit.science_psf.fwhm:.2f} px"
    assert titles[3].endswith(f"Σ|residual| {match.misfit:.4f}")
    assert fit.science_psf.reason in panel.psf_info.text()
    # the three PSFs at one set of levels, the residual at symmetric ones
    top = max(float(np.max(a)) for a in (match.science, match.template, match.matched))
    for item in panel.psf_items[:3]:
        assert item.levels == pytest.approx((0.0, top))
    reach = float(np.max(np.abs(match.residual)))
    assert panel.psf_items[3].levels == pytest.approx((-reach, reach))
    # read back from its folder (kernel.fits' SCI_PSF, TMPL_PSF and the kernel): the same
    out = tmp_path / "saved"
    write_outputs(result, out, list(demo_pair()))
    run = read_saved_run(out)
    saved = content.psf_match(run.kernel)
    for name in ("science", "template", "matched", "residual"):
        np.testing.assert_allclose(getattr(saved, name), getattr(match, name), atol=1e-15)
    assert saved.misfit == pytest.approx(match.misfit, rel=1e-12)
    views = content.kernel_views(run)
    again = KernelPanel()
    qtbot.addWidget(again)
    again.set_data(**views)
    assert [title.text for title in again.psf_titles] == titles
    assert again.psf_info.text() == panel.psf_info.text()
    again.clear()
    assert all(item.image is None for item in again.psf_items)
    assert again.psf_info.text() == ""


def test_the_psfs_have_room_beside_the_maps_at_1280_by_720(qtbot, demo_window: MainWindow) -> None:
    # at 1280 x 720 the Kernel tab is ~725 x 330 px: the details below the splitter show
    # ~80 px, where a row of PSFs was never seen whole; on their page beside the maps
    # they are, and the page's tab bar leaves the mosaic's hint below the maps
    from diffviewer.gui.diagnostic_panels import MAPS_MIN_HEIGHT, PSF_MIN_HEIGHT, KernelPanel

    panel = KernelPanel()
    qtbot.addWidget(panel)
    panel.resize(725, 330)
    panel.set_data(**content.kernel_views(demo_window.outcome.result))
    panel.show()
    qtbot.waitExposed(panel)
    qtbot.wait(50)
    assert panel.canvas.height() >= MAPS_MIN_HEIGHT
    # the maps' page, the details and the splitter's handle fit the tab's 330 px: with the
    # details' own least height (68 px) the panel needed 346, and in the window the
    # mosaic's hint was cut under the maps
    assert panel.minimumSizeHint().height() <= 330 and panel.height() == 330
    assert panel.cell_info.geometry().top() >= panel.canvas.geometry().bottom()
    panel.pages.setCurrentIndex(1)
    qtbot.wait(50)
    assert panel.psf_canvas.height() >= PSF_MIN_HEIGHT
    for box in panel.psf_boxes:
        assert box.height() >= 100 and box.width() >= 100
    # the text below scrolls, three lines shown
    assert panel.psf_note.verticalScrollBar().maximum() > 0


def test_a_mosaic_cell_chooses_where_the_psfs_are_matched(qtbot, window: MainWindow) -> None:
    # The PSFs page matched the PSFs through the kernel at the image centre only. On a
    # field whose science PSF broadens 30 % from left to right, the kernel broadens with
    # it: a cell of the page's mosaic chooses where the kernel is evaluated, the page says
    # where, and the convolved PSF, its residual and misfit are the kernel's there.
    pair = make_pair((512, 512), seed=0, sci_fwhm_gradient=0.3)
    run(qtbot, window, Pair(pair.science, pair.template, "gradient"))
    fit = window.outcome.result.kernel
    assert fit.convolved == "template" and fit.solution.spatial_order > 0
    panel = window.tabs.kernel_panel
    window.tabs.setCurrentWidget(panel)
    panel.pages.setCurrentIndex(1)
    n, cell = 7, panel._cell
    ny, nx = fit.solution.shape
    centre = content.psf_match(fit)

    def shows(match: content.PsfMatch, i: int, j: int) -> None:
        """The page shows ``match``, matched at cell (i, j), and says where."""
        assert panel.psf_cell == j * n + i
        assert panel.picker_title.text == f"Kernel at<br>cell ({i}, {j})"
        for item, want in zip(
            panel.psf_items,
            (match.science, match.template, match.matched, match.residual),
            strict=True,
        ):
            np.testing.assert_allclose(item.image, want, rtol=1e-6, atol=1e-9)
        titles = [title.text for title in panel.psf_titles]
        assert titles[2] == f"Template PSF ⊛ kernel<br>FWHM {match.matched_fwhm:.2f} px"
        assert titles[3] == f"Residual, ⊛ − science<br>Σ|residual| {match.misfit:.4f}"
        assert f"through the kernel at {'the image centre ' if i == j == 3 else ''}(" in (
            panel.psf_info.text()
        )
        assert f"({match.x:.1f}, {match.y:.1f}) px" in panel.psf_info.text()
        assert f"= {match.misfit:.4f}" in panel.psf_info.text()

    # at first the middle cell: the image centre, as before
    shows(centre, 3, 3)
    assert (centre.x, centre.y) == ((nx - 1) / 2.0, (ny - 1) / 2.0)
    # the left and the right cell of the middle row, clicked on the page's mosaic
    matches = {}
    for i in (0, 6):
        panel._on_picker_click(Click(i * cell + cell / 2, 3 * cell + cell / 2))
        matches[i] = content.psf_match(fit, panel._grid[3 * n + i, 0], panel._grid[3 * n + i, 1])
        assert matches[i].x == (0.0 if i == 0 else nx - 1.0)
        shows(matches[i], i, 3)
    # the kernel's own width across the field: the template through it is ~3.5 px wide on
    # the left, ~4.7 on the right (the science PSF's 4.0 px at the centre, +-15 %); against
    # the one science PSF of the run its residual is larger at both ends
    left, right = matches[0], matches[6]
    assert left.matched_fwhm + 0.3 < centre.matched_fwhm < right.matched_fwhm - 0.3
    assert min(left.misfit, right.misfit) > 3 * centre.misfit
    assert "The science and template PSFs are one each for the whole image" in (
        panel.psf_info.text()
    )
    # the cell chosen stays for the pair's next run (the same grid) ...
    window.tabs.show_run(window.outcome, model.ab_runs(window.outcome, None, None))
    shows(right, 6, 3)
    # ... and a new pair starts at the middle cell again
    window.tabs.clear()
    assert panel.psf_cell is None and panel.picker_title.text == ""
    assert all(item.image is None for item in (panel.picker, *panel.psf_items))
