"""A batch of ``--products minimal`` in the review window: each pair's difference and catalog
on show, and the pair run again in the inspector from its recorded inputs and config.

The batch is a real ``diffviewer batch --products minimal`` on a ``LocalCluster`` of two
workers (the demo pair under two names, one whose science file is then deleted); the
review window and the inspector are the real ones, the inspector's engine the real one.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from diffviewer import cli
from diffviewer.batch.summary import complete_row
from diffviewer.config import SubtractionConfig, apply_overrides, load_toml
from diffviewer.exposure import Exposure
from diffviewer.gui.batch_review import ReviewWindow
from diffviewer.gui.difference_preview import (
    READ_LANE,
    DifferencePreview,
    DifferenceView,
    row_figures,
)
from diffviewer.gui.model import prepare_view
from diffviewer.gui.overlays import MARKER_AREA, MIN_MARKERS
from diffviewer.gui.saved import open_saved
from diffviewer.gui.window import isolated_window
from diffviewer.gui.worker import JobRunner
from diffviewer.io import demo_pair
from diffviewer.results import SavedDifference, SavedRun, recorded_specs
from tests.gui.helpers import RUN_TIMEOUT_MS, finish

#: A constant kernel: the demo's 256 x 256 has about a dozen kernel stars.
OVERRIDE = "kernel.spatial_order=0"


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A batch of --products minimal: ``kept`` and ``gone`` (its science file deleted after)."""
    folder = tmp_path_factory.mktemp("minimal_night")
    science, template = demo_pair()
    shutil.copy(science, folder / "science.fits")
    shutil.copy(science, folder / "science_gone.fits")
    shutil.copy(template, folder / "template.fits")
    (folder / "pairs.csv").write_text(
        "science,template,name\n"
        "science.fits,template.fits,kept\n"
        "science_gone.fits,template.fits,gone\n"
    )
    out = folder / "out"
    argv = ["batch", str(folder / "pairs.csv"), "--out", str(out), "--workers", "2", "--quiet"]
    with contextlib.redirect_stderr(io.StringIO()):
        code = cli.main([*argv, "--set", OVERRIDE, "--products", "minimal"])
    assert code == 0
    assert sorted(p.name for p in (out / "kept").iterdir()) == [
        "config.toml",
        "diasources.ecsv",
        "difference.fits",
        "metadata.json",
    ]
    (folder / "science_gone.fits").unlink()
    return out


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: its size and modification time (ns)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture
def inspector(qtbot, tmp_path: Path):
    """An inspector with the real engine and throw-away settings."""
    win = isolated_window(tmp_path)
    qtbot.addWidget(win)
    yield win
    win.jobs.shutdown()


def _select(qtbot, review: ReviewWindow, name: str) -> None:
    """Select a pair and wait until its folder is read."""
    with qtbot.waitSignal(
        review.jobs.finished,
        timeout=RUN_TIMEOUT_MS,
        check_params_cb=lambda lane, *args: lane == READ_LANE,
    ):
        review.select_name(name)


def test_a_minimal_pair_shows_its_difference_and_runs_again_from_its_inputs(
    qtbot, night, inspector
) -> None:
    before = _files(night)
    review = ReviewWindow(night, inspector=inspector)
    qtbot.addWidget(review)
    _select(qtbot, review, "kept")
    folder = night / "kept"
    preview = review.preview
    # what the folder has: the difference, its catalog and markers, the row's figures
    assert not preview.isHidden() and preview.shown is not None
    with fits.open(folder / "difference.fits") as hdul:
        on_disk = np.array(hdul["IMAGE"].data)
    np.testing.assert_array_equal(preview.shown.saved.difference.image, on_disk)
    assert preview.panel.data is not None and preview.panel.data.shape == on_disk.shape
    catalog = Table.read(folder / "diasources.ecsv")
    assert preview.catalog.model.rowCount() == len(catalog) > 0
    shown = preview.catalog.shown_rows()
    assert len(preview.markers.data) == len(shown) > 0
    row = next(r for r in review.model.rows if r["name"] == "kept")
    assert preview.figures.text() == row_figures(row)
    assert f"noise ratio {row['noise_ratio']:.3g}" in preview.figures.text()
    assert "--products minimal" in preview.heading.text()
    assert "--products minimal" in review.status_label.text()
    # the inspector was neither cleared nor run: it cannot show this folder
    assert inspector.pair is None and not inspector.is_running()
    assert not inspector.error_box.isVisible()
    # selecting a source centres the difference on it
    first = int(catalog["id"][shown[0]])
    preview.select_source(first)
    assert preview.catalog.selected_source() == first
    x, y = preview.panel.view_centre()
    assert (x, y) == pytest.approx(
        (float(catalog["x"][shown[0]]), float(catalog["y"][shown[0]])), abs=1.0
    )

    # one action: run again in the inspector from the recorded inputs and its config.toml
    assert preview.run_button.isEnabled()
    finish(qtbot, inspector, "run", preview.run_button.click)
    outcome = inspector.outcome
    assert outcome is not None and not isinstance(outcome.result, SavedRun)
    science, template = recorded_specs(preview.shown.saved.metadata)
    assert (outcome.pair.science, outcome.pair.template) == (science, template)
    assert outcome.pair.science == str((night.parent / "science.fits").resolve())
    config = load_toml(folder / "config.toml")
    assert config == apply_overrides(SubtractionConfig(), [OVERRIDE])
    assert outcome.result.config.digest() == config.digest() == row["config_digest"]
    assert inspector.params.config().digest() == config.digest()
    # the same inputs and config give the batch's pixels and catalog
    np.testing.assert_array_equal(inspector.raw["difference"], on_disk)
    np.testing.assert_array_equal(outcome.result.diasources["id"], catalog["id"])
    np.testing.assert_allclose(outcome.result.diasources["x"], catalog["x"], rtol=0, atol=1e-9)
    # its verdicts are the pair's: they go to its folder, as for a whole saved pair
    assert inspector.output_dir() == folder
    assert "running again in the inspector" in review.status_label.text()
    # nothing in the batch folder was written, replaced or added
    assert _files(night) == before


