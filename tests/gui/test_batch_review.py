"""`diffviewer review` and `diffviewer open`: saved outputs on screen, equal to the files.

The batch folder is made with the batch's own pieces (``cli.run_pair`` per pair, rows
from the outputs, ``write_summary``) without a cluster; ``tests/test_batch*.py`` run
real clusters. An inspector whose engine raises proves nothing is re-run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from PyQt6.QtCore import Qt

from diffviewer import cli, display
from diffviewer.batch.summary import read_summary, row_from_outputs, write_summary
from diffviewer.config import SubtractionConfig, apply_overrides
from diffviewer.errors import InputError
from diffviewer.gui import content
from diffviewer.gui import verdicts as source_verdicts
from diffviewer.gui.batch_review import SHOWN, ReviewWindow
from diffviewer.gui.saved import open_saved, set_pair_verdict
from diffviewer.gui.window import MainWindow, isolated_window
from diffviewer.io import demo_pair
from diffviewer.results import SavedRun, read_pair_verdict
from tests.gui.helpers import RUN_TIMEOUT_MS, finish

CONFIGS = {
    "constant": ["kernel.spatial_order=0"],
    "wide": ["kernel.spatial_order=0", "detection.threshold=3.0"],
}


def _no_engine(*args, **kwargs):
    raise AssertionError("the engine ran: a saved run must be shown without re-running")


@pytest.fixture(scope="module")
def batch_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two pairs run with different configs and a failed pair, with their summary."""
    folder = tmp_path_factory.mktemp("review")
    science, template = demo_pair()
    rows = []
    for name, overrides in CONFIGS.items():
        out = folder / name
        config = apply_overrides(SubtractionConfig(), overrides)
        code = cli.run_pair(
            str(science), str(template), out, config, overwrite=False, strict=False, quiet=True
        )
        assert code == 0
        row = {"name": name, "science": str(science), "template": str(template)}
        rows.append({**row, "status": "ok", "output": str(out), **row_from_outputs(out)})
    rows.append(
        {
            "name": "broken",
            "science": str(science),
            "template": "missing.fits",
            "status": "failed",
            "error_kind": "input",
            "error": "image file missing.fits does not exist",
            "output": str(folder / "broken"),
        }
    )
    write_summary(folder, rows)
    return folder


@pytest.fixture
def inspector(qtbot, tmp_path: Path):
    """An inspector whose engine must not run."""
    win = isolated_window(tmp_path)
    win.runner = _no_engine
    qtbot.addWidget(win)
    yield win
    win.jobs.shutdown()


def test_the_review_table_is_worst_first_with_thumbnails_and_filters(qtbot, batch_dir) -> None:
    review = ReviewWindow(batch_dir, inspector=MainWindow())
    qtbot.addWidget(review)
    summary = {str(r["name"]): float(r["badness"]) for r in read_summary(batch_dir)}
    names = review.visible_names()
    assert sorted(names) == sorted(summary)
    assert [summary[n] for n in names] == sorted(summary.values(), reverse=True)
    assert names[0] == "broken"  # a failed pair needs a human first
    thumb_column = [c for c, _ in SHOWN].index("")
    for row, name in enumerate(review.model.rows):
        pixmap = review.model.data(
            review.model.index(row, thumb_column), Qt.ItemDataRole.DecorationRole
        )
        if name["status"] == "failed":
            assert pixmap is None
        else:
            assert pixmap is not None and max(pixmap.width(), pixmap.height()) <= 64
    # each pair's kernel stars against kernels fitted without them, as its summary says
    held = [c for c, _ in SHOWN].index("held_out_chi2")
    for row, values in enumerate(review.model.rows):
        text = review.model.data(review.model.index(row, held), Qt.ItemDataRole.DisplayRole)
        assert (values["status"] == "ok") == bool(text)
        if text:
            assert float(text) == pytest.approx(float(values["held_out_chi2"]), rel=0.01)
    review.failed_box.setChecked(True)
    assert review.visible_names() == ["broken"]
    review.failed_box.setChecked(False)
    review.search.setText("wid")
    assert review.visible_names() == ["wide"]
    review.search.setText("")
    review.model.rows[0]["n_warnings"] = 0
    review.warned_box.setChecked(True)
    shown = set(review.visible_names())
    assert all(r["n_warnings"] > 0 for r in review.model.rows if r["name"] in shown)
    review.inspector().jobs.shutdown()