def test_a_minimal_pair_whose_input_is_gone_says_which_file_and_what_to_do(
    qtbot, night, inspector
) -> None:
    before = _files(night)
    review = ReviewWindow(night, inspector=inspector)
    qtbot.addWidget(review)
    _select(qtbot, review, "gone")
    preview = review.preview
    gone = night.parent / "science_gone.fits"
    # the folder's difference and catalog are shown all the same
    assert preview.shown is not None and preview.panel.data is not None
    assert preview.catalog.model.rowCount() == len(Table.read(night / "gone" / "diasources.ecsv"))
    # the button is off, and the message names the file, the cause and what to do
    assert not preview.run_button.isEnabled()
    message = preview.inputs.text()
    assert str(gone.resolve()) in message and "does not exist" in message
    assert "put it back there" in message and "diffviewer run" in message
    assert str(night / "gone" / "metadata.json") in message
    review.rerun_current()  # asked all the same (the file went since): said, nothing run
    assert f"cannot run gone again: the science image {gone.resolve()}" in (
        review.status_label.text()
    )
    assert inspector.pair is None and not inspector.is_running()
    # another pair: the preview follows it
    _select(qtbot, review, "kept")
    assert preview.run_button.isEnabled() and "kept" in preview.heading.text()
    assert _files(night) == before


def test_open_makes_a_minimal_pair_ready_to_run_again(qtbot, night, inspector) -> None:
    # diffviewer open on such a folder said "rerun the pair with full products"
    folder = night / "kept"
    before = _files(night)
    open_saved(inspector, folder)
    assert inspector.pair is not None and inspector.pair.name == "kept"
    assert inspector.pair.science == str((night.parent / "science.fits").resolve())
    assert inspector.params.config() == load_toml(folder / "config.toml")
    assert inspector.saved_folder == folder
    assert not inspector.is_running() and not inspector.error_box.isVisible()
    assert inspector.menus.run_action.isEnabled()
    assert not inspector.warnings.isHidden()
    assert "Run (Ctrl+R) runs the pair again" in inspector.warnings.notes[0]
    # a folder whose input is gone: the inspector says which file and what to do
    open_saved(inspector, night / "gone")
    assert inspector.error_box.isVisible()
    assert "science_gone.fits" in inspector.error_label.text()
    assert "does not exist" in inspector.error_label.text()
    assert _files(night) == before


def test_a_warped_templates_pair_is_its_input_files() -> None:
    # metadata's inputs.template.source names the template on the science grid ("... warped
    # to ..."), which no file holds: Run after opening a warped saved run read that name
    metadata = {
        "inputs": {
            "science": {"source": "/d/sci.fits"},
            "template": {"source": "/d/tmpl.fits warped to /d/sci.fits"},
        },
        "warp": {"pieces": [{"source": "/d/tmpl.fits"}]},
    }
    assert recorded_specs(metadata) == ("/d/sci.fits", "/d/tmpl.fits")
    metadata["warp"]["pieces"].append({"source": "/d/tmpl2.fits[1]"})
    assert recorded_specs(metadata) == ("/d/sci.fits", "/d/tmpl.fits;/d/tmpl2.fits[1]")


def test_a_preview_lets_its_arrays_go_when_hidden_or_closed(
    qtbot, night, inspector, monkeypatch
) -> None:
    # A review colleague found the hidden preview holding the difference, its display
    # image and the catalog, and each review window the inspector opened kept for the
    # session after its close (~220 MB at 4096^2).
    from PyQt6.QtWidgets import QFileDialog

    from diffviewer.gui.batch_review import open_batch_dialog

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(night))
    review = open_batch_dialog(inspector)
    assert review is not None and inspector.review_windows == [review]
    preview = review.preview
    _select(qtbot, review, "kept")
    assert preview.shown is not None and preview.panel.data is not None
    review.reload()  # the selection goes with the rows: so does the preview
    assert preview.shown is None and preview.panel.data is None
    assert preview.catalog.model.rowCount() == 0
    _select(qtbot, review, "kept")
    with qtbot.waitSignal(review.destroyed, timeout=5000):
        review.close()
    assert inspector.review_windows == []


def _crowded_view(n: int, shape: tuple[int, int] = (512, 512)) -> DifferenceView:
    """A folder's difference of ``n`` DIA sources strewn over ``shape`` (every tenth a
    dipole), as the preview's worker reads it; its pair cannot be run again."""
    rng = np.random.default_rng(7)
    ny, nx = shape
    x, y = rng.uniform(0, nx - 1, n), rng.uniform(0, ny - 1, n)
    snr = rng.choice([-1.0, 1.0], n) * rng.uniform(5.0, 500.0, n)
    dipole = np.arange(n) % 10 == 0
    dia = Table(
        {
            "id": np.arange(1, n + 1),
            "x": x,
            "y": y,
            "snr": snr,
            "sign": np.sign(snr),
            "is_dipole": dipole,
            "flagged": np.zeros(n, bool),
            "sky_source": np.zeros(n, bool),
            "pos_x": x + 1.5,
            "pos_y": y,
            "neg_x": x - 1.5,
            "neg_y": y,
        }
    )
    image = rng.normal(0.0, 1.0, shape).astype(np.float32)
    difference = Exposure(image, np.ones(shape, np.float32), np.zeros(shape, np.int32))
    saved = SavedDifference(
        Path("crowded"), {}, SubtractionConfig(), difference, dia, (), "minimal"
    )
    return DifferenceView(saved, prepare_view("difference", image), None, "no inputs")


def test_a_crowded_preview_marks_the_highest_snr_sources_as_the_inspector_does(
    qtbot,
) -> None:
    # A review colleague found the preview of a crowded field (hundreds to thousands of
    # detections) a carpet of circles: every source of the catalog was marked. It marks
    # as the inspector's difference does: the highest |S/N| within the view, one per
    # MARKER_AREA of the image on screen, a note saying how many of how many, dipoles
    # joined to their lobes; zooming in brings the others back.
    shown = _crowded_view(2000)
    jobs = JobRunner()
    preview = DifferencePreview(jobs)
    qtbot.addWidget(preview)
    try:
        _check_crowded(qtbot, preview, shown)
    finally:
        jobs.shutdown()


def _check_crowded(qtbot, preview: DifferencePreview, shown: DifferenceView) -> None:
    """The crowded test's body (its worker shut down after it, whatever the outcome)."""
    dia = shown.saved.diasources
    n = len(dia)
    preview.resize(900, 700)
    preview.show()
    qtbot.waitExposed(preview)
    preview.show_difference(shown, complete_row({"name": "crowded"}))
    drawn = np.array([int(p.data()) for p in preview.markers.points()])
    box = preview.panel.view
    on_screen = box.boundingRect()
    # the image is square in a wider cell: its area on screen is the cell's height squared
    image_side = min(on_screen.width(), on_screen.height())
    assert MIN_MARKERS < len(drawn) <= image_side**2 / MARKER_AREA + 1
    assert len(drawn) < n / 10
    snr = np.abs(np.asarray(dia["snr"], float))
    chosen = np.isin(np.asarray(dia["id"]), drawn)
    assert snr[chosen].min() >= snr[~chosen].max()  # the most significant ones
    assert preview.marker_note.text() == (
        f"markers: the {len(drawn)} of highest |S/N| of {n} in view; zoom in for more"
    )
    assert preview.marker_note.isVisible()
    # the dipoles among them joined to their lobes, as in the inspector
    lines_x, _ = preview.dipole_lines.getData()
    assert len(lines_x) == 2 * int(np.sum(np.asarray(dia["is_dipole"]) & chosen)) > 0
    # a faint source selected in the catalog: the view closes in on it, it is marked, and
    # so is every source in that small view; nothing is left out, so no note
    faint = int(dia["id"][int(np.argmin(snr))])
    preview.select_source(faint)
    x0, x1 = box.viewRect().left(), box.viewRect().right()
    y0, y1 = box.viewRect().top(), box.viewRect().bottom()
    xs, ys = np.asarray(dia["x"]), np.asarray(dia["y"])
    inside = set(np.asarray(dia["id"])[(xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)])

    def follows_the_view() -> None:
        assert {int(p.data()) for p in preview.markers.points()} == inside | {faint}

    qtbot.waitUntil(follows_the_view)
    assert preview.marker_note.text() == ""
    # the filter still decides which sources may be marked
    preview.catalog.snr_box.setValue(float(snr.max()) + 1.0)
    assert {int(p.data()) for p in preview.markers.points()} <= {faint}