def _same_as_written(win: MainWindow, folder: Path) -> None:
    """The run on screen is the saved one: arrays, catalog and figures equal the files."""
    outcome = win.outcome
    assert outcome is not None and isinstance(outcome.result, SavedRun)
    with fits.open(folder / "difference.fits") as hdul:
        np.testing.assert_array_equal(win.raw["difference"], hdul["IMAGE"].data)
    with fits.open(folder / "matched_template.fits") as hdul:
        np.testing.assert_array_equal(win.raw["matched"], hdul["IMAGE"].data)
    catalog = Table.read(folder / "diasources.ecsv")
    assert win.review.catalog.model.rowCount() == len(catalog)
    np.testing.assert_array_equal(outcome.result.diasources["id"], catalog["id"])
    assert win.output_dir() == folder


def test_selecting_a_row_opens_the_saved_pair_without_running_it(
    qtbot, batch_dir, inspector
) -> None:
    review = ReviewWindow(batch_dir, inspector=inspector)
    qtbot.addWidget(review)
    finish(qtbot, inspector, "run", lambda: review.select_name("wide"))
    _same_as_written(inspector, batch_dir / "wide")
    assert inspector.params.config() == apply_overrides(SubtractionConfig(), CONFIGS["wide"])
    # a failed pair says why instead of opening
    review.select_name("broken")
    assert "missing.fits does not exist" in review.status_label.text()


def test_a_strict_guard_failure_opens_and_a_pair_shows_its_own_status_and_comment(
    qtbot, batch_dir, inspector, tmp_path
) -> None:
    # --strict writes every output of a pair whose guard trips, "for inspection", and
    # fails it: the window opened no failed pair, so not the one most in need of a look
    folder = tmp_path / "night"
    shutil.copytree(batch_dir, folder)
    rows = [dict(r) for r in read_summary(folder)]
    for row in rows:
        row["output"] = str(folder / str(row["name"]))
        if row["name"] == "wide":
            row.update(status="failed", error_kind="guard", error="bad-subtraction guard tripped")
        if row["name"] == "constant":
            row.update(comment="ringing at the bright stars")
    write_summary(folder, rows)
    review = ReviewWindow(folder, inspector=inspector)
    qtbot.addWidget(review)
    finish(qtbot, inspector, "run", lambda: review.select_name("wide"))
    assert inspector.saved_folder == folder / "wide"
    assert "its outputs are shown" in review.status_label.text()
    number = [str(r["name"]) for r in review.model.rows].index("wide")
    assert review.model.thumbnail(review.model.rows[number]) is not None
    # the next pair: its own status (the failure stayed), its saved comment (a verdict
    # changed without retyping it erased the comment)
    finish(qtbot, inspector, "run", lambda: review.select_name("constant"))
    assert review.status_label.text().startswith(f"{len(rows)} pairs, ")
    assert review.comment.text() == "ringing at the bright stars"
    review.select_name("broken")  # nothing to show: says why
    assert "missing.fits does not exist" in review.status_label.text()


def test_a_pair_verdict_goes_to_its_folder_the_summary_and_the_export(
    qtbot, batch_dir, inspector, tmp_path
) -> None:
    review = ReviewWindow(batch_dir, inspector=inspector)
    qtbot.addWidget(review)
    finish(qtbot, inspector, "run", lambda: review.select_name("constant"))
    review.comment.setText("residual rings on the bright star")
    review.bad_button.click()
    saved = read_pair_verdict(batch_dir / "constant")
    assert saved is not None and (saved.verdict, saved.comment) == (
        "bad",
        "residual rings on the bright star",
    )
    rows = {str(r["name"]): r for r in read_summary(batch_dir)}
    assert (rows["constant"]["verdict"], rows["wide"]["verdict"]) == ("bad", "")
    # a source verdict given in the inspector is exported beside the pair verdict
    first = int(inspector.outcome.result.diasources["id"][0])
    inspector.select_source(first)
    inspector.set_verdict("real")
    table = Table.read(review.export_verdicts(tmp_path / "verdicts.ecsv"))
    levels = {(str(r["pair"]), str(r["level"])): r for r in table}
    assert levels[("constant", "pair")]["verdict"] == "bad"
    assert levels[("constant", "source")]["source_id"] == first
    assert levels[("constant", "source")]["verdict"] == "real"
    review.unreviewed_box.setChecked(True)
    assert "constant" not in review.visible_names()
    # Verdict > Pair in the inspector: it reached neither the summary nor the review
    # window (the pair stayed unreviewed there), only the folder
    review.unreviewed_box.setChecked(False)
    finish(qtbot, inspector, "run", lambda: review.select_name("constant"))
    inspector.review.comment.setText("fine after all")
    set_pair_verdict(inspector, "good")
    rows = {str(r["name"]): r for r in read_summary(batch_dir)}
    assert (rows["constant"]["verdict"], rows["constant"]["comment"]) == ("good", "fine after all")
    number = [str(r["name"]) for r in review.model.rows].index("constant")
    assert review.model.rows[number]["verdict"] == "good"
    (batch_dir / "constant" / "pair_verdict.json").unlink()
    (batch_dir / "constant" / source_verdicts.VERDICTS_FILE).unlink()


def test_open_shows_a_saved_run_and_rerun_keeps_it_for_ab(qtbot, batch_dir, tmp_path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(batch_dir / "constant", folder)
    win = isolated_window(tmp_path)
    qtbot.addWidget(win)
    try:
        finish(qtbot, win, "run", lambda: open_saved(win, folder))
        _same_as_written(win, folder)
        saved_metrics = content.metrics(win.outcome.result)
        # the saved run shows the registration its metadata.json recorded ...
        saved_line = win.registration.text()
        assert win.registration.isVisible() and "stars matched" in saved_line
        # Save all outputs of a run read back from files was an AttributeError in the
        # worker (SavedTemplate.is_input); it is refused with what to do instead
        win.saver.save_outputs(tmp_path / "resaved")
        assert win.error_box.isVisible() and "read back from" in win.error_label.text()
        assert not (tmp_path / "resaved").exists() and not win.saver.is_saving()
        finish(qtbot, win, "run", win.run)  # Run: the engine, on the same pair
        # ... which is the line the engine's own run shows
        assert win.registration.isVisible() and win.registration.text() == saved_line
        assert win.previous is not None and isinstance(win.previous.result, SavedRun)
        assert not isinstance(win.outcome.result, SavedRun)
        # A/B: the same config, so the same digest; A is named as the saved run (audit:
        # both titles read the same digest and nothing marked the saved run)
        win.tabs.setCurrentWidget(win.tabs.ab_panel)
        digest = win.outcome.result.config.digest()
        ab = win.tabs.ab_panel
        assert ab.a.title_text == f"A: saved run copy, config {digest}"
        assert ab.b.title_text == f"B: current run, config {digest}"
        # same pair, same config: the re-run's figures are the saved ones, up to the
        # summation order of BLAS (the CLI runs it on one thread, the GUI on OpenBLAS's
        # default; 4e-5 relative seen on the noise figures)
        assert content.metrics(win.outcome.result) == pytest.approx(saved_metrics, rel=2e-4)
    finally:
        win.jobs.shutdown()


def test_a_saved_run_kept_as_a_stays_a_for_later_runs(qtbot, batch_dir, tmp_path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(batch_dir / "constant", folder)
    win = isolated_window(tmp_path)
    qtbot.addWidget(win)
    try:
        finish(qtbot, win, "run", lambda: open_saved(win, folder))
        saved = win.outcome
        digest = saved.result.config.digest()
        win.menus.keep_action.trigger()  # Run > Keep this run as A, on the saved run
        assert win.kept is saved
        ab = win.tabs.ab_panel
        win.tabs.setCurrentWidget(ab)
        assert ab.a.title_text == f"A: kept saved run copy, config {digest}"
        for threshold in (8.0, 9.0):
            win.params.set_value("detection", "threshold", threshold)
            finish(qtbot, win, "run", win.run)
        assert win.outcome.result.config.detection.threshold == 9.0
        assert win.kept is saved and ab.keep_button.isChecked()
        assert ab.a.title_text == f"A: kept saved run copy, config {digest}"
        np.testing.assert_array_equal(
            ab.a.data, display.display_array(saved.result.difference.image)
        )
        np.testing.assert_array_equal(
            ab.b.data, display.display_array(win.outcome.result.difference.image)
        )
    finally:
        win.jobs.shutdown()


def test_open_and_review_refuse_folders_that_are_not_outputs(tmp_path, capsys) -> None:
    assert cli.main(["open", str(tmp_path)]) == cli.EXIT_ERROR
    assert cli.main(["review", str(tmp_path)]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert "holds no metadata.json: it is not a run's output folder" in err[0]
    assert "holds no summary.ecsv: it is not a batch folder" in err[1]


def test_opening_an_unfinished_folder_reports_it(qtbot, inspector, tmp_path) -> None:
    (tmp_path / "half").mkdir()
    open_saved(inspector, tmp_path / "half")
    qtbot.waitUntil(lambda: inspector.error_box.isVisible(), timeout=RUN_TIMEOUT_MS)
    assert "half holds no metadata.json" in inspector.error_label.text()
    assert "its run did not finish" in inspector.error_label.text()


def test_long_pair_names_are_shown_whole(qtbot, tmp_path: Path) -> None:
    # A night of alert cutouts: names share a long prefix and differ at the end
    # ("rubin_39695..." on every row before). The name column fits the longest name,
    # and a narrowed column cuts names in the middle, keeping their ends.
    names = [f"rubin_3969508767171{i:02d}" for i in (1, 4, 9)]
    rows = [
        {
            "name": name,
            "science": "s.fits",
            "template": "t.fits",
            "status": "failed",
            "error_kind": "input",
            "error": "image file t.fits does not exist",
            "output": str(tmp_path / name),
        }
        for name in names
    ]
    write_summary(tmp_path, rows)
    review = ReviewWindow(tmp_path, inspector=MainWindow())
    qtbot.addWidget(review)
    column = [c for c, _ in SHOWN].index("name")
    metrics = review.table.fontMetrics()
    assert review.table.columnWidth(column) >= max(metrics.horizontalAdvance(n) for n in names)
    assert review.table.textElideMode() == Qt.TextElideMode.ElideMiddle
    review.inspector().jobs.shutdown()


def test_a_verdict_comment_in_any_script_reaches_both_summaries(
    qtbot, batch_dir, inspector
) -> None:
    review = ReviewWindow(batch_dir, inspector=inspector)
    qtbot.addWidget(review)
    finish(qtbot, inspector, "run", lambda: review.select_name("wide"))
    review.comment.setText("résidus à 3σ autour du cœur")
    review.good_button.click()
    assert "cannot" not in review.status_label.text()
    rows = {str(r["name"]): r for r in read_summary(batch_dir)}
    in_fits = {str(r["name"]): r for r in Table.read(batch_dir / "summary.fits")}
    for table in (rows, in_fits):
        assert (table["wide"]["verdict"], table["wide"]["comment"]) == (
            "good",
            "résidus à 3σ autour du cœur",
        )
    (batch_dir / "wide" / "pair_verdict.json").unlink()
    write_summary(batch_dir, [{**r, "verdict": "", "comment": ""} for r in rows.values()])


def test_a_copied_batch_folder_is_reviewed_in_place(qtbot, batch_dir, inspector, tmp_path) -> None:
    # the summary's output column names where the batch wrote the pairs, gone now
    copy = tmp_path / "laptop_copy"
    shutil.copytree(batch_dir, copy)
    rows = [{**r, "output": f"/gone/{r['name']}"} for r in map(dict, read_summary(copy))]
    write_summary(copy, rows)
    review = ReviewWindow(copy, inspector=inspector)
    qtbot.addWidget(review)
    constant = next(r for r in review.model.rows if r["name"] == "constant")
    assert review.model.thumbnail(constant) is not None
    finish(qtbot, inspector, "run", lambda: review.select_name("constant"))
    assert inspector.saved_folder == copy / "constant"
    review.good_button.click()
    assert "cannot" not in review.status_label.text(), review.status_label.text()
    assert read_pair_verdict(copy / "constant") is not None
    assert read_pair_verdict(batch_dir / "constant") is None


def test_a_verdict_saved_while_the_batch_runs_keeps_its_new_rows(
    qtbot, batch_dir, inspector, tmp_path
) -> None:
    folder = tmp_path / "night"
    shutil.copytree(batch_dir, folder)
    review = ReviewWindow(folder, inspector=inspector)  # loads the 3 rows there are
    qtbot.addWidget(review)
    # meanwhile the batch lands another pair and rewrites the summary
    rows = [dict(r) for r in read_summary(folder)]
    later = {**rows[0], "name": "later", "output": str(folder / "later")}
    write_summary(folder, [*rows, later])
    finish(qtbot, inspector, "run", lambda: review.select_name("wide"))
    review.bad_button.click()
    after = {str(r["name"]): r for r in read_summary(folder)}
    assert sorted(after) == ["broken", "constant", "later", "wide"]
    assert after["wide"]["verdict"] == "bad" and after["later"]["verdict"] == ""


def test_a_thumbnail_draws_pixels_without_data_black(tmp_path: Path) -> None:
    # ZTF cutouts 21-33 % without data were drawn at the sky's grey (126-127 of 255)
    from diffviewer.exposure import Exposure, MaskPlane
    from diffviewer.fits_write import write_exposure
    from diffviewer.gui.batch_review import thumbnail_array

    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 1.0, (64, 64)).astype(np.float32)
    mask = np.zeros(image.shape, np.int16)
    mask[:, :20] = int(MaskPlane.NO_DATA)
    exposure = Exposure(image=image, variance=np.ones_like(image), mask=mask)
    write_exposure(tmp_path / "difference.fits", exposure)
    thumb = np.flipud(thumbnail_array(tmp_path))
    assert np.all(thumb[:, :20] == 0)
    assert np.median(thumb[:, 20:]) > 60  # the sky: mid-grey


def test_reload_shows_a_batch_rerun_since_the_window_opened(qtbot, batch_dir, tmp_path) -> None:
    # The window's rows were a snapshot: after a re-run it kept badness 5.7 where the
    # summary said 20.5 and a guard tripped since, and its thumbnails
    folder = tmp_path / "night"
    shutil.copytree(batch_dir, folder)
    review = ReviewWindow(folder, inspector=MainWindow())
    qtbot.addWidget(review)
    number = [str(r["name"]) for r in review.model.rows].index("wide")
    before = review.model.thumbnail(review.model.rows[number])
    rows = [dict(r) for r in read_summary(folder)]
    for row in rows:
        row["output"] = str(folder / str(row["name"]))
        if row["name"] == "wide":
            row.update(guard_tripped=True, n_positive=40)
    write_summary(folder, rows)
    (folder / "wide" / "difference.fits").unlink()  # its thumbnail is made afresh
    review.reload()
    now = {str(r["name"]): r for r in review.model.rows}
    assert now["wide"]["guard_tripped"] and now["wide"]["n_positive"] == 40
    on_disk = {str(r["name"]): float(r["badness"]) for r in read_summary(folder)}
    assert now["wide"]["badness"] == pytest.approx(on_disk["wide"]) and on_disk["wide"] >= 10
    assert before is not None and review.model.thumbnail(now["wide"]) is None


def test_the_windows_open_paths_say_what_a_folder_is_instead(
    qtbot, batch_dir: Path, inspector: MainWindow, tmp_path: Path
) -> None:
    """File > Open results… and File > Open batch… call the readers `open` and `review` call,
    and say the same: a batch folder given as a run points to the review, a pair's folder
    given as a batch to `open` (they said "metadata.json is missing" and "summary.ecsv does
    not exist"); a summary file given as the batch reviews its folder."""
    open_saved(inspector, batch_dir)
    shown = inspector.error_label.text()
    assert "is a batch folder (it holds summary.ecsv)" in shown, shown
    assert f"`diffviewer review {batch_dir}`" in shown and "File > Open batch…" in shown
    assert inspector.outcome is None
    with pytest.raises(InputError, match=r"constant is a saved run's folder .*diffviewer open"):
        ReviewWindow(batch_dir / "constant", inspector=inspector)
    (tmp_path / "notes.txt").write_text("not a batch\n")
    with pytest.raises(InputError, match=r"notes\.txt is a file, not a batch folder"):
        ReviewWindow(tmp_path / "notes.txt", inspector=inspector)
    review = ReviewWindow(batch_dir / "summary.ecsv", inspector=inspector)
    qtbot.addWidget(review)
    assert review.batch_dir == batch_dir.resolve()
    assert {Path(r["output"]).parent for r in review.model.rows} == {batch_dir.resolve()}
    review.jobs.shutdown()
